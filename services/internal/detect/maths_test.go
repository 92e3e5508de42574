package detect

import (
	"math"
	"testing"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

func near(t testing.TB, name string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol || math.IsNaN(got) != math.IsNaN(want) {
		t.Errorf("%s = %v, want %v ± %v", name, got, want, tol)
	}
}

func TestWindowOf(t *testing.T) {
	tests := []struct {
		name       string
		t, size    int64
		start, end int64
	}{
		{"start of a window", 60_000, 60_000, 60_000, 120_000},
		{"inside", 119_999, 60_000, 60_000, 120_000},
		{"zero", 0, 60_000, 0, 60_000},
		{"before the epoch", -1, 60_000, -60_000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := WindowOf(tt.t, tt.size)
			if w.Start != tt.start || w.End != tt.end {
				t.Errorf("WindowOf(%d, %d) = %+v, want [%d, %d)", tt.t, tt.size, w, tt.start, tt.end)
			}
		})
	}
}

func TestLate(t *testing.T) {
	tests := []struct {
		name         string
		t, watermark int64
		late         bool
	}{
		{"window still open", 61_000, 119_999, false},
		{"window closed exactly at its end", 61_000, 120_000, true},
		{"long closed", 1_000, 500_000, true},
		{"ahead of the watermark", 500_000, 100_000, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Late(tt.t, 60_000, tt.watermark); got != tt.late {
				t.Errorf("Late(%d, 60000, %d) = %v, want %v", tt.t, tt.watermark, got, tt.late)
			}
		})
	}
}

