package ingest

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// Limits bound what one event may carry.
type Limits struct {
	MaxEventBytes int           // serialized size of one event
	MaxString     int           // bytes in most string fields
	MaxLongString int           // bytes in stack_trace and messages
	MaxProperties int           // entries in any map, and properties
	MaxRepeated   int           // entries in any repeated field
	MaxFuture     time.Duration // corrected event time ahead of the server clock
	MaxPast       time.Duration // event time behind the server clock
}

// DefaultLimits are the documented defaults (docs/protocol.md).
var DefaultLimits = Limits{
	MaxEventBytes: 64 << 10,
	MaxString:     1024,
	MaxLongString: 32 << 10,
	MaxProperties: 64,
	MaxRepeated:   100,
	MaxFuture:     10 * time.Minute,
	MaxPast:       30 * 24 * time.Hour,
}

// longStrings may use MaxLongString.
var longStrings = map[protoreflect.Name]bool{
	"stack_trace": true, "crash_message": true, "error_message": true, "deeplink_url": true,
}

// required names the field each payload must set.
var required = map[protoreflect.FullName]protoreflect.Name{
	"causality.event.v1.ScreenView":       "screen_name",
	"causality.event.v1.ScreenExit":       "screen_name",
	"causality.event.v1.ButtonTap":        "button_id",
	"causality.event.v1.TextInput":        "field_id",
	"causality.event.v1.ProductView":      "product_id",
	"causality.event.v1.AddToCart":        "product_id",
	"causality.event.v1.RemoveFromCart":   "product_id",
	"causality.event.v1.PurchaseComplete": "order_id",
	"causality.event.v1.CustomEvent":      "event_name",
}

// invalid is a validation failure.
type invalid struct {
	reason ingestv1.InvalidReason
	detail string
}

// EventTime is timestamp_ms corrected for the device clock skew measured
// between sent_at_ms and received_at_ms. It saturates instead of wrapping
// around, so absurd client times stay out of range.
func EventTime(e *eventv1.Event) int64 {
	ts := e.GetTimestampMs()
	if e.GetSentAtMs() <= 0 || e.GetReceivedAtMs() <= 0 {
		return ts
	}
	skew := e.GetReceivedAtMs() - e.GetSentAtMs() // both positive: cannot overflow
	t := ts + skew
	switch {
	case skew > 0 && t < ts:
		return math.MaxInt64
	case skew < 0 && t > ts:
		return math.MinInt64
	}
	return t
}

// validate checks one event for app, whose received_at_ms is already set.
// It returns nil when the event may be published.
func (l Limits) validate(e *eventv1.Event, app string) *invalid {
	return l.check(e, app, -1)
}

// check is validate for an event whose serialized size (after stamping) is
// size, or unknown when size < 0.
func (l Limits) check(e *eventv1.Event, app string, size int) *invalid {
	switch {
	case e.GetEventId() == "":
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_MISSING_EVENT_ID, "event_id is required"}
	case len(e.GetEventId()) != 36:
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_BAD_EVENT_ID, "event_id must be a UUID in canonical form"}
	case e.GetAppId() == "":
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_MISSING_APP_ID, "app_id is required"}
	case app != "" && e.GetAppId() != app: // app "" only in dev mode: any app
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_APP_MISMATCH, fmt.Sprintf("app_id %.64q does not belong to this key", e.GetAppId())}
	case e.GetDeviceId() == "":
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_MISSING_DEVICE_ID, "device_id is required"}
	}
	if _, err := uuid.Parse(e.GetEventId()); err != nil {
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_BAD_EVENT_ID, "event_id: " + err.Error()}
	}
	if e.GetPayload() == nil {
		if len(e.ProtoReflect().GetUnknown()) > 0 {
			return &invalid{ingestv1.InvalidReason_INVALID_REASON_UNKNOWN_PAYLOAD, "payload type unknown to this collector"}
		}
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_MISSING_PAYLOAD, "exactly one payload is required"}
	}
	if size < 0 {
		size = proto.Size(e)
	}
	if size > l.MaxEventBytes {
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_EVENT_TOO_LARGE, fmt.Sprintf("event is %d bytes, limit %d", size, l.MaxEventBytes)}
	}
	if bad := l.walkEvent(e); bad != nil {
		return bad
	}
	now := e.GetReceivedAtMs()
	t := EventTime(e)
	switch {
	case t > now+l.MaxFuture.Milliseconds():
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_IN_FUTURE, fmt.Sprintf("event time is %s ahead of the server", time.Duration(t-now)*time.Millisecond)}
	case t < now-l.MaxPast.Milliseconds():
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_TOO_OLD, fmt.Sprintf("event time is more than %s old", l.MaxPast)}
	}
	return nil
}

