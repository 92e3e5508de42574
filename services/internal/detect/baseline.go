package detect

import (
	"math"
	"slices"
)

// Baselines: what a cohort usually looks like, learned from the windows it
// closed. Pure state updated with values passed in: no clock. Fields are
// exported for the checkpoint (encoding/gob).

// EWMA is an exponentially weighted mean and variance that starts as a
// plain running mean: a new value weighs max(alpha, 1/n), so the first
// windows are averaged and later ones forget at rate alpha.
type EWMA struct {
	N         int64
	Mean, Var float64
}

// Add learns x.
func (e *EWMA) Add(x, alpha float64) { e.AddWeighted(x, alpha, 1) }

// AddWeighted learns x with a weight w (0..1) relative to a normal window:
// windows that alerted are learned with a small weight, so that a lasting
// change is adopted slowly instead of never.
func (e *EWMA) AddWeighted(x, alpha, w float64) {
	e.N++
	a := max(alpha, 1/float64(e.N)) * w
	if e.N == 1 {
		a = 1
	}
	d := x - e.Mean
	e.Mean += a * d
	e.Var = (1 - a) * (e.Var + a*d*d)
}

// SD is the standard deviation.
func (e EWMA) SD() float64 { return math.Sqrt(max(e.Var, 0)) }

// Seasonal keeps one EWMA per hour of the day (UTC) and a global one. The
// hour's is used once it has learned from minN windows; until then the
// global one stands in.
type Seasonal struct {
	Global EWMA
	Hours  [24]EWMA
}

// Add learns x for the hour. The global baseline learns with weight w
// (small for windows that alerted); the hour's bucket describes the hour
// and learns every window.
func (s *Seasonal) Add(hour int, x, alpha, w float64) {
	s.Global.AddWeighted(x, alpha, w)
	if hour >= 0 && hour < 24 {
		s.Hours[hour].Add(x, alpha)
	}
}

// Expect returns the expected value and spread for the hour, and the hour
// used (-1 for the global baseline).
func (s *Seasonal) Expect(hour int, minN int64) (mean, sd float64, used int) {
	if hour >= 0 && hour < 24 && s.Hours[hour].N >= minN {
		h := s.Hours[hour]
		// The hour's spread comes from few windows: never below the global one
		// scaled to the hour's level.
		sd := h.SD()
		if s.Global.Mean > 0 {
			sd = max(sd, s.Global.SD()*h.Mean/s.Global.Mean)
		}
		return h.Mean, sd, hour
	}
	return s.Global.Mean, s.Global.SD(), -1
}

// Robust keeps the last values of a statistic (a ring) for median/MAD.
type Robust struct {
	Vals []float64
	Next int
}

// Add learns x, keeping at most n values.
func (r *Robust) Add(x float64, n int) {
	if len(r.Vals) < n {
		r.Vals = append(r.Vals, x)
		return
	}
	r.Vals[r.Next%len(r.Vals)] = x
	r.Next = (r.Next + 1) % len(r.Vals)
}

// Stats returns the median, the MAD-based sigma and how many values there are.
func (r *Robust) Stats() (median, sigma float64, n int) {
	if len(r.Vals) == 0 {
		return math.NaN(), math.NaN(), 0
	}
	median, sigma = MedianMAD(slices.Clone(r.Vals))
	return median, sigma, len(r.Vals)
}

// Markov is a first-order Markov model of transitions between tokens:
// exponentially decayed counts of from→to and of from.
type Markov struct {
	Counts map[uint32]float64
	From   map[uint32]float64
	// Novel holds the transitions kept out of Counts because they were
	// unseen when made (see Unseen), made by devices not judged forged:
	// what genuine devices do now and then, but never often enough in one
	// window to be learned.
	Novel map[uint32]float64
}

// TransitionKey packs a transition.
func TransitionKey(from, to uint16) uint32 { return uint32(from)<<16 | uint32(to) }

func splitKey(k uint32) (from, to uint16) { return uint16(k >> 16), uint16(k) }

