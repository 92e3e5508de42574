package adminapi

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/ingest"
)

// fakeRules stands in for package rules: a rule needs a name; it matches
// events of its app.
var fakeRules = Rules{
	Validate: func(r *adminv1.Rule) error {
		if r.GetName() == "" {
			return errors.New("name is required")
		}
		return nil
	},
	Explain: func(r *adminv1.Rule, ev *eventv1.Event) (bool, []string, error) {
		ok := r.GetAppId() == "" || r.GetAppId() == ev.GetAppId()
		return ok, []string{"app_id " + ev.GetAppId()}, nil
	},
}

type testStore struct {
	*Store
	dir string
}

func newTestStore(tb testing.TB) *testStore {
	tb.Helper()
	dir := tb.TempDir()
	s := NewStore(filepath.Join(dir, "apps.json"), filepath.Join(dir, "keys.json"), filepath.Join(dir, "rules.json"))
	s.validateRule = fakeRules.Validate
	s.now = func() time.Time { return time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC) }
	return &testStore{Store: s, dir: dir}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func mustApp(tb testing.TB, s *Store, id string) {
	tb.Helper()
	if _, err := s.CreateApp(&adminv1.App{Id: id, Name: "App " + id}); err != nil {
		tb.Fatalf("CreateApp(%s): %v", id, err)
	}
}

func eventRule(app, name string) *adminv1.Rule {
	return &adminv1.Rule{Name: name, AppId: app, Condition: &adminv1.Rule_Event{Event: &adminv1.EventCondition{EventTypes: []string{"purchase"}}}}
}

func TestCreateAppValidation(t *testing.T) {
	s := newTestStore(t)
	mustApp(t, s.Store, "shop")
	tests := []struct {
		name string
		app  *adminv1.App
		want error
	}{
		{"nil", nil, ErrInvalid},
		{"empty id", &adminv1.App{}, ErrInvalid},
		{"upper case", &adminv1.App{Id: "Shop"}, ErrInvalid},
		{"space", &adminv1.App{Id: "my app"}, ErrInvalid},
		{"slash", &adminv1.App{Id: "a/b"}, ErrInvalid},
		{"65 characters", &adminv1.App{Id: strings.Repeat("a", 65)}, ErrInvalid},
		{"long name", &adminv1.App{Id: "ok", Name: strings.Repeat("n", 201)}, ErrInvalid},
		{"duplicate", &adminv1.App{Id: "shop"}, ErrExists},
		{"64 characters", &adminv1.App{Id: strings.Repeat("a", 64)}, nil},
		{"all allowed characters", &adminv1.App{Id: "a.b_c-0"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.CreateApp(tt.app)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("CreateApp(%v) = %v, want %v", tt.app, err, tt.want)
			}
		})
	}
	apps, err := s.Apps()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range apps {
		ids = append(ids, a.GetId())
		if a.GetCreateTime() == nil {
			t.Errorf("app %s without create_time", a.GetId())
		}
	}
	if got := strings.Join(ids, ","); got != "a.b_c-0,"+strings.Repeat("a", 64)+",shop" {
		t.Fatalf("apps %s", got)
	}
}

