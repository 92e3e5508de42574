package rules

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Limits of a rule.
const (
	MaxPredicates = 64
	MaxInValues   = 1000
	MaxRateCount  = 10_000 // matches kept per device or app
	MaxActions    = 16
)

// ErrInvalid wraps every error of Validate, ValidateSet and Compile.
var ErrInvalid = errors.New("invalid rule")

// predicate is a compiled Predicate: the path resolved, the operands
// parsed, the regular expression compiled.
type predicate struct {
	src  *adminv1.Predicate
	path *path
	op   adminv1.Operator
	arg  value
	in   map[string]bool
	inF  []float64 // the numbers among the IN values
	re   *regexp.Regexp
}

// rule is a compiled Rule.
type rule struct {
	src       *adminv1.Rule
	id        string
	types     []string // event types it can match; empty = all
	preds     []*predicate
	anomaly   *adminv1.AnomalyCondition
	kinds     map[detectv1.AnomalyKind]bool
	rateCount int
	rateMs    int64
	perApp    bool
	coolMs    int64
	actions   []*adminv1.Action
}

// stateful rules keep per-device or per-app state.
func (r *rule) stateful() bool { return r.rateCount > 1 || r.coolMs > 0 }

// Validate checks one rule on its own: the condition, the operators and
// their operands, the rate, the cooldown and the shape of the actions.
// Webhook ids are checked against the webhooks by ValidateSet. Errors wrap
// ErrInvalid and name the offending part.
func Validate(r *adminv1.Rule) error {
	_, err := compile(r)
	return err
}

// ValidateSet checks every rule and webhook of rs and the references
// between them: unique ids, webhook URLs and secrets, and every
// webhook_id naming a webhook of the set.
func ValidateSet(rs *adminv1.RuleSet) error {
	_, err := Compile(rs)
	return err
}

func invalid(r *adminv1.Rule, format string, args ...any) error {
	name := r.GetId()
	if name == "" {
		name = r.GetName()
	}
	return fmt.Errorf("%w %q: %s", ErrInvalid, name, fmt.Sprintf(format, args...))
}

func compile(r *adminv1.Rule) (*rule, error) {
	if r == nil {
		return nil, fmt.Errorf("%w: nil", ErrInvalid)
	}
	c := &rule{src: r, id: r.GetId()}
	switch cond := r.GetCondition().(type) {
	case *adminv1.Rule_Event:
		if err := c.compileEvent(cond.Event); err != nil {
			return nil, invalid(r, "%v", err)
		}
	case *adminv1.Rule_Anomaly:
		a := cond.Anomaly
		if a == nil {
			return nil, invalid(r, "empty anomaly condition")
		}
		c.anomaly = a
		c.kinds = map[detectv1.AnomalyKind]bool{}
		for _, k := range a.GetKinds() {
			if k == detectv1.AnomalyKind_ANOMALY_KIND_UNSPECIFIED || detectv1.AnomalyKind_name[int32(k)] == "" {
				return nil, invalid(r, "unknown anomaly kind %d", k)
			}
			c.kinds[k] = true
		}
		if s := a.GetMinScore(); s < 0 || s != s {
			return nil, invalid(r, "min_score must be a number >= 0")
		}
	default:
		return nil, invalid(r, "no condition: set event or anomaly")
	}
	if rate := r.GetRate(); rate != nil {
		switch {
		case rate.GetCount() < 1 || rate.GetCount() > MaxRateCount:
			return nil, invalid(r, "rate count %d: must be 1 to %d", rate.GetCount(), MaxRateCount)
		case rate.GetWindow() == nil || rate.GetWindow().CheckValid() != nil || rate.GetWindow().AsDuration() < time.Millisecond:
			return nil, invalid(r, "rate window must be at least 1ms")
		case rate.GetPer() == adminv1.RateScope_RATE_SCOPE_UNSPECIFIED || adminv1.RateScope_name[int32(rate.GetPer())] == "":
			return nil, invalid(r, "rate per must be RATE_SCOPE_DEVICE or RATE_SCOPE_APP")
		}
		c.rateCount, c.rateMs = int(rate.GetCount()), rate.GetWindow().AsDuration().Milliseconds()
		c.perApp = rate.GetPer() == adminv1.RateScope_RATE_SCOPE_APP
	}
	if cd := r.GetCooldown(); cd != nil {
		if cd.CheckValid() != nil || cd.AsDuration() < 0 {
			return nil, invalid(r, "cooldown must not be negative")
		}
		c.coolMs = cd.AsDuration().Milliseconds()
	}
	if len(r.GetActions()) == 0 {
		return nil, invalid(r, "no action: add a webhook_id or a kafka_topic")
	}
	if len(r.GetActions()) > MaxActions {
		return nil, invalid(r, "%d actions: at most %d", len(r.GetActions()), MaxActions)
	}
	for i, a := range r.GetActions() {
		switch act := a.GetAction().(type) {
		case *adminv1.Action_WebhookId:
			if act.WebhookId == "" {
				return nil, invalid(r, "action %d: empty webhook_id", i)
			}
		case *adminv1.Action_KafkaTopic:
			if err := CheckTopic(act.KafkaTopic); err != nil {
				return nil, invalid(r, "action %d: %v", i, err)
			}
		default:
			return nil, invalid(r, "action %d: set webhook_id or kafka_topic", i)
		}
	}
	c.actions = r.GetActions()
	return c, nil
}

