package main

// End-to-end test of the rules in `causality detector` on the real Kafka:
// events in through the events topic; firings out through the firings
// topic, a Kafka action topic and a signed webhook; the rules file
// rewritten while the detector runs.

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
)

func TestRulesConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad firings topic", []string{"-rules.file=r.json", "-rules.firings-topic=a b"}, "-rules.firings-topic"},
		{"firings topic is the events topic", []string{"-rules.file=r.json", "-rules.firings-topic=causality.events.v1"}, "-rules.firings-topic must differ"},
		{"no dead letters", []string{"-rules.file=r.json", "-detect.webhook.dlq-topic="}, "-detect.webhook.dlq-topic"},
		{"no keys", []string{"-rules.file=r.json", "-rules.max-keys=0"}, "-rules.max-keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"detector", "-admin.addr=127.0.0.1:0", "-detect.grpc-addr=127.0.0.1:0", "-detect.token=" + detToken}, tt.args...)
			err := run(context.Background(), args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%v) = %v, want an error mentioning %q", tt.args, err, tt.want)
			}
		})
	}
}

// writeRules replaces the rules file atomically, as the admin API does.
func writeRules(t *testing.T, file, js string) {
	t.Helper()
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// readFirings reads topic from its start until it has n firings or d
// passes.
func readFirings(t *testing.T, cfg kafka.Config, topic string, n int, d time.Duration) []*adminv1.RuleFiring {
	t.Helper()
	var out []*adminv1.RuleFiring
	for _, m := range readFor(t, cfg, topic, n, d) {
		f := &adminv1.RuleFiring{}
		if err := proto.Unmarshal(m.Value, f); err != nil {
			t.Fatalf("%s offset %d/%d: not a RuleFiring: %v", topic, m.Partition, m.Offset, err)
		}
		if string(m.Key) != f.GetAppId() || m.AppID != f.GetAppId() {
			t.Errorf("%s: firing %s keyed %q, app_id header %q; want its app %q", topic, f.GetId(), m.Key, m.AppID, f.GetAppId())
		}
		out = append(out, f)
	}
	return out
}

// byRule counts firings per rule id.
func byRule(fs []*adminv1.RuleFiring) map[string]int {
	n := map[string]int{}
	for _, f := range fs {
		n[f.GetRuleId()]++
	}
	return n
}

// metricValue reads the sum of the samples of a metric with the given labels.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
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

// waitFor polls cond until it holds or a minute passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestRulesEndToEnd(t *testing.T) {
	kcfg := kafkatest.Config(t)
	dir := t.TempDir()
	secret := "rules-webhook-secret-0123456789"
	hooks := &hookReceiver{secret: []byte(secret)}
	hookSrv := httptest.NewServer(hooks)
	t.Cleanup(hookSrv.Close)
	anomaliesTopic, dlqTopic := kcfg.Topic+".anomalies", kcfg.Topic+".webhooks-dlq"
	firingsTopic, alertsTopic := kcfg.Topic+".firings", kcfg.Topic+".alerts"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = kafka.DeleteTopics(ctx, kcfg, anomaliesTopic, dlqTopic, firingsTopic, alertsTopic)
	})
	rulesFile := filepath.Join(dir, "rules.json")
	// big-buys: three purchases of at least 10.00 by one device within a
	// minute, then quiet for an hour. bypass: the detector's funnel bypass.
	bigBuys := `{"id":"big-buys","name":"big buys","app_id":"shop",
		"event":{"event_types":["purchase_complete"],"predicates":[{"path":"purchase_complete.total_cents","op":"OPERATOR_GE","value":"1000"}]},
		"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_DEVICE"},"cooldown":"3600s",
		"actions":[{"kafka_topic":"` + alertsTopic + `"},{"webhook_id":"w1"}]}`
	bypass := `{"id":"bypass","name":"funnel bypass","anomaly":{"kinds":["ANOMALY_KIND_FUNNEL_BYPASS"],"min_score":1},
		"actions":[{"kafka_topic":"` + alertsTopic + `"},{"webhook_id":"w1"}]}`
	hook := `{"id":"w1","url":"` + hookSrv.URL + `","secret":"` + secret + `"}`
	writeRules(t, rulesFile, `{"rules":[`+bigBuys+`,`+bypass+`],"webhooks":[`+hook+`]}`)

	args := []string{
		"-kafka.brokers=" + kcfg.Brokers, "-kafka.topic=" + kcfg.Topic, "-kafka.dlq-topic=" + kcfg.DLQTopic,
		"-kafka.partitions=3",
		"-detect.group=" + kcfg.Topic + ".detector", "-detect.anomalies-topic=" + anomaliesTopic,
		"-detect.windows=1m", "-detect.lateness=1s", "-detect.idle-after=0",
		"-detect.grpc-addr=" + detFreeAddr(t), "-detect.token=" + detToken, "-detect.checkpoint=",
		"-detect.webhook.dlq-topic=" + dlqTopic, "-detect.webhook.backoff=10ms",
		"-rules.file=" + rulesFile, "-rules.firings-topic=" + firingsTopic, "-rules.reload-interval=100ms",
	}
	_, reg := startDetectorWithRegistry(t, args)
	waitFor(t, "the rules to load", func() bool { return metricValue(t, reg, "causality_rules_loaded", nil) == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	producer, err := kafka.NewProducer(kcfg, detLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { producer.Close() })
	base := time.Now().Add(-30 * time.Minute).Truncate(time.Minute).UnixMilli()
	dc := &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_ANDROID, AppVersion: "2.4.1", BuildNumber: "2410"}
	ev := func(id, device string, seq uint64, at int64, payload func(*eventv1.Event)) *eventv1.Event {
		e := &eventv1.Event{EventId: id, AppId: "shop", DeviceId: device, InstallId: device + "-i", SessionId: device + "-s", TimestampMs: at, Sequence: seq, DeviceContext: dc}
		payload(e)
		return e
	}
	buy := func(id string, seq uint64, at int64, cents int64) *eventv1.Event {
		return ev(id, "buyer", seq, at, func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{OrderId: id, TotalCents: cents}}
		})
	}
	// The buyer launches and buys without a checkout (a funnel bypass);
	// the third big purchase fires big-buys, the cooldown holds back the
	// next three. One small purchase does not count.
	events := []*eventv1.Event{
		ev("b0", "buyer", 1, base+500, func(e *eventv1.Event) { e.Payload = &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{}} }),
		buy("b1", 2, base+1000, 2000),
		buy("b2", 3, base+2000, 500),
		buy("b3", 4, base+3000, 2000),
		buy("b4", 5, base+4000, 2000),
		buy("b5", 6, base+5000, 2000),
		buy("b6", 7, base+6000, 2000),
		buy("b7", 8, base+7000, 2000), // a third match after b4: would fire without the cooldown
	}
	if err := producer.Publish(ctx, events); err != nil {
		t.Fatal(err)
	}
	if err := producer.Publish(ctx, events); err != nil { // a collector retry: duplicates
		t.Fatal(err)
	}
	waitFor(t, "the detector to score the buyer's events", func() bool { return scoredEvents(t, reg) >= float64(len(events)) })
	// Another device moves event time on: the window closes, the bypass
	// is found.
	closer := ev("c1", "clock", 1, base+10*60_000, func(e *eventv1.Event) { e.Payload = &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{}} })
	if err := producer.Publish(ctx, []*eventv1.Event{closer}); err != nil {
		t.Fatal(err)
	}

	// Two firings: big-buys on b4 (the third big purchase) and bypass.
	// The anomaly comes after the buyer's events were evaluated, so a third
	// firing would be there by now: reading for one more finds none.
	firings := readFirings(t, kcfg, firingsTopic, 2, waitLimit)
	if len(firings) == 2 {
		firings = readFirings(t, kcfg, firingsTopic, 3, 3*time.Second)
	}
	if n := byRule(firings); len(firings) != 2 || n["big-buys"] != 1 || n["bypass"] != 1 {
		t.Fatalf("firings %v, want big-buys once and bypass once", firings)
	}
	var buys, anomaly *adminv1.RuleFiring
	for _, f := range firings {
		if f.GetRuleId() == "big-buys" {
			buys = f
		} else {
			anomaly = f
		}
	}
	if buys.GetEvent().GetEventId() != "b4" || buys.GetMatches() != 3 || buys.GetAppId() != "shop" || buys.GetDeviceId() != "buyer" ||
		buys.GetTimeMs() != base+4000 || buys.GetRuleName() != "big buys" {
		t.Errorf("big-buys firing %v: want the third big purchase b4, 3 matches", buys)
	}
	if a := anomaly.GetAnomaly(); a.GetKind() != detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS || a.GetDeviceId() != "buyer" || anomaly.GetTimeMs() != a.GetWindowEndMs() {
		t.Errorf("bypass firing %v: want the buyer's funnel bypass", anomaly)
	}
	// The Kafka action: the same firings in the alerts topic.
	alerts := readFirings(t, kcfg, alertsTopic, 2, waitLimit)
	ids := func(fs []*adminv1.RuleFiring) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.GetId())
		}
		slices.Sort(out)
		return out
	}
	if fmt.Sprint(ids(alerts)) != fmt.Sprint(ids(firings)) {
		t.Errorf("alerts topic holds %v, want the firings %v", ids(alerts), ids(firings))
	}
	// The webhook: each firing once, signed with the webhook's secret.
	waitFor(t, "two webhook deliveries", func() bool { got, _ := hooks.received(); return len(got) >= 2 })
	got, bad := hooks.received()
	slices.Sort(got)
	if bad > 0 || fmt.Sprint(got) != fmt.Sprint(ids(firings)) {
		t.Errorf("webhook got %v (%d badly signed), want %v", got, bad, ids(firings))
	}
	hooks.mu.Lock()
	bodies := string(hooks.bodies[0]) + string(hooks.bodies[1])
	hooks.mu.Unlock()
	for _, want := range []string{`"type":"causality.admin.v1.RuleFiring"`, `"rule_id":"big-buys"`, `"rule_id":"bypass"`, `"event_id":"b4"`} {
		if !strings.Contains(bodies, want) {
			t.Errorf("webhook bodies lack %s: %s", want, bodies)
		}
	}
	for rule, want := range map[string]float64{"big-buys": 1, "bypass": 1} {
		if got := metricValue(t, reg, "causality_rules_firings_total", map[string]string{"rule": rule}); got != want {
			t.Errorf("causality_rules_firings_total{rule=%q} = %v, want %v", rule, got, want)
		}
	}
	if got := metricValue(t, reg, "causality_rules_matches_total", map[string]string{"rule": "big-buys"}); got != 6 {
		t.Errorf("big-buys matched %v times, want the 6 big purchases (duplicates not counted)", got)
	}
	if got := metricValue(t, reg, "causality_rules_actions_total", map[string]string{"rule": "big-buys", "action": "webhook", "result": "ok"}); got != 1 {
		t.Errorf("big-buys webhook actions ok = %v, want 1", got)
	}

	// Hot reload: a rule on screen views is added; big-buys keeps its id,
	// and with it its cooldown.
	screens := `{"id":"paywall","app_id":"shop","event":{"predicates":[{"path":"screen_view.screen_name","op":"OPERATOR_EQ","value":"Paywall"}]},
		"actions":[{"kafka_topic":"` + alertsTopic + `"}]}`
	writeRules(t, rulesFile, `{"rules":[`+bigBuys+`,`+bypass+`,`+screens+`],"webhooks":[`+hook+`]}`)
	waitFor(t, "the new rules to load", func() bool { return metricValue(t, reg, "causality_rules_loaded", nil) == 3 })
	view := func(id string, seq uint64, at int64) *eventv1.Event {
		return ev(id, "viewer", seq, at, func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Paywall"}}
		})
	}
	later := []*eventv1.Event{buy("b8", 9, base+11*60_000, 2000), buy("b9", 10, base+11*60_000+1, 2000), buy("b10", 11, base+11*60_000+2, 2000), view("v1", 1, base+11*60_000)}
	if err := producer.Publish(ctx, later); err != nil {
		t.Fatal(err)
	}
	firings = readFirings(t, kcfg, firingsTopic, 3, waitLimit)
	if n := byRule(firings); len(firings) != 3 || n["paywall"] != 1 {
		t.Fatalf("after the reload: firings %v, want paywall once more", byRule(firings))
	}

	// A bad file: logged and counted, the rules stay.
	writeRules(t, rulesFile, `{"rules":[{"id":"broken","event":{"predicates":[{"path":"nope","op":"OPERATOR_EXISTS"}]}]}`)
	waitFor(t, "the bad file to be refused", func() bool { return metricValue(t, reg, "causality_rules_reload_errors_total", nil) >= 1 })
	if err := producer.Publish(ctx, []*eventv1.Event{view("v2", 2, base+12*60_000)}); err != nil {
		t.Fatal(err)
	}
	firings = readFirings(t, kcfg, firingsTopic, 4, waitLimit)
	if len(firings) == 4 {
		firings = readFirings(t, kcfg, firingsTopic, 5, 3*time.Second)
	}
	if n := byRule(firings); len(firings) != 4 || n["paywall"] != 2 || n["big-buys"] != 1 {
		t.Errorf("after the bad file: firings %v, want paywall twice (the old rules stayed) and big-buys once (its cooldown survived the reload)", byRule(firings))
	}
	if got := metricValue(t, reg, "causality_rules_loaded", nil); got != 3 {
		t.Errorf("causality_rules_loaded = %v after the bad file, want the 3 old rules", got)
	}
}