func TestIngestKeys(t *testing.T) {
	s := newTestStore(t)
	if _, _, err := s.CreateIngestKey("ghost", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key for an unknown app: %v, want ErrNotFound", err)
	}
	if _, _, err := s.CreateIngestKey("Bad App", "x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("key for a malformed app id: %v, want ErrInvalid", err)
	}
	mustApp(t, s.Store, "shop")
	mustApp(t, s.Store, "blog")
	info, key, err := s.CreateIngestKey("shop", "ios")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, ingest.KeyPrefix) || info.GetId() != ingest.HashKey(key)[:12] || info.GetAppId() != "shop" || info.GetName() != "ios" || info.GetCreateTime() == nil || info.GetRevoked() {
		t.Fatalf("CreateIngestKey = %v, %q", info, key)
	}
	if _, _, err := s.CreateIngestKey("blog", ""); err != nil {
		t.Fatal(err)
	}

	// The file holds the hash only, and the collector can load it.
	b, err := os.ReadFile(s.KeysFile)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), key) {
		t.Fatal("the keys file holds the key itself")
	}
	k, err := ingest.LoadKeyring(s.KeysFile)
	if err != nil {
		t.Fatalf("the collector cannot load the keys file: %v", err)
	}
	if app, err := k.Lookup(key); err != nil || app != "shop" {
		t.Fatalf("Lookup = %q, %v", app, err)
	}

	all, err := s.IngestKeys("")
	if err != nil || len(all) != 2 {
		t.Fatalf("IngestKeys(all) = %v, %v", all, err)
	}
	shop, err := s.IngestKeys("shop")
	if err != nil || len(shop) != 1 || shop[0].GetId() != info.GetId() {
		t.Fatalf("IngestKeys(shop) = %v, %v", shop, err)
	}

	for _, bad := range []string{"", "xyz", strings.Repeat("z", 12), info.GetId()[:11]} {
		if _, err := s.RevokeIngestKey(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("RevokeIngestKey(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := s.RevokeIngestKey("000000000000"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke an unknown key: %v, want ErrNotFound", err)
	}
	r, err := s.RevokeIngestKey(strings.ToUpper(info.GetId()))
	if err != nil || !r.GetRevoked() || r.GetRevokeTime() == nil {
		t.Fatalf("RevokeIngestKey = %v, %v", r, err)
	}
	s.now = func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) }
	r2, err := s.RevokeIngestKey(ingest.HashKey(key)) // the full hash works too; twice is fine
	if err != nil || !r2.GetRevokeTime().AsTime().Equal(r.GetRevokeTime().AsTime()) {
		t.Fatalf("second revoke = %v, %v; want the first revoke time kept", r2, err)
	}
	k, err = ingest.LoadKeyring(s.KeysFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Lookup(key); !errors.Is(err, ingest.ErrRevokedKey) {
		t.Fatalf("after revoke, Lookup err = %v", err)
	}
}

