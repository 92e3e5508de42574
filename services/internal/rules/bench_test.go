package rules

import (
	"fmt"
	"strings"
	"testing"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// BenchmarkEvaluate measures the cost of one event against rule sets of
// different sizes. With 1000 rules spread over 50 apps and 10 event types
// an event visits the ~2 rules of its app and type, so the cost stays
// close to that of 1 rule; 1000 rules on every app and type show what a
// linear scan would cost.
func BenchmarkEvaluate(b *testing.B) {
	types := []string{"purchase_complete", "screen_view", "button_tap", "app_start", "add_to_cart",
		"checkout_start", "product_view", "user_login", "app_crash", "custom_event"}
	rule := func(i int, app, typ string) string {
		pred := `{"path":"device_context.app_version","op":"OPERATOR_EQ","value":"9.9.9"}`
		if typ != "" {
			return fmt.Sprintf(`{"id":"r%d","app_id":%q,"event":{"event_types":[%q],"predicates":[%s]},"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_DEVICE"},%s}`, i, app, typ, pred, topicAction)
		}
		return fmt.Sprintf(`{"id":"r%d","app_id":%q,"event":{"predicates":[%s]},%s}`, i, app, pred, topicAction)
	}
	sets := []struct {
		name  string
		rules func() []string
	}{
		{"rules=1", func() []string { return []string{rule(0, "app-7", "purchase_complete")} }},
		{"rules=1000,apps=50", func() []string {
			var rs []string
			for i := range 1000 {
				rs = append(rs, rule(i, fmt.Sprintf("app-%d", i%50), types[(i/50)%len(types)]))
			}
			return rs
		}},
		{"rules=1000,all-apps-and-types", func() []string {
			var rs []string
			for i := range 1000 {
				rs = append(rs, rule(i, "", ""))
			}
			return rs
		}},
	}
	ev := purchase("", "d1", 1000, 2500) // no id: never skipped as a duplicate
	ev.AppId = "app-7"
	ev.DeviceContext.AppVersion = "2.4.1"
	events := []*eventv1.Event{ev}
	for _, s := range sets {
		b.Run(s.name, func(b *testing.B) {
			e, _, _ := newTestEngine(b, testConfig(), `{"rules":[`+strings.Join(s.rules(), ",")+`]}`)
			before := e.evaluated
			for b.Loop() {
				if fs := e.evaluateEvents(events); len(fs) != 0 {
					b.Fatal("a rule fired")
				}
			}
			b.ReportMetric(float64(e.evaluated-before)/float64(b.N), "rules/event")
		})
	}
}
