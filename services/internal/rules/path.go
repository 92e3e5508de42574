package rules

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

var (
	eventDesc    = (&eventv1.Event{}).ProtoReflect().Descriptor()
	payloadOneof = eventDesc.Oneofs().ByName("payload")
)

// TypeName is the payload's field name ("screen_view"), "" without one.
func TypeName(ev *eventv1.Event) string {
	fd := ev.ProtoReflect().WhichOneof(payloadOneof)
	if fd == nil {
		return ""
	}
	return string(fd.Name())
}

// IsEventType reports whether name is a payload of causality.event.v1.Event.
func IsEventType(name string) bool {
	fd := eventDesc.Fields().ByName(protoreflect.Name(name))
	return fd != nil && fd.ContainingOneof() == payloadOneof
}

// path is a compiled dotted path: the fields to walk from the Event, and
// the key when the last field is a map ("properties.campaign").
type path struct {
	text   string
	isType bool // "type": the payload's name
	fields []protoreflect.FieldDescriptor
	key    string // map key, when the last field is a map
	// payload is the payload field the path starts in, "" when it starts
	// in the envelope.
	payload string
}

// kind is the kind of the value at the path: what operators make sense.
func (p *path) kind() protoreflect.Kind {
	if p.isType {
		return protoreflect.StringKind
	}
	last := p.fields[len(p.fields)-1]
	if last.IsMap() {
		return last.MapValue().Kind()
	}
	return last.Kind()
}

// compilePath resolves text against causality.event.v1.Event with the
// protobuf field names. A map field takes the rest of the path as its key,
// dots included.
func compilePath(text string) (*path, error) {
	if text == "" {
		return nil, fmt.Errorf("empty path")
	}
	if text == "type" {
		return &path{text: text, isType: true}, nil
	}
	p := &path{text: text}
	md := eventDesc
	rest := text
	for rest != "" {
		var name string
		name, rest, _ = strings.Cut(rest, ".")
		if name == "" {
			return nil, fmt.Errorf("path %q: empty segment", text)
		}
		if md == nil {
			return nil, fmt.Errorf("path %q: %s is not a message, %q cannot follow it", text, p.fields[len(p.fields)-1].Name(), name)
		}
		fd := md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			return nil, fmt.Errorf("path %q: %s has no field %q", text, md.Name(), name)
		}
		if len(p.fields) == 0 && fd.ContainingOneof() == payloadOneof {
			p.payload = name
		}
		p.fields = append(p.fields, fd)
		switch {
		case fd.IsMap():
			if fd.MapKey().Kind() != protoreflect.StringKind {
				return nil, fmt.Errorf("path %q: map %s has no string keys", text, name)
			}
			if rest == "" {
				return nil, fmt.Errorf("path %q: %s is a map; name a key, e.g. %s.some_key", text, name, text)
			}
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				return nil, fmt.Errorf("path %q: map %s holds messages", text, name)
			}
			p.key, rest = rest, ""
			md = nil
		case fd.Kind() == protoreflect.MessageKind && !fd.IsList():
			md = fd.Message()
		case fd.Kind() == protoreflect.MessageKind:
			return nil, fmt.Errorf("path %q: %s is a list of messages", text, name)
		default:
			md = nil
		}
	}
	return p, nil
}

// value is what a path yields: the text, and the number when it is one.
type value struct {
	s     string
	f     float64
	isNum bool
	zero  bool // the zero value of its kind: "", 0, false, the enum's 0
}

// values appends the values at the path in ev to buf: none when the path
// is absent (another payload, no such map key, an unset message), several
// for a list. A scalar of a present message is present, zero or not;
// EXISTS tells the two apart.
func (p *path) values(ev *eventv1.Event, buf []value) []value {
	if p.isType {
		if t := TypeName(ev); t != "" {
			return append(buf, value{s: t})
		}
		return buf
	}
	m := ev.ProtoReflect()
	for i, fd := range p.fields {
		last := i == len(p.fields)-1
		if !last { // a singular message
			if !m.Has(fd) {
				return buf
			}
			m = m.Get(fd).Message()
			continue
		}
		switch {
		case fd.IsMap():
			mv := m.Get(fd).Map()
			v := mv.Get(protoreflect.ValueOfString(p.key).MapKey())
			if !v.IsValid() {
				return buf
			}
			return append(buf, scalar(fd.MapValue(), v))
		case fd.IsList():
			l := m.Get(fd).List()
			for j := range l.Len() {
				buf = append(buf, scalar(fd, l.Get(j)))
			}
			return buf
		case fd.Kind() == protoreflect.MessageKind:
			if !m.Has(fd) {
				return buf
			}
			return append(buf, value{s: "{}"}) // present; only EXISTS looks at it
		case fd.ContainingOneof() != nil && !m.Has(fd):
			return buf
		default:
			return append(buf, scalar(fd, m.Get(fd)))
		}
	}
	return buf
}

// scalar renders a non-message field value: numbers as numbers, enums by
// their value name ("PLATFORM_IOS"), bools as true/false.
func scalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) value {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return textValue(v.String())
	case protoreflect.BoolKind:
		return value{s: strconv.FormatBool(v.Bool()), zero: !v.Bool()}
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return value{s: string(ev.Name()), zero: v.Enum() == 0}
		}
		return value{s: strconv.Itoa(int(v.Enum())), zero: v.Enum() == 0}
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		return value{s: strconv.FormatInt(v.Int(), 10), f: float64(v.Int()), isNum: true, zero: v.Int() == 0}
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		return value{s: strconv.FormatUint(v.Uint(), 10), f: float64(v.Uint()), isNum: true, zero: v.Uint() == 0}
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		return value{s: strconv.FormatFloat(v.Float(), 'g', -1, 64), f: v.Float(), isNum: true, zero: v.Float() == 0}
	case protoreflect.BytesKind:
		return value{s: string(v.Bytes()), zero: len(v.Bytes()) == 0}
	}
	return value{s: v.String()}
}

// textValue is a string operand or field; it is also a number when it
// parses as one ("42", "4.2e1").
func textValue(s string) value {
	v := value{s: s, zero: s == ""}
	if !decimal(s) {
		return v // most text: no ParseFloat, whose error allocates
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		v.f, v.isNum = f, true
	}
	return v
}

// decimal reports whether s may be a decimal number: digits, at most one
// point, signs and exponents ("-12.5", "1e3"); not "2.4.1", "NaN" or "".
func decimal(s string) bool {
	digits, points := 0, 0
	for i := range len(s) {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			points++
		case c == '-' || c == '+' || c == 'e' || c == 'E':
		default:
			return false
		}
	}
	return digits > 0 && points <= 1
}
