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
	"sync/atomic"
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
	// Set by the admin API; older files have neither.
	CreateTime *time.Time `json:"create_time,omitempty"`
	RevokeTime *time.Time `json:"revoke_time,omitempty"`
}

// KeysFile is the JSON document read by -ingest.keys-file.
type KeysFile struct {
	Keys []KeyEntry `json:"keys"`
}

// Keyring maps key hashes to apps. It is safe for concurrent use.
//
// Live streams re-check their key when the keyring changes: every change
// bumps gen (an atomic load per batch tells a stream whether to look) and
// closes changed (idle streams select on it), so a revoked or deleted key
// is refused within the reload interval even on an open connection.
type Keyring struct {
	mu      sync.RWMutex
	keys    map[string]KeyEntry
	changed chan struct{} // closed and replaced on every change
	gen     atomic.Uint64
	// reloadErrors counts reloads of the keys file that failed (the old
	// keys stayed).
	reloadErrors atomic.Uint64
}

// ReloadErrors is how many reloads of the keys file failed.
func (k *Keyring) ReloadErrors() uint64 { return k.reloadErrors.Load() }

// NewKeyring builds a keyring from entries, rejecting malformed ones.
func NewKeyring(entries []KeyEntry) (*Keyring, error) {
	k := &Keyring{keys: make(map[string]KeyEntry, len(entries)), changed: make(chan struct{})}
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
	return k.lookupHash(HashKey(key))
}

// lookupHash is Lookup by the key's hex SHA-256.
func (k *Keyring) lookupHash(sum string) (string, error) {
	k.mu.RLock()
	e, ok := k.keys[sum]
	k.mu.RUnlock()
	switch {
	case !ok:
		return "", ErrUnknownKey
	case e.Revoked:
		return "", ErrRevokedKey
	}
	return e.AppID, nil
}

// Add binds a new key, or replaces the entry with its hash (revoking it
// when e.Revoked); used by dev mode and tests.
func (k *Keyring) Add(e KeyEntry) {
	k.mu.Lock()
	k.keys[strings.ToLower(e.SHA256)] = e
	k.notifyLocked()
	k.mu.Unlock()
}

// replace swaps in the entries of a reloaded keys file.
func (k *Keyring) replace(keys map[string]KeyEntry) {
	k.mu.Lock()
	k.keys = keys
	k.notifyLocked()
	k.mu.Unlock()
}

// notifyLocked tells the streams the keys changed; k.mu is held.
func (k *Keyring) notifyLocked() {
	k.gen.Add(1)
	close(k.changed)
	k.changed = make(chan struct{})
}

// watch returns the keyring's generation and a channel closed at the next
// change after it.
func (k *Keyring) watch() (uint64, <-chan struct{}) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.gen.Load(), k.changed
}

// generation changes whenever the keys do.
func (k *Keyring) generation() uint64 { return k.gen.Load() }

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

// KeysReloadInterval is how often WatchKeys looks at the keys file: the
// longest a revoked key keeps working, on open connections too.
const KeysReloadInterval = time.Second

// WatchKeys re-reads the keys file when it changes (modification time, size
// or, after an atomic rename, the file itself), until ctx ends. A file that
// fails to parse is logged and the old keys stay. Streams using a key that
// the new file revokes or lacks get ERROR_CODE_KEY_REVOKED and are closed.
func WatchKeys(ctx context.Context, path string, k *Keyring, logger *slog.Logger) {
	last, _ := os.Stat(path)
	t := time.NewTicker(KeysReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil || (last != nil && fi.ModTime().Equal(last.ModTime()) && fi.Size() == last.Size() && os.SameFile(fi, last)) {
			continue
		}
		last = fi
		nk, err := LoadKeyring(path)
		if err != nil {
			k.reloadErrors.Add(1)
			logger.Error("keys file not reloaded", "err", err)
			continue
		}
		k.replace(nk.keys)
		logger.Info("keys file reloaded", "keys", len(nk.keys))
	}
}
