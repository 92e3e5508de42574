package detect

import (
	"math"
	"slices"
)

// Scores: pure functions of counts and baselines. No clock, no state beyond
// their arguments.

// JSD is the Jensen-Shannon divergence in bits between two distributions
// given as non-negative weights (each normalised here). It is 0 for equal
// distributions, 1 for disjoint ones, and 0 when either has no mass. terms,
// when not nil, receives each category's share of the divergence.
func JSD(p, q []float64, terms []float64) float64 {
	var sp, sq float64
	for i := range p {
		sp += p[i]
		sq += q[i]
	}
	if sp <= 0 || sq <= 0 {
		return 0
	}
	var d float64
	for i := range p {
		a, b := p[i]/sp, q[i]/sq
		m := (a + b) / 2
		var t float64
		if a > 0 {
			t += a / 2 * math.Log2(a/m)
		}
		if b > 0 {
			t += b / 2 * math.Log2(b/m)
		}
		if terms != nil {
			terms[i] = t
		}
		d += t
	}
	return max(d, 0)
}

// GTest compares observed counts with expected probabilities (which must be
// positive where observed is) and returns the G statistic and its degrees
// of freedom (categories with observed or expected mass, minus one).
func GTest(observed, expected []float64) (g float64, df int) {
	var n, se float64
	for i := range observed {
		n += observed[i]
		se += expected[i]
	}
	if n <= 0 || se <= 0 {
		return 0, 0
	}
	k := 0
	for i := range observed {
		e := n * expected[i] / se
		if observed[i] > 0 || e > 0 {
			k++
		}
		if observed[i] > 0 && e > 0 {
			g += observed[i] * math.Log(observed[i]/e)
		}
	}
	return max(2*g, 0), max(k-1, 0)
}

// ChiSquareZ turns a chi-square statistic with df degrees of freedom into a
// standard normal z (Wilson-Hilferty): about 0 under the null hypothesis, 5
// for a p-value near 3e-7.
func ChiSquareZ(x float64, df int) float64 {
	if df <= 0 {
		return 0
	}
	k := float64(df)
	v := 2 / (9 * k)
	return (math.Cbrt(x/k) - (1 - v)) / math.Sqrt(v)
}

// RobustZ is (x - median) / sigma, with sigma floored so that a perfectly
// steady baseline does not turn noise into huge scores.
func RobustZ(x, median, sigma, floor float64) float64 {
	return (x - median) / max(sigma, floor, 1e-12)
}

// CUSUM is a one-sided upper cumulative sum of standardised deviations
// (Page's test): S = max(0, S + z - k). It alerts when S exceeds h.
func CUSUM(s, z, k float64) float64 { return max(0, s+z-k) }

// CV is the coefficient of variation (standard deviation / mean) of xs, and
// NaN when there are fewer than two values or the mean is not positive.
func CV(xs []float64) float64 {
	if len(xs) < 2 {
		return math.NaN()
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	if mean <= 0 {
		return math.NaN()
	}
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return math.Sqrt(ss/float64(len(xs)-1)) / mean
}

// Median of xs (sorted in place); NaN when empty.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}

// MedianMAD returns the median of xs and the MAD scaled to a normal sigma
// (1.4826 × median absolute deviation). xs is reordered.
func MedianMAD(xs []float64) (median, sigma float64) {
	median = Median(xs)
	if math.IsNaN(median) {
		return median, math.NaN()
	}
	dev := make([]float64, len(xs))
	for i, x := range xs {
		dev[i] = math.Abs(x - median)
	}
	return median, 1.4826 * Median(dev)
}

// Rule is "K of the last N windows": the alert fires when at least K of the
// last N scored windows crossed the threshold.
type Rule struct {
	K, N int
}

// History is the crossing bit of the last 64 windows, newest in bit 0.
type History uint64

// Push records one window.
func (h History) Push(hit bool) History {
	h <<= 1
	if hit {
		h |= 1
	}
	return h
}

// Skip records n windows without a crossing (windows with no data).
func (h History) Skip(n int64) History {
	if n >= 64 {
		return 0
	}
	if n <= 0 {
		return h
	}
	return h << uint(n)
}

// Step advances the alert state of one kind by one scored window, after
// skip windows without data: hist and firing are its state before, hit
// says whether the window crossed the threshold and strong whether it
// crossed the escalation level (Escalates). It returns the new state and
// whether an episode starts with this window (the one time to alert).
//
// An episode starts when the rule holds, or at once on a strong window: a
// crossing by a large factor is as unlikely by chance as K ordinary ones.
// It lasts while the rule holds or while a hit remains among the last N
// windows, so that an episode an escalation started does not alert a
// second time when the rule catches up a window later.
func (r Rule) Step(hist History, firing bool, skip int64, hit, strong bool) (History, bool, bool) {
	recent := Rule{K: 1, N: r.N}
	hist = hist.Skip(skip)
	if !recent.Fires(hist) {
		firing = false // it ended in the windows without data
	}
	hist = hist.Push(hit)
	holds := r.Fires(hist) || (hit && strong)
	return hist, holds || (firing && recent.Fires(hist)), holds && !firing
}

// Escalates reports whether a score crosses its threshold by factor or
// more: a single window that strong alerts without waiting for the rule.
// A factor of 0 (or below 1) turns escalation off; thresholds must be
// positive.
func Escalates(score, threshold, factor float64) bool {
	return factor >= 1 && threshold > 0 && score >= factor*threshold
}

// Fires reports whether the rule holds for the history.
func (r Rule) Fires(h History) bool {
	n := min(max(r.N, 1), 64)
	mask := uint64(1)<<uint(n) - 1
	if n == 64 {
		mask = math.MaxUint64
	}
	return bitCount(uint64(h)&mask) >= max(r.K, 1)
}

func bitCount(x uint64) int {
	c := 0
	for ; x != 0; x &= x - 1 {
		c++
	}
	return c
}
