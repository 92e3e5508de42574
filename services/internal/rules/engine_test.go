package rules

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
)

// recorder is a RecordWriter that keeps what it is given and fails the
// next fail writes.
type recorder struct {
	mu   sync.Mutex
	recs []kafka.Record
	fail int
}

func (r *recorder) Write(_ context.Context, recs []kafka.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		return errors.New("broker down")
	}
	r.recs = append(r.recs, recs...)
	return nil
}

func (r *recorder) firings(t testing.TB) []*adminv1.RuleFiring {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*adminv1.RuleFiring
	for _, rec := range r.recs {
		f := &adminv1.RuleFiring{}
		if err := proto.Unmarshal(rec.Value, f); err != nil {
			t.Fatal(err)
		}
		if string(rec.Key) != f.GetAppId() {
			t.Errorf("record key %q, want the app id %q", rec.Key, f.GetAppId())
		}
		out = append(out, f)
	}
	return out
}

// hookRecorder is a Deliverer that keeps the ids and bodies.
type hookRecorder struct {
	mu     sync.Mutex
	w      *adminv1.Webhook
	ids    []string
	bodies []string
}

func (h *hookRecorder) Deliver(_ context.Context, id string, body []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ids = append(h.ids, id)
	h.bodies = append(h.bodies, string(body))
	return nil
}

type fakes struct {
	firings recorder
	mu      sync.Mutex
	topics  map[string]*recorder
	hooks   map[string]*hookRecorder
	built   int // webhook deliverers built
}

func (f *fakes) outputs() Outputs {
	return Outputs{
		Firings: &f.firings,
		Topic: func(_ context.Context, topic string) (RecordWriter, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.topics[topic] == nil {
				f.topics[topic] = &recorder{}
			}
			return f.topics[topic], nil
		},
		Webhook: func(w *adminv1.Webhook) (Deliverer, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.built++
			h := &hookRecorder{w: w}
			f.hooks[w.GetId()] = h
			return h, nil
		},
	}
}

func testConfig() Config {
	return Config{File: "rules.json", FiringsTopic: FiringsTopic, ReloadInterval: time.Second, MaxKeys: 1000, DedupSize: 1000, MaxInflight: 4}
}