func TestEventTime(t *testing.T) {
	tests := []struct {
		name           string
		ts, sent, recv int64
		want           int64
	}{
		{"no server times: the device timestamp", 1000, 0, 0, 1000},
		{"device clock one hour behind is corrected", 1000, 2000, 3_602_000, 3_601_000},
		{"sent unknown: the device timestamp", 1000, 0, 5000, 1000},
		{"claims to be from after its receipt: put at the receipt", 9000, 0, 5000, 5000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &eventv1.Event{TimestampMs: tt.ts, SentAtMs: tt.sent, ReceivedAtMs: tt.recv}
			if got := EventTime(e); got != tt.want {
				t.Errorf("EventTime = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestTypeOf(t *testing.T) {
	e := &eventv1.Event{Payload: &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{}}}
	if got := TypeName(TypeOf(e)); got != "purchase_complete" {
		t.Errorf("TypeName(TypeOf(purchase)) = %q", got)
	}
	if got := TypeOf(&eventv1.Event{}); got != 0 {
		t.Errorf("TypeOf(no payload) = %d, want 0", got)
	}
	if HourOf(3*3_600_000+59*60_000) != 3 || HourOf(-1) != 23 {
		t.Errorf("HourOf wrong: %d %d", HourOf(3*3_600_000+59*60_000), HourOf(-1))
	}
}

func TestJSD(t *testing.T) {
	tests := []struct {
		name string
		p, q []float64
		want float64
	}{
		{"equal", []float64{1, 2, 3}, []float64{2, 4, 6}, 0},
		{"disjoint", []float64{1, 0}, []float64{0, 5}, 1},
		{"empty window", []float64{0, 0}, []float64{1, 1}, 0},
		{"half moved", []float64{1, 1}, []float64{1, 0}, 0.311278},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			near(t, "JSD", JSD(tt.p, tt.q, nil), tt.want, 1e-6)
		})
	}
}

func TestGTestAndChiSquareZ(t *testing.T) {
	// Observed exactly as expected: G = 0, z well below 0.
	g, df := GTest([]float64{25, 25, 50}, []float64{0.25, 0.25, 0.5})
	near(t, "G", g, 0, 1e-9)
	if df != 2 {
		t.Errorf("df = %d, want 2", df)
	}
	// 2 × (60 ln(60/50) + 40 ln(40/50)) = 4.0271
	g, df = GTest([]float64{60, 40}, []float64{1, 1})
	near(t, "G", g, 4.0271, 1e-3)
	// chi-square 3.84 with 1 df is p = 0.05, z = 1.645 (Wilson-Hilferty is close).
	near(t, "z", ChiSquareZ(3.841, 1), 1.645, 0.05)
	near(t, "z", ChiSquareZ(float64(df), 0), 0, 0)
	if z := ChiSquareZ(200, 10); z < 8 {
		t.Errorf("ChiSquareZ(200, 10) = %v, want large", z)
	}
}

func TestCVMedianRobustZ(t *testing.T) {
	near(t, "CV regular", CV([]float64{1000, 1000, 1000}), 0, 1e-12)
	near(t, "CV", CV([]float64{1, 3}), math.Sqrt2/2, 1e-12)
	near(t, "CV of one gap", CV([]float64{5}), math.NaN(), 0)
	near(t, "median odd", Median([]float64{3, 1, 2}), 2, 0)
	near(t, "median even", Median([]float64{4, 1, 2, 3}), 2.5, 0)
	m, s := MedianMAD([]float64{1, 2, 3, 4, 100})
	near(t, "median", m, 3, 0)
	near(t, "mad sigma", s, 1.4826, 1e-9)
	near(t, "robust z", RobustZ(10, 3, 1, 0), 7, 0)
	near(t, "robust z floor", RobustZ(10, 3, 0, 2), 3.5, 0)
	near(t, "cusum", CUSUM(CUSUM(0, 3, 1), 3, 1), 4, 0)
	near(t, "cusum floors at 0", CUSUM(1, -5, 1), 0, 0)
}

func TestRule(t *testing.T) {
	tests := []struct {
		name string
		rule Rule
		hits []bool
		skip int64
		want bool
	}{
		{"no windows", Rule{2, 3}, nil, 0, false},
		{"one hit", Rule{2, 3}, []bool{true}, 0, false},
		{"two in a row", Rule{2, 3}, []bool{true, true}, 0, true},
		{"two of three", Rule{2, 3}, []bool{true, false, true}, 0, true},
		{"too far apart", Rule{2, 3}, []bool{true, false, false, true}, 0, false},
		{"quiet windows between", Rule{2, 3}, []bool{true, true}, 5, false},
		{"every window", Rule{1, 1}, []bool{false, true}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h History
			for i, hit := range tt.hits {
				if i == len(tt.hits)-1 {
					h = h.Skip(tt.skip)
				}
				h = h.Push(hit)
			}
			if got := tt.rule.Fires(h); got != tt.want {
				t.Errorf("%v fires on %v = %v, want %v", tt.rule, tt.hits, got, tt.want)
			}
		})
	}
}

func TestEWMAAndSeasonal(t *testing.T) {
	var e EWMA
	for _, x := range []float64{10, 20, 30} {
		e.Add(x, 0.01)
	}
	near(t, "warm start mean (plain average)", e.Mean, 20, 1e-9)
	e.AddWeighted(120, 0.01, 0.1)
	near(t, "an alerting window moves the mean a tenth as much", e.Mean, 22.5, 1e-9)

	var s Seasonal
	for range 20 {
		s.Add(3, 100, 0.1, 1) // busy at 03:00
		s.Add(4, 10, 0.1, 1)
	}
	s.Add(5, 50, 0.1, 1)
	mean, _, used := s.Expect(3, 5)
	if used != 3 || math.Abs(mean-100) > 1e-6 {
		t.Errorf("hour 3 with data: mean %v from hour %d, want 100 from 3", mean, used)
	}
	mean, _, used = s.Expect(5, 5) // one window only: falls back to the global baseline
	if used != -1 || math.Abs(mean-s.Global.Mean) > 1e-9 {
		t.Errorf("hour 5 without enough data: mean %v from hour %d, want global %v", mean, used, s.Global.Mean)
	}
	_, sd, _ := s.Expect(4, 5)
	if sd <= 0 {
		t.Errorf("hour spread %v: must borrow the global spread when the hour's own is 0", sd)
	}
}