// walkEvent applies the size rules to the event and every nested message,
// in field-number order. The envelope, on every event, is read directly;
// the payload is walked by reflection. TestValidateEveryField proves that
// the direct part covers every field of Event and DeviceContext.
func (l Limits) walkEvent(e *eventv1.Event) *invalid {
	dc := e.GetDeviceContext()
	strs := [...]struct{ name, v string }{
		{"event_id", e.GetEventId()}, {"app_id", e.GetAppId()}, {"device_id", e.GetDeviceId()},
		{"install_id", e.GetInstallId()}, {"session_id", e.GetSessionId()}, {"user_id", e.GetUserId()},
		{"correlation_id", e.GetCorrelationId()}, {"idempotency_key", e.GetIdempotencyKey()},
		// device_context (13)
		{"os_version", dc.GetOsVersion()}, {"app_version", dc.GetAppVersion()}, {"build_number", dc.GetBuildNumber()},
		{"device_model", dc.GetDeviceModel()}, {"manufacturer", dc.GetManufacturer()}, {"locale", dc.GetLocale()},
		{"timezone", dc.GetTimezone()}, {"carrier", dc.GetCarrier()}, {"sdk_version", dc.GetSdkVersion()},
	}
	for _, s := range strs {
		if len(s.v) > l.MaxString {
			return &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("%s is %d bytes, limit %d", s.name, len(s.v), l.MaxString)}
		}
	}
	if props := e.GetProperties(); len(props) > 0 {
		if len(props) > l.MaxProperties {
			return &invalid{ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES, fmt.Sprintf("properties has %d entries, limit %d", len(props), l.MaxProperties)}
		}
		for k, v := range props {
			if len(k) > 128 {
				return &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, "a key of properties is longer than 128 bytes"}
			}
			if len(v) > l.MaxString {
				return &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("properties[%.32q] is longer than %d bytes", k, l.MaxString)}
			}
		}
	}
	if p := payloadMessage(e); p != nil {
		return l.walk(p)
	}
	return nil
}

