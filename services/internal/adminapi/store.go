package adminapi

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	"causality.dev/services/internal/ingest"
)

// Store errors; the service maps them to gRPC codes.
var (
	ErrInvalid  = errors.New("invalid argument")
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInUse    = errors.New("in use")
)

// Store keeps apps, ingest keys, rules and webhooks in three files:
//   - apps: protobuf JSON of ListAppsResponse;
//   - ingest keys: the collector's keys file (ingest.KeysFile, hashes only);
//   - rules and webhooks: protobuf JSON of RuleSet, mode 0600 (it holds the
//     webhook secrets), read by the detector.
//
// Every read re-reads the file, so that collectors sharing the files see
// each other's writes. Every write replaces the file atomically (temp file,
// fsync, rename) under a mutex and, across processes, an flock on
// FILE.lock, so concurrent read-modify-writes do not lose updates.
type Store struct {
	AppsFile, KeysFile, RulesFile string

	mu  sync.Mutex
	now func() time.Time
	// validateRule checks a rule on its own (rules.Validate, via
	// NewService); nil checks nothing beyond the cross-references.
	validateRule func(*adminv1.Rule) error
	// validateSet checks the whole RuleSet before it is written (optional).
	validateSet func(*adminv1.RuleSet) error
}

// NewStore returns a store over the three files; they need not exist yet.
func NewStore(appsFile, keysFile, rulesFile string) *Store {
	return &Store{AppsFile: appsFile, KeysFile: keysFile, RulesFile: rulesFile, now: time.Now}
}

var appIDPattern = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// ValidAppID says whether id can name an app: 1-64 of [a-z0-9._-].
func ValidAppID(id string) bool { return appIDPattern.MatchString(id) }

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// ---- apps

// Apps returns every app, sorted by id.
func (s *Store) Apps() ([]*adminv1.App, error) {
	var f adminv1.ListAppsResponse
	if err := readProto(s.AppsFile, &f); err != nil {
		return nil, err
	}
	slices.SortFunc(f.Apps, func(a, b *adminv1.App) int { return strings.Compare(a.GetId(), b.GetId()) })
	return f.Apps, nil
}

// CreateApp adds an app; its id must be new.
func (s *Store) CreateApp(app *adminv1.App) (*adminv1.App, error) {
	if app == nil {
		return nil, invalid("app is required")
	}
	if !ValidAppID(app.GetId()) {
		return nil, invalid("app id %q: must be 1-64 characters of a-z 0-9 . _ -", app.GetId())
	}
	if len(app.GetName()) > 200 {
		return nil, invalid("app name: longer than 200 bytes")
	}
	var out *adminv1.App
	err := s.update(s.AppsFile, func() error {
		var f adminv1.ListAppsResponse
		if err := readProto(s.AppsFile, &f); err != nil {
			return err
		}
		for _, a := range f.Apps {
			if a.GetId() == app.GetId() {
				return fmt.Errorf("app %q: %w", app.GetId(), ErrExists)
			}
		}
		out = &adminv1.App{Id: app.GetId(), Name: app.GetName(), CreateTime: timestamppb.New(s.now())}
		f.Apps = append(f.Apps, out)
		return writeProto(s.AppsFile, &f)
	})
	return out, err
}

// EnsureApp creates the app id unless it exists (dev mode's app).
func (s *Store) EnsureApp(id, name string) error {
	_, err := s.CreateApp(&adminv1.App{Id: id, Name: name})
	if errors.Is(err, ErrExists) {
		return nil
	}
	return err
}

func (s *Store) appExists(id string) (bool, error) {
	apps, err := s.Apps()
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(apps, func(a *adminv1.App) bool { return a.GetId() == id }), nil
}

// ---- ingest keys

// keyIDLen is how many hex characters of the key's SHA-256 name it.
const keyIDLen = 12

func keyInfo(e ingest.KeyEntry) *adminv1.IngestKey {
	k := &adminv1.IngestKey{Id: e.SHA256[:keyIDLen], AppId: e.AppID, Name: e.Name, Revoked: e.Revoked}
	if e.CreateTime != nil {
		k.CreateTime = timestamppb.New(*e.CreateTime)
	}
	if e.RevokeTime != nil {
		k.RevokeTime = timestamppb.New(*e.RevokeTime)
	}
	return k
}

