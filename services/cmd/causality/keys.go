package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"causality.dev/services/internal/ingest"
)

func init() {
	commands["keys"] = command{"create or revoke an ingest key in a keys file", runKeys}
}

// runKeys creates an ingest key. With -file it appends the hashed entry to
// that keys file (creating it); the key itself is printed once and never
// stored.
func runKeys(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys", flag.ContinueOnError)
	fs.SetOutput(stderr)
	app := fs.String("app", "", "app the key is bound to (required)")
	name := fs.String("name", "", "label of the key, e.g. ios-prod")
	file := fs.String("file", "", "keys file to add the entry to")
	revoke := fs.String("revoke", "", "mark the key with this sha256 revoked in -file")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *revoke != "" {
		return revokeKey(*file, *revoke, stdout)
	}
	if *app == "" {
		return errors.New("-app is required")
	}
	key := ingest.NewKey()
	entry := ingest.KeyEntry{AppID: *app, Name: *name, SHA256: ingest.HashKey(key)}
	if *file != "" {
		kf, err := readKeysFile(*file)
		if err != nil {
			return err
		}
		kf.Keys = append(kf.Keys, entry)
		if err := writeKeysFile(*file, kf); err != nil {
			return err
		}
	} else {
		b, _ := json.Marshal(entry)
		fmt.Fprintf(stderr, "keys-file entry: %s\n", b)
	}
	fmt.Fprintln(stdout, key)
	return nil
}

func revokeKey(file, sha string, stdout io.Writer) error {
	if file == "" {
		return errors.New("-revoke needs -file")
	}
	kf, err := readKeysFile(file)
	if err != nil {
		return err
	}
	found := false
	for i := range kf.Keys {
		if kf.Keys[i].SHA256 == sha {
			kf.Keys[i].Revoked, found = true, true
		}
	}
	if !found {
		return fmt.Errorf("no key with sha256 %s in %s", sha, file)
	}
	if err := writeKeysFile(file, kf); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "revoked", sha)
	return nil
}

func readKeysFile(path string) (ingest.KeysFile, error) {
	var kf ingest.KeysFile
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return kf, nil
	}
	if err != nil {
		return kf, err
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		return kf, fmt.Errorf("parse %s: %w", path, err)
	}
	return kf, nil
}

func writeKeysFile(path string, kf ingest.KeysFile) error {
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
