package warehouse

import (
	"bytes"
	"encoding/json"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// columns are the events columns the Writer fills, in insert order.
var columns = []string{
	"event_id", "app_id", "device_id", "install_id", "session_id", "user_id",
	"timestamp_ms", "sent_at_ms", "received_at_ms", "event_time_ms",
	"event_date", "timestamp", "event_time", "received_at",
	"sequence", "correlation_id", "idempotency_key",
	"platform", "os_version", "app_version", "build_number", "device_model", "manufacturer",
	"screen_width", "screen_height", "locale", "timezone", "network_type", "carrier",
	"is_jailbroken", "is_emulator", "sdk_version",
	"event_type", "screen_name", "product_id", "amount_cents", "currency", "custom_name", "payload",
	"props.key", "props.value",
}

// block holds one batch column by column (the native protocol's shape).
type block struct {
	eventID, appID, deviceID, installID, sessionID, userID     []string
	timestampMs, sentAtMs, receivedAtMs, eventTimeMs           []int64
	eventDate, timestamp, eventTime, receivedAt                []time.Time
	sequence                                                   []uint64
	correlationID, idempotencyKey                              []string
	platform, osVersion, appVersion, buildNumber, model, maker []string
	screenWidth, screenHeight                                  []int32
	locale, timezone, networkType, carrier                     []string
	jailbroken, emulator                                       []uint8
	sdkVersion                                                 []string
	eventType, screenName, productID                           []string
	amountCents                                                []int64
	currency, customName, payload                              []string
	propKeys, propValues                                       [][]string

	json    []byte   // every row's payload JSON, back to back
	jsonEnd []int    // where each row's JSON ends in json
	strs    []string // backs propKeys and propValues
}

// newBlock returns a block with room for n rows.
func newBlock(n int) *block {
	b := &block{}
	b.eventID = make([]string, 0, n)
	b.appID = make([]string, 0, n)
	b.deviceID = make([]string, 0, n)
	b.installID = make([]string, 0, n)
	b.sessionID = make([]string, 0, n)
	b.userID = make([]string, 0, n)
	b.timestampMs = make([]int64, 0, n)
	b.sentAtMs = make([]int64, 0, n)
	b.receivedAtMs = make([]int64, 0, n)
	b.eventTimeMs = make([]int64, 0, n)
	b.eventDate = make([]time.Time, 0, n)
	b.timestamp = make([]time.Time, 0, n)
	b.eventTime = make([]time.Time, 0, n)
	b.receivedAt = make([]time.Time, 0, n)
	b.sequence = make([]uint64, 0, n)
	b.correlationID = make([]string, 0, n)
	b.idempotencyKey = make([]string, 0, n)
	b.platform = make([]string, 0, n)
	b.osVersion = make([]string, 0, n)
	b.appVersion = make([]string, 0, n)
	b.buildNumber = make([]string, 0, n)
	b.model = make([]string, 0, n)
	b.maker = make([]string, 0, n)
	b.screenWidth = make([]int32, 0, n)
	b.screenHeight = make([]int32, 0, n)
	b.locale = make([]string, 0, n)
	b.timezone = make([]string, 0, n)
	b.networkType = make([]string, 0, n)
	b.carrier = make([]string, 0, n)
	b.jailbroken = make([]uint8, 0, n)
	b.emulator = make([]uint8, 0, n)
	b.sdkVersion = make([]string, 0, n)
	b.eventType = make([]string, 0, n)
	b.screenName = make([]string, 0, n)
	b.productID = make([]string, 0, n)
	b.amountCents = make([]int64, 0, n)
	b.currency = make([]string, 0, n)
	b.customName = make([]string, 0, n)
	b.payload = make([]string, 0, n)
	b.propKeys = make([][]string, 0, n)
	b.propValues = make([][]string, 0, n)
	b.json = make([]byte, 0, 64*n)
	b.jsonEnd = make([]int, 0, n)
	b.strs = make([]string, 0, 4*n)
	return b
}

// values returns the columns in the order of columns.
func (b *block) values() []any {
	return []any{
		b.eventID, b.appID, b.deviceID, b.installID, b.sessionID, b.userID,
		b.timestampMs, b.sentAtMs, b.receivedAtMs, b.eventTimeMs,
		b.eventDate, b.timestamp, b.eventTime, b.receivedAt,
		b.sequence, b.correlationID, b.idempotencyKey,
		b.platform, b.osVersion, b.appVersion, b.buildNumber, b.model, b.maker,
		b.screenWidth, b.screenHeight, b.locale, b.timezone, b.networkType, b.carrier,
		b.jailbroken, b.emulator, b.sdkVersion,
		b.eventType, b.screenName, b.productID, b.amountCents, b.currency, b.customName, b.payload,
		b.propKeys, b.propValues,
	}
}

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// add appends one event. It never fails: every value that ClickHouse could
// refuse is clamped, so one odd event cannot block the sink. The payload
// column is filled by finish.
func (b *block) add(e *eventv1.Event) {
	dc := e.GetDeviceContext()
	ts, sent, recv := e.GetTimestampMs(), e.GetSentAtMs(), e.GetReceivedAtMs()
	corrected := EventTimeMs(e)
	b.eventID = append(b.eventID, e.GetEventId())
	b.appID = append(b.appID, e.GetAppId())
	b.deviceID = append(b.deviceID, e.GetDeviceId())
	b.installID = append(b.installID, e.GetInstallId())
	b.sessionID = append(b.sessionID, e.GetSessionId())
	b.userID = append(b.userID, e.GetUserId())
	b.timestampMs = append(b.timestampMs, ts)
	b.sentAtMs = append(b.sentAtMs, sent)
	b.receivedAtMs = append(b.receivedAtMs, recv)
	b.eventTimeMs = append(b.eventTimeMs, corrected)
	b.eventDate = append(b.eventDate, dateOf(ts))
	b.timestamp = append(b.timestamp, dateTime(ts))
	b.eventTime = append(b.eventTime, dateTime(corrected))
	b.receivedAt = append(b.receivedAt, dateTime(recv))
	b.sequence = append(b.sequence, e.GetSequence())
	b.correlationID = append(b.correlationID, e.GetCorrelationId())
	b.idempotencyKey = append(b.idempotencyKey, e.GetIdempotencyKey())
	b.platform = append(b.platform, platformNames.name(protoreflect.EnumNumber(dc.GetPlatform())))
	b.osVersion = append(b.osVersion, dc.GetOsVersion())
	b.appVersion = append(b.appVersion, dc.GetAppVersion())
	b.buildNumber = append(b.buildNumber, dc.GetBuildNumber())
	b.model = append(b.model, dc.GetDeviceModel())
	b.maker = append(b.maker, dc.GetManufacturer())
	b.screenWidth = append(b.screenWidth, dc.GetScreenWidth())
	b.screenHeight = append(b.screenHeight, dc.GetScreenHeight())
	b.locale = append(b.locale, dc.GetLocale())
	b.timezone = append(b.timezone, dc.GetTimezone())
	b.networkType = append(b.networkType, networkNames.name(protoreflect.EnumNumber(dc.GetNetworkType())))
	b.carrier = append(b.carrier, dc.GetCarrier())
	b.jailbroken = append(b.jailbroken, boolByte(dc.GetIsJailbroken()))
	b.emulator = append(b.emulator, boolByte(dc.GetIsEmulator()))
	b.sdkVersion = append(b.sdkVersion, dc.GetSdkVersion())

	typ, payload := payloadOf(e)
	hot := hotColumns(e, payload)
	b.eventType = append(b.eventType, typ)
	b.screenName = append(b.screenName, hot.screen)
	b.productID = append(b.productID, hot.product)
	b.amountCents = append(b.amountCents, hot.amount)
	b.currency = append(b.currency, hot.currency)
	b.customName = append(b.customName, hot.custom)
	b.json = appendJSON(b.json, payload)
	b.jsonEnd = append(b.jsonEnd, len(b.json))

	// Keys sorted, values in their order; both slices are cut from b.strs.
	props := e.GetProperties()
	from := len(b.strs)
	for k := range props {
		b.strs = append(b.strs, k)
	}
	keys := b.strs[from:len(b.strs):len(b.strs)]
	sort.Strings(keys)
	for _, k := range keys {
		b.strs = append(b.strs, props[k])
	}
	b.propKeys = append(b.propKeys, keys)
	b.propValues = append(b.propValues, b.strs[from+len(keys):len(b.strs):len(b.strs)])
}

// finish fills the payload column: one string holds every row's JSON, and
// each row's value is a slice of it.
func (b *block) finish() {
	all := string(b.json)
	start := 0
	for _, end := range b.jsonEnd {
		b.payload = append(b.payload, all[start:end])
		start = end
	}
	b.json, b.jsonEnd = nil, nil
}

// appendJSON appends the payload's JSON: protojson of the payload message
// with proto field names, compacted. protojson varies its whitespace on
// purpose, and copies of an event should hold the same text
// (visitParamExtract* also wants no spaces). appendPayloadJSON writes the
// same bytes directly; protojson itself is the fallback for what it does
// not cover. A payload protojson refuses is written as {}.
func appendJSON(dst []byte, p protoreflect.Message) []byte {
	if p == nil {
		return append(dst, "{}"...)
	}
	if out, ok := appendPayloadJSON(dst, p); ok {
		return out
	}
	j, err := jsonOpts.Marshal(p.Interface())
	if err != nil {
		return append(dst, "{}"...)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, j); err != nil {
		return append(dst, "{}"...)
	}
	return append(dst, compact.Bytes()...)
}

// EventTimeMs is timestamp_ms corrected for the device clock skew:
// timestamp_ms + (received_at_ms - sent_at_ms) when both are known.
func EventTimeMs(e *eventv1.Event) int64 {
	if e.GetSentAtMs() > 0 && e.GetReceivedAtMs() > 0 {
		return e.GetTimestampMs() + (e.GetReceivedAtMs() - e.GetSentAtMs())
	}
	return e.GetTimestampMs()
}

// Payload returns the payload type as the snake_case name of its oneof
// field (e.g. "screen_view"), and the payload message; "" and nil when
// the event has none.
func Payload(e *eventv1.Event) (string, proto.Message) {
	typ, m := payloadOf(e)
	if m == nil {
		return "", nil
	}
	return typ, m.Interface()
}

var payloadOneof = (&eventv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")

// payloadTypes maps the Go type of each payload oneof wrapper
// (*eventv1.Event_ScreenView, ...) to its field: looking the field up
// by type is several times faster than WhichOneof.
var payloadTypes = func() map[reflect.Type]protoreflect.FieldDescriptor {
	out := map[reflect.Type]protoreflect.FieldDescriptor{}
	for i := range payloadOneof.Fields().Len() {
		fd := payloadOneof.Fields().Get(i)
		e := &eventv1.Event{}
		m := e.ProtoReflect()
		m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
		out[reflect.TypeOf(e.GetPayload())] = fd
	}
	return out
}()

func payloadOf(e *eventv1.Event) (string, protoreflect.Message) {
	p := e.GetPayload()
	if p == nil {
		return "", nil
	}
	// A wrapper holds one field, the payload message.
	if fd, ok := payloadTypes[reflect.TypeOf(p)]; ok {
		if v := reflect.ValueOf(p).Elem().Field(0); !v.IsNil() {
			return string(fd.Name()), v.Interface().(proto.Message).ProtoReflect()
		}
	}
	m := e.ProtoReflect()
	fd := m.WhichOneof(payloadOneof)
	if fd == nil {
		return "", nil
	}
	return string(fd.Name()), m.Get(fd).Message()
}

type hot struct {
	screen, product, currency, custom string
	amount                            int64
}

// hotColumns extracts the payload fields the common queries filter on.
// amount_cents is the unit price for product_view and add_to_cart, and
// the order total for checkout_start and purchase_complete. payload is
// the event's payload message.
func hotColumns(e *eventv1.Event, payload protoreflect.Message) hot {
	switch p := e.GetPayload().(type) {
	case *eventv1.Event_ProductView:
		return hot{product: p.ProductView.GetProductId(), amount: p.ProductView.GetPriceCents(), currency: p.ProductView.GetCurrency()}
	case *eventv1.Event_AddToCart:
		return hot{product: p.AddToCart.GetProductId(), amount: p.AddToCart.GetPriceCents(), currency: p.AddToCart.GetCurrency()}
	case *eventv1.Event_RemoveFromCart:
		return hot{product: p.RemoveFromCart.GetProductId()}
	case *eventv1.Event_CheckoutStart:
		return hot{amount: p.CheckoutStart.GetTotalCents(), currency: p.CheckoutStart.GetCurrency()}
	case *eventv1.Event_PurchaseComplete:
		return hot{amount: p.PurchaseComplete.GetTotalCents(), currency: p.PurchaseComplete.GetCurrency()}
	case *eventv1.Event_CustomEvent:
		return hot{custom: p.CustomEvent.GetEventName()}
	case *eventv1.Event_AppBackground:
		return hot{screen: p.AppBackground.GetCurrentScreen()}
	case *eventv1.Event_AppForeground:
		return hot{screen: p.AppForeground.GetResumeScreen()}
	case *eventv1.Event_AppCrash:
		return hot{screen: p.AppCrash.GetCurrentScreen()}
	}
	// Every other payload with a screen names it screen_name.
	if payload == nil {
		return hot{}
	}
	if fd := payload.Descriptor().Fields().ByName("screen_name"); fd != nil && fd.Kind() == protoreflect.StringKind {
		return hot{screen: payload.Get(fd).String()}
	}
	return hot{}
}

// maxTimeMs is the last second both DateTime and Date hold everywhere
// (clickhouse-go refuses later values, ClickHouse's date tables end there).
var maxTimeMs = time.Date(2105, 12, 31, 23, 59, 59, 0, time.UTC).UnixMilli()

// dateTime clamps ms into the DateTime range.
func dateTime(ms int64) time.Time {
	return time.UnixMilli(min(max(ms, 0), maxTimeMs)).UTC()
}

// dateOf is the UTC day of ms, clamped into the Date range.
func dateOf(ms int64) time.Time {
	const day = 24 * 60 * 60 * 1000 // Unix time has no leap seconds
	ms = min(max(ms, 0), maxTimeMs)
	return time.UnixMilli(ms - ms%day).UTC()
}

// enumNames maps the numbers of an enum to its value names without the
// prefix, in lower case: PLATFORM_IOS is "ios".
type enumNames map[protoreflect.EnumNumber]string

var (
	platformNames = newEnumNames(eventv1.Platform(0).Descriptor(), "PLATFORM_")
	networkNames  = newEnumNames(eventv1.NetworkType(0).Descriptor(), "NETWORK_TYPE_")
)

func newEnumNames(ed protoreflect.EnumDescriptor, prefix string) enumNames {
	out := enumNames{}
	for i := range ed.Values().Len() {
		v := ed.Values().Get(i)
		out[v.Number()] = strings.ToLower(strings.TrimPrefix(string(v.Name()), prefix))
	}
	return out
}

// name is n's name; unknown numbers stay as digits.
func (e enumNames) name(n protoreflect.EnumNumber) string {
	if s, ok := e[n]; ok {
		return s
	}
	return strconv.Itoa(int(n))
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
