package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
)

const testToken = "console-test-token"

func init() { statsEvery, retryEvery = 20*time.Millisecond, 20*time.Millisecond }

type tokenAuth string

func (t tokenAuth) Authorized(r *http.Request) bool {
	return r.Header.Get("Authorization") == "Bearer "+string(t)
}

// fakeTopics is a Source over messages held in memory: a tail gets the
// last Backfill messages of its topic (all with Since, or ToEnd), then
// what is added later. Topics not in the map do not exist.
type fakeTopics struct {
	mu     sync.Mutex
	msgs   map[string][]kafka.Message
	added  chan struct{}
	missed int // NewTail calls to fail with ErrNoTopic before the topic exists
}

func newFakeTopics(topics ...string) *fakeTopics {
	f := &fakeTopics{msgs: map[string][]kafka.Message{}, added: make(chan struct{})}
	for _, t := range topics {
		f.msgs[t] = nil
	}
	return f
}

func (f *fakeTopics) add(topic string, values ...proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, v := range values {
		b, err := proto.Marshal(v)
		if err != nil {
			panic(err)
		}
		app := ""
		switch m := v.(type) {
		case *eventv1.Event:
			app = m.GetAppId()
		case *detectv1.Anomaly:
			app = m.GetAppId()
		}
		f.msgs[topic] = append(f.msgs[topic], kafka.Message{Topic: topic, Offset: int64(len(f.msgs[topic])), Value: b, AppID: app, Time: time.Now()})
	}
	close(f.added)
	f.added = make(chan struct{})
}

func (f *fakeTopics) source(ctx context.Context, tc kafka.TailConfig, ready func(int), fn func(kafka.Message) error) error {
	f.mu.Lock()
	msgs, ok := f.msgs[tc.Topic]
	if !ok || f.missed > 0 {
		f.missed--
		f.mu.Unlock()
		return fmt.Errorf("tail %s: %w", tc.Topic, kafka.ErrNoTopic)
	}
	next := max(0, len(msgs)-tc.Backfill)
	if !tc.Since.IsZero() {
		next = 0
	}
	f.mu.Unlock()
	ready(1)
	for {
		f.mu.Lock()
		msgs, added := f.msgs[tc.Topic], f.added
		f.mu.Unlock()
		for ; next < len(msgs); next++ {
			if err := fn(msgs[next]); err != nil {
				return err
			}
		}
		if tc.ToEnd {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-added:
		}
	}
}

type fakeBaselines struct {
	got *detectv1.GetBaselineRequest
	err error
}

func (b *fakeBaselines) GetBaseline(_ context.Context, req *detectv1.GetBaselineRequest) (*detectv1.GetBaselineResponse, error) {
	b.got = req
	if b.err != nil {
		return nil, b.err
	}
	return &detectv1.GetBaselineResponse{Baseline: &detectv1.Baseline{Cohort: req.GetCohort(), WindowMs: 60000, Source: "cohort", Windows: 7, EventMix: map[string]float64{"screen_view": 0.75, "app_start": 0.25}}}, nil
}

type testServer struct {
	*httptest.Server
	topics   *fakeTopics
	shutdown context.CancelFunc
}

func newTestServer(t *testing.T, cfg Config, baselines Baseliner) *testServer {
	t.Helper()
	if cfg.AnomaliesTopic == "" {
		cfg = Config{AnomaliesTopic: "anomalies", FiringsTopic: "firings", MaxRate: 1000, MaxStreams: 8, MaxScan: 1000}
	}
	topics := newFakeTopics("events", "anomalies", "firings")
	c, err := New(cfg, "events", tokenAuth(testToken), topics.source, baselines, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(c.Handler(ctx))
	t.Cleanup(func() { cancel(); srv.Close() })
	return &testServer{Server: srv, topics: topics, shutdown: cancel}
}

func (s *testServer) get(t *testing.T, path, tok string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string
	data string
}

// openStream opens a stream and returns its events; it is closed at cleanup.
func (s *testServer) openStream(t *testing.T, path string) (<-chan sseEvent, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	out := make(chan sseEvent, 1000)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(res.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return out, res
}

// next returns the next event named name, skipping stats (and items when
// it waits for stats).
func next(t *testing.T, events <-chan sseEvent, name string) sseEvent {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("stream ended waiting for %q", name)
			}
			if ev.name == name {
				return ev
			}
			if ev.name != "stats" && (name != "stats" || ev.name != "item") {
				t.Fatalf("got %s %s, want %s", ev.name, ev.data, name)
			}
		case <-timeout:
			t.Fatalf("no %q event", name)
		}
	}
}

