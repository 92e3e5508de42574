package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

const testToken = "adm_test_token_0123456789"

func testTokens(tb testing.TB) *Tokens {
	tb.Helper()
	t, err := ParseTokens([]byte("# admin tokens\n\n  " + testToken + "  \nsecond-token\n"))
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func TestParseTokens(t *testing.T) {
	tok := testTokens(t)
	for _, tt := range []struct {
		token string
		want  bool
	}{
		{testToken, true},
		{"second-token", true},
		{"", false},
		{"# admin tokens", false},
		{testToken + "x", false},
		{testToken[:len(testToken)-1], false},
		{strings.ToUpper(testToken), false},
	} {
		if got := tok.Check(tt.token); got != tt.want {
			t.Errorf("Check(%q) = %v, want %v", tt.token, got, tt.want)
		}
	}
	for name, in := range map[string]string{
		"empty":         "",
		"comments only": "# a\n\n   \n# b\n",
		"space inside":  "two words\n",
	} {
		if _, err := ParseTokens([]byte(in)); err == nil {
			t.Errorf("ParseTokens(%s) succeeded", name)
		}
	}
	if _, err := LoadTokens(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("LoadTokens of a missing file succeeded")
	}
	var nilTokens *Tokens
	if nilTokens.Check(testToken) {
		t.Error("nil Tokens accepted a token")
	}
}

func TestAuthorized(t *testing.T) {
	tok := testTokens(t)
	for h, want := range map[string]bool{
		"Bearer " + testToken:        true,
		"bearer " + testToken:        true,
		"Bearer  " + testToken + " ": true,
		"Bearer wrong":               false,
		"Basic " + testToken:         false,
		testToken:                    false,
		"Bearer":                     false,
		"Bearer ":                    false,
		"":                           false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		if got := tok.Authorized(r); got != want {
			t.Errorf("Authorized(%q) = %v, want %v", h, got, want)
		}
	}
}

// grpcClient serves a Service over real gRPC on loopback, with the token
// interceptor and a health service that must not need a token.
func grpcClient(tb testing.TB) (adminv1.AdminServiceClient, *grpc.ClientConn, *testStore) {
	tb.Helper()
	s := newTestStore(tb)
	svc := NewService(s.Store, fakeRules, discard())
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(testTokens(tb).UnaryInterceptor(ServiceName)))
	Register(gs, svc)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go gs.Serve(ln)
	tb.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return adminv1.NewAdminServiceClient(cc), cc, s
}

