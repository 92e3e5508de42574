// Package eventcodec decodes causality.event.v1.Event messages from their
// protobuf encoding faster than proto.Unmarshal: bytes flow in, *Event
// values flow out, exactly as proto.Unmarshal would give them (a
// differential test holds it to that). The envelope and device context
// are read field by field, every string is cut from one copy of the input,
// and the properties map is filled without reflection; the payload field
// goes through proto.Unmarshal. Whatever this decoder does not expect (unknown
// fields, a wire type that does not match, invalid UTF-8, a malformed
// encoding) makes it fall back to proto.Unmarshal, which then decides.
package eventcodec

import (
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Unmarshal decodes b into a new Event, as proto.Unmarshal does.
func Unmarshal(b []byte) (*eventv1.Event, error) {
	if e, ok := NewDecoder(b).Event(0, len(b)); ok {
		return e, nil
	}
	e := &eventv1.Event{}
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, err
	}
	return e, nil
}

// Decoder decodes events encoded in parts of one buffer; the strings of
// all of them share one copy of the buffer, made on first use.
type Decoder struct {
	buf []byte
	str string
}

// NewDecoder decodes events held in buf, which must not change while
// the decoder is used.
func NewDecoder(buf []byte) *Decoder { return &Decoder{buf: buf} }

// Event decodes the event encoded in buf[start:end]. It returns false
// when the encoding holds something the fast path does not handle, or is
// invalid: the caller then uses proto.Unmarshal.
func (d *Decoder) Event(start, end int) (*eventv1.Event, bool) {
	if d.str == "" && len(d.buf) > 0 {
		d.str = string(d.buf)
	}
	e := &eventv1.Event{}
	ok := d.fields(start, end, func(num protowire.Number, typ protowire.Type, v uint64, field, from, to int) bool {
		if typ == protowire.VarintType {
			switch num {
			case fieldTimestampMs:
				e.TimestampMs = int64(v)
			case fieldSentAtMs:
				e.SentAtMs = int64(v)
			case fieldReceivedAtMs:
				e.ReceivedAtMs = int64(v)
			case fieldSequence:
				e.Sequence = v
			default:
				return false
			}
			return true
		}
		switch num {
		case fieldEventID, fieldAppID, fieldDeviceID, fieldInstallID, fieldSessionID, fieldUserID, fieldCorrelationID, fieldIdempotencyKey:
			s, ok := d.string(from, to)
			if !ok {
				return false
			}
			*eventStrings(e, num) = s
		case fieldDeviceContext:
			if e.DeviceContext == nil {
				e.DeviceContext = &eventv1.DeviceContext{}
			}
			return d.deviceContext(e.DeviceContext, from, to) // a second one merges into the first
		case fieldProperties:
			k, v, ok := d.entry(from, to)
			if !ok {
				return false
			}
			if e.Properties == nil {
				e.Properties = map[string]string{}
			}
			e.Properties[k] = v
		default:
			// A payload: proto.Unmarshal merges the field into e, with
			// the oneof's rules (the same payload again merges, another
			// one replaces it).
			if num < minPayload || num > maxPayload {
				return false
			}
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(d.buf[field:to], e); err != nil {
				return false
			}
			return len(e.ProtoReflect().GetUnknown()) == 0 // not a payload after all
		}
		return true
	})
	if !ok {
		return nil, false
	}
	return e, true
}

// deviceContext decodes buf[from:to] into dc, merging as proto does.
func (d *Decoder) deviceContext(dc *eventv1.DeviceContext, from, to int) bool {
	return d.fields(from, to, func(num protowire.Number, typ protowire.Type, v uint64, _, from, to int) bool {
		if typ == protowire.VarintType {
			switch num {
			case dcPlatform:
				dc.Platform = eventv1.Platform(int32(v))
			case dcScreenWidth:
				dc.ScreenWidth = int32(v)
			case dcScreenHeight:
				dc.ScreenHeight = int32(v)
			case dcNetworkType:
				dc.NetworkType = eventv1.NetworkType(int32(v))
			case dcIsJailbroken:
				dc.IsJailbroken = v != 0
			case dcIsEmulator:
				dc.IsEmulator = v != 0
			default:
				return false
			}
			return true
		}
		p := deviceStrings(dc, num)
		if p == nil {
			return false
		}
		s, ok := d.string(from, to)
		*p = s
		return ok
	})
}

