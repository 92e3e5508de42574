package warehouse

import (
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// appendPayloadJSON appends the JSON form of the payload m to dst: the
// bytes protojson writes with proto field names, compacted (docs/schema.md),
// written directly with the fields of each message type looked up once.
// TestPayloadJSONMatchesProtojson holds it to protojson's output. ok is
// false where protojson fails (a string that is not UTF-8); dst is then
// returned unchanged.
func appendPayloadJSON(dst []byte, m protoreflect.Message) (_ []byte, ok bool) {
	out, ok := appendMessage(dst, m)
	if !ok {
		return dst, false
	}
	return out, true
}

// jsonField is a field of a message type with its JSON name, quoted and
// followed by a colon.
type jsonField struct {
	fd   protoreflect.FieldDescriptor
	name string
}

// jsonFields holds the fields of every message type of the event protos
// in declaration order (protojson's order), built once.
var jsonFields = func() map[protoreflect.FullName][]jsonField {
	out := map[protoreflect.FullName][]jsonField{}
	msgs := eventv1.File_causality_event_v1_event_proto.Messages()
	for i := range msgs.Len() {
		out[msgs.Get(i).FullName()] = newJSONFields(msgs.Get(i))
	}
	return out
}()

func fieldsOf(md protoreflect.MessageDescriptor) []jsonField {
	if f, ok := jsonFields[md.FullName()]; ok {
		return f
	}
	return newJSONFields(md)
}

func newJSONFields(md protoreflect.MessageDescriptor) []jsonField {
	fds := md.Fields()
	out := make([]jsonField, 0, fds.Len())
	for i := range fds.Len() {
		fd := fds.Get(i)
		name, _ := appendString(nil, fd.TextName())
		out = append(out, jsonField{fd: fd, name: string(append(name, ':'))})
	}
	return out
}

func appendMessage(b []byte, m protoreflect.Message) ([]byte, bool) {
	b = append(b, '{')
	first := true
	ok := true
	for _, f := range fieldsOf(m.Descriptor()) {
		if !m.Has(f.fd) {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, f.name...)
		v := m.Get(f.fd)
		switch {
		case f.fd.IsList():
			b, ok = appendList(b, v.List(), f.fd)
		case f.fd.IsMap():
			b, ok = appendMap(b, v.Map(), f.fd)
		default:
			b, ok = appendSingular(b, v, f.fd)
		}
		if !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

func appendList(b []byte, l protoreflect.List, fd protoreflect.FieldDescriptor) ([]byte, bool) {
	b = append(b, '[')
	for i := range l.Len() {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = appendSingular(b, l.Get(i), fd); !ok {
			return b, false
		}
	}
	return append(b, ']'), true
}

// appendMap writes the entries in key order, as protojson does. Every map
// of the event protos has string keys.
func appendMap(b []byte, mp protoreflect.Map, fd protoreflect.FieldDescriptor) ([]byte, bool) {
	keys := make([]protoreflect.MapKey, 0, mp.Len())
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	slices.SortFunc(keys, compareKeys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		var ok bool
		if b, ok = appendString(b, k.String()); !ok {
			return b, false
		}
		b = append(b, ':')
		if b, ok = appendSingular(b, mp.Get(k), fd.MapValue()); !ok {
			return b, false
		}
	}
	return append(b, '}'), true
}

// compareKeys orders map keys as protojson does (order.GenericKeyOrder).
func compareKeys(x, y protoreflect.MapKey) int {
	switch x.Interface().(type) {
	case bool:
		return boolCompare(x.Bool(), y.Bool())
	case int32, int64:
		return cmpOrdered(x.Int(), y.Int())
	case uint32, uint64:
		return cmpOrdered(x.Uint(), y.Uint())
	default:
		return cmpOrdered(x.String(), y.String())
	}
}

func boolCompare(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	}
	return 1
}

func cmpOrdered[T int64 | uint64 | string](x, y T) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

func appendSingular(b []byte, v protoreflect.Value, fd protoreflect.FieldDescriptor) ([]byte, bool) {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return strconv.AppendBool(b, v.Bool()), true
	case protoreflect.StringKind:
		return appendString(b, v.String())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return strconv.AppendInt(b, v.Int(), 10), true
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return strconv.AppendUint(b, v.Uint(), 10), true
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendInt(b, v.Int(), 10), '"'), true
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		b = append(b, '"')
		return append(strconv.AppendUint(b, v.Uint(), 10), '"'), true
	case protoreflect.FloatKind:
		return appendFloat(b, v.Float(), 32), true
	case protoreflect.DoubleKind:
		return appendFloat(b, v.Float(), 64), true
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return appendString(b, string(ev.Name()))
		}
		return strconv.AppendInt(b, int64(v.Enum()), 10), true
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if v.Message().Descriptor().ParentFile().Package() == "google.protobuf" {
			return b, false // well-known types have their own JSON forms
		}
		return appendMessage(b, v.Message())
	}
	// Bytes and the well-known types protojson writes specially do not
	// occur in the event protos: let protojson handle such a message.
	return b, false
}

// appendString is protojson's string encoding: only '"', '\\' and control
// characters are escaped, and a string that is not UTF-8 is refused.
func appendString(b []byte, s string) ([]byte, bool) {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				return b, false
			}
			i += n
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		b = append(b, '\\')
		switch c {
		case '"', '\\':
			b = append(b, c)
		case '\b':
			b = append(b, 'b')
		case '\f':
			b = append(b, 'f')
		case '\n':
			b = append(b, 'n')
		case '\r':
			b = append(b, 'r')
		case '\t':
			b = append(b, 't')
		default:
			b = append(b, 'u')
			b = append(b, "0000"[1+(bits.Len32(uint32(c))-1)/4:]...)
			b = strconv.AppendUint(b, uint64(c), 16)
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"'), true
}

// appendFloat is protojson's number encoding (encoding/json's, with NaN
// and the infinities as strings).
func appendFloat(b []byte, n float64, bitSize int) []byte {
	switch {
	case math.IsNaN(n):
		return append(b, `"NaN"`...)
	case math.IsInf(n, +1):
		return append(b, `"Infinity"`...)
	case math.IsInf(n, -1):
		return append(b, `"-Infinity"`...)
	}
	format := byte('f')
	if abs := math.Abs(n); abs != 0 {
		if bitSize == 64 && (abs < 1e-6 || abs >= 1e21) ||
			bitSize == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, n, format, -1, bitSize)
	if format == 'e' {
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}