func (s *Store) readKeys() (ingest.KeysFile, error) {
	var kf ingest.KeysFile
	b, err := os.ReadFile(s.KeysFile)
	if errors.Is(err, os.ErrNotExist) {
		return kf, nil
	}
	if err != nil {
		return kf, fmt.Errorf("read keys file: %w", err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return kf, nil
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		return kf, fmt.Errorf("keys file %s: %w", s.KeysFile, err)
	}
	for i, e := range kf.Keys {
		if len(e.SHA256) != 64 {
			return kf, fmt.Errorf("keys file %s: key %d: sha256 must be 64 hex characters", s.KeysFile, i)
		}
	}
	return kf, nil
}

// IngestKeys returns the keys of app (every app when empty), without
// secrets: only hashes are stored.
func (s *Store) IngestKeys(app string) ([]*adminv1.IngestKey, error) {
	kf, err := s.readKeys()
	if err != nil {
		return nil, err
	}
	var out []*adminv1.IngestKey
	for _, e := range kf.Keys {
		if app == "" || e.AppID == app {
			out = append(out, keyInfo(e))
		}
	}
	return out, nil
}

// CreateIngestKey makes a key for an existing app and stores its hash. The
// key is returned, this once.
func (s *Store) CreateIngestKey(app, name string) (*adminv1.IngestKey, string, error) {
	if !ValidAppID(app) {
		return nil, "", invalid("app id %q: must be 1-64 characters of a-z 0-9 . _ -", app)
	}
	if len(name) > 200 {
		return nil, "", invalid("key name: longer than 200 bytes")
	}
	ok, err := s.appExists(app)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "", fmt.Errorf("app %q: %w (create it first)", app, ErrNotFound)
	}
	var info *adminv1.IngestKey
	key := ingest.NewKey()
	err = s.update(s.KeysFile, func() error {
		kf, err := s.readKeys()
		if err != nil {
			return err
		}
		now := s.now().UTC()
		e := ingest.KeyEntry{AppID: app, Name: name, SHA256: ingest.HashKey(key), CreateTime: &now}
		kf.Keys = append(kf.Keys, e)
		info = keyInfo(e)
		return writeJSON(s.KeysFile, kf)
	})
	if err != nil {
		return nil, "", err
	}
	return info, key, nil
}

// RevokeIngestKey marks the key with id (its first 12 hex characters of
// SHA-256, or all 64) revoked. Revoking twice keeps the first time.
func (s *Store) RevokeIngestKey(id string) (*adminv1.IngestKey, error) {
	id = strings.ToLower(id)
	if len(id) != keyIDLen && len(id) != 64 {
		return nil, invalid("key id %q: must be the %d hex characters ListIngestKeys shows (or the full sha256)", id, keyIDLen)
	}
	if _, err := hex.DecodeString(id); err != nil {
		return nil, invalid("key id %q: not hex", id)
	}
	var info *adminv1.IngestKey
	err := s.update(s.KeysFile, func() error {
		kf, err := s.readKeys()
		if err != nil {
			return err
		}
		hit := -1
		for i, e := range kf.Keys {
			if strings.HasPrefix(strings.ToLower(e.SHA256), id) {
				if hit >= 0 && kf.Keys[hit].SHA256 != e.SHA256 {
					return invalid("key id %q names several keys: give the full sha256", id)
				}
				hit = i
			}
		}
		if hit < 0 {
			return fmt.Errorf("ingest key %q: %w", id, ErrNotFound)
		}
		e := &kf.Keys[hit]
		if !e.Revoked {
			now := s.now().UTC()
			e.Revoked, e.RevokeTime = true, &now
			if err := writeJSON(s.KeysFile, kf); err != nil {
				return err
			}
		}
		info = keyInfo(*e)
		return nil
	})
	return info, err
}

// ---- rules and webhooks

