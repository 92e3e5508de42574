package ingest

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// longFields may hold MaxLongString bytes (docs/protocol.md, 4.2).
var longFields = map[string]bool{"stack_trace": true, "crash_message": true, "error_message": true, "deeplink_url": true}

// eventWith returns a valid event in which the message reached from Event
// through path (a list field adds one element) is changed by set.
func eventWith(path []protoreflect.FieldDescriptor, set func(m protoreflect.Message)) *eventv1.Event {
	e := newEvent()
	m := e.ProtoReflect()
	for _, fd := range path {
		var next protoreflect.Message
		if fd.IsList() {
			l := m.Mutable(fd).List()
			el := l.NewElement()
			l.Append(el)
			next = el.Message()
		} else {
			next = m.Mutable(fd).Message()
		}
		if f, ok := requiredFields[string(fd.Name())]; ok && fd.ContainingOneof() != nil {
			next.Set(next.Descriptor().Fields().ByName(protoreflect.Name(f)), protoreflect.ValueOfString("x"))
		}
		m = next
	}
	set(m)
	return e
}

// mapValue is a valid value of a map's value kind.
func mapValue(fd protoreflect.FieldDescriptor, s string) protoreflect.Value {
	switch fd.MapValue().Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s)
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(1)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1)
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	}
	panic("map value kind " + fd.MapValue().Kind().String() + " not covered by this test")
}

// TestValidateEveryField breaks each size rule on every field of every
// message an event can carry, found by reflection, so that a field added
// to the protos is covered by validate without a test written for it.
func TestValidateEveryField(t *testing.T) {
	l := DefaultLimits
	type check struct {
		name string
		app  string // the key's app; "" is dev mode
		e    *eventv1.Event
		want ingestv1.InvalidReason
		in   string // the detail names it
	}
	var checks []check
	add := func(name string, e *eventv1.Event, want ingestv1.InvalidReason, in string) {
		checks = append(checks, check{name: name, app: "app-a", e: e, want: want, in: in})
	}
	var visit func(path []protoreflect.FieldDescriptor, md protoreflect.MessageDescriptor)
	visit = func(path []protoreflect.FieldDescriptor, md protoreflect.MessageDescriptor) {
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			name := string(md.Name()) + "." + string(fd.Name())
			sub := append(append([]protoreflect.FieldDescriptor{}, path...), fd)
			switch {
			case fd.IsMap():
				many := func(m protoreflect.Message) {
					mp := m.Mutable(fd).Map()
					for j := range l.MaxProperties + 1 {
						mp.Set(protoreflect.ValueOfString(fmt.Sprintf("k%03d", j)).MapKey(), mapValue(fd, "v"))
					}
				}
				add(name+" too many entries", eventWith(path, many), ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES, string(fd.Name()))
				longKey := func(m protoreflect.Message) {
					m.Mutable(fd).Map().Set(protoreflect.ValueOfString(strings.Repeat("k", 129)).MapKey(), mapValue(fd, "v"))
				}
				add(name+" key too long", eventWith(path, longKey), ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, string(fd.Name()))
				if fd.MapValue().Kind() == protoreflect.StringKind {
					longValue := func(m protoreflect.Message) {
						m.Mutable(fd).Map().Set(protoreflect.ValueOfString("k").MapKey(), mapValue(fd, strings.Repeat("v", l.MaxString+1)))
					}
					add(name+" value too long", eventWith(path, longValue), ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, string(fd.Name()))
				}
			case fd.IsList():
				many := func(m protoreflect.Message) {
					list := m.Mutable(fd).List()
					for range l.MaxRepeated + 1 {
						list.Append(list.NewElement())
					}
				}
				add(name+" too many entries", eventWith(path, many), ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES, string(fd.Name()))
				switch fd.Kind() {
				case protoreflect.StringKind:
					longEntry := func(m protoreflect.Message) {
						m.Mutable(fd).List().Append(protoreflect.ValueOfString(strings.Repeat("x", l.MaxString+1)))
					}
					add(name+" entry too long", eventWith(path, longEntry), ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, string(fd.Name()))
				case protoreflect.MessageKind:
					visit(sub, fd.Message())
				}
			case fd.Kind() == protoreflect.MessageKind:
				visit(sub, fd.Message())
			case fd.Kind() == protoreflect.StringKind:
				max := l.MaxString
				if longFields[string(fd.Name())] {
					max = l.MaxLongString
				}
				set := func(n int) func(m protoreflect.Message) {
					return func(m protoreflect.Message) { m.Set(fd, protoreflect.ValueOfString(strings.Repeat("x", n))) }
				}
				switch {
				case len(path) == 0 && fd.Name() == "event_id": // 36 characters: rule 2
				case len(path) == 0 && fd.Name() == "app_id": // must equal the key's app, except in dev mode
					checks = append(checks,
						check{name: name + " at the limit", e: eventWith(path, set(max))},
						check{name: name + " too long", e: eventWith(path, set(max+1)), want: ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, in: string(fd.Name())})
				default:
					add(name+" at the limit", eventWith(path, set(max)), ingestv1.InvalidReason_INVALID_REASON_UNSPECIFIED, "")
					add(name+" too long", eventWith(path, set(max+1)), ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, string(fd.Name()))
				}
			}
		}
	}
	visit(nil, (&eventv1.Event{}).ProtoReflect().Descriptor())
	if len(checks) < 150 {
		t.Fatalf("only %d checks generated: the walk over the descriptors is broken", len(checks))
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			bad := DefaultLimits.validate(c.e, c.app)
			switch {
			case c.want == ingestv1.InvalidReason_INVALID_REASON_UNSPECIFIED && bad != nil:
				t.Fatalf("refused: %v: %s", bad.reason, bad.detail)
			case c.want == ingestv1.InvalidReason_INVALID_REASON_UNSPECIFIED:
			case bad == nil:
				t.Fatalf("accepted, want %v", c.want)
			case bad.reason != c.want || !strings.Contains(bad.detail, c.in):
				t.Fatalf("got %v (%s), want %v naming %s", bad.reason, bad.detail, c.want, c.in)
			}
		})
	}
}

// BenchmarkValidate checks a typical SDK event: device context, two
// properties, a button tap.
func BenchmarkValidate(b *testing.B) {
	e := newEvent()
	e.UserId, e.SessionId, e.InstallId = "user-1", "session-1", "install-1"
	e.DeviceContext = &eventv1.DeviceContext{
		Platform: eventv1.Platform_PLATFORM_IOS, OsVersion: "17.4", AppVersion: "3.1.0", BuildNumber: "310",
		DeviceModel: "iPhone15,2", Manufacturer: "Apple", Locale: "en-US", Timezone: "Europe/Paris", SdkVersion: "0.2.0",
	}
	e.Properties = map[string]string{"plan": "pro", "ab_bucket": "b"}
	e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "checkout", ButtonText: "Buy now", ScreenName: "Cart"}}
	b.ReportAllocs()
	for b.Loop() {
		if bad := DefaultLimits.validate(e, "app-a"); bad != nil {
			b.Fatal(bad.detail)
		}
	}
}
