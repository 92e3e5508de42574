package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/services/internal/adminapi"
	"causality.dev/services/internal/kafkatest"
)

const e2eAdminToken = "cat_e2e_admin_token_0123456789"

// adminCollector is a collector with the admin API on, over files in a
// temporary directory.
type adminCollector struct {
	*collector
	tokenFile, rulesFile, appsFile string
}

func startAdminCollector(t *testing.T) *adminCollector {
	t.Helper()
	dir := t.TempDir()
	a := &adminCollector{
		tokenFile: filepath.Join(dir, "admin-tokens"),
		rulesFile: filepath.Join(dir, "rules.json"),
		appsFile:  filepath.Join(dir, "apps.json"),
	}
	if err := os.WriteFile(a.tokenFile, []byte("# e2e\n"+e2eAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.collector = startCollectorOn(t, kafkatest.Config(t), writeKeys(t, "seed-app"),
		"-adminapi.tokens-file="+a.tokenFile, "-adminapi.rules-file="+a.rulesFile, "-adminapi.apps-file="+a.appsFile)
	return a
}

// cli runs `causality admin` in-process against the collector; it returns
// stdout and the error of run.
func (a *adminCollector) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	full := append([]string{"admin", "-addr", a.GRPC, "-token-file", a.tokenFile}, args...)
	err := run(t.Context(), full, &stdout, &stderr)
	return stdout.String(), err
}

// cliJSON runs the CLI and decodes its JSON output as M.
func cliJSON[M any, PM interface {
	*M
	proto.Message
}](t *testing.T, a *adminCollector, args ...string) PM {
	t.Helper()
	out, err := a.cli(t, args...)
	if err != nil {
		t.Fatalf("causality admin %s: %v", strings.Join(args, " "), err)
	}
	m := PM(new(M))
	if err := protojson.Unmarshal([]byte(out), m); err != nil {
		t.Fatalf("causality admin %s printed %q: %v", strings.Join(args, " "), out, err)
	}
	return m
}

// TestAdminEndToEnd: an app and a key made with `causality admin` work on a
// live TCP connection; revoking the key with the CLI closes that connection
// with KEY_REVOKED and refuses new ones.
func TestAdminEndToEnd(t *testing.T) {
	a := startAdminCollector(t)

	app := cliJSON[adminv1.CreateAppResponse](t, a, "apps", "create", "shop", "-name", "The Shop")
	if app.GetApp().GetId() != "shop" || app.GetApp().GetName() != "The Shop" {
		t.Fatalf("apps create: %v", app)
	}
	key := cliJSON[adminv1.CreateIngestKeyResponse](t, a, "keys", "create", "-app", "shop", "-name", "e2e")
	if !strings.HasPrefix(key.GetSecret(), "cik_") || key.GetKey().GetId() == "" {
		t.Fatalf("keys create: %v", key)
	}
	list := cliJSON[adminv1.ListIngestKeysResponse](t, a, "keys", "list", "-app", "shop")
	if len(list.GetKeys()) != 1 || list.GetKeys()[0].GetId() != key.GetKey().GetId() {
		t.Fatalf("keys list: %v", list)
	}
	if out, _ := a.cli(t, "keys", "list"); strings.Contains(out, key.GetSecret()) {
		t.Fatal("keys list prints the key")
	}

	// The collector picks the new key up from the file within its reload
	// interval: retry Hello until it is welcome.
	var conn *frameConn
	deadline := time.Now().Add(waitLimit)
	for conn == nil {
		c := dialFrames(t, a.TCP)
		if err := c.send(helloFrame(key.GetSecret())); err != nil {
			t.Fatal(err)
		}
		m, err := c.recv()
		if err != nil {
			t.Fatalf("waiting for Welcome: %v", err)
		}
		switch {
		case m.GetWelcome().GetAppId() == "shop":
			conn = c
		case m.GetError().GetCode() == ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED && time.Now().Before(deadline):
			c.conn.Close()
			time.Sleep(100 * time.Millisecond)
		default:
			t.Fatalf("Hello with the new key: %v", m)
		}
	}
	events := newEvents("shop", 3)
	if err := conn.send(batchFrame(1, events)); err != nil {
		t.Fatal(err)
	}
	m, err := conn.recv()
	if err != nil {
		t.Fatal(err)
	}
	checkAck(t, m.GetAck(), 1, events, ingestv1.EventStatus_EVENT_STATUS_ACCEPTED)

	revokedAt := time.Now()
	rev := cliJSON[adminv1.RevokeIngestKeyResponse](t, a, "keys", "revoke", key.GetKey().GetId())
	if !rev.GetKey().GetRevoked() {
		t.Fatalf("keys revoke: %v", rev)
	}
	// The live connection gets KEY_REVOKED and is closed (the read deadline
	// of dialFrames bounds the wait).
	conn.expectError(t, ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED)
	t.Logf("live connection closed %s after the revoke call", time.Since(revokedAt).Round(time.Millisecond))
	again := dialFrames(t, a.TCP)
	if err := again.send(helloFrame(key.GetSecret())); err != nil {
		t.Fatal(err)
	}
	again.expectError(t, ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED)
	// The seed app's key, untouched, still works.
	dialFrames(t, a.TCP).hello(t, a.keys.key["seed-app"])
}

func TestAdminRulesAndWebhooksCLI(t *testing.T) {
	a := startAdminCollector(t)
	cliJSON[adminv1.CreateAppResponse](t, a, "apps", "create", "shop")
	wh := cliJSON[adminv1.CreateWebhookResponse](t, a, "webhooks", "create", "-url", "https://hooks.example.com/causality", "-description", "ops")
	if wh.GetWebhook().GetSecret() == "" {
		t.Fatalf("webhooks create: %v", wh)
	}
	if out, _ := a.cli(t, "webhooks", "list"); strings.Contains(out, wh.GetWebhook().GetSecret()) || !strings.Contains(out, wh.GetWebhook().GetId()) {
		t.Fatalf("webhooks list: %s", out)
	}

	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rule.json")
	writeFile(t, ruleFile, `{"name": "home views", "appId": "shop",
		"event": {"eventTypes": ["screen_view"], "predicates": [{"path": "screen_view.screen_name", "op": "OPERATOR_EQ", "value": "Home"}]},
		"actions": [{"webhookId": "`+wh.GetWebhook().GetId()+`"}]}`)
	r := cliJSON[adminv1.CreateRuleResponse](t, a, "rules", "create", "-f", ruleFile)
	if r.GetRule().GetId() == "" {
		t.Fatalf("rules create: %v", r)
	}
	// The file the detector reads holds it, with the webhook's secret.
	var rs adminv1.RuleSet
	b, err := os.ReadFile(a.rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, &rs); err != nil || len(rs.GetRules()) != 1 || rs.GetWebhooks()[0].GetSecret() != wh.GetWebhook().GetSecret() {
		t.Fatalf("rules file %s: %v", b, err)
	}

	eventFile := filepath.Join(dir, "event.json")
	writeFile(t, eventFile, `{"appId": "shop", "deviceId": "d1", "screenView": {"screenName": "Home"}}`)
	tr := cliJSON[adminv1.TestRuleResponse](t, a, "rules", "test", "-f", ruleFile, "-event", eventFile)
	if !tr.GetMatched() || len(tr.GetExplanation()) == 0 {
		t.Fatalf("rules test: %v", tr)
	}
	writeFile(t, eventFile, `{"appId": "shop", "deviceId": "d1", "screenView": {"screenName": "Cart"}}`)
	if tr := cliJSON[adminv1.TestRuleResponse](t, a, "rules", "test", "-f", ruleFile, "-event", eventFile); tr.GetMatched() {
		t.Fatalf("rules test on another screen: %v", tr)
	}

	// Invalid rules are refused with the rules package's reason.
	bad := filepath.Join(dir, "bad.json")
	writeFile(t, bad, `{"name": "bad", "event": {"predicates": [{"path": "screen_view.screen_name", "op": "OPERATOR_REGEX", "value": "("}]}}`)
	if _, err := a.cli(t, "rules", "create", "-f", bad); err == nil || !strings.Contains(err.Error(), "INVALID_ARGUMENT") {
		t.Fatalf("rules create of a bad regex: %v", err)
	}
	if _, err := a.cli(t, "webhooks", "delete", wh.GetWebhook().GetId()); err == nil || !strings.Contains(err.Error(), "FAILED_PRECONDITION") {
		t.Fatalf("webhooks delete while used: %v", err)
	}
	out, err := a.cli(t, "-o", "table", "rules", "list")
	if err != nil || !strings.Contains(out, r.GetRule().GetId()) || !strings.Contains(out, "home views") {
		t.Fatalf("rules list -o table: %q, %v", out, err)
	}
	if _, err := a.cli(t, "rules", "update", r.GetRule().GetId(), "-f", ruleFile, "-o", "table"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.cli(t, "rules", "delete", r.GetRule().GetId()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.cli(t, "rules", "delete", r.GetRule().GetId()); err == nil || !strings.Contains(err.Error(), "NOT_FOUND") {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := a.cli(t, "webhooks", "delete", wh.GetWebhook().GetId()); err != nil {
		t.Fatal(err)
	}
}

// TestAdminHTTP drives the same service over HTTP JSON on the collector's
// HTTP port.
func TestAdminHTTP(t *testing.T) {
	a := startAdminCollector(t)
	call := func(method, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+a.HTTP+adminapi.HTTPPrefix+method, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := call("ListApps", "", "{}"); code != 401 || !strings.Contains(body, `"UNAUTHENTICATED"`) {
		t.Fatalf("no token: %d %s", code, body)
	}
	if code, body := call("ListApps", "wrong", "{}"); code != 401 {
		t.Fatalf("wrong token: %d %s", code, body)
	}
	if code, body := call("CreateApp", e2eAdminToken, `{"app": {"id": `); code != 400 || !strings.Contains(body, "bad JSON") {
		t.Fatalf("bad JSON: %d %s", code, body)
	}
	if code, body := call("CreateApp", e2eAdminToken, `{"app": {"id": "web"}}`); code != 200 || !strings.Contains(body, `"id":"web"`) {
		t.Fatalf("CreateApp: %d %s", code, body)
	}
	if code, body := call("CreateIngestKey", e2eAdminToken, `{"appId": "nope"}`); code != 404 || !strings.Contains(body, `"NOT_FOUND"`) {
		t.Fatalf("key for unknown app: %d %s", code, body)
	}
	// The CLI sees what HTTP wrote.
	apps := cliJSON[adminv1.ListAppsResponse](t, a, "apps", "list")
	if len(apps.GetApps()) != 1 || apps.GetApps()[0].GetId() != "web" {
		t.Fatalf("apps list: %v", apps)
	}
	// The ingest API on the same port is unaffected.
	if code, _ := call("../../v1/events/ingest", "", "{}"); code == 200 {
		t.Fatal("path traversal reached something")
	}
}

// TestAdminOffByDefault: without -adminapi.tokens-file there is no admin
// API at all.
func TestAdminOffByDefault(t *testing.T) {
	c := startCollector(t, []string{"app"})
	res, err := http.Post("http://"+c.HTTP+adminapi.HTTPPrefix+"ListApps", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("admin path without the admin API: %d, want 404", res.StatusCode)
	}
	tok := filepath.Join(t.TempDir(), "tok")
	writeFile(t, tok, e2eAdminToken)
	_, err = (&adminCollector{collector: c, tokenFile: tok}).cli(t, "apps", "list")
	if err == nil || !strings.Contains(err.Error(), "does not serve the AdminService") {
		t.Fatalf("CLI against a collector without the admin API: %v", err)
	}
}

func TestAdminCollectorFlags(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tok")
	writeFile(t, tok, e2eAdminToken)
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"rules without tokens", []string{"-ingest.keys-file=" + filepath.Join(dir, "k"), "-adminapi.rules-file=" + filepath.Join(dir, "r")}, "need -adminapi.tokens-file"},
		{"tokens without rules", []string{"-ingest.keys-file=" + filepath.Join(dir, "k"), "-adminapi.tokens-file=" + tok, "-adminapi.apps-file=" + filepath.Join(dir, "a")}, "needs -adminapi.rules-file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), append([]string{"collector", "-kafka.brokers=127.0.0.1:1"}, tt.args...), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("collector %v: %v, want %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestAdminCLIUsage(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "tok")
	writeFile(t, tok, "# only a comment\n")
	good := filepath.Join(dir, "good")
	writeFile(t, good, e2eAdminToken)
	notJSON := filepath.Join(dir, "rule.json")
	writeFile(t, notJSON, "name: x")
	// An address nothing listens on: the calls below must fail before it.
	base := []string{"admin", "-addr", "127.0.0.1:1", "-timeout", "2s"}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, "give a resource and a verb"},
		{"resource only", []string{"apps"}, "give a resource and a verb"},
		{"unknown verb", []string{"apps", "drop"}, `unknown command "apps drop"`},
		{"unknown flag", []string{"-token-file", good, "apps", "list", "-zzz"}, "flag provided but not defined"},
		{"extra argument", []string{"-token-file", good, "apps", "list", "x"}, "unexpected arguments"},
		{"create without id", []string{"-token-file", good, "apps", "create"}, "exactly one ID"},
		{"key without app", []string{"-token-file", good, "keys", "create"}, "needs -app"},
		{"bad output", []string{"-token-file", good, "-o", "yaml", "apps", "list"}, "json or table"},
		{"empty token file", []string{"-token-file", tok, "apps", "list"}, "holds no token"},
		{"missing token file", []string{"-token-file", filepath.Join(dir, "nope"), "apps", "list"}, "no such file"},
		{"rule without -f", []string{"-token-file", good, "rules", "create"}, "-f FILE is required"},
		{"rule not JSON", []string{"-token-file", good, "rules", "create", "-f", notJSON}, "not a protobuf JSON Rule"},
		{"update without id", []string{"-token-file", good, "rules", "update", "-f", writeTemp(t, `{"name": "x"}`)}, "needs the rule id"},
		{"webhook without url", []string{"-token-file", good, "webhooks", "create"}, "needs -url"},
		{"collector not there", []string{"-token-file", good, "apps", "list"}, "cannot reach"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), append(append([]string{}, base...), tt.args...), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("admin %v: %v, want %q", tt.args, err, tt.want)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		var stderr bytes.Buffer
		err := run(t.Context(), []string{"admin", "-h"}, io.Discard, &stderr)
		if !errors.Is(err, flag.ErrHelp) || !strings.Contains(stderr.String(), "keys     list") {
			t.Fatalf("admin -h: %v\n%s", err, stderr.String())
		}
	})
	t.Run("token from the environment", func(t *testing.T) {
		t.Setenv("CAUSALITY_ADMIN_TOKEN", e2eAdminToken)
		err := run(t.Context(), append(append([]string{}, base...), "apps", "list"), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "cannot reach") {
			t.Fatalf("with the token from the environment: %v, want to get as far as dialing", err)
		}
	})
}

func writeFile(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeTemp(t testing.TB, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.json")
	writeFile(t, p, s)
	return p
}

// checkDevAdmin checks the admin API of `causality dev` (called from
// TestDevStack with its stack running): the generated token in
// dir/admin-token (owner only) is printed in the banner and works with the
// CLI, the dev app is listed, and revoking a key closes its live stream.
func checkDevAdmin(t *testing.T, dir, tcp, grpcAddr, banner string) {
	t.Helper()
	tokenFile := filepath.Join(dir, "admin-token")
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatalf("dev admin token: %v", err)
	}
	if fi, _ := os.Stat(tokenFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", tokenFile, fi.Mode().Perm())
	}
	if token := strings.TrimSpace(string(b)); !strings.Contains(banner, token) {
		t.Errorf("the banner lacks the admin token %s", token)
	}
	a := &adminCollector{collector: &collector{addrs: addrs{TCP: tcp, GRPC: grpcAddr}}, tokenFile: tokenFile}
	apps := cliJSON[adminv1.ListAppsResponse](t, a, "apps", "list")
	if len(apps.GetApps()) != 1 || apps.GetApps()[0].GetId() != "my-app" {
		t.Fatalf("dev apps: %v", apps)
	}
	key := cliJSON[adminv1.CreateIngestKeyResponse](t, a, "keys", "create", "-app", "my-app", "-name", "dev-test")
	var conn *frameConn
	for deadline := time.Now().Add(waitLimit); conn == nil; {
		c := dialFrames(t, tcp)
		if err := c.send(helloFrame(key.GetSecret())); err != nil {
			t.Fatal(err)
		}
		m, err := c.recv()
		switch {
		case err != nil:
			t.Fatalf("waiting for Welcome: %v", err)
		case m.GetWelcome() != nil:
			conn = c
		case time.Now().After(deadline):
			t.Fatalf("the new key is still refused: %v", m)
		default:
			c.conn.Close()
			time.Sleep(100 * time.Millisecond)
		}
	}
	cliJSON[adminv1.RevokeIngestKeyResponse](t, a, "keys", "revoke", key.GetKey().GetId())
	conn.expectError(t, ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED)
}
