package rules

import (
	"bytes"
	"encoding/gob"
	"fmt"
)

// saved is the engine's state in the detector's checkpoint: what rate and
// cooldown need per rule and key, and the subject ids already evaluated.
type saved struct {
	Rules map[string]map[string]savedKey
	Seen  []string // oldest first
}

type savedKey struct {
	Times    []int64
	LastFire int64
	Fired    bool
	Seen     int64
}

// Save returns the rate and cooldown state of every rule and the ids of
// the events and anomalies already evaluated, for the detector's
// checkpoint (a detect.Output's Save): after a restart the rules go on
// counting where they were, and what the detector reads again is not
// counted twice.
func (e *Engine) Save() []byte {
	e.mu.Lock()
	s := saved{Rules: make(map[string]map[string]savedKey, len(e.states)), Seen: e.seen.oldestFirst()}
	for id, st := range e.states {
		keys := make(map[string]savedKey, len(st.keys))
		for k, ks := range st.keys {
			keys[k] = savedKey{Times: ks.times, LastFire: ks.lastFire, Fired: ks.fired, Seen: ks.seen}
		}
		s.Rules[id] = keys
	}
	var buf bytes.Buffer
	err := gob.NewEncoder(&buf).Encode(&s)
	e.mu.Unlock()
	if err != nil {
		return nil // cannot happen for these types
	}
	return buf.Bytes()
}

// Restore takes what Save returned. State of rules that are no longer in
// the set is dropped at the next Load; call it before the first event.
func (e *Engine) Restore(b []byte) error {
	var s saved
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&s); err != nil {
		return fmt.Errorf("rules state: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.states = make(map[string]*ruleState, len(s.Rules))
	for id, keys := range s.Rules {
		st := newRuleState()
		for k, sk := range keys {
			st.keys[k] = &keyState{times: sk.Times, lastFire: sk.LastFire, fired: sk.Fired, seen: sk.Seen}
			st.maxTime = max(st.maxTime, sk.Seen)
		}
		st.sweepAt = max(2*len(st.keys), 1024)
		e.states[id] = st
	}
	e.seen = newIDSet(e.cfg.DedupSize)
	for _, id := range s.Seen {
		e.seen.add(id)
	}
	return nil
}

// oldestFirst returns the remembered ids, oldest first.
func (s *idSet) oldestFirst() []string {
	if len(s.order) < s.n {
		return append([]string(nil), s.order...)
	}
	return append(append([]string(nil), s.order[s.next:]...), s.order[:s.next]...)
}