// RuleSet returns the stored rules and webhooks, with the secrets.
func (s *Store) RuleSet() (*adminv1.RuleSet, error) {
	var rs adminv1.RuleSet
	if err := readProto(s.RulesFile, &rs); err != nil {
		return nil, err
	}
	return &rs, nil
}

// Rules returns the rules of app (every rule when empty).
func (s *Store) Rules(app string) ([]*adminv1.Rule, error) {
	rs, err := s.RuleSet()
	if err != nil {
		return nil, err
	}
	var out []*adminv1.Rule
	for _, r := range rs.GetRules() {
		if app == "" || r.GetAppId() == app {
			out = append(out, r)
		}
	}
	return out, nil
}

// checkRule validates a rule on its own (rules.Validate) and against the
// stored apps and webhooks.
func (s *Store) checkRule(r *adminv1.Rule, rs *adminv1.RuleSet) error {
	if r == nil {
		return invalid("rule is required")
	}
	if s.validateRule != nil {
		if err := s.validateRule(r); err != nil {
			return fmt.Errorf("%w: rule: %v", ErrInvalid, err)
		}
	}
	if app := r.GetAppId(); app != "" {
		ok, err := s.appExists(app)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("rule app %q: %w", app, ErrNotFound)
		}
	}
	for i, a := range r.GetActions() {
		if id := a.GetWebhookId(); id != "" && !slices.ContainsFunc(rs.GetWebhooks(), func(w *adminv1.Webhook) bool { return w.GetId() == id }) {
			return fmt.Errorf("rule action %d: webhook %q: %w", i, id, ErrNotFound)
		}
	}
	return nil
}

// CreateRule stores a new rule under a fresh id.
func (s *Store) CreateRule(r *adminv1.Rule) (*adminv1.Rule, error) {
	if r.GetId() != "" {
		return nil, invalid("rule id is assigned by CreateRule; leave it empty (UpdateRule replaces a rule)")
	}
	var out *adminv1.Rule
	err := s.update(s.RulesFile, func() error {
		rs, err := s.RuleSet()
		if err != nil {
			return err
		}
		if err := s.checkRule(r, rs); err != nil {
			return err
		}
		out = proto.CloneOf(r)
		out.Id = newID("rule_")
		out.UpdateTime = timestamppb.New(s.now())
		rs.Rules = append(rs.Rules, out)
		return s.writeRules(rs)
	})
	return out, err
}

// UpdateRule replaces the rule with r's id.
func (s *Store) UpdateRule(r *adminv1.Rule) (*adminv1.Rule, error) {
	if r.GetId() == "" {
		return nil, invalid("rule id is required")
	}
	var out *adminv1.Rule
	err := s.update(s.RulesFile, func() error {
		rs, err := s.RuleSet()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(rs.Rules, func(x *adminv1.Rule) bool { return x.GetId() == r.GetId() })
		if i < 0 {
			return fmt.Errorf("rule %q: %w", r.GetId(), ErrNotFound)
		}
		if err := s.checkRule(r, rs); err != nil {
			return err
		}
		out = proto.CloneOf(r)
		out.UpdateTime = timestamppb.New(s.now())
		rs.Rules[i] = out
		return s.writeRules(rs)
	})
	return out, err
}

// DeleteRule removes the rule with id.
func (s *Store) DeleteRule(id string) error {
	if id == "" {
		return invalid("rule id is required")
	}
	return s.update(s.RulesFile, func() error {
		rs, err := s.RuleSet()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(rs.Rules, func(x *adminv1.Rule) bool { return x.GetId() == id })
		if i < 0 {
			return fmt.Errorf("rule %q: %w", id, ErrNotFound)
		}
		rs.Rules = slices.Delete(rs.Rules, i, i+1)
		return s.writeRules(rs)
	})
}

// Webhooks returns the webhooks without their secrets.
func (s *Store) Webhooks() ([]*adminv1.Webhook, error) {
	rs, err := s.RuleSet()
	if err != nil {
		return nil, err
	}
	out := make([]*adminv1.Webhook, 0, len(rs.GetWebhooks()))
	for _, w := range rs.GetWebhooks() {
		w = proto.CloneOf(w)
		w.Secret = ""
		out = append(out, w)
	}
	return out, nil
}

