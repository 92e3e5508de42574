package ingest

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// testNow is the server clock in validation tests, in Unix ms.
const testNow int64 = 1767225600000 // 2026-01-01T00:00:00Z

// requiredFields is what the catalogue says each payload must carry (proto
// field names), written out here rather than read from validate.go.
var requiredFields = map[string]string{
	"screen_view":       "screen_name",
	"screen_exit":       "screen_name",
	"button_tap":        "button_id",
	"text_input":        "field_id",
	"product_view":      "product_id",
	"add_to_cart":       "product_id",
	"remove_from_cart":  "product_id",
	"purchase_complete": "order_id",
	"custom_event":      "event_name",
}

// newEvent returns a valid event of app "app-a" received at testNow.
func newEvent() *eventv1.Event {
	return &eventv1.Event{
		EventId:      "0193e2c4-7b7a-7c3e-8a55-0a1b2c3d4e5f",
		AppId:        "app-a",
		DeviceId:     "device-1",
		TimestampMs:  testNow - 1000,
		ReceivedAtMs: testNow,
		Payload:      &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home"}},
	}
}

// payloadFields lists the fields of Event's payload oneof.
func payloadFields() protoreflect.FieldDescriptors {
	return (&eventv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload").Fields()
}

// withPayload sets the payload named name on e; required says whether its
// required field (if any) is filled.
func withPayload(tb testing.TB, e *eventv1.Event, name string, required bool) {
	tb.Helper()
	fd := payloadFields().ByName(protoreflect.Name(name))
	if fd == nil {
		tb.Fatalf("no payload %q", name)
	}
	m := e.ProtoReflect()
	pm := m.NewField(fd).Message()
	if f, ok := requiredFields[name]; ok && required {
		pm.Set(pm.Descriptor().Fields().ByName(protoreflect.Name(f)), protoreflect.ValueOfString("x"))
	}
	m.Set(fd, protoreflect.ValueOfMessage(pm))
}

func stringMap(n, valueLen int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("k%03d", i)] = strings.Repeat("v", valueLen)
	}
	return m
}

func TestValidateEveryPayloadType(t *testing.T) {
	fields := payloadFields()
	if fields.Len() != 29 {
		t.Errorf("Event has %d payload types, the catalogue has 29", fields.Len())
	}
	for i := range fields.Len() {
		name := string(fields.Get(i).Name())
		t.Run(name, func(t *testing.T) {
			e := newEvent()
			withPayload(t, e, name, true)
			if bad := DefaultLimits.validate(e, "app-a"); bad != nil {
				t.Fatalf("valid %s refused: %v %s", name, bad.reason, bad.detail)
			}
			if _, ok := requiredFields[name]; !ok {
				return
			}
			e = newEvent()
			withPayload(t, e, name, false)
			bad := DefaultLimits.validate(e, "app-a")
			if bad == nil || bad.reason != ingestv1.InvalidReason_INVALID_REASON_MISSING_REQUIRED_FIELD {
				t.Fatalf("%s without %s: got %v, want MISSING_REQUIRED_FIELD", name, requiredFields[name], bad)
			}
			if !strings.Contains(bad.detail, requiredFields[name]) {
				t.Errorf("detail %q does not name %s", bad.detail, requiredFields[name])
			}
		})
	}
}