func TestKeysFileOldFormatAndCorruption(t *testing.T) {
	s := newTestStore(t)
	// A keys file written by `causality keys` (no times) is read as is.
	old := `{"keys": [{"app_id": "legacy", "sha256": "` + ingest.HashKey("cik_x") + `"}]}`
	if err := os.WriteFile(s.KeysFile, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := s.IngestKeys("")
	if err != nil || len(keys) != 1 || keys[0].GetAppId() != "legacy" || keys[0].GetCreateTime() != nil {
		t.Fatalf("IngestKeys on an old file = %v, %v", keys, err)
	}
	mustApp(t, s.Store, "shop")
	if _, _, err := s.CreateIngestKey("shop", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := ingest.LoadKeyring(s.KeysFile); err != nil {
		t.Fatalf("file with both formats: %v", err)
	}
	// A broken file is reported, never overwritten.
	if err := os.WriteFile(s.KeysFile, []byte(`{"keys": [`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CreateIngestKey("shop", ""); err == nil {
		t.Fatal("CreateIngestKey over a broken keys file succeeded")
	}
	if b, _ := os.ReadFile(s.KeysFile); string(b) != `{"keys": [` {
		t.Fatalf("broken keys file rewritten: %s", b)
	}
}

func TestRulesAndWebhooks(t *testing.T) {
	s := newTestStore(t)
	mustApp(t, s.Store, "shop")
	wh, err := s.CreateWebhook(&adminv1.Webhook{Url: "https://example.com/hook", Description: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	if wh.GetId() == "" || !strings.HasPrefix(wh.GetSecret(), "whsec_") || wh.GetCreateTime() == nil {
		t.Fatalf("CreateWebhook = %v", wh)
	}
	given, err := s.CreateWebhook(&adminv1.Webhook{Url: "http://localhost:9000/x", Secret: "0123456789abcdef"})
	if err != nil || given.GetSecret() != "0123456789abcdef" {
		t.Fatalf("CreateWebhook with a secret = %v, %v", given, err)
	}
	for name, w := range map[string]*adminv1.Webhook{
		"nil":          nil,
		"no url":       {},
		"relative url": {Url: "/hook"},
		"ftp":          {Url: "ftp://example.com/"},
		"no host":      {Url: "http:///x"},
		"short secret": {Url: "https://example.com", Secret: "short"},
		"given id":     {Id: "wh_mine", Url: "https://example.com"},
	} {
		if _, err := s.CreateWebhook(w); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateWebhook(%s) = %v, want ErrInvalid", name, err)
		}
	}
	list, err := s.Webhooks()
	if err != nil || len(list) != 2 {
		t.Fatalf("Webhooks = %v, %v", list, err)
	}
	for _, w := range list {
		if w.GetSecret() != "" {
			t.Fatalf("Webhooks lists a secret: %v", w)
		}
	}

	withHook := eventRule("shop", "big purchase")
	withHook.Actions = []*adminv1.Action{{Action: &adminv1.Action_WebhookId{WebhookId: wh.GetId()}}}
	r, err := s.CreateRule(withHook)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetId() == "" || r.GetUpdateTime() == nil || withHook.GetId() != "" {
		t.Fatalf("CreateRule = %v (input changed: %v)", r, withHook)
	}
	noHook := eventRule("shop", "x")
	noHook.Actions = []*adminv1.Action{{Action: &adminv1.Action_WebhookId{WebhookId: "wh_nope"}}}
	badID := eventRule("", "x")
	badID.Id = "rule_mine"
	for name, tt := range map[string]struct {
		r    *adminv1.Rule
		want error
	}{
		"nil":             {nil, ErrInvalid},
		"invalid rule":    {eventRule("shop", ""), ErrInvalid},
		"unknown app":     {eventRule("ghost", "x"), ErrNotFound},
		"unknown webhook": {noHook, ErrNotFound},
		"id given":        {badID, ErrInvalid},
	} {
		if _, err := s.CreateRule(tt.r); !errors.Is(err, tt.want) {
			t.Errorf("CreateRule(%s) = %v, want %v", name, err, tt.want)
		}
	}
	if _, err := s.CreateRule(eventRule("", "every app")); err != nil {
		t.Fatal(err)
	}

	if got, err := s.Rules("shop"); err != nil || len(got) != 1 {
		t.Fatalf("Rules(shop) = %v, %v", got, err)
	}
	if got, err := s.Rules(""); err != nil || len(got) != 2 {
		t.Fatalf("Rules() = %v, %v", got, err)
	}

	upd := eventRule("shop", "renamed")
	if _, err := s.UpdateRule(upd); !errors.Is(err, ErrInvalid) {
		t.Fatalf("UpdateRule without id = %v", err)
	}
	upd.Id = "rule_nope"
	if _, err := s.UpdateRule(upd); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateRule unknown id = %v", err)
	}
	upd.Id = r.GetId()
	upd.Name = ""
	if _, err := s.UpdateRule(upd); !errors.Is(err, ErrInvalid) {
		t.Fatalf("UpdateRule invalid = %v", err)
	}
	upd.Name = "renamed"
	if got, err := s.UpdateRule(upd); err != nil || got.GetName() != "renamed" || got.GetId() != r.GetId() {
		t.Fatalf("UpdateRule = %v, %v", got, err)
	}

	// The webhook is free once no rule uses it.
	upd.Actions = []*adminv1.Action{{Action: &adminv1.Action_WebhookId{WebhookId: wh.GetId()}}}
	if _, err := s.UpdateRule(upd); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWebhook(wh.GetId()); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), r.GetId()) {
		t.Fatalf("DeleteWebhook in use = %v", err)
	}
	if err := s.DeleteWebhook("wh_nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteWebhook unknown = %v", err)
	}
	if err := s.DeleteRule(""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("DeleteRule empty = %v", err)
	}
	if err := s.DeleteRule("rule_nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeleteRule unknown = %v", err)
	}
	if err := s.DeleteRule(r.GetId()); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteWebhook(wh.GetId()); err != nil {
		t.Fatal(err)
	}

	// The rules file is a RuleSet, mode 0600, with the remaining secret.
	fi, err := os.Stat(s.RulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("rules file mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(s.RulesFile)
	var rs adminv1.RuleSet
	if err := protojson.Unmarshal(b, &rs); err != nil {
		t.Fatalf("rules file is not a RuleSet: %v", err)
	}
	if len(rs.GetRules()) != 1 || len(rs.GetWebhooks()) != 1 || rs.GetWebhooks()[0].GetSecret() != "0123456789abcdef" {
		t.Fatalf("rules file %v", &rs)
	}
}

func TestStoreConcurrentWritersLoseNothing(t *testing.T) {
	s := newTestStore(t)
	// A second store over the same files: another collector.
	s2 := NewStore(s.AppsFile, s.KeysFile, s.RulesFile)
	var wg sync.WaitGroup
	const n = 20
	errs := make(chan error, 2*n)
	for i := range n {
		for j, st := range []*Store{s.Store, s2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := st.CreateApp(&adminv1.App{Id: "app-" + string(rune('a'+j)) + "-" + string(rune('a'+i))})
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	apps, err := s2.Apps()
	if err != nil || len(apps) != 2*n {
		t.Fatalf("%d apps after %d concurrent creates from two stores (err %v)", len(apps), 2*n, err)
	}
	// No temp files are left behind.
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Fatalf("left behind: %s", e.Name())
		}
	}
}

func TestWriteFileAtomicKeepsOldOnFailure(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	if err := writeFileAtomic(path, []byte("old")); err != nil {
		t.Fatal(err)
	}
	// Writing into a directory that vanished fails and leaves nothing.
	if err := writeFileAtomic(filepath.Join(dir, "gone", "f.json"), []byte("new")); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("file = %q", b)
	}
	// A read-only directory: the temp file cannot be created; the old file stays.
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		if err := writeFileAtomic(path, []byte("new")); err == nil {
			t.Fatal("write into a read-only directory succeeded")
		}
		if b, _ := os.ReadFile(path); string(b) != "old" {
			t.Fatalf("file = %q", b)
		}
	}
}

