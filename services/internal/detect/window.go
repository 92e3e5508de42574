package detect

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Windows of event time: tumbling, aligned to the Unix epoch, [Start, End)
// in ms. A window closes when the watermark (the largest event time seen
// minus the allowed lateness) reaches its end; an event whose window has
// closed is late.

// Window is [Start, End) in Unix ms.
type Window struct{ Start, End int64 }

// WindowOf returns the window of size ms that holds t.
func WindowOf(t, size int64) Window {
	s := t - mod(t, size)
	return Window{s, s + size}
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// Late reports whether an event at t is late for windows of size, given the
// watermark: its window has already closed.
func Late(t, size, watermark int64) bool { return WindowOf(t, size).End <= watermark }

// HourOf is the UTC hour of day of t (Unix ms).
func HourOf(t int64) int { return int(mod(t, 86_400_000) / 3_600_000) }

// EventTime is when the event happened by the server clock, in Unix ms: the
// device timestamp corrected for the device clock's skew (timestamp_ms +
// received_at_ms - sent_at_ms) when both are known. An event claiming to be
// from after its own receipt is put at its receipt. Without received_at_ms
// (events fed directly, e.g. by an evaluation) it is timestamp_ms.
func EventTime(e *eventv1.Event) int64 {
	t := e.GetTimestampMs()
	recv := e.GetReceivedAtMs()
	if e.GetSentAtMs() > 0 && recv > 0 {
		t += recv - e.GetSentAtMs()
	}
	if recv > 0 && t > recv {
		t = recv
	}
	return t
}

// Event types are small integers: 0 for an event without payload, then the
// payload fields of causality.event.v1.Event in declaration order.
var (
	payloadOneof = (&eventv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")
	typeNames    = func() []string {
		names := []string{"none"}
		fs := payloadOneof.Fields()
		for i := range fs.Len() {
			names = append(names, string(fs.Get(i).Name()))
		}
		return names
	}()
	typeIndex = func() map[protoreflect.FieldNumber]uint16 {
		m := map[protoreflect.FieldNumber]uint16{}
		fs := payloadOneof.Fields()
		for i := range fs.Len() {
			m[fs.Get(i).Number()] = uint16(i + 1)
		}
		return m
	}()
	numTypes = len(typeNames)

	typeAppStart         = typeByName("app_start")
	typeScreenView       = typeByName("screen_view")
	typeCheckoutStart    = typeByName("checkout_start")
	typePurchaseComplete = typeByName("purchase_complete")
)

func typeByName(name string) uint16 {
	for i, n := range typeNames {
		if n == name {
			return uint16(i)
		}
	}
	panic("detect: no event type " + name)
}

// TypeOf returns the event type of e.
func TypeOf(e *eventv1.Event) uint16 {
	fd := e.ProtoReflect().WhichOneof(payloadOneof)
	if fd == nil {
		return 0
	}
	return typeIndex[fd.Number()]
}

// TypeName is the snake_case name of an event type, e.g. "screen_view".
func TypeName(t uint16) string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "unknown"
}