// unknownPayload returns an event as a newer SDK would send it: a payload
// field number this collector does not know.
func unknownPayload(tb testing.TB) *eventv1.Event {
	tb.Helper()
	e := newEvent()
	e.Payload = nil
	b := mustMarshal(tb, e)
	b = protowire.AppendTag(b, 199, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte{0x0a, 0x03, 'n', 'e', 'w'})
	out := &eventv1.Event{}
	if err := proto.Unmarshal(b, out); err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestValidate(t *testing.T) {
	long := func(n int) string { return strings.Repeat("x", n) }
	l := DefaultLimits
	hour := time.Hour.Milliseconds()
	day := 24 * hour
	tests := []struct {
		name string
		app  string // the key's app; "" is dev mode (any app)
		mod  func(e *eventv1.Event)
		want ingestv1.InvalidReason // UNSPECIFIED: valid
	}{
		{name: "valid", mod: func(e *eventv1.Event) {}},

		// Identity.
		{name: "missing event id", mod: func(e *eventv1.Event) { e.EventId = "" }, want: ingestv1.InvalidReason_INVALID_REASON_MISSING_EVENT_ID},
		{name: "event id not a uuid", mod: func(e *eventv1.Event) { e.EventId = "event-1" }, want: ingestv1.InvalidReason_INVALID_REASON_BAD_EVENT_ID},
		{name: "event id 36 chars not hex", mod: func(e *eventv1.Event) { e.EventId = "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz" }, want: ingestv1.InvalidReason_INVALID_REASON_BAD_EVENT_ID},
		{name: "event id 36 chars misplaced dashes", mod: func(e *eventv1.Event) { e.EventId = "0193e2c47-b7a-7c3e-8a55-0a1b2c3d4e5f" }, want: ingestv1.InvalidReason_INVALID_REASON_BAD_EVENT_ID},
		{name: "event id without dashes", mod: func(e *eventv1.Event) { e.EventId = "0193e2c47b7a7c3e8a550a1b2c3d4e5f" }, want: ingestv1.InvalidReason_INVALID_REASON_BAD_EVENT_ID},
		{name: "event id in braces", mod: func(e *eventv1.Event) { e.EventId = "{0193e2c4-7b7a-7c3e-8a55-0a1b2c3d4e5f}" }, want: ingestv1.InvalidReason_INVALID_REASON_BAD_EVENT_ID},
		{name: "event id as urn", mod: func(e *eventv1.Event) { e.EventId = "urn:uuid:0193e2c4-7b7a-7c3e-8a55-0a1b2c3d4e5f" }, want: ingestv1.InvalidReason_INVALID_REASON_BAD_EVENT_ID},
		{name: "event id v4 is accepted", mod: func(e *eventv1.Event) { e.EventId = "9b2f6c1e-3d4a-4f5b-8c6d-7e8f9a0b1c2d" }},
		{name: "missing app id in dev mode", app: "", mod: func(e *eventv1.Event) { e.AppId = "" }, want: ingestv1.InvalidReason_INVALID_REASON_MISSING_APP_ID},
		{name: "any app in dev mode", app: "", mod: func(e *eventv1.Event) { e.AppId = "other" }},
		{name: "app of another key", mod: func(e *eventv1.Event) { e.AppId = "app-b" }, want: ingestv1.InvalidReason_INVALID_REASON_APP_MISMATCH},
		{name: "missing device id", mod: func(e *eventv1.Event) { e.DeviceId = "" }, want: ingestv1.InvalidReason_INVALID_REASON_MISSING_DEVICE_ID},

		// Payload.
		{name: "missing payload", mod: func(e *eventv1.Event) { e.Payload = nil }, want: ingestv1.InvalidReason_INVALID_REASON_MISSING_PAYLOAD},
		{name: "unknown payload (newer SDK)", mod: func(e *eventv1.Event) {
			proto.Reset(e)
			proto.Merge(e, unknownPayload(t))
		}, want: ingestv1.InvalidReason_INVALID_REASON_UNKNOWN_PAYLOAD},
		{name: "missing required payload field", mod: func(e *eventv1.Event) { e.GetScreenView().ScreenName = "" }, want: ingestv1.InvalidReason_INVALID_REASON_MISSING_REQUIRED_FIELD},

		// String lengths.
		{name: "string at the limit", mod: func(e *eventv1.Event) { e.UserId = long(l.MaxString) }},
		{name: "string too long", mod: func(e *eventv1.Event) { e.UserId = long(l.MaxString + 1) }, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "payload string too long", mod: func(e *eventv1.Event) { e.GetScreenView().ScreenName = long(l.MaxString + 1) }, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "device context string too long", mod: func(e *eventv1.Event) {
			e.DeviceContext = &eventv1.DeviceContext{OsVersion: long(l.MaxString + 1)}
		}, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "stack trace may be long", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_AppCrash{AppCrash: &eventv1.AppCrash{StackTrace: long(l.MaxLongString), CrashMessage: long(2 * l.MaxString)}}
		}},
		{name: "stack trace too long", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_AppCrash{AppCrash: &eventv1.AppCrash{StackTrace: long(l.MaxLongString + 1)}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "crash message too long", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_AppCrash{AppCrash: &eventv1.AppCrash{CrashMessage: long(l.MaxLongString + 1)}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "crash type is not a long string", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_AppCrash{AppCrash: &eventv1.AppCrash{CrashType: long(l.MaxString + 1)}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "error message may be long", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_PurchaseFailed{PurchaseFailed: &eventv1.PurchaseFailed{ErrorMessage: long(l.MaxLongString)}}
		}},
		{name: "error message too long", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_PurchaseFailed{PurchaseFailed: &eventv1.PurchaseFailed{ErrorMessage: long(l.MaxLongString + 1)}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "deeplink may be long", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{DeeplinkUrl: long(4 * l.MaxString)}}
		}},
		{name: "deeplink too long", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{DeeplinkUrl: long(l.MaxLongString + 1)}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},

		// Maps and lists.
		{name: "properties at the limit", mod: func(e *eventv1.Event) { e.Properties = stringMap(l.MaxProperties, 10) }},
		{name: "too many properties", mod: func(e *eventv1.Event) { e.Properties = stringMap(l.MaxProperties+1, 1) }, want: ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES},
		{name: "property key at 128 bytes", mod: func(e *eventv1.Event) { e.Properties = map[string]string{long(128): "v"} }},
		{name: "property key too long", mod: func(e *eventv1.Event) { e.Properties = map[string]string{long(129): "v"} }, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "property value too long", mod: func(e *eventv1.Event) { e.Properties = map[string]string{"k": long(l.MaxString + 1)} }, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "payload map value too long", mod: func(e *eventv1.Event) { e.GetScreenView().Params = map[string]string{"k": long(l.MaxString + 1)} }, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "too many payload map entries", mod: func(e *eventv1.Event) {
			ints := map[string]int64{}
			for i := range l.MaxProperties + 1 {
				ints[fmt.Sprint(i)] = int64(i)
			}
			e.Payload = &eventv1.Event_CustomEvent{CustomEvent: &eventv1.CustomEvent{EventName: "e", IntParams: ints}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES},
		{name: "repeated at the limit", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_UserProfileUpdate{UserProfileUpdate: &eventv1.UserProfileUpdate{FieldsUpdated: make([]string, l.MaxRepeated)}}
		}},
		{name: "too many repeated strings", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_UserProfileUpdate{UserProfileUpdate: &eventv1.UserProfileUpdate{FieldsUpdated: make([]string, l.MaxRepeated+1)}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES},
		{name: "repeated string too long", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_UserProfileUpdate{UserProfileUpdate: &eventv1.UserProfileUpdate{FieldsUpdated: []string{"ok", long(l.MaxString + 1)}}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},
		{name: "too many repeated messages", mod: func(e *eventv1.Event) {
			items := make([]*eventv1.PurchaseItem, l.MaxRepeated+1)
			for i := range items {
				items[i] = &eventv1.PurchaseItem{ProductId: "p"}
			}
			e.Payload = &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{OrderId: "o", Items: items}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES},
		{name: "string too long inside a repeated message", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{OrderId: "o", Items: []*eventv1.PurchaseItem{{ProductName: long(l.MaxString + 1)}}}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG},

		// Size.
		{name: "event too large (all fields within their limits)", mod: func(e *eventv1.Event) {
			e.Properties = stringMap(l.MaxProperties, l.MaxString)
		}, want: ingestv1.InvalidReason_INVALID_REASON_EVENT_TOO_LARGE},
		{name: "event too large (two long strings)", mod: func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_AppCrash{AppCrash: &eventv1.AppCrash{StackTrace: long(l.MaxLongString), CrashMessage: long(l.MaxLongString)}}
		}, want: ingestv1.InvalidReason_INVALID_REASON_EVENT_TOO_LARGE},

		// Time, with the server clock at testNow.
		{name: "at the future limit", mod: func(e *eventv1.Event) { e.TimestampMs = testNow + l.MaxFuture.Milliseconds() }},
		{name: "in the future", mod: func(e *eventv1.Event) { e.TimestampMs = testNow + l.MaxFuture.Milliseconds() + 1 }, want: ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_IN_FUTURE},
		{name: "at the past limit", mod: func(e *eventv1.Event) { e.TimestampMs = testNow - l.MaxPast.Milliseconds() }},
		{name: "too old", mod: func(e *eventv1.Event) { e.TimestampMs = testNow - l.MaxPast.Milliseconds() - 1 }, want: ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_TOO_OLD},
		{name: "negative timestamp", mod: func(e *eventv1.Event) { e.TimestampMs = -1 }, want: ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_TOO_OLD},
		{name: "device clock 1h fast: corrected into range", mod: func(e *eventv1.Event) {
			e.SentAtMs = testNow + hour
			e.TimestampMs = e.SentAtMs - 5000
		}},
		{name: "device clock 1h fast, no sent_at: future", mod: func(e *eventv1.Event) { e.TimestampMs = testNow + hour - 5000 }, want: ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_IN_FUTURE},
		{name: "device clock 2 days slow: 31-day-old raw time corrected to 29 days", mod: func(e *eventv1.Event) {
			e.SentAtMs = testNow - 2*day
			e.TimestampMs = testNow - 31*day
		}},
		{name: "device clock 1h slow: raw past, corrected future", mod: func(e *eventv1.Event) {
			e.SentAtMs = testNow - hour
			e.TimestampMs = e.SentAtMs + l.MaxFuture.Milliseconds() + 1
		}, want: ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_IN_FUTURE},
		{name: "device clock 3 days fast: corrected time too old", mod: func(e *eventv1.Event) {
			e.SentAtMs = testNow + 3*day
			e.TimestampMs = testNow - 28*day
		}, want: ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_TOO_OLD},
		{name: "skew correction overflowing int64", mod: func(e *eventv1.Event) {
			e.TimestampMs, e.SentAtMs = math.MinInt64, math.MaxInt64 // wraps to just after testNow if unchecked
		}, want: ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_TOO_OLD},
		{name: "skew correction overflowing int64 upwards", mod: func(e *eventv1.Event) {
			e.TimestampMs, e.SentAtMs = math.MaxInt64-testNow+1000, 1
		}, want: ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_IN_FUTURE},
	}
	seen := map[ingestv1.InvalidReason]bool{}
	for _, tt := range tests {
		seen[tt.want] = true
		t.Run(tt.name, func(t *testing.T) {
			app := tt.app
			if app == "" && !strings.Contains(tt.name, "dev mode") {
				app = "app-a"
			}
			e := newEvent()
			tt.mod(e)
			bad := DefaultLimits.validate(e, app)
			switch {
			case tt.want == ingestv1.InvalidReason_INVALID_REASON_UNSPECIFIED && bad != nil:
				t.Fatalf("refused: %v: %s", bad.reason, bad.detail)
			case tt.want == ingestv1.InvalidReason_INVALID_REASON_UNSPECIFIED:
			case bad == nil:
				t.Fatalf("accepted, want %v", tt.want)
			case bad.reason != tt.want:
				t.Fatalf("reason %v (%s), want %v", bad.reason, bad.detail, tt.want)
			case bad.detail == "":
				t.Fatal("no detail")
			}
		})
	}
	// Every reason the validator can give has a case here.
	for v := range ingestv1.InvalidReason_name {
		if !seen[ingestv1.InvalidReason(v)] {
			t.Errorf("no case produces %v", ingestv1.InvalidReason(v))
		}
	}
}

func TestEventTime(t *testing.T) {
	tests := []struct {
		name               string
		ts, sent, received int64
		want               int64
	}{
		{"no skew information", 1000, 0, 0, 1000},
		{"sent_at only", 1000, 900, 0, 1000},
		{"received_at only", 1000, 0, 5000, 1000},
		{"device behind by 4 s", 1000, 1100, 5100, 5000},
		{"device ahead by 1 s", 5000, 6000, 5000, 4000},
		{"overflow saturates up", math.MaxInt64 - 1, 1, 3, math.MaxInt64},
		{"overflow saturates down", math.MinInt64 + 1, 10, 1, math.MinInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &eventv1.Event{TimestampMs: tt.ts, SentAtMs: tt.sent, ReceivedAtMs: tt.received}
			if got := EventTime(e); got != tt.want {
				t.Fatalf("EventTime = %d, want %d", got, tt.want)
			}
		})
	}
}
