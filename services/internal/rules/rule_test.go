package rules

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// parseRule reads a Rule from protobuf JSON.
func parseRule(t testing.TB, js string) *adminv1.Rule {
	t.Helper()
	r := &adminv1.Rule{}
	if err := protojson.Unmarshal([]byte(js), r); err != nil {
		t.Fatalf("rule %s: %v", js, err)
	}
	return r
}

// parseSet reads a RuleSet from protobuf JSON.
func parseSet(t testing.TB, js string) *adminv1.RuleSet {
	t.Helper()
	rs := &adminv1.RuleSet{}
	if err := protojson.Unmarshal([]byte(js), rs); err != nil {
		t.Fatalf("rule set %s: %v", js, err)
	}
	return rs
}

const topicAction = `"actions":[{"kafka_topic":"alerts"}]`

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		rule string
		want string // "" = valid
	}{
		{"event rule", `{"id":"r","event":{"event_types":["purchase_complete"],"predicates":[{"path":"purchase_complete.total_cents","op":"OPERATOR_GT","value":"1000"}]},` + topicAction + `}`, ""},
		{"every operator", `{"event":{"predicates":[
			{"path":"app_id","op":"OPERATOR_EQ","value":"shop"},
			{"path":"device_context.platform","op":"OPERATOR_NE","value":"PLATFORM_IOS"},
			{"path":"timestamp_ms","op":"OPERATOR_LT","value":"1e15"},
			{"path":"sequence","op":"OPERATOR_LE","value":"10"},
			{"path":"properties.amount","op":"OPERATOR_GT","value":"-1.5"},
			{"path":"device_context.screen_width","op":"OPERATOR_GE","value":"0"},
			{"path":"type","op":"OPERATOR_IN","values":["screen_view","app_start"]},
			{"path":"device_context.device_model","op":"OPERATOR_CONTAINS","value":"Pixel"},
			{"path":"device_context.os_version","op":"OPERATOR_REGEX","value":"^1[0-9]\\."},
			{"path":"device_context","op":"OPERATOR_EXISTS"}]},` + topicAction + `}`, ""},
		{"anomaly rule", `{"anomaly":{"kinds":["ANOMALY_KIND_FUNNEL_BYPASS"],"min_score":2},"rate":{"count":2,"window":"60s","per":"RATE_SCOPE_APP"},"cooldown":"600s","actions":[{"webhook_id":"w1"}]}`, ""},
		{"no condition", `{"id":"r",` + topicAction + `}`, "no condition"},
		{"no action", `{"event":{}}`, "no action"},
		{"empty action", `{"event":{},"actions":[{}]}`, "set webhook_id or kafka_topic"},
		{"unknown operator", `{"event":{"predicates":[{"path":"app_id","op":42,"value":"x"}]},` + topicAction + `}`, "unknown operator"},
		{"unspecified operator", `{"event":{"predicates":[{"path":"app_id","value":"x"}]},` + topicAction + `}`, "unknown operator"},
		{"bad regex", `{"event":{"predicates":[{"path":"app_id","op":"OPERATOR_REGEX","value":"(a"}]},` + topicAction + `}`, "REGEX"},
		{"IN without values", `{"event":{"predicates":[{"path":"app_id","op":"OPERATOR_IN"}]},` + topicAction + `}`, "IN on \"app_id\" needs values"},
		{"LT on a non-number", `{"event":{"predicates":[{"path":"timestamp_ms","op":"OPERATOR_LT","value":"soon"}]},` + topicAction + `}`, "needs a number"},
		{"GT on an enum", `{"event":{"predicates":[{"path":"device_context.platform","op":"OPERATOR_GT","value":"1"}]},` + topicAction + `}`, "not a number"},
		{"empty path", `{"event":{"predicates":[{"path":"","op":"OPERATOR_EXISTS"}]},` + topicAction + `}`, "empty path"},
		{"unknown field", `{"event":{"predicates":[{"path":"device_context.colour","op":"OPERATOR_EXISTS"}]},` + topicAction + `}`, `no field "colour"`},
		{"path through a scalar", `{"event":{"predicates":[{"path":"app_id.x","op":"OPERATOR_EXISTS"}]},` + topicAction + `}`, "is not a message"},
		{"map without key", `{"event":{"predicates":[{"path":"properties","op":"OPERATOR_EXISTS"}]},` + topicAction + `}`, "name a key"},
		{"message compared", `{"event":{"predicates":[{"path":"device_context","op":"OPERATOR_EQ","value":"x"}]},` + topicAction + `}`, "only EXISTS"},
		{"unknown enum value", `{"event":{"predicates":[{"path":"device_context.platform","op":"OPERATOR_EQ","value":"PLATFORM_AMIGA"}]},` + topicAction + `}`, "PLATFORM_AMIGA"},
		{"unknown event type", `{"event":{"event_types":["purchase"]},` + topicAction + `}`, `"purchase" is not a payload`},
		{"payload path outside the types", `{"event":{"event_types":["screen_view"],"predicates":[{"path":"purchase_complete.total_cents","op":"OPERATOR_GT","value":"1"}]},` + topicAction + `}`, "only present in purchase_complete"},
		{"two payload paths", `{"event":{"predicates":[{"path":"purchase_complete.total_cents","op":"OPERATOR_GT","value":"1"},{"path":"screen_view.screen_name","op":"OPERATOR_EXISTS"}]},` + topicAction + `}`, "another predicate needs"},
		{"rate count 0", `{"event":{},"rate":{"count":0,"window":"60s","per":"RATE_SCOPE_DEVICE"},` + topicAction + `}`, "rate count 0"},
		{"rate window 0", `{"event":{},"rate":{"count":3,"window":"0s","per":"RATE_SCOPE_DEVICE"},` + topicAction + `}`, "rate window"},
		{"rate window missing", `{"event":{},"rate":{"count":3,"per":"RATE_SCOPE_DEVICE"},` + topicAction + `}`, "rate window"},
		{"rate without scope", `{"event":{},"rate":{"count":3,"window":"60s"},` + topicAction + `}`, "rate per"},
		{"negative cooldown", `{"event":{},"cooldown":"-5s",` + topicAction + `}`, "cooldown"},
		{"bad kafka topic", `{"event":{},"actions":[{"kafka_topic":"alerts/x"}]}`, "kafka topic"},
		{"kafka topic dots", `{"event":{},"actions":[{"kafka_topic":".."}]}`, "kafka topic"},
		{"unknown anomaly kind", `{"anomaly":{"kinds":[99]},` + topicAction + `}`, "anomaly kind"},
		{"negative min score", `{"anomaly":{"min_score":-1},` + topicAction + `}`, "min_score"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(parseRule(t, tt.rule))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v, want valid", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid)):
				t.Errorf("Validate = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
	if err := Validate(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("Validate(nil) = %v", err)
	}
}

func TestValidateSet(t *testing.T) {
	const hook = `{"id":"w1","url":"https://hooks.example.com/x","secret":"0123456789abcdef"}`
	tests := []struct {
		name, set, want string
	}{
		{"empty", `{}`, ""},
		{"webhook referenced", `{"rules":[{"id":"r1","event":{},"actions":[{"webhook_id":"w1"}]}],"webhooks":[` + hook + `]}`, ""},
		{"disabled rules are checked too", `{"rules":[{"id":"r1","disabled":true,"event":{},"actions":[{"webhook_id":"w2"}]}],"webhooks":[` + hook + `]}`, `unknown webhook_id "w2"`},
		{"unknown webhook id", `{"rules":[{"id":"r1","event":{},"actions":[{"webhook_id":"w2"}]}],"webhooks":[` + hook + `]}`, `unknown webhook_id "w2"`},
		{"rule without id", `{"rules":[{"event":{},` + topicAction + `}]}`, "no id"},
		{"two rules, one id", `{"rules":[{"id":"r1","event":{},` + topicAction + `},{"id":"r1","event":{},` + topicAction + `}]}`, `two rules with id "r1"`},
		{"bad rule", `{"rules":[{"id":"r1","event":{}}]}`, "no action"},
		{"webhook not http", `{"webhooks":[{"id":"w1","url":"ftp://x/y","secret":"0123456789abcdef"}]}`, "not an http(s) URL"},
		{"webhook short secret", `{"webhooks":[{"id":"w1","url":"https://x/y","secret":"short"}]}`, "at least 16 bytes"},
		{"webhook without id", `{"webhooks":[{"url":"https://x/y","secret":"0123456789abcdef"}]}`, "without id"},
		{"two webhooks, one id", `{"webhooks":[` + hook + `,` + hook + `]}`, "two webhooks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateSet(parseSet(t, tt.set))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("ValidateSet = %v, want valid", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid)):
				t.Errorf("ValidateSet = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

// purchase is an event of app shop on an Android Pixel.
func purchase(id, device string, at int64, cents int64) *eventv1.Event {
	return &eventv1.Event{
		EventId: id, AppId: "shop", DeviceId: device, TimestampMs: at,
		DeviceContext: &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_ANDROID, DeviceModel: "Pixel 8", OsVersion: "14.1", ScreenWidth: 1080},
		Properties:    map[string]string{"campaign": "spring", "amount": "12.50", "empty": ""},
		Payload: &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{
			OrderId: "o1", TotalCents: cents, Currency: "EUR",
			Items: []*eventv1.PurchaseItem{{ProductId: "p1"}},
		}},
	}
}

func TestPredicates(t *testing.T) {
	ev := purchase("e1", "d1", 1000, 2500)
	ev.GetPurchaseComplete().Items = nil
	screen := &eventv1.Event{AppId: "shop", DeviceId: "d1", Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home"}}}
	custom := &eventv1.Event{AppId: "shop", Payload: &eventv1.Event_CustomEvent{CustomEvent: &eventv1.CustomEvent{EventName: "level_up", IntParams: map[string]int64{"level": 7}}}}
	profile := &eventv1.Event{AppId: "shop", Payload: &eventv1.Event_UserProfileUpdate{UserProfileUpdate: &eventv1.UserProfileUpdate{FieldsUpdated: []string{"email", "name"}}}}
	tests := []struct {
		name  string
		ev    *eventv1.Event
		path  string
		op    adminv1.Operator
		value string
		in    []string
		want  bool
	}{
		{"eq string", ev, "app_id", adminv1.Operator_OPERATOR_EQ, "shop", nil, true},
		{"eq string differs", ev, "app_id", adminv1.Operator_OPERATOR_EQ, "shop2", nil, false},
		{"eq number as number", ev, "purchase_complete.total_cents", adminv1.Operator_OPERATOR_EQ, "2500.0", nil, true},
		{"eq property number as number", ev, "properties.amount", adminv1.Operator_OPERATOR_EQ, "12.5", nil, true},
		{"eq enum by name", ev, "device_context.platform", adminv1.Operator_OPERATOR_EQ, "PLATFORM_ANDROID", nil, true},
		{"ne enum", ev, "device_context.platform", adminv1.Operator_OPERATOR_NE, "PLATFORM_IOS", nil, true},
		{"ne equal", ev, "app_id", adminv1.Operator_OPERATOR_NE, "shop", nil, false},
		{"ne absent holds", screen, "purchase_complete.currency", adminv1.Operator_OPERATOR_NE, "EUR", nil, true},
		{"gt", ev, "purchase_complete.total_cents", adminv1.Operator_OPERATOR_GT, "1000", nil, true},
		{"gt false", ev, "purchase_complete.total_cents", adminv1.Operator_OPERATOR_GT, "2500", nil, false},
		{"ge equal", ev, "purchase_complete.total_cents", adminv1.Operator_OPERATOR_GE, "2500", nil, true},
		{"lt", ev, "device_context.screen_width", adminv1.Operator_OPERATOR_LT, "2000", nil, true},
		{"le", ev, "properties.amount", adminv1.Operator_OPERATOR_LE, "12.5", nil, true},
		{"lt on a text property", ev, "properties.campaign", adminv1.Operator_OPERATOR_LT, "100", nil, false},
		{"gt on another payload", screen, "purchase_complete.total_cents", adminv1.Operator_OPERATOR_GT, "0", nil, false},
		{"in", ev, "properties.campaign", adminv1.Operator_OPERATOR_IN, "", []string{"winter", "spring"}, true},
		{"in absent", ev, "properties.nope", adminv1.Operator_OPERATOR_IN, "", []string{"spring"}, false},
		{"in numbers", ev, "purchase_complete.total_cents", adminv1.Operator_OPERATOR_IN, "", []string{"1e3", "2.5e3"}, true},
		{"type in", screen, "type", adminv1.Operator_OPERATOR_IN, "", []string{"screen_view"}, true},
		{"type eq", ev, "type", adminv1.Operator_OPERATOR_EQ, "purchase_complete", nil, true},
		{"contains", ev, "device_context.device_model", adminv1.Operator_OPERATOR_CONTAINS, "Pixel", nil, true},
		{"contains not", ev, "device_context.device_model", adminv1.Operator_OPERATOR_CONTAINS, "iPhone", nil, false},
		{"regex", ev, "device_context.os_version", adminv1.Operator_OPERATOR_REGEX, `^1[0-9]\.`, nil, true},
		{"regex not", ev, "device_context.os_version", adminv1.Operator_OPERATOR_REGEX, `^9`, nil, false},
		{"exists property", ev, "properties.campaign", adminv1.Operator_OPERATOR_EXISTS, "", nil, true},
		{"exists empty property", ev, "properties.empty", adminv1.Operator_OPERATOR_EXISTS, "", nil, false},
		{"exists missing property", ev, "properties.nope", adminv1.Operator_OPERATOR_EXISTS, "", nil, false},
		{"exists unset scalar", ev, "user_id", adminv1.Operator_OPERATOR_EXISTS, "", nil, false},
		{"exists message", ev, "device_context", adminv1.Operator_OPERATOR_EXISTS, "", nil, true},
		{"exists missing message", screen, "device_context", adminv1.Operator_OPERATOR_EXISTS, "", nil, false},
		{"exists payload", screen, "screen_view", adminv1.Operator_OPERATOR_EXISTS, "", nil, true},
		{"payload map int", custom, "custom_event.int_params.level", adminv1.Operator_OPERATOR_GE, "7", nil, true},
		{"map key with dots", &eventv1.Event{Properties: map[string]string{"a.b": "x"}}, "properties.a.b", adminv1.Operator_OPERATOR_EQ, "x", nil, true},
		{"list: one element holds", profile, "user_profile_update.fields_updated", adminv1.Operator_OPERATOR_EQ, "name", nil, true},
		{"list: ne when none equals", profile, "user_profile_update.fields_updated", adminv1.Operator_OPERATOR_NE, "name", nil, false},
		{"unset enum exists", screen, "device_context.platform", adminv1.Operator_OPERATOR_EXISTS, "", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := compilePredicate(&adminv1.Predicate{Path: tt.path, Op: tt.op, Value: tt.value, Values: tt.in})
			if err != nil {
				t.Fatal(err)
			}
			if got := p.match(tt.ev, nil); got != tt.want {
				t.Errorf("%s %s %q%q on %v = %v, want %v", tt.path, tt.op, tt.value, tt.in, tt.ev, got, tt.want)
			}
		})
	}
}

func TestExplain(t *testing.T) {
	r := parseRule(t, `{"id":"big","app_id":"shop","event":{"predicates":[
		{"path":"purchase_complete.total_cents","op":"OPERATOR_GT","value":"1000"},
		{"path":"properties.campaign","op":"OPERATOR_IN","values":["spring"]}]},
		"rate":{"count":3,"window":"60s","per":"RATE_SCOPE_DEVICE"},"cooldown":"600s",`+topicAction+`}`)
	matched, lines, err := Explain(r, purchase("e1", "d1", 1000, 2500))
	if err != nil || !matched {
		t.Fatalf("Explain = %v, %q, %v; want a match", matched, lines, err)
	}
	text := strings.Join(lines, "\n")
	for _, want := range []string{`app_id "shop" equals the rule's "shop": yes`, `type "purchase_complete" is one of [purchase_complete]: yes`,
		`predicate 0: purchase_complete.total_cents ("2500") GT "1000": yes`, `predicate 1: properties.campaign ("spring") IN ["spring"]: yes`, "rate: fires on the 3. match per device within 1m0s", "cooldown: 10m0s"} {
		if !strings.Contains(text, want) {
			t.Errorf("Explain lines lack %q:\n%s", want, text)
		}
	}
	matched, lines, err = Explain(r, purchase("e1", "d1", 1000, 500))
	if err != nil || matched || !strings.Contains(strings.Join(lines, "\n"), `predicate 0: purchase_complete.total_cents ("500") GT "1000": no`) {
		t.Errorf("Explain of a small purchase = %v, %q, %v; want no match saying why", matched, lines, err)
	}
	other := purchase("e1", "d1", 1000, 2500)
	other.AppId = "blog"
	if matched, _, _ := Explain(r, other); matched {
		t.Error("Explain matched an event of another app")
	}
	screen := &eventv1.Event{AppId: "shop", Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "x"}}}
	if matched, lines, _ := Explain(r, screen); matched || !strings.Contains(strings.Join(lines, "\n"), "(absent)") {
		t.Errorf("Explain of a screen view = %v, %q; want no match, the path absent", matched, lines)
	}
	if _, _, err := Explain(parseRule(t, `{"event":{"predicates":[{"path":"x","op":"OPERATOR_EXISTS"}]},`+topicAction+`}`), screen); !errors.Is(err, ErrInvalid) {
		t.Errorf("Explain of an invalid rule: %v", err)
	}
	if _, _, err := Explain(parseRule(t, `{"anomaly":{},`+topicAction+`}`), screen); !errors.Is(err, ErrNotEventRule) {
		t.Errorf("Explain of an anomaly rule: %v", err)
	}
}

func TestCheckTopic(t *testing.T) {
	for topic, ok := range map[string]bool{"causality.rules.firings.v1": true, "a_b-C9": true, "": false, ".": false, "a b": false, "é": false, strings.Repeat("x", 250): false} {
		if err := CheckTopic(topic); (err == nil) != ok {
			t.Errorf("CheckTopic(%q) = %v, want ok=%v", topic, err, ok)
		}
	}
}