func (c *rule) compileEvent(ec *adminv1.EventCondition) error {
	if ec == nil {
		return errors.New("empty event condition")
	}
	for _, t := range ec.GetEventTypes() {
		if !IsEventType(t) {
			return fmt.Errorf("event type %q is not a payload of causality.event.v1.Event (e.g. screen_view, purchase_complete)", t)
		}
		if !slices.Contains(c.types, t) {
			c.types = append(c.types, t)
		}
	}
	if len(ec.GetPredicates()) > MaxPredicates {
		return fmt.Errorf("%d predicates: at most %d", len(ec.GetPredicates()), MaxPredicates)
	}
	for i, p := range ec.GetPredicates() {
		cp, err := compilePredicate(p)
		if err != nil {
			return fmt.Errorf("predicate %d: %w", i, err)
		}
		// A payload path holds only for its own type: it can narrow the
		// types, or contradict them.
		if cp.path.payload != "" && cp.op != adminv1.Operator_OPERATOR_NE {
			if len(ec.GetEventTypes()) > 0 && !slices.Contains(ec.GetEventTypes(), cp.path.payload) {
				return fmt.Errorf("predicate %d: path %q is only present in %s events, not among the event types %v", i, cp.path.text, cp.path.payload, ec.GetEventTypes())
			}
			if len(c.types) == 0 || (len(c.types) > 1 && slices.Contains(c.types, cp.path.payload)) {
				c.types = []string{cp.path.payload}
			} else if !slices.Contains(c.types, cp.path.payload) {
				return fmt.Errorf("predicate %d: path %q is only present in %s events, and another predicate needs %v", i, cp.path.text, cp.path.payload, c.types)
			}
		}
		c.preds = append(c.preds, cp)
	}
	return nil
}

func compilePredicate(p *adminv1.Predicate) (*predicate, error) {
	if p == nil {
		return nil, errors.New("empty predicate")
	}
	pa, err := compilePath(p.GetPath())
	if err != nil {
		return nil, err
	}
	cp := &predicate{src: p, path: pa, op: p.GetOp()}
	kind := pa.kind()
	if kind == protoreflect.MessageKind && cp.op != adminv1.Operator_OPERATOR_EXISTS {
		return nil, fmt.Errorf("path %q is a message: only EXISTS applies; name one of its fields", pa.text)
	}
	switch cp.op {
	case adminv1.Operator_OPERATOR_EQ, adminv1.Operator_OPERATOR_NE:
		cp.arg = textValue(p.GetValue())
		if kind == protoreflect.EnumKind {
			if err := checkEnum(pa, p.GetValue()); err != nil {
				return nil, err
			}
		}
	case adminv1.Operator_OPERATOR_LT, adminv1.Operator_OPERATOR_LE, adminv1.Operator_OPERATOR_GT, adminv1.Operator_OPERATOR_GE:
		cp.arg = textValue(p.GetValue())
		if !cp.arg.isNum || cp.arg.f != cp.arg.f {
			return nil, fmt.Errorf("%s on %q needs a number, not %q", opName(cp.op), pa.text, p.GetValue())
		}
		if kind == protoreflect.BoolKind || kind == protoreflect.EnumKind {
			return nil, fmt.Errorf("%s on %q: a %s is not a number", opName(cp.op), pa.text, kind)
		}
	case adminv1.Operator_OPERATOR_IN:
		if len(p.GetValues()) == 0 {
			return nil, fmt.Errorf("IN on %q needs values", pa.text)
		}
		if len(p.GetValues()) > MaxInValues {
			return nil, fmt.Errorf("IN on %q: %d values, at most %d", pa.text, len(p.GetValues()), MaxInValues)
		}
		cp.in = make(map[string]bool, len(p.GetValues()))
		for _, v := range p.GetValues() {
			if kind == protoreflect.EnumKind {
				if err := checkEnum(pa, v); err != nil {
					return nil, err
				}
			}
			cp.in[v] = true
			if tv := textValue(v); tv.isNum {
				cp.inF = append(cp.inF, tv.f)
			}
		}
	case adminv1.Operator_OPERATOR_CONTAINS:
		if p.GetValue() == "" {
			return nil, fmt.Errorf("CONTAINS on %q needs a value", pa.text)
		}
		cp.arg = value{s: p.GetValue()}
	case adminv1.Operator_OPERATOR_REGEX:
		re, err := regexp.Compile(p.GetValue())
		if err != nil {
			return nil, fmt.Errorf("REGEX on %q: %w", pa.text, err)
		}
		cp.re = re
	case adminv1.Operator_OPERATOR_EXISTS:
	default:
		return nil, fmt.Errorf("unknown operator %d on %q", p.GetOp(), pa.text)
	}
	return cp, nil
}