// Learn decays the model by decay (0..1, kept share) and adds the counts
// times weight. Entries that decayed below 0.01 are dropped to bound memory.
func (m *Markov) Learn(counts map[uint32]float64, decay, weight float64) {
	if m.Counts == nil {
		m.Counts, m.From = map[uint32]float64{}, map[uint32]float64{}
	}
	for k, v := range m.Counts {
		if v *= decay; v < 0.01 {
			delete(m.Counts, k)
		} else {
			m.Counts[k] = v
		}
	}
	for k, v := range m.From {
		if v *= decay; v < 0.01 {
			delete(m.From, k)
		} else {
			m.From[k] = v
		}
	}
	for k, v := range m.Novel {
		if v *= decay; v < 0.01 {
			delete(m.Novel, k)
		} else {
			m.Novel[k] = v
		}
	}
	for k, v := range counts {
		if v *= weight; v <= 0 {
			continue
		}
		m.Counts[k] += v
		from, _ := splitKey(k)
		m.From[uint32(from)] += v
	}
}

// Prob is P(to | from) with additive smoothing alpha over a vocabulary of
// vocab tokens: never 0, 1/vocab for an origin never seen.
func (m *Markov) Prob(k uint32, alpha float64, vocab int) float64 {
	from, _ := splitKey(k)
	v := float64(max(vocab, 2))
	return (m.Counts[k] + alpha) / (m.From[uint32(from)] + alpha*v)
}

// Seen reports the decayed count of the transition and of its origin.
func (m *Markov) Seen(k uint32) (count, from float64) {
	f, _ := splitKey(k)
	return m.Counts[k], m.From[uint32(f)]
}

// LearnNovel adds novel transitions times weight; Learn decays them with
// the rest.
func (m *Markov) LearnNovel(novel map[uint32]float64, weight float64) {
	for k, v := range novel {
		if v *= weight; v > 0 {
			if m.Novel == nil {
				m.Novel = map[uint32]float64{}
			}
			m.Novel[k] += v
		}
	}
}

// Unseen estimates the chance that the next transition from the origin of
// k is k, given that k is not in Counts: the Good-Turing chance of any
// unseen transition (those seen about once over all seen, with one
// pseudo-observation so that a young model is never sure), or k's own
// share when it is a Novel transition made more often than that. Novel
// transitions count as observations of the origin (and as seen once while
// they are rare): without them, a transition that genuine devices make now
// and then but never learned would keep an estimated chance that shrinks as
// the origin's count grows.
func (m *Markov) Unseen(k uint32) float64 {
	f, _ := splitKey(k)
	n1, n := m.unseenMass(f)
	return max(n1, m.Novel[k]) / n
}

// unseenMass returns, for the origin f, the Good-Turing numerator (seen
// about once, plus one) and the denominator of Unseen.
func (m *Markov) unseenMass(f uint16) (n1, n float64) {
	nov := 0.0
	for key, c := range m.Counts {
		if kf, _ := splitKey(key); kf == f && c < 1.5 {
			n1++
		}
	}
	for key, c := range m.Novel {
		if kf, _ := splitKey(key); kf == f {
			nov += c
			if c < 1.5 {
				n1++
			}
		}
	}
	return n1 + 1, m.From[uint32(f)] + nov + 1
}

// MeanNLL is the mean negative log-likelihood (nats per transition) of the
// observed transition counts under the model, and the total count. terms,
// when not nil, gets each transition's summed surprise (count × -ln p).
func (m *Markov) MeanNLL(obs map[uint32]float64, alpha float64, vocab int, terms map[uint32]float64) (nll, n float64) {
	for k, c := range obs {
		if c <= 0 {
			continue
		}
		s := -math.Log(m.Prob(k, alpha, vocab)) * c
		nll += s
		n += c
		if terms != nil {
			terms[k] = s
		}
	}
	if n == 0 {
		return 0, 0
	}
	return nll / n, n
}

// clone returns a deep copy.
func (m *Markov) clone() Markov {
	out := Markov{Counts: make(map[uint32]float64, len(m.Counts)), From: make(map[uint32]float64, len(m.From))}
	for k, v := range m.Counts {
		out.Counts[k] = v
	}
	for k, v := range m.From {
		out.From[k] = v
	}
	if len(m.Novel) > 0 {
		out.Novel = make(map[uint32]float64, len(m.Novel))
		for k, v := range m.Novel {
			out.Novel[k] = v
		}
	}
	return out
}

// BinomialZ is how many standard deviations x successes out of n are above
// the expected share p (floored at pMin so that a share learned as 0 does not
// make one success infinitely surprising).
func BinomialZ(x, n, p, pMin float64) float64 {
	if n <= 0 {
		return 0
	}
	p = min(max(p, pMin), 1-1e-9)
	return (x - n*p) / math.Sqrt(n*p*(1-p))
}