// entry decodes a map<string, string> entry: absent key or value is "".
func (d *Decoder) entry(from, to int) (key, value string, ok bool) {
	ok = d.fields(from, to, func(num protowire.Number, typ protowire.Type, _ uint64, _, from, to int) bool {
		if typ != protowire.BytesType || (num != 1 && num != 2) {
			return false
		}
		s, ok := d.string(from, to)
		if num == 1 {
			key = s
		} else {
			value = s
		}
		return ok
	})
	return key, value, ok
}

// fields calls f for each field of the message in buf[from:to]: for a
// varint its value, for a length-delimited field the bounds of its
// contents; field is where the field starts, tag included. Other wire types, an invalid encoding or f returning false
// make it return false.
func (d *Decoder) fields(from, to int, f func(num protowire.Number, typ protowire.Type, v uint64, field, from, to int) bool) bool {
	b := d.buf[:to]
	for pos := from; pos < to; {
		field := pos
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 || num > protowire.MaxValidNumber {
			return false
		}
		pos += n
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b[pos:])
			if n < 0 {
				return false
			}
			pos += n
			if !f(num, typ, v, field, 0, 0) {
				return false
			}
		case protowire.BytesType:
			l, n := protowire.ConsumeVarint(b[pos:])
			if n < 0 || l > uint64(to-pos-n) {
				return false
			}
			pos += n
			if !f(num, typ, 0, field, pos, pos+int(l)) {
				return false
			}
			pos += int(l)
		default:
			return false
		}
	}
	return true
}

// string is buf[from:to] as a string cut from the decoder's copy, if it
// is valid UTF-8 (proto3 strings must be).
func (d *Decoder) string(from, to int) (string, bool) {
	s := d.str[from:to]
	return s, utf8.ValidString(s)
}

// Field numbers (TestFieldNumbers checks them against the descriptors).
const (
	fieldEventID        = 1
	fieldAppID          = 2
	fieldDeviceID       = 3
	fieldInstallID      = 4
	fieldSessionID      = 5
	fieldUserID         = 6
	fieldTimestampMs    = 7
	fieldSentAtMs       = 8
	fieldReceivedAtMs   = 9
	fieldSequence       = 10
	fieldCorrelationID  = 11
	fieldIdempotencyKey = 12
	fieldDeviceContext  = 13
	fieldProperties     = 14

	dcPlatform     = 1
	dcOSVersion    = 2
	dcAppVersion   = 3
	dcBuildNumber  = 4
	dcDeviceModel  = 5
	dcManufacturer = 6
	dcScreenWidth  = 7
	dcScreenHeight = 8
	dcLocale       = 9
	dcTimezone     = 10
	dcNetworkType  = 11
	dcCarrier      = 12
	dcIsJailbroken = 13
	dcIsEmulator   = 14
	dcSDKVersion   = 15

	minPayload = 100 // the payload oneof's numbers lie in between
	maxPayload = 150
)

func eventStrings(e *eventv1.Event, num protowire.Number) *string {
	switch num {
	case fieldEventID:
		return &e.EventId
	case fieldAppID:
		return &e.AppId
	case fieldDeviceID:
		return &e.DeviceId
	case fieldInstallID:
		return &e.InstallId
	case fieldSessionID:
		return &e.SessionId
	case fieldUserID:
		return &e.UserId
	case fieldCorrelationID:
		return &e.CorrelationId
	case fieldIdempotencyKey:
		return &e.IdempotencyKey
	}
	return nil
}

func deviceStrings(dc *eventv1.DeviceContext, num protowire.Number) *string {
	switch num {
	case dcOSVersion:
		return &dc.OsVersion
	case dcAppVersion:
		return &dc.AppVersion
	case dcBuildNumber:
		return &dc.BuildNumber
	case dcDeviceModel:
		return &dc.DeviceModel
	case dcManufacturer:
		return &dc.Manufacturer
	case dcLocale:
		return &dc.Locale
	case dcTimezone:
		return &dc.Timezone
	case dcCarrier:
		return &dc.Carrier
	case dcSDKVersion:
		return &dc.SdkVersion
	}
	return nil
}