func newTestEngine(t testing.TB, cfg Config, set string) (*Engine, *fakes, *prometheus.Registry) {
	t.Helper()
	f := &fakes{topics: map[string]*recorder{}, hooks: map[string]*hookRecorder{}}
	reg := prometheus.NewRegistry()
	e, err := New(cfg, f.outputs(), slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	if set != "" {
		if err := e.Load(parseSet(t, set)); err != nil {
			t.Fatal(err)
		}
	}
	return e, f, reg
}

// metric sums the samples of name whose labels include labels.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range labels {
				found := false
				for _, l := range m.GetLabel() {
					found = found || (l.GetName() == k && l.GetValue() == v)
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// hit is a matching event of device at second s.
func hit(device string, s float64) *eventv1.Event {
	ms := int64(s * 1000)
	return purchase(fmt.Sprintf("%s-%d", device, ms), device, ms, 5000)
}

func TestRateAndCooldown(t *testing.T) {
	type step struct {
		device string
		at     float64 // event time, seconds
		fires  bool
	}
	const cond = `"event":{"predicates":[{"path":"purchase_complete.total_cents","op":"OPERATOR_GE","value":"1000"}]}`
	tests := []struct {
		name  string
		extra string // rate and cooldown of the rule
		steps []step
	}{
		{"no rate, no cooldown: every match", ``, []step{{"a", 0, true}, {"a", 1, true}, {"b", 1, true}}},
		{"3 within 60s per device", `"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_DEVICE"}`,
			[]step{{"a", 0, false}, {"a", 10, false}, {"a", 20, true}, {"a", 30, false}, {"a", 40, false}, {"a", 50, true}}},
		{"matches further apart than the window", `"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_DEVICE"}`,
			[]step{{"a", 0, false}, {"a", 40, false}, {"a", 80, false}, {"a", 90, true}}},
		{"span equal to the window is outside", `"rate":{"count":2,"window":"60s","per":"RATE_SCOPE_DEVICE"}`,
			[]step{{"a", 0, false}, {"a", 60, false}, {"a", 119.999, true}}},
		{"late match completes the window", `"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_DEVICE"}`,
			[]step{{"a", 0, false}, {"a", 20, false}, {"a", 10, true}}},
		{"a match later than the window behind the latest is dropped", `"rate":{"count":2,"window":"60s","per":"RATE_SCOPE_DEVICE"}`,
			[]step{{"a", 100, false}, {"a", 30, false}, {"a", 35, false}}},
		{"devices count apart", `"rate":{"count":2,"window":"60s","per":"RATE_SCOPE_DEVICE"}`,
			[]step{{"a", 0, false}, {"b", 1, false}, {"a", 2, true}, {"b", 3, true}}},
		{"per app counts the devices together", `"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_APP"}`,
			[]step{{"a", 0, false}, {"b", 1, false}, {"c", 2, true}}},
		{"count 1 is every match", `"rate":{"count":1,"window":"60s","per":"RATE_SCOPE_DEVICE"}`,
			[]step{{"a", 0, true}, {"a", 0.5, true}}},
		{"cooldown per device", `"cooldown":"600s"`,
			[]step{{"a", 0, true}, {"a", 300, false}, {"b", 300, true}, {"a", 600, true}, {"a", 599, false}, {"a", 1300, true}}},
		{"per-app cooldown", `"rate":{"count":1,"window":"1s","per":"RATE_SCOPE_APP"},"cooldown":"600s"`,
			[]step{{"a", 0, true}, {"b", 10, false}, {"c", 700, true}}},
		{"rate and cooldown", `"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_DEVICE"},"cooldown":"600s"`,
			[]step{{"a", 0, false}, {"a", 1, false}, {"a", 2, true}, {"a", 3, false}, {"a", 4, false}, {"a", 5, false}, {"a", 6, false},
				{"a", 660, false}, {"a", 661, false}, {"a", 662, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			extra := tt.extra
			if extra != "" {
				extra += ","
			}
			e, _, _ := newTestEngine(t, testConfig(), `{"rules":[{"id":"r1","name":"big buys",`+cond+`,`+extra+topicAction+`}]}`)
			for i, s := range tt.steps {
				fs := e.evaluateEvents([]*eventv1.Event{hit(s.device, s.at)})
				if got := len(fs) == 1; got != s.fires || len(fs) > 1 {
					t.Fatalf("step %d (%s at %vs): %d firings, want fires=%v", i, s.device, s.at, len(fs), s.fires)
				}
				if s.fires {
					f := fs[0].f
					if f.GetRuleId() != "r1" || f.GetRuleName() != "big buys" || f.GetAppId() != "shop" || f.GetDeviceId() != s.device ||
						f.GetTimeMs() != int64(s.at*1000) || f.GetEvent().GetDeviceId() != s.device || f.GetMatches() < 1 {
						t.Errorf("step %d: firing %v", i, f)
					}
				}
			}
		})
	}
}

func TestRateMatchesCounted(t *testing.T) {
	e, _, _ := newTestEngine(t, testConfig(), `{"rules":[{"id":"r1","event":{},"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_DEVICE"},`+topicAction+`}]}`)
	var fs []*pending
	for _, s := range []float64{0, 1, 2} {
		fs = append(fs, e.evaluateEvents([]*eventv1.Event{hit("a", s)})...)
	}
	if len(fs) != 1 || fs[0].f.GetMatches() != 3 {
		t.Fatalf("firings %v, want one with 3 matches", fs)
	}
	id, err := uuid.Parse(fs[0].f.GetId())
	if err != nil || id.Version() != 7 || id.Variant() != uuid.RFC4122 {
		t.Errorf("firing id %q (%v): want a UUIDv7", fs[0].f.GetId(), err)
	}
	if sec, _ := id.Time().UnixTime(); sec != 2 {
		t.Errorf("firing id %s carries time %v, want the event time 2s", id, sec)
	}
	if firingID("r1", "a-2000", 2000) != fs[0].f.GetId() || firingID("r2", "a-2000", 2000) == fs[0].f.GetId() {
		t.Error("firing ids must derive from the rule and the subject")
	}
}

func TestDuplicatesNotCounted(t *testing.T) {
	e, _, reg := newTestEngine(t, testConfig(), `{"rules":[{"id":"r1","event":{},"rate":{"count":2,"window":"60s","per":"RATE_SCOPE_DEVICE"},`+topicAction+`}]}`)
	ev := hit("a", 0)
	if fs := e.evaluateEvents([]*eventv1.Event{ev, ev, proto.Clone(ev).(*eventv1.Event)}); len(fs) != 0 {
		t.Errorf("one event sent three times fired %d times, want it counted once (no firing)", len(fs))
	}
	if got := metric(t, reg, "causality_rules_duplicates_total", nil); got != 2 {
		t.Errorf("duplicates = %v, want 2", got)
	}
}

func TestStateBounded(t *testing.T) {
	cfg := testConfig()
	cfg.MaxKeys = 2
	e, _, reg := newTestEngine(t, cfg, `{"rules":[{"id":"r1","event":{},"cooldown":"60s",`+topicAction+`}]}`)
	for _, d := range []string{"a", "b"} {
		if fs := e.evaluateEvents([]*eventv1.Event{hit(d, 0)}); len(fs) != 1 {
			t.Fatalf("device %s: %d firings", d, len(fs))
		}
	}
	if fs := e.evaluateEvents([]*eventv1.Event{hit("c", 1)}); len(fs) != 0 {
		t.Errorf("a third device fired with -rules.max-keys=2")
	}
	if got := metric(t, reg, "causality_rules_state_refused_total", map[string]string{"rule": "r1"}); got != 1 {
		t.Errorf("refused = %v, want 1", got)
	}
	// Once a and b are a cooldown behind, their state expires.
	if fs := e.evaluateEvents([]*eventv1.Event{hit("a", 61)}); len(fs) != 1 {
		t.Fatalf("a after its cooldown: %d firings", len(fs))
	}
	if fs := e.evaluateEvents([]*eventv1.Event{hit("c", 62)}); len(fs) != 1 {
		t.Errorf("c was not tracked after b's state expired")
	}
	if n := len(e.states["r1"].keys); n != 2 {
		t.Errorf("%d keys, want 2 (a and c)", n)
	}
}

func TestIndex(t *testing.T) {
	e, _, reg := newTestEngine(t, testConfig(), `{"rules":[
		{"id":"blog-any","app_id":"blog","event":{},`+topicAction+`},
		{"id":"screens","event":{"event_types":["screen_view"]},`+topicAction+`},
		{"id":"shop-buys","app_id":"shop","event":{"predicates":[{"path":"purchase_complete.total_cents","op":"OPERATOR_GT","value":"0"}]},`+topicAction+`},
		{"id":"shop-any","app_id":"shop","disabled":true,"event":{},`+topicAction+`},
		{"id":"anomalies","anomaly":{},`+topicAction+`}]}`)
	tests := []struct {
		name      string
		ev        *eventv1.Event
		evaluated uint64
		fired     []string
	}{
		{"shop purchase: one candidate", purchase("e1", "d", 0, 100), 1, []string{"shop-buys"}},
		{"shop screen view: the all-apps rule only", &eventv1.Event{EventId: "e2", AppId: "shop", Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{}}}, 1, []string{"screens"}},
		{"blog screen view: two", &eventv1.Event{EventId: "e3", AppId: "blog", Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{}}}, 2, []string{"blog-any", "screens"}},
		{"other app, other type: none", &eventv1.Event{EventId: "e4", AppId: "news", Payload: &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{}}}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.evaluated
			fs := e.evaluateEvents([]*eventv1.Event{tt.ev})
			if got := e.evaluated - before; got != tt.evaluated {
				t.Errorf("%d rules evaluated, want %d", got, tt.evaluated)
			}
			var fired []string
			for _, f := range fs {
				fired = append(fired, f.f.GetRuleId())
			}
			if fmt.Sprint(fired) != fmt.Sprint(tt.fired) {
				t.Errorf("fired %v, want %v", fired, tt.fired)
			}
		})
	}
	if got := metric(t, reg, "causality_rules_evaluations_total", nil); got != 4 {
		t.Errorf("causality_rules_evaluations_total = %v, want 4", got)
	}
	if got := metric(t, reg, "causality_rules_loaded", nil); got != 4 {
		t.Errorf("causality_rules_loaded = %v, want the 4 enabled rules", got)
	}
}