func event(app, device, typ string) *eventv1.Event {
	e := &eventv1.Event{EventId: app + "-" + device + "-" + typ, AppId: app, DeviceId: device,
		DeviceContext: &eventv1.DeviceContext{AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_ANDROID}}
	switch typ {
	case "screen_view":
		e.Payload = &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home"}}
	case "app_start":
		e.Payload = &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{}}
	case "purchase_complete":
		e.Payload = &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{OrderId: "o1"}}
	}
	return e
}

func decodeItem(t *testing.T, ev sseEvent) item {
	t.Helper()
	var it item
	if err := json.Unmarshal([]byte(ev.data), &it); err != nil {
		t.Fatalf("item %q: %v", ev.data, err)
	}
	return it
}

func TestAuthAndPages(t *testing.T) {
	s := newTestServer(t, Config{}, nil)
	for _, path := range []string{"/console/api/info", "/console/api/events", "/console/api/anomalies", "/console/api/firings", "/console/api/cohorts?app_id=a", "/console/api/baseline?app_id=a", "/console/api/nothing"} {
		for _, tok := range []string{"", "wrong-token"} {
			res, body := s.get(t, path, tok)
			if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"code":"UNAUTHENTICATED"`) {
				t.Errorf("GET %s with token %q: %d %s, want 401 UNAUTHENTICATED", path, tok, res.StatusCode, body)
			}
		}
	}
	res, body := s.get(t, "/console/api/info", testToken)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `"events_topic":"events"`) || !strings.Contains(body, `"detector":false`) || !strings.Contains(body, "ANOMALY_KIND_FUNNEL_BYPASS") || !strings.Contains(body, `"screen_view"`) {
		t.Errorf("info: %d %s", res.StatusCode, body)
	}
	if res, body := s.get(t, "/console/api/nothing", testToken); res.StatusCode != http.StatusNotFound {
		t.Errorf("unknown endpoint: %d %s", res.StatusCode, body)
	}
	// The pages need no token (they hold no data) and keep to their origin.
	for path, want := range map[string]string{"/console/": "<title>Causality console</title>", "/console/app.js": "signIn", "/console/api.js": "Authorization", "/console/charts.js": "hbars", "/console/style.css": "--accent"} {
		res, body := s.get(t, path, "")
		if res.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s: %d, body without %q", path, res.StatusCode, want)
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	if res, _ := s.get(t, "/console/missing.js", ""); res.StatusCode != http.StatusNotFound {
		t.Errorf("missing asset: %d", res.StatusCode)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Get(s.URL + "/console")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/console/" {
		t.Errorf("/console: %d to %q, want a redirect to /console/", res.StatusCode, res.Header.Get("Location"))
	}
}

// TestEventsStream: backfill, then live events, filtered by app and type
// server-side, as protobuf JSON with the proto field names.
func TestEventsStream(t *testing.T) {
	s := newTestServer(t, Config{}, nil)
	s.topics.add("events", event("shop", "d0", "screen_view"), event("shop", "d1", "app_start"), event("other", "d2", "screen_view"), event("shop", "d3", "screen_view"))
	events, res := s.openStream(t, "/console/api/events?app_id=shop&type=screen_view,purchase_complete&backfill=3")
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	next(t, events, "ready")
	// The backfill: the last three messages, of which one passes.
	if it := decodeItem(t, next(t, events, "item")); it.AppID != "shop" || it.Type != "screen_view" || !strings.Contains(string(it.Data), `"device_id":"d3"`) || !strings.Contains(string(it.Data), `"screen_view":{"screen_name":"Home"}`) {
		t.Errorf("backfilled item %+v %s", it, it.Data)
	}
	s.topics.add("events", event("shop", "d4", "app_start"), event("other", "d5", "purchase_complete"), event("shop", "d6", "purchase_complete"))
	if it := decodeItem(t, next(t, events, "item")); !strings.Contains(string(it.Data), `"device_id":"d6"`) || it.Type != "purchase_complete" {
		t.Errorf("live item %+v %s, want d6's purchase", it, it.Data)
	}
	// Stats count what was read, filtered and sent.
	var st streamStats
	for st.Read < 6 {
		if err := json.Unmarshal([]byte(next(t, events, "stats").data), &st); err != nil {
			t.Fatal(err)
		}
	}
	if st != (streamStats{Read: 6, Filtered: 4, Sent: 2}) {
		t.Errorf("stats %+v, want 6 read, 4 filtered, 2 sent", st)
	}
}

// TestStreamRateLimit: past the rate, items are dropped and counted.
func TestStreamRateLimit(t *testing.T) {
	s := newTestServer(t, Config{}, nil)
	events, _ := s.openStream(t, "/console/api/events?rate=2")
	next(t, events, "ready")
	var batch []proto.Message
	for i := range 100 {
		batch = append(batch, event("shop", fmt.Sprint("d", i), "screen_view"))
	}
	s.topics.add("events", batch...)
	var st streamStats
	for st.Read < 100 {
		if err := json.Unmarshal([]byte(next(t, events, "stats").data), &st); err != nil {
			t.Fatal(err)
		}
	}
	// A burst of 2, plus what the rate refilled while the 100 were read.
	if st.Sent < 2 || st.Sent > 10 || st.Sent+st.Dropped != 100 {
		t.Errorf("stats %+v: want about 2 sent and the rest dropped", st)
	}
}

func TestStreamBadInput(t *testing.T) {
	s := newTestServer(t, Config{}, nil)
	for _, q := range []string{"backfill=201", "backfill=-1", "backfill=x", "rate=0", "rate=x"} {
		if res, body := s.get(t, "/console/api/events?"+q, testToken); res.StatusCode != http.StatusBadRequest || !strings.Contains(body, "INVALID_ARGUMENT") {
			t.Errorf("?%s: %d %s, want 400", q, res.StatusCode, body)
		}
	}
	// Undecodable messages are counted, not sent, and do not end the stream.
	s.topics.mu.Lock()
	s.topics.msgs["anomalies"] = append(s.topics.msgs["anomalies"], kafka.Message{Value: []byte{0xff, 0xff}})
	s.topics.mu.Unlock()
	events, _ := s.openStream(t, "/console/api/anomalies?backfill=5")
	next(t, events, "ready")
	s.topics.add("anomalies", &detectv1.Anomaly{Id: "a1", AppId: "shop", Kind: detectv1.AnomalyKind_ANOMALY_KIND_REPLAY})
	if it := decodeItem(t, next(t, events, "item")); it.Type != "ANOMALY_KIND_REPLAY" {
		t.Errorf("item after an undecodable message: %+v", it)
	}
}

// TestAnomaliesAndFiringsStreams: kinds filter by short or full name,
// firings by rule id.
func TestAnomaliesAndFiringsStreams(t *testing.T) {
	s := newTestServer(t, Config{}, nil)
	anomalies, _ := s.openStream(t, "/console/api/anomalies?type=funnel_bypass&app_id=shop")
	firings, _ := s.openStream(t, "/console/api/firings?type=r2")
	next(t, anomalies, "ready")
	next(t, firings, "ready")
	s.topics.add("anomalies",
		&detectv1.Anomaly{Id: "a1", AppId: "shop", Kind: detectv1.AnomalyKind_ANOMALY_KIND_REPLAY},
		&detectv1.Anomaly{Id: "a2", AppId: "other", Kind: detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS},
		&detectv1.Anomaly{Id: "a3", AppId: "shop", Kind: detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS, DeviceId: "cheater", Score: 1, Threshold: 1,
			Evidence: []*detectv1.Evidence{{Key: "purchase_complete", Observed: 1}}})
	it := decodeItem(t, next(t, anomalies, "item"))
	if it.Type != "ANOMALY_KIND_FUNNEL_BYPASS" || !strings.Contains(string(it.Data), `"id":"a3"`) || !strings.Contains(string(it.Data), `"evidence":[{"key":"purchase_complete"`) {
		t.Errorf("anomaly item %+v %s, want a3 with its evidence", it, it.Data)
	}
	s.topics.add("firings",
		&adminv1.RuleFiring{Id: "f1", RuleId: "r1", AppId: "shop"},
		&adminv1.RuleFiring{Id: "f2", RuleId: "r2", RuleName: "big", AppId: "shop", Subject: &adminv1.RuleFiring_Event{Event: event("shop", "d1", "purchase_complete")}})
	it = decodeItem(t, next(t, firings, "item"))
	if it.Type != "r2" || !strings.Contains(string(it.Data), `"id":"f2"`) || !strings.Contains(string(it.Data), `"rule_name":"big"`) {
		t.Errorf("firing item %+v %s, want f2", it, it.Data)
	}
}

// TestStreamWaitsForTopic: a missing topic is reported and retried.
func TestStreamWaitsForTopic(t *testing.T) {
	s := newTestServer(t, Config{}, nil)
	s.topics.missed = 2
	events, _ := s.openStream(t, "/console/api/firings")
	for range 2 {
		if ev := next(t, events, "waiting"); !strings.Contains(ev.data, `"topic":"firings"`) {
			t.Errorf("waiting %s", ev.data)
		}
	}
	next(t, events, "ready")
}

// TestStreamLimits: at most MaxStreams at once; streams end at shutdown.
func TestStreamLimits(t *testing.T) {
	s := newTestServer(t, Config{AnomaliesTopic: "anomalies", FiringsTopic: "firings", MaxRate: 10, MaxStreams: 1, MaxScan: 10}, nil)
	events, _ := s.openStream(t, "/console/api/events")
	next(t, events, "ready")
	if res, body := s.get(t, "/console/api/anomalies", testToken); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second stream: %d %s, want 503", res.StatusCode, body)
	}
	s.shutdown()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return // ended
			}
		case <-timeout:
			t.Fatal("the stream did not end at shutdown")
		}
	}
}

func TestCohorts(t *testing.T) {
	s := newTestServer(t, Config{AnomaliesTopic: "anomalies", FiringsTopic: "firings", MaxRate: 10, MaxStreams: 1, MaxScan: 5}, nil)
	other := event("shop", "d9", "screen_view")
	other.DeviceContext.BuildNumber = "9999"
	s.topics.add("events", event("shop", "d1", "screen_view"), event("shop", "d1", "app_start"), event("shop", "d2", "screen_view"), event("other", "d3", "screen_view"), other)
	res, body := s.get(t, "/console/api/cohorts?app_id=shop&window_ms=60000", testToken)
	var got cohortsResponse
	if err := json.Unmarshal([]byte(body), &got); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("cohorts: %d %s", res.StatusCode, body)
	}
	if got.Scanned != 5 || got.Truncated || len(got.Cohorts) != 2 {
		t.Fatalf("cohorts %s: want 5 scanned, 2 cohorts", body)
	}
	c := got.Cohorts[0]
	if c.BuildNumber != "2410" || c.Platform != "PLATFORM_ANDROID" || c.Events != 3 || c.Devices != 2 || c.EventMix["screen_view"] != 2 || c.EventMix["app_start"] != 1 {
		t.Errorf("first cohort %+v", c)
	}
	if got.Cohorts[1].BuildNumber != "9999" || got.Cohorts[1].Events != 1 {
		t.Errorf("second cohort %+v", got.Cohorts[1])
	}
	// Past MaxScan the answer says it is truncated.
	s.topics.add("events", event("shop", "d1", "screen_view"))
	if _, body := s.get(t, "/console/api/cohorts?app_id=shop", testToken); !strings.Contains(body, `"truncated":true`) {
		t.Errorf("over the scan limit: %s", body)
	}
	for _, q := range []string{"", "app_id=shop&window_ms=5", "app_id=shop&window_ms=x"} {
		if res, body := s.get(t, "/console/api/cohorts?"+q, testToken); res.StatusCode != http.StatusBadRequest {
			t.Errorf("cohorts?%s: %d %s, want 400", q, res.StatusCode, body)
		}
	}
}

func TestBaseline(t *testing.T) {
	if res, body := newTestServer(t, Config{}, nil).get(t, "/console/api/baseline?app_id=shop", testToken); res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("without a detector: %d %s, want 503", res.StatusCode, body)
	}
	b := &fakeBaselines{}
	s := newTestServer(t, Config{}, b)
	res, body := s.get(t, "/console/api/baseline?app_id=shop&app_version=2.4.1&build_number=2410&platform=android&window_ms=60000", testToken)
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `"event_mix":{`) || !strings.Contains(body, `"screen_view":0.75`) || !strings.Contains(body, `"window_ms":"60000"`) {
		t.Errorf("baseline: %d %s", res.StatusCode, body)
	}
	want := &detectv1.GetBaselineRequest{WindowMs: 60000, Cohort: &detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_ANDROID}}
	if !proto.Equal(b.got, want) {
		t.Errorf("GetBaseline got %v, want %v", b.got, want)
	}
	if _, body := s.get(t, "/console/api/baseline?app_id=shop&platform=PLATFORM_IOS", testToken); !strings.Contains(body, `"platform":"PLATFORM_IOS"`) {
		t.Errorf("platform by enum name: %s", body)
	}
	for _, q := range []string{"", "app_id=shop&platform=toaster", "app_id=shop&window_ms=-1", "app_id=shop&platform=99"} {
		if res, body := s.get(t, "/console/api/baseline?"+q, testToken); res.StatusCode != http.StatusBadRequest {
			t.Errorf("baseline?%s: %d %s, want 400", q, res.StatusCode, body)
		}
	}
	for _, tt := range []struct {
		err  error
		code int
		name string
	}{
		{status.Error(codes.NotFound, "no such cohort"), http.StatusNotFound, "NOT_FOUND"},
		{status.Error(codes.Unavailable, "down"), http.StatusServiceUnavailable, "UNAVAILABLE"},
		{status.Error(codes.Unauthenticated, "bad token"), http.StatusBadGateway, "UNAUTHENTICATED"},
	} {
		b.err = tt.err
		res, body := s.get(t, "/console/api/baseline?app_id=shop", testToken)
		if res.StatusCode != tt.code || !strings.Contains(body, `"code":"`+tt.name+`"`) {
			t.Errorf("detector error %v: %d %s, want %d %s", tt.err, res.StatusCode, body, tt.code, tt.name)
		}
	}
}

func TestPayloadType(t *testing.T) {
	enc := func(e *eventv1.Event) []byte {
		b, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	full := event("shop", "d1", "purchase_complete")
	full.Properties = map[string]string{"a": "b"}
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"screen view", enc(event("shop", "d1", "screen_view")), "screen_view"},
		{"purchase with properties", enc(full), "purchase_complete"},
		{"empty payload message", enc(event("shop", "d1", "app_start")), "app_start"},
		{"no payload", enc(&eventv1.Event{EventId: "x"}), ""},
		{"empty", nil, ""},
		{"truncated", enc(full)[:len(enc(full))-3], ""},
		{"garbage", []byte{0xff, 0xff, 0xff}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PayloadType(tt.b); got != tt.want {
				t.Errorf("PayloadType = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{AnomaliesTopic: "a", FiringsTopic: "f", MaxRate: 1, MaxStreams: 1, MaxScan: 1}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"no topic":           func(c *Config) { c.FiringsTopic = "" },
		"zero rate":          func(c *Config) { c.MaxRate = 0 },
		"no streams":         func(c *Config) { c.MaxStreams = 0 },
		"no scan":            func(c *Config) { c.MaxScan = 0 },
		"token without addr": func(c *Config) { c.DetectorTokenFile = "x" },
		"addr without token": func(c *Config) { c.DetectorAddr = "127.0.0.1:7075" },
	} {
		c := good
		mod(&c)
		if c.Validate() == nil {
			t.Errorf("%s: Validate passed", name)
		}
	}
}
