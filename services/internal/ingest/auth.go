package ingest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// Key errors, mapped to ERROR_CODE_UNAUTHENTICATED and ERROR_CODE_KEY_REVOKED.
var (
	ErrUnknownKey = errors.New("unknown ingest key")
	ErrRevokedKey = errors.New("ingest key revoked")
)

// KeyPrefix starts every ingest key, so leaked keys are easy to scan for.
const KeyPrefix = "cik_"

// KeyEntry is one line of the keys file. Only the SHA-256 of the key is
// stored: keys are 32 random bytes, so a plain hash cannot be brute-forced.
type KeyEntry struct {
	AppID   string `json:"app_id"`
	Name    string `json:"name,omitempty"`
	SHA256  string `json:"sha256"`
	Revoked bool   `json:"revoked,omitempty"`
}

// KeysFile is the JSON document read by -ingest.keys-file.
type KeysFile struct {
	Keys []KeyEntry `json:"keys"`
}

// Keyring maps key hashes to apps. It is safe for concurrent use.
type Keyring struct {
	mu   sync.RWMutex
	keys map[string]KeyEntry
}

// NewKeyring builds a keyring from entries, rejecting malformed ones.
func NewKeyring(entries []KeyEntry) (*Keyring, error) {
	k := &Keyring{keys: make(map[string]KeyEntry, len(entries))}
	for i, e := range entries {
		if e.AppID == "" {
			return nil, fmt.Errorf("key %d: app_id is empty", i)
		}
		if len(e.SHA256) != 64 {
			return nil, fmt.Errorf("key %d (app %s): sha256 must be 64 hex characters", i, e.AppID)
		}
		if _, err := hex.DecodeString(e.SHA256); err != nil {
			return nil, fmt.Errorf("key %d (app %s): sha256: %w", i, e.AppID, err)
		}
		e.SHA256 = strings.ToLower(e.SHA256)
		if prev, dup := k.keys[e.SHA256]; dup && prev.AppID != e.AppID {
			return nil, fmt.Errorf("key %d: the same key is bound to apps %s and %s", i, prev.AppID, e.AppID)
		}
		k.keys[e.SHA256] = e
	}
	return k, nil
}

// LoadKeyring reads a keys file.
func LoadKeyring(path string) (*Keyring, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read keys file: %w", err)
	}
	var f KeysFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("parse keys file %s: %w", path, err)
	}
	k, err := NewKeyring(f.Keys)
	if err != nil {
		return nil, fmt.Errorf("keys file %s: %w", path, err)
	}
	return k, nil
}

// Lookup returns the app bound to key.
func (k *Keyring) Lookup(key string) (string, error) {
	if key == "" {
		return "", ErrUnknownKey
	}
	k.mu.RLock()
	e, ok := k.keys[HashKey(key)]
	k.mu.RUnlock()
	switch {
	case !ok:
		return "", ErrUnknownKey
	case e.Revoked:
		return "", ErrRevokedKey
	}
	return e.AppID, nil
}

// Add binds a new key; used by dev mode and tests.
func (k *Keyring) Add(e KeyEntry) {
	k.mu.Lock()
	k.keys[strings.ToLower(e.SHA256)] = e
	k.mu.Unlock()
}

// HashKey returns the hex SHA-256 of key, as stored in the keys file.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// NewKey returns a fresh random ingest key.
func NewKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return KeyPrefix + hex.EncodeToString(b[:])
}

// WatchKeys re-reads the keys file when its modification time changes, until
// ctx ends. A file that fails to parse is logged and the old keys stay.
func WatchKeys(ctx context.Context, path string, k *Keyring, logger *slog.Logger) {
	var last time.Time
	if fi, err := os.Stat(path); err == nil {
		last = fi.ModTime()
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil || fi.ModTime().Equal(last) {
			continue
		}
		last = fi.ModTime()
		nk, err := LoadKeyring(path)
		if err != nil {
			logger.Error("keys file not reloaded", "err", err)
			continue
		}
		k.mu.Lock()
		k.keys = nk.keys
		k.mu.Unlock()
		logger.Info("keys file reloaded", "keys", len(nk.keys))
	}
}