func TestRobust(t *testing.T) {
	var r Robust
	if _, _, n := r.Stats(); n != 0 {
		t.Fatalf("empty Robust has %d values", n)
	}
	for i := range 10 {
		r.Add(float64(i), 5)
	}
	m, _, n := r.Stats()
	if n != 5 || m != 7 {
		t.Errorf("kept %d values with median %v, want the last 5 (5..9) with median 7", n, m)
	}
}

func TestMarkov(t *testing.T) {
	var m Markov
	ab, ac, ba := TransitionKey(1, 2), TransitionKey(1, 3), TransitionKey(2, 1)
	m.Learn(map[uint32]float64{ab: 90, ac: 10}, 1, 1)
	near(t, "P(b|a)", m.Prob(ab, 0, 4), 0.9, 1e-12)
	if p := m.Prob(ba, 0.1, 4); math.Abs(p-0.25) > 1e-12 {
		t.Errorf("unseen origin: P = %v, want uniform 1/4", p)
	}
	if p := m.Prob(TransitionKey(1, 4), 0.1, 4); p <= 0 || p > 0.01 {
		t.Errorf("unseen transition from a known origin: P = %v, want small and positive", p)
	}
	nllUsual, n := m.MeanNLL(map[uint32]float64{ab: 9, ac: 1}, 0.1, 4, nil)
	nllOdd, _ := m.MeanNLL(map[uint32]float64{ac: 10}, 0.1, 4, nil)
	if n != 10 || nllOdd <= nllUsual {
		t.Errorf("NLL usual %v (n %v), odd %v: the rare transitions must be more surprising", nllUsual, n, nllOdd)
	}
	m.Learn(nil, 0.5, 1)
	if c, from := m.Seen(ab); c != 45 || from != 50 {
		t.Errorf("after decay 0.5: count %v from %v, want 45 and 50", c, from)
	}
}

func TestBinomialZ(t *testing.T) {
	near(t, "as expected", BinomialZ(10, 1000, 0.01, 0.002), 0, 1e-9)
	if z := BinomialZ(3, 100, 0, 0.002); z < 6 {
		t.Errorf("3 of 100 where none were expected: z %v, want large (floor keeps it finite)", z)
	}
	near(t, "no devices", BinomialZ(0, 0, 0.5, 0), 0, 0)
}