// minSecret is the shortest signing secret accepted (the webhook sender's
// minimum).
const minSecret = 16

// CreateWebhook stores a webhook under a fresh id, generating its secret
// when empty, and returns it with the secret, this once.
func (s *Store) CreateWebhook(w *adminv1.Webhook) (*adminv1.Webhook, error) {
	if w == nil {
		return nil, invalid("webhook is required")
	}
	if w.GetId() != "" {
		return nil, invalid("webhook id is assigned by CreateWebhook; leave it empty")
	}
	u, err := url.Parse(w.GetUrl())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, invalid("webhook url %q: must be an absolute http or https URL", w.GetUrl())
	}
	if sec := w.GetSecret(); sec != "" && (len(sec) < minSecret || strings.TrimSpace(sec) != sec) {
		return nil, invalid("webhook secret: at least %d bytes, no surrounding spaces (or leave it empty to have one generated)", minSecret)
	}
	if len(w.GetDescription()) > 1000 {
		return nil, invalid("webhook description: longer than 1000 bytes")
	}
	var out *adminv1.Webhook
	err = s.update(s.RulesFile, func() error {
		rs, err := s.RuleSet()
		if err != nil {
			return err
		}
		out = proto.CloneOf(w)
		out.Id = newID("wh_")
		out.CreateTime = timestamppb.New(s.now())
		if out.Secret == "" {
			var b [32]byte
			_, _ = rand.Read(b[:])
			out.Secret = "whsec_" + hex.EncodeToString(b[:])
		}
		rs.Webhooks = append(rs.Webhooks, out)
		return s.writeRules(rs)
	})
	return out, err
}

// DeleteWebhook removes a webhook no rule uses.
func (s *Store) DeleteWebhook(id string) error {
	if id == "" {
		return invalid("webhook id is required")
	}
	return s.update(s.RulesFile, func() error {
		rs, err := s.RuleSet()
		if err != nil {
			return err
		}
		i := slices.IndexFunc(rs.Webhooks, func(x *adminv1.Webhook) bool { return x.GetId() == id })
		if i < 0 {
			return fmt.Errorf("webhook %q: %w", id, ErrNotFound)
		}
		var users []string
		for _, r := range rs.GetRules() {
			for _, a := range r.GetActions() {
				if a.GetWebhookId() == id {
					users = append(users, r.GetId())
					break
				}
			}
		}
		if len(users) > 0 {
			return fmt.Errorf("webhook %q: %w by rules %s (delete or update them first)", id, ErrInUse, strings.Join(users, ", "))
		}
		rs.Webhooks = slices.Delete(rs.Webhooks, i, i+1)
		return s.writeRules(rs)
	})
}

// ---- files

// newID returns prefix and 16 random lowercase base32 characters.
func newID(prefix string) string {
	return prefix + strings.ToLower(rand.Text()[:16])
}

// update runs fn, which reads and rewrites path, under the store's mutex
// and the file lock of path.
func (s *Store) update(path string, fn func() error) error {
	if path == "" {
		return errors.New("store file not configured")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := lockFile(path + ".lock")
	if err != nil {
		return fmt.Errorf("lock %s: %w", path, err)
	}
	defer unlock()
	return fn()
}

// readProto reads protobuf JSON from path into m; a missing or empty file
// leaves m empty.
func readProto(path string, m proto.Message) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		return fmt.Errorf("parse %s: %w", path, err)
	}
	return nil
}

// writeRules writes the rule set after checking it as a whole, so that the
// detector never reads a set it cannot load.
func (s *Store) writeRules(rs *adminv1.RuleSet) error {
	if s.validateSet != nil {
		if err := s.validateSet(rs); err != nil {
			return fmt.Errorf("%w: the rule set would not load: %v", ErrInvalid, err)
		}
	}
	return writeProto(s.RulesFile, rs)
}

func writeProto(path string, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// writeFileAtomic replaces path with b (mode 0600): readers see the old or
// the new content, never a part.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // the rename itself survives a crash
		d.Close()
	}
	return nil
}
