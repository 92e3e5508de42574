package rules

import "slices"

// keyState is a rule's state for one device or app: the matches still in
// the rate window and the last firing. Times are event time, Unix ms.
type keyState struct {
	times    []int64 // matches since the last firing, ascending
	lastFire int64
	fired    bool
	seen     int64 // the latest match
}

// ruleState is one rule's keys. It is pure: time comes in with each match,
// nothing happens between calls.
type ruleState struct {
	keys    map[string]*keyState
	maxTime int64 // the latest match of the rule: the clock of expiry
	sweepAt int
}

func newRuleState() *ruleState { return &ruleState{keys: map[string]*keyState{}, sweepAt: 1024} }

// observe records a match of r at event time t for key and reports whether
// the rule fires now and how many matches it counted. A rule that fires
// clears its count: the next firing needs count new matches. A firing less
// than the cooldown away from the last one (either way, for late events)
// is held back; its matches keep counting. refused means the key was not
// tracked because maxKeys keys with recent matches exist: nothing fires.
func (s *ruleState) observe(r *rule, key string, t int64, maxKeys int) (fire bool, matches int, refused bool) {
	if !r.stateful() {
		return true, 1, false
	}
	s.maxTime = max(s.maxTime, t)
	ks := s.keys[key]
	if ks == nil {
		if len(s.keys) >= s.sweepAt || len(s.keys) >= maxKeys {
			s.expire(r)
		}
		if len(s.keys) >= maxKeys {
			return false, 0, true
		}
		ks = &keyState{seen: t}
		s.keys[key] = ks
	}
	ks.seen = max(ks.seen, t)
	matches = 1
	if r.rateCount > 1 {
		i, _ := slices.BinarySearch(ks.times, t+1) // after equal times
		ks.times = slices.Insert(ks.times, i, t)
		// Matches a window before the latest can never count again.
		drop := 0
		for drop < len(ks.times) && ks.times[drop] <= ks.seen-r.rateMs {
			drop++
		}
		drop = max(drop, len(ks.times)-MaxRateCount)
		if drop > 0 {
			ks.times = slices.Delete(ks.times, 0, drop)
			i -= drop
		}
		if i < 0 || !r.windowHolds(ks.times, i) {
			return false, len(ks.times), false
		}
		matches = len(ks.times)
	}
	if ks.fired && abs(t-ks.lastFire) < r.coolMs {
		return false, matches, false
	}
	ks.fired, ks.lastFire = true, t
	ks.times = ks.times[:0]
	return true, matches, false
}

// windowHolds reports whether count consecutive matches, the one at i
// among them, lie within the rate window (their span is less than it).
func (r *rule) windowHolds(times []int64, i int) bool {
	n := r.rateCount
	for j := max(0, i-n+1); j <= i && j+n-1 < len(times); j++ {
		if times[j+n-1]-times[j] < r.rateMs {
			return true
		}
	}
	return false
}

// expire drops the keys whose last match is older than the rate window and
// the cooldown, counted back from the rule's latest match.
func (s *ruleState) expire(r *rule) {
	horizon := max(r.rateMs, r.coolMs)
	for k, ks := range s.keys {
		if ks.seen+horizon <= s.maxTime {
			delete(s.keys, k)
		}
	}
	s.sweepAt = max(2*len(s.keys), 1024)
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// stateKey is what a rule counts and cools down per: the device when the
// rate is per device (or there is no rate) and the subject has one, else
// the app.
func stateKey(r *rule, app, device string) string {
	if r.perApp || device == "" {
		return "a\x00" + app
	}
	return "d\x00" + app + "\x00" + device
}