func TestSketches(t *testing.T) {
	s := NewRecentSet(4)
	for _, k := range []uint64{1, 2} {
		if s.Add(k) {
			t.Errorf("%d seen before it was added", k)
		}
	}
	if !s.Add(1) {
		t.Error("1 not remembered")
	}
	s.Add(3)
	s.Add(4) // rotates: {1,2} become the previous generation, then dropped
	s.Add(5)
	if s.Add(1) {
		t.Error("1 still remembered after 4 more keys in a set of 4")
	}
	cm := NewCountMin(1024, 4)
	for range 3 {
		cm.Add(42)
	}
	cm.Add(7)
	if cm.Estimate(42) != 3 || cm.Estimate(7) != 1 || cm.Estimate(8) != 0 {
		t.Errorf("estimates %d %d %d, want 3 1 0", cm.Estimate(42), cm.Estimate(7), cm.Estimate(8))
	}
	cm.Reset()
	if cm.Estimate(42) != 0 {
		t.Error("Reset kept counts")
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"2.4.1", "2.4.1", 0},
		{"2.4.1", "2.10.0", -1},
		{"2.5", "2.4.9", 1},
		{"2.4", "2.4.0", 0},
		{"2.4.1-beta", "2.4.1", 1},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestLog10Choose(t *testing.T) {
	near(t, "C(5,2)", log10Choose(5, 2), 1, 1e-12)
	near(t, "C(30,0)", log10Choose(30, 0), 0, 0)
	near(t, "C(3,5)", log10Choose(3, 5), 0, 0)
}

// TestRuleStep walks an alert state through windows: episodes start on the
// rule or at once on a strong window, alert once, and end after N windows
// without a hit.
func TestRuleStep(t *testing.T) {
	type win struct {
		hit, strong bool
		skip        int64
		start       bool // an episode starts: the one alert
		firing      bool
	}
	tests := []struct {
		name string
		rule Rule
		wins []win
	}{
		{"2 of 3 waits for the second hit", Rule{2, 3}, []win{
			{hit: true}, {hit: true, start: true, firing: true}, {hit: true, firing: true},
		}},
		{"a strong window alerts at once", Rule{2, 3}, []win{
			{}, {hit: true, strong: true, start: true, firing: true},
		}},
		{"the rule catching up a window later does not alert again", Rule{2, 3}, []win{
			{hit: true, strong: true, start: true, firing: true}, {hit: true, firing: true}, {hit: true, firing: true},
		}},
		{"strong without a hit is no evidence", Rule{2, 3}, []win{
			{strong: true}, {strong: true},
		}},
		{"an episode lasts while a hit is among the last N windows, then a new one can start", Rule{2, 3}, []win{
			{hit: true, strong: true, start: true, firing: true}, {firing: true}, {firing: true}, {},
			{hit: true}, {hit: true, start: true, firing: true},
		}},
		{"isolated hits never alert", Rule{2, 3}, []win{
			{hit: true}, {}, {}, {hit: true}, {}, {}, {hit: true},
		}},
		{"windows without data break the rule", Rule{2, 3}, []win{
			{hit: true}, {hit: true, skip: 2}, {hit: true, start: true, firing: true},
		}},
		{"a long gap ends an episode", Rule{2, 3}, []win{
			{hit: true}, {hit: true, start: true, firing: true}, {hit: true, skip: 64, start: false, firing: false},
		}},
		{"every window", Rule{1, 1}, []win{
			{hit: true, start: true, firing: true}, {hit: true, firing: true}, {}, {hit: true, start: true, firing: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h History
			firing := false
			for i, w := range tt.wins {
				var start bool
				h, firing, start = tt.rule.Step(h, firing, w.skip, w.hit, w.strong)
				if start != w.start || firing != w.firing {
					t.Fatalf("window %d (%+v): start %v firing %v, want %v %v", i, w, start, firing, w.start, w.firing)
				}
			}
		})
	}
}

func TestEscalates(t *testing.T) {
	tests := []struct {
		name                     string
		score, threshold, factor float64
		want                     bool
	}{
		{"far beyond", 20, 5, 3, true},
		{"exactly the factor", 15, 5, 3, true},
		{"just below", 14.9, 5, 3, false},
		{"a plain crossing", 6, 5, 3, false},
		{"off", 1e9, 5, 0, false},
		{"a factor below 1 is off", 10, 5, 0.5, false},
		{"no threshold", 10, 0, 3, false},
		{"negative threshold", 10, -1, 3, false},
		{"NaN score", math.NaN(), 5, 3, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Escalates(tt.score, tt.threshold, tt.factor); got != tt.want {
				t.Errorf("Escalates(%v, %v, %v) = %v, want %v", tt.score, tt.threshold, tt.factor, got, tt.want)
			}
		})
	}
}

func TestShareTest(t *testing.T) {
	th := DefaultConfig().Thresholds // z >= 5, >= 3 devices, >= 2x the expected share, floor 0.002
	tests := []struct {
		name    string
		x, n, p float64
		f       float64
		hit     bool
	}{
		{"a farm of new installs among the newcomers", 10, 11, 0.007, 1, true},
		{"the same farm diluted in the cohort", 10, 150, 0.007, 1, true},
		{"population rate", 3, 300, 0.01, 1, false},
		{"a few more than usual is not significant", 5, 291, 0.0075, 1, false},
		{"significant but only 2 devices", 2, 10, 0.002, 1, false},
		{"an inherited baseline needs more", 10, 150, 0.03, 1.5, false},
		{"no devices", 0, 0, 0.01, 1, false},
		{"a share learned as 0 is floored", 3, 100, 0, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z, hit := th.shareTest(tt.x, tt.n, tt.p, tt.f)
			if hit != tt.hit {
				t.Errorf("shareTest(%v of %v, p %v, f %v) = z %.2f hit %v, want hit %v", tt.x, tt.n, tt.p, tt.f, z, hit, tt.hit)
			}
		})
	}
}