func TestReadersSeeOtherWriters(t *testing.T) {
	s := newTestStore(t)
	s2 := NewStore(s.AppsFile, s.KeysFile, s.RulesFile)
	mustApp(t, s2, "from-other")
	apps, err := s.Apps()
	if err != nil || len(apps) != 1 || apps[0].GetId() != "from-other" {
		t.Fatalf("Apps = %v, %v", apps, err)
	}
	// A broken apps file is an error, not an empty list.
	if err := os.WriteFile(s.AppsFile, []byte("{nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apps(); err == nil {
		t.Fatal("Apps over a broken file succeeded")
	}
}

func TestRuleSetCheckedBeforeWrite(t *testing.T) {
	s := newTestStore(t)
	s.validateSet = func(rs *adminv1.RuleSet) error {
		if len(rs.GetRules()) > 1 {
			return errors.New("at most one rule")
		}
		return nil
	}
	if _, err := s.CreateRule(eventRule("", "first")); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(s.RulesFile)
	if _, err := s.CreateRule(eventRule("", "second")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "at most one rule") {
		t.Fatalf("CreateRule over the set check = %v, want ErrInvalid", err)
	}
	if after, _ := os.ReadFile(s.RulesFile); string(after) != string(before) {
		t.Fatal("a refused rule set was written")
	}
}
