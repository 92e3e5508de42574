package ingest

import (
	"fmt"
	"math"
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
	if n := proto.Size(e); n > l.MaxEventBytes {
		return &invalid{ingestv1.InvalidReason_INVALID_REASON_EVENT_TOO_LARGE, fmt.Sprintf("event is %d bytes, limit %d", n, l.MaxEventBytes)}
	}
	if bad := l.walk(e.ProtoReflect()); bad != nil {
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

// walk checks string lengths, map and list sizes and required payload fields.
func (l Limits) walk(m protoreflect.Message) *invalid {
	if f, ok := required[m.Descriptor().FullName()]; ok {
		if m.Get(m.Descriptor().Fields().ByName(f)).String() == "" {
			return &invalid{ingestv1.InvalidReason_INVALID_REASON_MISSING_REQUIRED_FIELD, fmt.Sprintf("%s.%s is required", m.Descriptor().Name(), f)}
		}
	}
	var bad *invalid
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			mp := v.Map()
			if mp.Len() > l.MaxProperties {
				bad = &invalid{ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES, fmt.Sprintf("%s has %d entries, limit %d", fd.Name(), mp.Len(), l.MaxProperties)}
				return false
			}
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if len(k.String()) > 128 {
					bad = &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("a key of %s is longer than 128 bytes", fd.Name())}
				} else if fd.MapValue().Kind() == protoreflect.StringKind && len(mv.String()) > l.MaxString {
					bad = &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("%s[%.32q] is longer than %d bytes", fd.Name(), k.String(), l.MaxString)}
				}
				return bad == nil
			})
		case fd.IsList():
			list := v.List()
			if list.Len() > l.MaxRepeated {
				bad = &invalid{ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES, fmt.Sprintf("%s has %d entries, limit %d", fd.Name(), list.Len(), l.MaxRepeated)}
				return false
			}
			for i := 0; i < list.Len() && bad == nil; i++ {
				if fd.Kind() == protoreflect.MessageKind {
					bad = l.walk(list.Get(i).Message())
				} else if fd.Kind() == protoreflect.StringKind && len(list.Get(i).String()) > l.MaxString {
					bad = &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("an entry of %s is longer than %d bytes", fd.Name(), l.MaxString)}
				}
			}
		case fd.Kind() == protoreflect.MessageKind:
			bad = l.walk(v.Message())
		case fd.Kind() == protoreflect.StringKind:
			max := l.MaxString
			if longStrings[fd.Name()] {
				max = l.MaxLongString
			}
			if len(v.String()) > max {
				bad = &invalid{ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, fmt.Sprintf("%s is %d bytes, limit %d", fd.Name(), len(v.String()), max)}
			}
		}
		return bad == nil
	})
	return bad
}