func checkEnum(pa *path, v string) error {
	ed := pa.fields[len(pa.fields)-1].Enum()
	if ed.Values().ByName(protoreflect.Name(v)) != nil {
		return nil
	}
	return fmt.Errorf("%q is not a value of %s (e.g. %s)", v, ed.Name(), ed.Values().Get(min(1, ed.Values().Len()-1)).Name())
}

func opName(op adminv1.Operator) string { return strings.TrimPrefix(op.String(), "OPERATOR_") }

// match reports whether the predicate holds for ev. An absent path holds
// only for NE; a list holds when one element does (NE: when none equals).
func (p *predicate) match(ev *eventv1.Event, buf []value) bool {
	vs := p.path.values(ev, buf[:0])
	if p.op == adminv1.Operator_OPERATOR_NE {
		for _, v := range vs {
			if equal(v, p.arg) {
				return false
			}
		}
		return true
	}
	for _, v := range vs {
		if p.test(v) {
			return true
		}
	}
	return false
}

func (p *predicate) test(v value) bool {
	switch p.op {
	case adminv1.Operator_OPERATOR_EQ:
		return equal(v, p.arg)
	case adminv1.Operator_OPERATOR_LT:
		return v.isNum && v.f < p.arg.f
	case adminv1.Operator_OPERATOR_LE:
		return v.isNum && v.f <= p.arg.f
	case adminv1.Operator_OPERATOR_GT:
		return v.isNum && v.f > p.arg.f
	case adminv1.Operator_OPERATOR_GE:
		return v.isNum && v.f >= p.arg.f
	case adminv1.Operator_OPERATOR_IN:
		if p.in[v.s] {
			return true
		}
		if v.isNum {
			for _, f := range p.inF {
				if f == v.f {
					return true
				}
			}
		}
		return false
	case adminv1.Operator_OPERATOR_CONTAINS:
		return strings.Contains(v.s, p.arg.s)
	case adminv1.Operator_OPERATOR_REGEX:
		return p.re.MatchString(v.s)
	case adminv1.Operator_OPERATOR_EXISTS:
		return !v.zero
	}
	return false
}

// equal compares as numbers when both sides are numbers, as text
// otherwise (enums by their value names).
func equal(v, arg value) bool {
	if v.isNum && arg.isNum {
		return v.f == arg.f
	}
	return v.s == arg.s
}

// CheckTopic checks a Kafka topic name: 1 to 249 of [a-zA-Z0-9._-], not
// "." or "..".
func CheckTopic(t string) error {
	if t == "" || len(t) > 249 || t == "." || t == ".." {
		return fmt.Errorf("kafka topic %q: 1 to 249 characters, not . or ..", t)
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("kafka topic %q: only letters, digits, '.', '_' and '-'", t)
		}
	}
	return nil
}

// checkWebhook checks a webhook of a RuleSet.
func checkWebhook(w *adminv1.Webhook) error {
	if w.GetId() == "" {
		return fmt.Errorf("%w: webhook without id", ErrInvalid)
	}
	u, err := url.Parse(w.GetUrl())
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: webhook %q: url %q is not an http(s) URL", ErrInvalid, w.GetId(), w.GetUrl())
	}
	if len(w.GetSecret()) < 16 {
		return fmt.Errorf("%w: webhook %q: the signing secret must have at least 16 bytes", ErrInvalid, w.GetId())
	}
	return nil
}