func authed(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func wantCode(tb testing.TB, err error, want codes.Code) {
	tb.Helper()
	if got := status.Code(err); got != want {
		tb.Fatalf("code %v (%v), want %v", got, err, want)
	}
}

func TestGRPCService(t *testing.T) {
	cl, cc, _ := grpcClient(t)
	base, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	// No token, a wrong token: UNAUTHENTICATED, on every method.
	_, err := cl.ListApps(base, &adminv1.ListAppsRequest{})
	wantCode(t, err, codes.Unauthenticated)
	_, err = cl.CreateApp(authed(base, "wrong"), &adminv1.CreateAppRequest{App: &adminv1.App{Id: "shop"}})
	wantCode(t, err, codes.Unauthenticated)
	// Other services on the server need none.
	if _, err := healthpb.NewHealthClient(cc).Check(base, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without a token: %v", err)
	}

	ctx := authed(base, testToken)
	if _, err := cl.CreateApp(ctx, &adminv1.CreateAppRequest{App: &adminv1.App{Id: "shop", Name: "Shop"}}); err != nil {
		t.Fatal(err)
	}
	_, err = cl.CreateApp(ctx, &adminv1.CreateAppRequest{App: &adminv1.App{Id: "shop"}})
	wantCode(t, err, codes.AlreadyExists)
	_, err = cl.CreateApp(ctx, &adminv1.CreateAppRequest{App: &adminv1.App{Id: "Not OK"}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = cl.CreateApp(ctx, &adminv1.CreateAppRequest{})
	wantCode(t, err, codes.InvalidArgument)

	_, err = cl.CreateIngestKey(ctx, &adminv1.CreateIngestKeyRequest{AppId: "ghost"})
	wantCode(t, err, codes.NotFound)
	k, err := cl.CreateIngestKey(ctx, &adminv1.CreateIngestKeyRequest{AppId: "shop", Name: "web"})
	if err != nil || k.GetSecret() == "" || k.GetKey().GetId() == "" {
		t.Fatalf("CreateIngestKey = %v, %v", k, err)
	}
	list, err := cl.ListIngestKeys(ctx, &adminv1.ListIngestKeysRequest{})
	if err != nil || len(list.GetKeys()) != 1 {
		t.Fatalf("ListIngestKeys = %v, %v", list, err)
	}
	if b, _ := protojson.Marshal(list); strings.Contains(string(b), k.GetSecret()) {
		t.Fatal("ListIngestKeys shows the key")
	}
	_, err = cl.RevokeIngestKey(ctx, &adminv1.RevokeIngestKeyRequest{Id: "abcdefabcdef"})
	wantCode(t, err, codes.NotFound)
	_, err = cl.RevokeIngestKey(ctx, &adminv1.RevokeIngestKeyRequest{})
	wantCode(t, err, codes.InvalidArgument)
	if r, err := cl.RevokeIngestKey(ctx, &adminv1.RevokeIngestKeyRequest{Id: k.GetKey().GetId()}); err != nil || !r.GetKey().GetRevoked() {
		t.Fatalf("RevokeIngestKey = %v, %v", r, err)
	}

	wh, err := cl.CreateWebhook(ctx, &adminv1.CreateWebhookRequest{Webhook: &adminv1.Webhook{Url: "https://example.com/h"}})
	if err != nil || wh.GetWebhook().GetSecret() == "" {
		t.Fatalf("CreateWebhook = %v, %v", wh, err)
	}
	whs, err := cl.ListWebhooks(ctx, &adminv1.ListWebhooksRequest{})
	if err != nil || len(whs.GetWebhooks()) != 1 || whs.GetWebhooks()[0].GetSecret() != "" {
		t.Fatalf("ListWebhooks = %v, %v (secrets must not be listed)", whs, err)
	}
	_, err = cl.CreateWebhook(ctx, &adminv1.CreateWebhookRequest{})
	wantCode(t, err, codes.InvalidArgument)

	rule := eventRule("shop", "r1")
	rule.Actions = []*adminv1.Action{{Action: &adminv1.Action_WebhookId{WebhookId: wh.GetWebhook().GetId()}}}
	cr, err := cl.CreateRule(ctx, &adminv1.CreateRuleRequest{Rule: rule})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.CreateRule(ctx, &adminv1.CreateRuleRequest{Rule: eventRule("shop", "")})
	wantCode(t, err, codes.InvalidArgument)
	_, err = cl.CreateRule(ctx, &adminv1.CreateRuleRequest{Rule: eventRule("ghost", "x")})
	wantCode(t, err, codes.NotFound)
	_, err = cl.UpdateRule(ctx, &adminv1.UpdateRuleRequest{Rule: &adminv1.Rule{Id: "rule_nope", Name: "x"}})
	wantCode(t, err, codes.NotFound)
	_, err = cl.DeleteWebhook(ctx, &adminv1.DeleteWebhookRequest{Id: wh.GetWebhook().GetId()})
	wantCode(t, err, codes.FailedPrecondition)
	_, err = cl.DeleteRule(ctx, &adminv1.DeleteRuleRequest{Id: "rule_nope"})
	wantCode(t, err, codes.NotFound)
	if rs, err := cl.ListRules(ctx, &adminv1.ListRulesRequest{AppId: "shop"}); err != nil || len(rs.GetRules()) != 1 {
		t.Fatalf("ListRules = %v, %v", rs, err)
	}
	if rs, err := cl.ListRules(ctx, &adminv1.ListRulesRequest{AppId: "other"}); err != nil || len(rs.GetRules()) != 0 {
		t.Fatalf("ListRules(other) = %v, %v", rs, err)
	}
	if _, err := cl.DeleteRule(ctx, &adminv1.DeleteRuleRequest{Id: cr.GetRule().GetId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.DeleteWebhook(ctx, &adminv1.DeleteWebhookRequest{Id: wh.GetWebhook().GetId()}); err != nil {
		t.Fatal(err)
	}

	tr, err := cl.TestRule(ctx, &adminv1.TestRuleRequest{Rule: eventRule("shop", "t"), Event: &eventv1.Event{AppId: "shop"}})
	if err != nil || !tr.GetMatched() || len(tr.GetExplanation()) == 0 {
		t.Fatalf("TestRule = %v, %v", tr, err)
	}
	_, err = cl.TestRule(ctx, &adminv1.TestRuleRequest{Rule: eventRule("shop", "t")})
	wantCode(t, err, codes.InvalidArgument)
	_, err = cl.TestRule(ctx, &adminv1.TestRuleRequest{Event: &eventv1.Event{}})
	wantCode(t, err, codes.InvalidArgument)
	_, err = cl.TestRule(ctx, &adminv1.TestRuleRequest{Rule: eventRule("shop", ""), Event: &eventv1.Event{}})
	wantCode(t, err, codes.InvalidArgument)
}

func TestServiceInternalErrors(t *testing.T) {
	cl, _, s := grpcClient(t)
	ctx := authed(t.Context(), testToken)
	if err := os.WriteFile(s.RulesFile, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := cl.ListRules(ctx, &adminv1.ListRulesRequest{})
	wantCode(t, err, codes.Internal)
}

// post calls the HTTP JSON handler.
func post(tb testing.TB, h http.Handler, method, token, contentType string, body []byte) (int, []byte) {
	tb.Helper()
	r := httptest.NewRequest(http.MethodPost, HTTPPrefix+method, bytes.NewReader(body))
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, b
}

func wantErrorBody(tb testing.TB, b []byte, code string) ErrorBody {
	tb.Helper()
	var e ErrorBody
	if err := json.Unmarshal(b, &e); err != nil {
		tb.Fatalf("error body %q: %v", b, err)
	}
	if e.Code != code || e.Message == "" {
		tb.Fatalf("error body %+v, want code %s and a message", e, code)
	}
	return e
}

func TestHTTPJSON(t *testing.T) {
	s := newTestStore(t)
	h := NewHTTPHandler(NewService(s.Store, fakeRules, discard()), testTokens(t))
	create := []byte(`{"app": {"id": "shop", "name": "Shop"}}`)

	t.Run("no token", func(t *testing.T) {
		code, b := post(t, h, "CreateApp", "", "application/json", create)
		if code != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", code)
		}
		wantErrorBody(t, b, "UNAUTHENTICATED")
	})
	t.Run("wrong token", func(t *testing.T) {
		code, b := post(t, h, "CreateApp", "nope", "application/json", create)
		if code != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", code)
		}
		wantErrorBody(t, b, "UNAUTHENTICATED")
		if apps, _ := s.Apps(); len(apps) != 0 {
			t.Fatal("an unauthenticated call created an app")
		}
	})
	t.Run("happy path", func(t *testing.T) {
		code, b := post(t, h, "CreateApp", testToken, "application/json; charset=utf-8", create)
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, b)
		}
		var res adminv1.CreateAppResponse
		if err := protojson.Unmarshal(b, &res); err != nil || res.GetApp().GetId() != "shop" {
			t.Fatalf("CreateApp answer %s: %v", b, err)
		}
		// No body is the empty request; snake_case input is accepted.
		code, b = post(t, h, "ListApps", testToken, "", nil)
		if code != http.StatusOK || !strings.Contains(string(b), `"id":"shop"`) {
			t.Fatalf("ListApps: %d %s", code, b)
		}
		code, b = post(t, h, "CreateIngestKey", testToken, "application/json", []byte(`{"app_id": "shop", "name": "web"}`))
		if code != http.StatusOK || !strings.Contains(string(b), `"secret":"cik_`) {
			t.Fatalf("CreateIngestKey: %d %s", code, b)
		}
		code, b = post(t, h, "ListIngestKeys", testToken, "application/json", []byte(`{}`))
		if code != http.StatusOK || strings.Contains(string(b), "cik_") || !strings.Contains(string(b), `"revoked":false`) {
			t.Fatalf("ListIngestKeys: %d %s (no secrets; defaults emitted)", code, b)
		}
		code, b = post(t, h, "ListRules", testToken, "application/json", []byte(`{}`))
		if code != http.StatusOK || string(b) != `{"rules":[]}` {
			t.Fatalf("ListRules: %d %s", code, b)
		}
	})
	for _, tt := range []struct {
		name, method, contentType, body string
		status                          int
		code                            string
	}{
		{"bad JSON", "CreateApp", "application/json", `{"app": `, 400, "INVALID_ARGUMENT"},
		{"unknown field", "CreateApp", "application/json", `{"ap": {}}`, 400, "INVALID_ARGUMENT"},
		{"wrong type", "CreateApp", "application/json", `{"app": {"id": 5}}`, 400, "INVALID_ARGUMENT"},
		{"not JSON at all", "CreateApp", "application/json", `id=shop`, 400, "INVALID_ARGUMENT"},
		{"wrong content type", "CreateApp", "text/plain", `{}`, 415, "INVALID_ARGUMENT"},
		{"unknown method", "DropEverything", "application/json", `{}`, 404, "NOT_FOUND"},
		{"duplicate", "CreateApp", "application/json", `{"app": {"id": "shop"}}`, 409, "ALREADY_EXISTS"},
		{"invalid id", "CreateApp", "application/json", `{"app": {"id": "S H"}}`, 400, "INVALID_ARGUMENT"},
		{"not found", "RevokeIngestKey", "application/json", `{"id": "abcdefabcdef"}`, 404, "NOT_FOUND"},
		{"too large", "CreateApp", "application/json", `{"app": {"name": "` + strings.Repeat("x", MaxBody) + `"}}`, 413, "RESOURCE_EXHAUSTED"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, b := post(t, h, tt.method, testToken, tt.contentType, []byte(tt.body))
			if code != tt.status {
				t.Fatalf("status %d (%s), want %d", code, b, tt.status)
			}
			e := wantErrorBody(t, b, tt.code)
			if tt.name == "bad JSON" && !strings.Contains(e.Message, "bad JSON") {
				t.Fatalf("message %q does not say the JSON is bad", e.Message)
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, HTTPPrefix+"ListApps", nil)
		r.Header.Set("Authorization", "Bearer "+testToken)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusMethodNotAllowed {
			t.Fatalf("GET: %d", w.Code)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		want string // "" = valid
	}{
		{"off", Config{}, ""},
		{"off with keys", Config{KeysFile: "k"}, ""},
		{"rules without tokens", Config{RulesFile: "r"}, "need -adminapi.tokens-file"},
		{"tokens without keys", Config{TokensFile: "t", RulesFile: "r", AppsFile: "a"}, "needs -ingest.keys-file"},
		{"tokens without rules", Config{TokensFile: "t", KeysFile: "k", AppsFile: "a"}, "needs -adminapi.rules-file"},
		{"tokens without apps", Config{TokensFile: "t", KeysFile: "k", RulesFile: "r"}, "needs -adminapi.apps-file"},
		{"same file twice", Config{TokensFile: "t", KeysFile: "k", RulesFile: "k", AppsFile: "a"}, "different files"},
		{"on", Config{TokensFile: "t", KeysFile: "k", RulesFile: "r", AppsFile: "a"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
	// New fails early on unreadable files.
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte(testToken+"\n"), 0o600)
	cfg := Config{TokensFile: tokens, KeysFile: filepath.Join(dir, "k"), RulesFile: filepath.Join(dir, "r"), AppsFile: filepath.Join(dir, "a")}
	if _, err := New(cfg, fakeRules, discard()); err != nil {
		t.Fatalf("New with fresh files: %v", err)
	}
	os.WriteFile(cfg.RulesFile, []byte("{"), 0o600)
	if _, err := New(cfg, fakeRules, discard()); err == nil {
		t.Fatal("New over a broken rules file succeeded")
	}
}