// payloadOneof is Event's payload oneof.
var payloadOneof = (&eventv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")

// payloadTypes holds the Go type of each payload oneof wrapper
// (*eventv1.Event_ScreenView, ...): reading the wrapper's one field is
// several times faster than WhichOneof.
var payloadTypes = func() map[reflect.Type]bool {
	out := map[reflect.Type]bool{}
	for i := range payloadOneof.Fields().Len() {
		fd := payloadOneof.Fields().Get(i)
		e := &eventv1.Event{}
		m := e.ProtoReflect()
		m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
		out[reflect.TypeOf(e.GetPayload())] = true
	}
	return out
}()

// payloadMessage is the event's payload message, nil when it has none.
func payloadMessage(e *eventv1.Event) protoreflect.Message {
	p := e.GetPayload()
	if p == nil {
		return nil
	}
	if payloadTypes[reflect.TypeOf(p)] {
		if v := reflect.ValueOf(p).Elem().Field(0); !v.IsNil() {
			return v.Interface().(proto.Message).ProtoReflect()
		}
	}
	m := e.ProtoReflect()
	if fd := m.WhichOneof(payloadOneof); fd != nil {
		return m.Get(fd).Message()
	}
	return nil
}

// plan is what walk checks in one message type: its required field, and
// its string, map, list and message fields in field-number order.
type plan struct {
	required protoreflect.FieldDescriptor
	fields   []planField
}

type planField struct {
	fd   protoreflect.FieldDescriptor
	long bool // a string that may use MaxLongString
}

// plans holds the plan of every message of the event package, built once.
var plans = func() map[protoreflect.FullName]*plan {
	out := map[protoreflect.FullName]*plan{}
	msgs := eventv1.File_causality_event_v1_event_proto.Messages()
	for i := range msgs.Len() {
		out[msgs.Get(i).FullName()] = newPlan(msgs.Get(i))
	}
	return out
}()

func newPlan(md protoreflect.MessageDescriptor) *plan {
	p := &plan{}
	if f, ok := required[md.FullName()]; ok {
		p.required = md.Fields().ByName(f)
	}
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Kind() == protoreflect.StringKind || fd.Kind() == protoreflect.MessageKind || fd.IsMap() || fd.IsList() {
			p.fields = append(p.fields, planField{fd: fd, long: longStrings[fd.Name()]})
		}
	}
	sort.Slice(p.fields, func(i, j int) bool { return p.fields[i].fd.Number() < p.fields[j].fd.Number() })
	return p
}

// walk checks string lengths, map and list sizes and required payload
// fields of m and the messages nested in it, in field-number order.
func (l Limits) walk(m protoreflect.Message) *invalid {
	md := m.Descriptor()
	p, ok := plans[md.FullName()]
	if !ok {
		p = newPlan(md)
	}
	if p.required != nil && m.Get(p.required).String() == "" {
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_MISSING_REQUIRED_FIELD, fmt.Sprintf("%s.%s is required", md.Name(), p.required.Name())}
	}
	for _, f := range p.fields {
		fd := f.fd
		if !m.Has(fd) {
			continue
		}
		v := m.Get(fd)
		var bad *invalid
		switch {
		case fd.IsMap():
			bad = l.walkMap(fd, v.Map())
		case fd.IsList():
			bad = l.walkList(fd, v.List())
		case fd.Kind() == protoreflect.MessageKind:
			bad = l.walk(v.Message())
		default: // a string
			max := l.MaxString
			if f.long {
				max = l.MaxLongString
			}
			if len(v.String()) > max {
				bad = &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("%s is %d bytes, limit %d", fd.Name(), len(v.String()), max)}
			}
		}
		if bad != nil {
			return bad
		}
	}
	return nil
}

func (l Limits) walkMap(fd protoreflect.FieldDescriptor, mp protoreflect.Map) *invalid {
	if mp.Len() > l.MaxProperties {
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES, fmt.Sprintf("%s has %d entries, limit %d", fd.Name(), mp.Len(), l.MaxProperties)}
	}
	var bad *invalid
	mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
		if len(k.String()) > 128 {
			bad = &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("a key of %s is longer than 128 bytes", fd.Name())}
		} else if fd.MapValue().Kind() == protoreflect.StringKind && len(mv.String()) > l.MaxString {
			bad = &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("%s[%.32q] is longer than %d bytes", fd.Name(), k.String(), l.MaxString)}
		}
		return bad == nil
	})
	return bad
}

func (l Limits) walkList(fd protoreflect.FieldDescriptor, list protoreflect.List) *invalid {
	if list.Len() > l.MaxRepeated {
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES, fmt.Sprintf("%s has %d entries, limit %d", fd.Name(), list.Len(), l.MaxRepeated)}
	}
	for i := range list.Len() {
		if fd.Kind() == protoreflect.MessageKind {
			if bad := l.walk(list.Get(i).Message()); bad != nil {
				return bad
			}
		} else if fd.Kind() == protoreflect.StringKind && len(list.Get(i).String()) > l.MaxString {
			return &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("an entry of %s is longer than %d bytes", fd.Name(), l.MaxString)}
		}
	}
	return nil
}