func TestAnomalyRules(t *testing.T) {
	e, _, _ := newTestEngine(t, testConfig(), `{"rules":[
		{"id":"bypass","app_id":"shop","anomaly":{"kinds":["ANOMALY_KIND_FUNNEL_BYPASS"],"min_score":2},"cooldown":"3600s",`+topicAction+`},
		{"id":"any-twice","anomaly":{},"rate":{"count":2,"window":"3600s","per":"RATE_SCOPE_APP"},`+topicAction+`},
		{"id":"events","event":{},`+topicAction+`}]}`)
	an := func(id, app, device string, kind detectv1.AnomalyKind, score float64, endS int64) *detectv1.Anomaly {
		return &detectv1.Anomaly{Id: id, AppId: app, DeviceId: device, Kind: kind, Score: score, WindowStartMs: endS*1000 - 60_000, WindowEndMs: endS * 1000}
	}
	bypass := detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS
	tests := []struct {
		name  string
		a     *detectv1.Anomaly
		fired []string
	}{
		{"bypass scored 3", an("a1", "shop", "d1", bypass, 3, 600), []string{"bypass"}},
		{"the same anomaly again", an("a1", "shop", "d1", bypass, 3, 600), nil},
		{"below the score", an("a2", "shop", "d2", bypass, 1, 600), []string{"any-twice"}},
		{"another kind", an("a3", "shop", "d2", detectv1.AnomalyKind_ANOMALY_KIND_MIX_SHIFT, 9, 700), nil},
		{"another app", an("a4", "blog", "d2", bypass, 9, 700), nil},
		{"same device within the cooldown", an("a5", "shop", "d1", bypass, 5, 1200), []string{"any-twice"}},
		{"another device", an("a6", "shop", "d3", bypass, 5, 1200), []string{"bypass"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := e.evaluateAnomalies([]*detectv1.Anomaly{tt.a})
			var fired []string
			for _, f := range fs {
				fired = append(fired, f.f.GetRuleId())
				if f.f.GetAnomaly().GetId() != tt.a.GetId() || f.f.GetTimeMs() != tt.a.GetWindowEndMs() {
					t.Errorf("firing %v: want the anomaly as subject, at its window end", f.f)
				}
			}
			if fmt.Sprint(fired) != fmt.Sprint(tt.fired) {
				t.Errorf("fired %v, want %v", fired, tt.fired)
			}
		})
	}
}

