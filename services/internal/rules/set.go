package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Set is a compiled RuleSet: the enabled rules indexed by app and event
// type, so that an event visits only the rules that can match it.
type Set struct {
	rules     []*rule                       // every rule, disabled ones included
	events    map[string]map[string][]*rule // app ("" = all) -> event type ("" = all)
	anomalies map[string][]*rule            // app ("" = all)
	webhooks  map[string]*adminv1.Webhook
	enabled   int
}

// Compile checks rs like ValidateSet and compiles it. A nil rs is the empty
// set.
func Compile(rs *adminv1.RuleSet) (*Set, error) {
	s := &Set{events: map[string]map[string][]*rule{}, anomalies: map[string][]*rule{}, webhooks: map[string]*adminv1.Webhook{}}
	for _, w := range rs.GetWebhooks() {
		if err := checkWebhook(w); err != nil {
			return nil, err
		}
		if s.webhooks[w.GetId()] != nil {
			return nil, fmt.Errorf("%w: two webhooks with id %q", ErrInvalid, w.GetId())
		}
		s.webhooks[w.GetId()] = w
	}
	ids := map[string]bool{}
	for _, r := range rs.GetRules() {
		c, err := compile(r)
		if err != nil {
			return nil, err
		}
		switch {
		case c.id == "":
			return nil, invalid(r, "no id")
		case ids[c.id]:
			return nil, fmt.Errorf("%w: two rules with id %q", ErrInvalid, c.id)
		}
		ids[c.id] = true
		for i, a := range c.actions {
			if id := a.GetWebhookId(); id != "" && s.webhooks[id] == nil {
				return nil, invalid(r, "action %d: unknown webhook_id %q", i, id)
			}
		}
		s.rules = append(s.rules, c)
		if r.GetDisabled() {
			continue
		}
		s.enabled++
		app := r.GetAppId()
		if c.anomaly != nil {
			s.anomalies[app] = append(s.anomalies[app], c)
			continue
		}
		byType := s.events[app]
		if byType == nil {
			byType = map[string][]*rule{}
			s.events[app] = byType
		}
		if len(c.types) == 0 {
			byType[""] = append(byType[""], c)
		}
		for _, t := range c.types {
			byType[t] = append(byType[t], c)
		}
	}
	return s, nil
}

// Len is the number of enabled rules.
func (s *Set) Len() int { return s.enabled }

// eventCandidates calls f with each enabled event rule that may match an
// event of app and type typ, once each, in the set's order per list.
func (s *Set) eventCandidates(app, typ string, f func(*rule)) {
	apps := []string{app, ""}
	if app == "" {
		apps = apps[1:]
	}
	for _, a := range apps {
		byType := s.events[a]
		if byType == nil {
			continue
		}
		for _, r := range byType[typ] {
			f(r)
		}
		if typ != "" {
			for _, r := range byType[""] {
				f(r)
			}
		}
	}
}

func (s *Set) anomalyCandidates(app string, f func(*rule)) {
	for _, r := range s.anomalies[app] {
		f(r)
	}
	if app != "" {
		for _, r := range s.anomalies[""] {
			f(r)
		}
	}
}

// matchEvent reports whether ev satisfies r's condition (not its rate).
func (r *rule) matchEvent(ev *eventv1.Event, buf []value) bool {
	if len(r.types) > 0 && !slices.Contains(r.types, TypeName(ev)) {
		return false
	}
	for _, p := range r.preds {
		if !p.match(ev, buf) {
			return false
		}
	}
	return true
}

func (r *rule) matchAnomaly(a *detectv1.Anomaly) bool {
	if len(r.kinds) > 0 && !r.kinds[a.GetKind()] {
		return false
	}
	return a.GetScore() >= r.anomaly.GetMinScore()
}

// ErrNotEventRule is returned by Explain for a rule on anomalies.
var ErrNotEventRule = errors.New("an anomaly rule is tested against anomalies, not events")

// Explain tests r against one event (TestRule): matched is whether the
// event satisfies the rule's app, event types and predicates; lines say,
// one per test, what was compared and the outcome. The rate and the
// cooldown need a stream of events and are only described. err is an
// invalid rule (wrapping ErrInvalid) or ErrNotEventRule.
func Explain(r *adminv1.Rule, ev *eventv1.Event) (matched bool, lines []string, err error) {
	c, err := compile(r)
	if err != nil {
		return false, nil, err
	}
	if c.anomaly != nil {
		return false, nil, ErrNotEventRule
	}
	matched = true
	say := func(ok bool, format string, args ...any) {
		matched = matched && ok
		lines = append(lines, fmt.Sprintf(format, args...)+": "+verdict(ok))
	}
	if r.GetAppId() == "" {
		lines = append(lines, "app: every app")
	} else {
		say(ev.GetAppId() == r.GetAppId(), "app_id %q equals the rule's %q", ev.GetAppId(), r.GetAppId())
	}
	typ := TypeName(ev)
	if len(c.types) > 0 {
		say(slices.Contains(c.types, typ), "type %q is one of %v", typ, c.types)
	}
	var buf []value
	for i, p := range c.preds {
		vs := p.path.values(ev, buf[:0])
		got := "absent"
		if len(vs) > 0 {
			texts := make([]string, len(vs))
			for j, v := range vs {
				texts[j] = fmt.Sprintf("%q", v.s)
			}
			got = strings.Join(texts, ", ")
		}
		say(p.match(ev, buf), "predicate %d: %s (%s) %s", i, p.path.text, got, operand(p))
	}
	if c.rateCount > 0 {
		per := "device"
		if c.perApp {
			per = "app"
		}
		lines = append(lines, fmt.Sprintf("rate: fires on the %d. match per %s within %s (event time); not tested on one event", c.rateCount, per, time.Duration(c.rateMs)*time.Millisecond))
	}
	if c.coolMs > 0 {
		lines = append(lines, fmt.Sprintf("cooldown: %s between firings", time.Duration(c.coolMs)*time.Millisecond))
	}
	if r.GetDisabled() {
		lines = append(lines, "the rule is disabled: it does not fire")
	}
	return matched, lines, nil
}

func verdict(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

func operand(p *predicate) string {
	switch p.op {
	case adminv1.Operator_OPERATOR_IN:
		return fmt.Sprintf("IN %q", p.src.GetValues())
	case adminv1.Operator_OPERATOR_EXISTS:
		return "EXISTS"
	}
	return fmt.Sprintf("%s %q", opName(p.op), p.src.GetValue())
}
