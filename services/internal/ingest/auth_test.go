package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Fixed keys for tests; their hashes are what a keys file stores.
const (
	keyA       = "cik_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	keyB       = "cik_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	keyRevoked = "cik_rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func testKeyring(tb testing.TB) *Keyring {
	tb.Helper()
	k, err := NewKeyring([]KeyEntry{
		{AppID: "app-a", Name: "a", SHA256: HashKey(keyA)},
		{AppID: "app-b", SHA256: strings.ToUpper(HashKey(keyB))}, // upper-case hex is accepted
		{AppID: "app-a", SHA256: HashKey(keyRevoked), Revoked: true},
	})
	if err != nil {
		tb.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func TestNewKeyringRejectsBadEntries(t *testing.T) {
	good := HashKey(keyA)
	tests := []struct {
		name    string
		entries []KeyEntry
		wantErr string // "" means valid
	}{
		{"none", nil, ""},
		{"one", []KeyEntry{{AppID: "a", SHA256: good}}, ""},
		{"same key twice for one app", []KeyEntry{{AppID: "a", SHA256: good}, {AppID: "a", SHA256: good}}, ""},
		{"empty app", []KeyEntry{{SHA256: good}}, "app_id is empty"},
		{"hash too short", []KeyEntry{{AppID: "a", SHA256: good[:63]}}, "64 hex characters"},
		{"hash too long", []KeyEntry{{AppID: "a", SHA256: good + "0"}}, "64 hex characters"},
		{"hash not hex", []KeyEntry{{AppID: "a", SHA256: strings.Repeat("zz", 32)}}, "sha256"},
		{"the plain key instead of its hash", []KeyEntry{{AppID: "a", SHA256: keyA}}, "64 hex characters"},
		{"same key for two apps", []KeyEntry{{AppID: "a", SHA256: good}, {AppID: "b", SHA256: strings.ToUpper(good)}}, "bound to apps a and b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := NewKeyring(tt.entries)
			if tt.wantErr == "" {
				if err != nil || k == nil {
					t.Fatalf("NewKeyring: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestKeyringLookup(t *testing.T) {
	k := testKeyring(t)
	tests := []struct {
		name    string
		key     string
		wantApp string
		wantErr error
	}{
		{"good key", keyA, "app-a", nil},
		{"key stored as upper-case hex", keyB, "app-b", nil},
		{"unknown key", NewKey(), "", ErrUnknownKey},
		{"empty key", "", "", ErrUnknownKey},
		{"the hash instead of the key", HashKey(keyA), "", ErrUnknownKey},
		{"revoked key", keyRevoked, "", ErrRevokedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app, err := k.Lookup(tt.key)
			if !errors.Is(err, tt.wantErr) || app != tt.wantApp {
				t.Fatalf("Lookup = %q, %v; want %q, %v", app, err, tt.wantApp, tt.wantErr)
			}
		})
	}
}

func TestNewKeyAndAdd(t *testing.T) {
	k := testKeyring(t)
	key := NewKey()
	if !strings.HasPrefix(key, KeyPrefix) || len(key) != len(KeyPrefix)+64 {
		t.Fatalf("NewKey = %q, want %s and 64 hex characters", key, KeyPrefix)
	}
	if key == NewKey() {
		t.Fatal("NewKey returned the same key twice")
	}
	k.Add(KeyEntry{AppID: "app-c", SHA256: strings.ToUpper(HashKey(key))})
	if app, err := k.Lookup(key); err != nil || app != "app-c" {
		t.Fatalf("Lookup after Add = %q, %v", app, err)
	}
}

// writeKeys writes a keys file and gives it modification time mtime, so
// that reloads do not depend on the file system's timestamp granularity.
func writeKeys(tb testing.TB, path, content string, mtime time.Time) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		tb.Fatal(err)
	}
}

func keysJSON(tb testing.TB, entries ...KeyEntry) string {
	tb.Helper()
	b, err := json.Marshal(KeysFile{Keys: entries})
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func TestLoadKeyring(t *testing.T) {
	good := HashKey(keyA)
	tests := []struct {
		name    string
		content string
		missing bool  // no file at all
		lookup  error // Lookup(keyA) after a successful load
		wantErr string
	}{
		{name: "valid", content: `{"keys": [{"app_id": "app-a", "name": "ios", "sha256": "` + good + `"}]}`},
		{name: "revoked entry", content: `{"keys": [{"app_id": "app-a", "sha256": "` + good + `", "revoked": true}]}`, lookup: ErrRevokedKey},
		{name: "no keys", content: `{"keys": []}`, lookup: ErrUnknownKey},
		{name: "missing file", missing: true, wantErr: "read keys file"},
		{name: "empty file", content: ``, wantErr: "parse keys file"},
		{name: "bad JSON", content: `{"keys": [`, wantErr: "parse keys file"},
		{name: "wrong type", content: `{"keys": {"app_id": "a"}}`, wantErr: "parse keys file"},
		{name: "unknown top-level field", content: `{"keys": [], "version": 2}`, wantErr: `unknown field "version"`},
		{name: "unknown entry field (typo)", content: `{"keys": [{"app_id": "a", "sha_256": "` + good + `"}]}`, wantErr: `unknown field "sha_256"`},
		{name: "invalid entry", content: `{"keys": [{"app_id": "a", "sha256": "abc"}]}`, wantErr: "64 hex characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "keys.json")
			if !tt.missing {
				writeKeys(t, path, tt.content, time.Now())
			}
			k, err := LoadKeyring(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if !tt.missing && !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := k.Lookup(keyA); !errors.Is(err, tt.lookup) {
				t.Errorf("Lookup(keyA) err = %v, want %v", err, tt.lookup)
			}
		})
	}
}

func TestWatchKeysReloads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keys.json")
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		writeKeys(t, path, keysJSON(t, KeyEntry{AppID: "app-a", SHA256: HashKey(keyA)}), base)
		k, err := LoadKeyring(path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { WatchKeys(ctx, path, k, discardLogger()); close(done) }()
		synctest.Wait()

		// lookup runs after the watcher has had a few ticks to notice.
		lookup := func(key string) (string, error) {
			t.Helper()
			time.Sleep(5 * time.Second) // fake time: the watcher polls every second
			synctest.Wait()
			return k.Lookup(key)
		}

		// Revoke keyA and add keyB.
		writeKeys(t, path, keysJSON(t,
			KeyEntry{AppID: "app-a", SHA256: HashKey(keyA), Revoked: true},
			KeyEntry{AppID: "app-b", SHA256: HashKey(keyB)},
		), base.Add(time.Minute))
		if _, err := lookup(keyA); !errors.Is(err, ErrRevokedKey) {
			t.Fatalf("revoked in the file, Lookup err = %v, want ErrRevokedKey", err)
		}
		if app, err := k.Lookup(keyB); err != nil || app != "app-b" {
			t.Fatalf("added in the file, Lookup = %q, %v", app, err)
		}

		// A broken file keeps the keys loaded before it.
		writeKeys(t, path, `{"keys": [`, base.Add(2*time.Minute))
		if app, err := lookup(keyB); err != nil || app != "app-b" {
			t.Fatalf("after a broken file, Lookup = %q, %v; want the old keys", app, err)
		}
		if _, err := k.Lookup(keyA); !errors.Is(err, ErrRevokedKey) {
			t.Fatalf("after a broken file, keyA err = %v, want still revoked", err)
		}
		if n := k.ReloadErrors(); n != 1 {
			t.Fatalf("after a broken file, ReloadErrors = %d, want 1", n)
		}
		// So does an invalid one, and a deleted one.
		writeKeys(t, path, keysJSON(t, KeyEntry{AppID: "", SHA256: HashKey(keyA)}), base.Add(3*time.Minute))
		if _, err := lookup(keyB); err != nil {
			t.Fatalf("after an invalid file, keyB: %v", err)
		}
		if n := k.ReloadErrors(); n != 2 {
			t.Fatalf("after an invalid file, ReloadErrors = %d, want 2", n)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if _, err := lookup(keyB); err != nil {
			t.Fatalf("after the file was removed, keyB: %v", err)
		}

		// Fixing the file is picked up again.
		writeKeys(t, path, keysJSON(t, KeyEntry{AppID: "app-a", SHA256: HashKey(keyA)}), base.Add(4*time.Minute))
		if app, err := lookup(keyA); err != nil || app != "app-a" {
			t.Fatalf("after the fix, Lookup(keyA) = %q, %v", app, err)
		}
		if _, err := k.Lookup(keyB); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("after the fix, keyB err = %v, want ErrUnknownKey", err)
		}

		cancel()
		<-done
	})
}

func TestWatchKeysIgnoresUnchangedFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "keys.json")
		mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		writeKeys(t, path, keysJSON(t, KeyEntry{AppID: "app-a", SHA256: HashKey(keyA)}), mtime)
		k, err := LoadKeyring(path)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go WatchKeys(ctx, path, k, discardLogger())
		synctest.Wait()
		k.Add(KeyEntry{AppID: "app-b", SHA256: HashKey(keyB)}) // e.g. dev mode
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if _, err := k.Lookup(keyB); err != nil {
			t.Fatalf("an unchanged file was reloaded over an added key: %v", err)
		}
	})
}