func TestSignalShare(t *testing.T) {
	tests := []struct {
		name string
		ps   platformState
		want float64
	}{
		{"learned share", platformState{Windows: 20, Signals: [numSignals]float64{50}, Active: 5000, WindowDevices: 1000}, 0.01},
		{"none seen: the rule of three", platformState{Windows: 20, Active: 5000, WindowDevices: 400}, 3.0 / 400},
		{"still learning", platformState{Windows: 5, Signals: [numSignals]float64{50}, Active: 5000, WindowDevices: 1000}, 0},
		{"no devices yet", platformState{Windows: 20}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			near(t, "signalShare", tt.ps.signalShare(0, 10), tt.want, 1e-12)
		})
	}
}

func TestSeqGap(t *testing.T) {
	tests := []struct {
		name       string
		seqs       []uint64
		last, next uint64
		gap        bool
	}{
		{"the next number", []uint64{5, 6}, 5, 6, false},
		{"out of order: 665 comes after 666 in time", []uint64{664, 665, 666}, 664, 666, false},
		{"one lost", []uint64{664, 666}, 664, 666, true},
		{"several, one lost", []uint64{10, 11, 13, 14}, 10, 14, true},
		{"a jump far beyond the window's events", []uint64{1, 2, 1 << 40}, 2, 1 << 40, true},
		{"nothing between", nil, 7, 8, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := seqGap(tt.seqs, tt.last, tt.next); got != tt.gap {
				t.Errorf("seqGap(%v, %d, %d) = %v, want %v", tt.seqs, tt.last, tt.next, got, tt.gap)
			}
		})
	}
}

// Novel transitions (unseen when made, kept out of the counts) raise the
// chance of the unseen: as singletons while rare, by their own share when
// made more often than that; they count as observations of the origin and
// decay with the rest.
func TestMarkovNovel(t *testing.T) {
	var m Markov
	ab, ac, ad, xy := TransitionKey(1, 2), TransitionKey(1, 3), TransitionKey(1, 4), TransitionKey(5, 6)
	m.Learn(map[uint32]float64{ab: 9999}, 1, 1)
	near(t, "Good-Turing chance of the unseen, nothing novel", m.Unseen(ac), 1.0/10000, 1e-15)
	// A transition a few genuine devices made: one more singleton.
	m.LearnNovel(map[uint32]float64{ac: 1}, 1)
	near(t, "with one novel singleton", m.Unseen(ad), 2.0/10001, 1e-15)
	near(t, "the novel singleton itself", m.Unseen(ac), 2.0/10001, 1e-15)
	// Made 40 times: no longer a singleton, its own share.
	m.LearnNovel(map[uint32]float64{ac: 39}, 1)
	near(t, "a novel transition made often", m.Unseen(ac), 40.0/10040, 1e-15)
	near(t, "another unseen one from the origin", m.Unseen(ad), 1.0/10040, 1e-15)
	near(t, "another origin is untouched", m.Unseen(xy), 1, 1e-15)
	// Weight 0 teaches nothing; decay applies to novel counts too.
	m.LearnNovel(map[uint32]float64{ad: 5, xy: -1}, 0)
	if _, ok := m.Novel[ad]; ok {
		t.Errorf("weight 0 taught %v", m.Novel)
	}
	m.Learn(nil, 0.5, 1)
	if m.Novel[ac] != 20 {
		t.Errorf("after decay 0.5: novel %v, want 20", m.Novel[ac])
	}
	c := m.clone()
	c.Novel[ac] = 1
	if m.Novel[ac] != 20 {
		t.Error("clone shares its novel counts")
	}
	m.Learn(nil, 0.0001, 1)
	if len(m.Novel) != 0 {
		t.Errorf("decayed to nothing but kept %v", m.Novel)
	}
}