const hookSet = `{"rules":[{"id":"r1","name":"big buys","event":{"predicates":[{"path":"purchase_complete.total_cents","op":"OPERATOR_GE","value":"1000"}]},
	"actions":[{"kafka_topic":"alerts"},{"webhook_id":"w1"},{"kafka_topic":"audit"}]}],
	"webhooks":[{"id":"w1","url":"https://hooks.example.com/a","secret":"0123456789abcdef"}]}`

func TestActions(t *testing.T) {
	e, f, reg := newTestEngine(t, testConfig(), hookSet)
	ctx := context.Background()
	events := []*eventv1.Event{hit("a", 1), purchase("small", "a", 2000, 10)}
	f.firings.fail = 1
	if err := e.HandleEvents(ctx, events); err == nil {
		t.Fatal("HandleEvents succeeded with the firings topic down")
	}
	f.topics["audit"] = &recorder{fail: 1} // the next try: alerts written, audit fails once
	if err := e.HandleEvents(ctx, events); err == nil {
		t.Fatal("HandleEvents succeeded with a Kafka action failing")
	}
	if err := e.HandleEvents(ctx, events); err != nil { // the consumer retries its batch
		t.Fatal(err)
	}
	e.Close(time.Minute)

	firings := f.firings.firings(t)
	if len(firings) != 1 {
		t.Fatalf("%d firings in the firings topic, want 1: %v", len(firings), firings)
	}
	fr := firings[0]
	if fr.GetRuleId() != "r1" || fr.GetEvent().GetEventId() != "a-1000" || fr.GetMatches() != 1 || fr.GetTimeMs() != 1000 {
		t.Errorf("firing %v", fr)
	}
	for _, topic := range []string{"alerts", "audit"} {
		if got := f.topics[topic].firings(t); len(got) != 1 || got[0].GetId() != fr.GetId() {
			t.Errorf("topic %s got %v, want the firing once", topic, got)
		}
	}
	h := f.hooks["w1"]
	if len(h.ids) != 1 || h.ids[0] != fr.GetId() {
		t.Fatalf("webhook got %v, want [%s]", h.ids, fr.GetId())
	}
	for _, want := range []string{`"type":"causality.admin.v1.RuleFiring"`, `"id":"` + fr.GetId() + `"`, `"rule_id":"r1"`, `"event_id":"a-1000"`} {
		if !strings.Contains(h.bodies[0], want) {
			t.Errorf("webhook body lacks %s: %s", want, h.bodies[0])
		}
	}
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"rule": "r1", "action": "kafka", "result": "ok"}, 2},
		{map[string]string{"rule": "r1", "action": "kafka", "result": "error"}, 1},
		{map[string]string{"rule": "r1", "action": "webhook", "result": "ok"}, 1},
	} {
		if got := metric(t, reg, "causality_rules_actions_total", c.labels); got != c.want {
			t.Errorf("causality_rules_actions_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := metric(t, reg, "causality_rules_matches_total", map[string]string{"rule": "r1"}); got != 1 {
		t.Errorf("matches = %v: a retried batch must not count again", got)
	}
	if got := metric(t, reg, "causality_rules_firings_total", map[string]string{"rule": "r1"}); got != 1 {
		t.Errorf("firings = %v", got)
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig()
	cfg.File = filepath.Join(dir, "rules.json")
	e, f, reg := newTestEngine(t, cfg, "")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfg.File, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Reload(); err != nil || e.Set().Len() != 0 {
		t.Fatalf("a missing file: %v, %d rules; want no rules", err, e.Set().Len())
	}
	rate := `"rate":{"count":2,"window":"60s","per":"RATE_SCOPE_DEVICE"}`
	write(`{"rules":[{"id":"r1","event":{},` + rate + `,"actions":[{"webhook_id":"w1"}]}],
		"webhooks":[{"id":"w1","url":"https://hooks.example.com/a","secret":"0123456789abcdef"}]}`)
	if err := e.Reload(); err != nil || e.Set().Len() != 1 {
		t.Fatalf("Reload: %v, %d rules", err, e.Set().Len())
	}
	if fs := e.evaluateEvents([]*eventv1.Event{hit("a", 0)}); len(fs) != 0 {
		t.Fatal("fired on the first of two matches")
	}
	// r1 renamed, a rule added, the webhook unchanged: r1 keeps its count.
	write(`{"rules":[{"id":"r1","name":"renamed","event":{},` + rate + `,"actions":[{"webhook_id":"w1"}]},{"id":"r2","event":{},` + topicAction + `}],
		"webhooks":[{"id":"w1","url":"https://hooks.example.com/a","secret":"0123456789abcdef"}]}`)
	if err := e.Reload(); err != nil || e.Set().Len() != 2 {
		t.Fatalf("Reload: %v, %d rules", err, e.Set().Len())
	}
	fs := e.evaluateEvents([]*eventv1.Event{hit("a", 1)})
	if len(fs) != 2 || fs[0].f.GetRuleName() != "renamed" {
		t.Fatalf("after the reload: %d firings (%v), want r1 (its second match) and r2", len(fs), fs)
	}
	if f.built != 1 {
		t.Errorf("%d webhook deliverers built, want 1: an unchanged webhook is kept", f.built)
	}
	for _, bad := range []string{`{"rules":[`, `{"rules":[{"id":"r1","event":{}}]}`, `{"rules":[{"id":"r1","event":{},"actions":[{"webhook_id":"nope"}]}]}`} {
		write(bad)
		if err := e.Reload(); err == nil {
			t.Errorf("Reload of %s succeeded", bad)
		}
		if e.Set().Len() != 2 {
			t.Errorf("after a bad file %d rules, want the 2 old ones", e.Set().Len())
		}
	}
	if got := metric(t, reg, "causality_rules_reload_errors_total", nil); got != 3 {
		t.Errorf("reload errors = %v, want 3", got)
	}
	// A new secret builds a new deliverer; removing r1 drops its state.
	write(`{"rules":[{"id":"r2","event":{},"actions":[{"webhook_id":"w1"}]}],
		"webhooks":[{"id":"w1","url":"https://hooks.example.com/a","secret":"fedcba9876543210"}]}`)
	if err := e.Reload(); err != nil || e.Set().Len() != 1 || f.built != 2 {
		t.Fatalf("Reload: %v, %d rules, %d deliverers built", err, e.Set().Len(), f.built)
	}
	if e.states["r1"] != nil {
		t.Error("the state of the removed rule r1 stayed")
	}
	write("")
	if err := e.Reload(); err != nil || e.Set().Len() != 0 {
		t.Errorf("an empty file: %v, %d rules", err, e.Set().Len())
	}
}

func TestRunWatchesTheFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		cfg := testConfig()
		cfg.File = filepath.Join(dir, "rules.json")
		e, _, _ := newTestEngine(t, cfg, "")
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- e.Run(ctx) }()
		synctest.Wait()
		if err := os.WriteFile(cfg.File, []byte(`{"rules":[{"id":"r1","event":{},`+topicAction+`}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(cfg.ReloadInterval + time.Millisecond)
		synctest.Wait()
		if e.Set().Len() != 1 {
			t.Errorf("%d rules a reload interval after the file appeared, want 1", e.Set().Len())
		}
		if err := os.WriteFile(cfg.File, []byte(`not json`), 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(cfg.ReloadInterval)
		synctest.Wait()
		if e.Set().Len() != 1 {
			t.Errorf("a bad file replaced the rules: %d", e.Set().Len())
		}
		if err := os.Remove(cfg.File); err != nil {
			t.Fatal(err)
		}
		time.Sleep(cfg.ReloadInterval)
		synctest.Wait()
		if e.Set().Len() != 0 {
			t.Errorf("%d rules after the file was removed, want none", e.Set().Len())
		}
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"ok", func(*Config) {}, ""},
		{"off needs nothing", func(c *Config) { *c = Config{} }, ""},
		{"bad firings topic", func(c *Config) { c.FiringsTopic = "a b" }, "-rules.firings-topic"},
		{"no keys", func(c *Config) { c.MaxKeys = 0 }, "-rules.max-keys"},
		{"fast reload", func(c *Config) { c.ReloadInterval = time.Millisecond }, "-rules.reload-interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			tt.mod(&c)
			err := c.Validate()
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}
