package warehouse

import (
	"bytes"
	"encoding/json"
	"sort"
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

	jsonBuf []byte       // protojson output, reused
	compact bytes.Buffer // its compacted form, reused
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
// refuse is clamped, so one odd event cannot block the sink.
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
	b.platform = append(b.platform, enumName(dc.GetPlatform().String(), "PLATFORM_"))
	b.osVersion = append(b.osVersion, dc.GetOsVersion())
	b.appVersion = append(b.appVersion, dc.GetAppVersion())
	b.buildNumber = append(b.buildNumber, dc.GetBuildNumber())
	b.model = append(b.model, dc.GetDeviceModel())
	b.maker = append(b.maker, dc.GetManufacturer())
	b.screenWidth = append(b.screenWidth, dc.GetScreenWidth())
	b.screenHeight = append(b.screenHeight, dc.GetScreenHeight())
	b.locale = append(b.locale, dc.GetLocale())
	b.timezone = append(b.timezone, dc.GetTimezone())
	b.networkType = append(b.networkType, enumName(dc.GetNetworkType().String(), "NETWORK_TYPE_"))
	b.carrier = append(b.carrier, dc.GetCarrier())
	b.jailbroken = append(b.jailbroken, boolByte(dc.GetIsJailbroken()))
	b.emulator = append(b.emulator, boolByte(dc.GetIsEmulator()))
	b.sdkVersion = append(b.sdkVersion, dc.GetSdkVersion())

	typ, payload := Payload(e)
	hot := hotColumns(e)
	b.eventType = append(b.eventType, typ)
	b.screenName = append(b.screenName, hot.screen)
	b.productID = append(b.productID, hot.product)
	b.amountCents = append(b.amountCents, hot.amount)
	b.currency = append(b.currency, hot.currency)
	b.customName = append(b.customName, hot.custom)
	b.payload = append(b.payload, b.payloadJSON(payload))

	keys := make([]string, 0, len(e.GetProperties()))
	for k := range e.GetProperties() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = e.GetProperties()[k]
	}
	b.propKeys = append(b.propKeys, keys)
	b.propValues = append(b.propValues, vals)
}

// payloadJSON is the protojson form of the payload with proto field names,
// compacted: protojson varies its whitespace on purpose, and copies of an
// event should hold the same text (visitParamExtract* also wants no spaces).
// The block's two buffers are reused from row to row.
func (b *block) payloadJSON(p proto.Message) string {
	if p == nil {
		return "{}"
	}
	j, err := jsonOpts.MarshalAppend(b.jsonBuf[:0], p)
	if err != nil {
		return "{}"
	}
	b.jsonBuf = j
	b.compact.Reset()
	if err := json.Compact(&b.compact, j); err != nil {
		return "{}"
	}
	return b.compact.String()
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
	m := e.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("payload"))
	if fd == nil {
		return "", nil
	}
	return string(fd.Name()), m.Get(fd).Message().Interface()
}

type hot struct {
	screen, product, currency, custom string
	amount                            int64
}

// hotColumns extracts the payload fields the common queries filter on.
// amount_cents is the unit price for product_view and add_to_cart, and
// the order total for checkout_start and purchase_complete.
func hotColumns(e *eventv1.Event) hot {
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
	_, msg := Payload(e)
	if msg == nil {
		return hot{}
	}
	m := msg.ProtoReflect()
	if fd := m.Descriptor().Fields().ByName("screen_name"); fd != nil && fd.Kind() == protoreflect.StringKind {
		return hot{screen: m.Get(fd).String()}
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
	t := dateTime(ms)
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

// enumName turns PLATFORM_IOS into "ios"; unknown numbers stay as digits.
func enumName(s, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
