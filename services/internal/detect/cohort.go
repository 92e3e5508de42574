package detect

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

const (
	numKinds    = 12 // AnomalyKind values, UNSPECIFIED included
	robustN     = 60 // windows kept for median/MAD baselines
	maxListed   = 100
	maxScreens  = 1024
	screenStart = 0 // the token before the first screen of a session
	screenOther = 1 // screens beyond maxScreens
	smoothing   = 0.1
	// alertedWeight is how much a window that alerted teaches the baseline.
	alertedWeight = 0.1
)

// cohortKey names a cohort.
type cohortKey struct {
	App, Version, Build string
	Platform            int32
}

// Label is the cohort without the app, as stored in ClickHouse:
// "app_version=2.4.1,build_number=2410,platform=android".
func (k cohortKey) Label() string {
	return "app_version=" + k.Version + ",build_number=" + k.Build + ",platform=" + platformName(k.Platform)
}

// String is unique per cohort.
func (k cohortKey) String() string { return "app_id=" + k.App + "," + k.Label() }

func (k cohortKey) proto() *detectv1.Cohort {
	return &detectv1.Cohort{AppId: k.App, AppVersion: k.Version, BuildNumber: k.Build, Platform: eventv1.Platform(k.Platform)}
}

func platformName(p int32) string {
	return strings.ToLower(strings.TrimPrefix(eventv1.Platform(p).String(), "PLATFORM_"))
}

// CohortLabel is the cohort column of the ClickHouse anomalies table.
func CohortLabel(c *detectv1.Cohort) string {
	return cohortKey{Version: c.GetAppVersion(), Build: c.GetBuildNumber(), Platform: int32(c.GetPlatform())}.Label()
}

// appState is what is shared by the cohorts of an app.
type appState struct {
	ID          string
	Screens     map[string]uint16
	ScreenNames []string
	Platforms   map[int32]*platformState
}

// platformState is an app on one platform: its cohorts, and a Markov model
// learned from all of them (what any build of the app does).
type platformState struct {
	Cohorts        []uint32
	Windows        int64
	LastStart      int64
	Types, Screens Markov
	// Decayed counts of active devices with each device signal (emulator,
	// jailbroken, inconsistent) and of all active devices, over every cohort:
	// the population's share, which a cohort's own baseline (a few hundred
	// devices, maybe none with a signal) may underestimate.
	Signals [numSignals]float64
	Active  float64
	// Active devices of the last complete window (all cohorts), and of the
	// window being closed.
	WindowDevices, OpenDevices int64
}

// numSignals are the device signals whose share is watched: emulator,
// jailbroken, inconsistent context.
const numSignals = 3

// signalShare is the share of devices with signal j to expect from what the
// platform has learned: its share of active devices, but at least 3/n for n
// devices in a window (a share seen as 0 in n devices could still be up to
// about 3/n: the rule of three), so that a population that by chance
// showed no such device does not make a few of them look like an attack.
// It is 0 until the platform has learned minWindows windows.
func (ps *platformState) signalShare(j int, minWindows int64) float64 {
	if ps.Windows < minWindows || ps.Active <= 0 || ps.WindowDevices <= 0 {
		return 0
	}
	return max(ps.Signals[j]/ps.Active, 3/float64(ps.WindowDevices))
}

func (d *Detector) app(id string) *appState {
	a := d.st.Apps[id]
	if a == nil {
		a = &appState{ID: id, Screens: map[string]uint16{}, ScreenNames: []string{"(start)", "(other)"}, Platforms: map[int32]*platformState{}}
		d.st.Apps[id] = a
	}
	return a
}

// screen interns a screen name (at most maxScreens per app).
func (a *appState) screen(name string) uint16 {
	if id, ok := a.Screens[name]; ok {
		return id
	}
	if len(a.ScreenNames) >= maxScreens {
		return screenOther
	}
	id := uint16(len(a.ScreenNames))
	a.Screens[name] = id
	a.ScreenNames = append(a.ScreenNames, name)
	return id
}

func (a *appState) platform(p int32) *platformState {
	ps := a.Platforms[p]
	if ps == nil {
		ps = &platformState{}
		a.Platforms[p] = ps
	}
	return ps
}

// cohort is one cohort's windows and baselines, one scale per window size.
type cohort struct {
	ID          uint32
	Key         cohortKey
	Created     int64
	LastEvent   int64
	Reasons     []string // why the build looks never released; reported once
	ReasonsDone bool
	Scales      []*scale
}

type scale struct {
	Size int64
	Open []*cohortWin
	B    baseline
}

// baseline is what a cohort usually looks like at one window size.
type baseline struct {
	Source         string
	Windows, Own   int64
	Mix            []float64 // decayed counts per event type
	Types, Screens Markov
	Rate           Seasonal // events per active device per window
	Cusum          float64
	Gap, NLL, JSD  Robust
	Emu, Jail, Odd EWMA            // shares of active devices
	SignalIDs      [][]string      // devices behind the device-signal hits of the last windows
	Reported       map[string]bool // devices already reported while device signals fire
	Hist           [numKinds]History
	Firing         [numKinds]bool
	LastStart      int64
	Scored         bool
	Active         int64
}

// cohortWin is what a cohort did in one open window.
type cohortWin struct {
	Start, End       int64
	Events           float64
	Types            []float64
	TypeTr, ScreenTr map[uint32]float64
	// Unseen transitions of devices that went on without being judged
	// forged: taught to the platform's models as Markov.Novel (smallest
	// window only).
	TypeNovel, ScreenNovel map[uint32]float64
	Devices                int64
	Emu, Jail, Odd         int64
	IDs                    []string // devices seen, at most maxListed
	EmuIDs, JailIDs        []string
	OddIDs                 []string
	// Devices new to the cohort in this window (Fresh), and of them those
	// with each signal (emulator, jailbroken, inconsistent): a farm of new
	// installs stands out among the newcomers before it moves the share of
	// the whole cohort.
	Fresh              int64
	FreshSig           [numSignals]int64
	FreshIDs           [numSignals][]string
	Gaps               []float64 // reservoir sample of gaps between a device's events, ms
	GapsSeen           int64
	GapSeed            uint64
	FirstT             int64
	HasEvents, Unknown bool
}

const sourceOwn = "cohort"

func (c *cohort) bytes() int64 {
	n := int64(200)
	for _, s := range c.Scales {
		n += 8*int64(len(s.B.Mix)) + 24*int64(len(s.B.Types.Counts)+len(s.B.Screens.Counts)+len(s.B.Types.From)+len(s.B.Screens.From)) + 3*8*robustN + 2*25*24
		for _, w := range s.Open {
			n += 8*int64(len(w.Types)) + 24*int64(len(w.TypeTr)+len(w.ScreenTr)+len(w.TypeNovel)+len(w.ScreenNovel)) + 8*int64(len(w.Gaps)) + 40*int64(len(w.IDs)+len(w.EmuIDs)+len(w.JailIDs)+len(w.OddIDs))
		}
	}
	return n
}

// cohortFor returns the cohort of an event's device context, creating it
// (and inheriting its predecessor's baseline) when new.
func (d *Detector) cohortFor(a *appState, ctx *eventv1.DeviceContext, t int64) *cohort {
	k := cohortKey{App: a.ID, Version: ctx.GetAppVersion(), Build: ctx.GetBuildNumber(), Platform: int32(ctx.GetPlatform())}
	ks := k.String()
	if id, ok := d.st.CohortIDs[ks]; ok {
		c := d.st.Cohorts[id]
		c.LastEvent = max(c.LastEvent, t)
		return c
	}
	if len(d.st.Cohorts) >= d.cfg.MaxCohorts {
		d.evictCohort()
	}
	d.st.NextCohort++
	c := &cohort{ID: d.st.NextCohort, Key: k, Created: t, LastEvent: t}
	ps := a.platform(k.Platform)
	c.Reasons = d.buildReasons(ps, k)
	pred := d.predecessor(ps, k)
	for i, size := range d.sizes {
		s := &scale{Size: size}
		if pred != nil {
			s.B = pred.Scales[i].B.inherit(fmt.Sprintf("inherited from %s (%s)", pred.Key.Version, pred.Key.Build))
		} else {
			s.B = baseline{Source: sourceOwn, Mix: make([]float64, numTypes)}
		}
		c.Scales = append(c.Scales, s)
	}
	d.st.Cohorts[c.ID] = c
	d.st.CohortIDs[ks] = c.ID
	ps.Cohorts = append(ps.Cohorts, c.ID)
	return c
}

// evictCohort forgets the least recently active cohort.
func (d *Detector) evictCohort() {
	var victim *cohort
	for _, c := range d.st.Cohorts {
		if victim == nil || c.LastEvent < victim.LastEvent {
			victim = c
		}
	}
	if victim == nil {
		return
	}
	delete(d.st.Cohorts, victim.ID)
	delete(d.st.CohortIDs, victim.Key.String())
	if a := d.st.Apps[victim.Key.App]; a != nil {
		ps := a.platform(victim.Key.Platform)
		ps.Cohorts = slices.DeleteFunc(ps.Cohorts, func(id uint32) bool { return id == victim.ID })
	}
}

// inherit copies a baseline as the starting point of a new cohort: what it
// learned, not its alert state.
func (b *baseline) inherit(source string) baseline {
	out := baseline{
		Source: source, Windows: b.Windows, Mix: slices.Clone(b.Mix),
		Types: b.Types.clone(), Screens: b.Screens.clone(), Rate: b.Rate,
		Gap: Robust{Vals: slices.Clone(b.Gap.Vals), Next: b.Gap.Next}, NLL: Robust{Vals: slices.Clone(b.NLL.Vals), Next: b.NLL.Next},
		JSD: Robust{Vals: slices.Clone(b.JSD.Vals), Next: b.JSD.Next}, Emu: b.Emu, Jail: b.Jail, Odd: b.Odd,
	}
	if len(out.Mix) != numTypes {
		out.Mix = make([]float64, numTypes)
	}
	return out
}

// predecessor is the cohort whose baseline a new cohort starts from: of the
// same app and platform, the highest version below the new one that has a
// warm baseline; else the warm cohort with the most windows.
func (d *Detector) predecessor(ps *platformState, k cohortKey) *cohort {
	var best, most *cohort
	for _, id := range ps.Cohorts {
		c := d.st.Cohorts[id]
		if c == nil || c.Scales[0].B.Windows < int64(d.cfg.Warmup) {
			continue
		}
		if most == nil || c.Scales[0].B.Windows > most.Scales[0].B.Windows {
			most = c
		}
		if compareVersions(c.Key.Version, k.Version) < 0 && (best == nil || compareVersions(c.Key.Version, best.Key.Version) > 0 ||
			c.Key.Version == best.Key.Version && c.Scales[0].B.Windows > best.Scales[0].B.Windows) {
			best = c
		}
	}
	if best != nil {
		return best
	}
	return most
}

// buildReasons says why a build seen for the first time does not look like
// a release, once the app and platform have a history (Warmup windows).
func (d *Detector) buildReasons(ps *platformState, k cohortKey) []string {
	if ps.Windows < int64(d.cfg.Warmup) || len(ps.Cohorts) == 0 {
		return nil
	}
	var reasons []string
	var newest *cohort
	allNumeric := true
	for _, id := range ps.Cohorts {
		c := d.st.Cohorts[id]
		if c == nil {
			continue
		}
		if c.Key.Version == k.Version && c.Key.Build != k.Build {
			reasons = append(reasons, fmt.Sprintf("version %s is known as build %s", k.Version, c.Key.Build))
		}
		if _, err := strconv.ParseUint(c.Key.Build, 10, 64); err != nil {
			allNumeric = false
		}
		if newest == nil || compareVersions(c.Key.Version, newest.Key.Version) > 0 {
			newest = c
		}
	}
	b, err := strconv.ParseUint(k.Build, 10, 64)
	if err != nil && allNumeric {
		reasons = append(reasons, fmt.Sprintf("build number %q is not numeric like the known builds", k.Build))
	}
	if newest != nil && err == nil && compareVersions(k.Version, newest.Key.Version) < 0 {
		if nb, nerr := strconv.ParseUint(newest.Key.Build, 10, 64); nerr == nil && b < nb {
			reasons = append(reasons, fmt.Sprintf("older than the newest known release %s (%s) yet never seen", newest.Key.Version, newest.Key.Build))
		}
	}
	return reasons
}

// compareVersions compares dotted versions part by part, numerically where
// both parts are numbers.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(pa), len(pb)) {
		x, y := "0", "0"
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		xi, err1 := strconv.Atoi(x)
		yi, err2 := strconv.Atoi(y)
		switch {
		case err1 == nil && err2 == nil && xi != yi:
			if xi < yi {
				return -1
			}
			return 1
		case (err1 != nil || err2 != nil) && x != y:
			return strings.Compare(x, y)
		}
	}
	return 0
}

// window returns the open window of scale i holding t, creating it.
func (c *cohort) window(i int, t, size int64, pending map[int64]bool) *cohortWin {
	s := c.Scales[i]
	w := WindowOf(t, size)
	for _, o := range s.Open {
		if o.Start == w.Start {
			return o
		}
	}
	o := &cohortWin{Start: w.Start, End: w.End, Types: make([]float64, numTypes), TypeTr: map[uint32]float64{}, ScreenTr: map[uint32]float64{}, GapSeed: uint64(w.Start) ^ uint64(c.ID)}
	s.Open = append(s.Open, o)
	pending[w.End] = true
	return o
}

// openAt returns the open window of scale i holding t, or nil.
func (c *cohort) openAt(i int, t int64) *cohortWin {
	s := c.Scales[i]
	start := WindowOf(t, s.Size).Start
	for _, o := range s.Open {
		if o.Start == start {
			return o
		}
	}
	return nil
}

func (c *cohort) hasWindowBy(b int64) bool {
	for _, s := range c.Scales {
		for _, w := range s.Open {
			if w.End <= b {
				return true
			}
		}
	}
	return false
}

// closeBy removes and returns the windows ending by b, oldest first.
func (s *scale) closeBy(b int64) []*cohortWin {
	var out []*cohortWin
	keep := s.Open[:0]
	for _, w := range s.Open {
		if w.End <= b {
			out = append(out, w)
		} else {
			keep = append(keep, w)
		}
	}
	s.Open = keep
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// shareTest is the device-signal check of one signal: x of n devices carry
// it where a share p is expected. It returns the binomial z and whether it
// is a hit: z at least ShareZ·f, at least ShareMinDevices such devices and
// a share at least ShareRatio times the expected one (p floored at
// ShareFloor).
func (th Thresholds) shareTest(x, n, p, f float64) (z float64, hit bool) {
	if n <= 0 {
		return 0, false
	}
	z = BinomialZ(x, n, p, th.ShareFloor)
	return z, z >= th.ShareZ*f && x >= th.ShareMinDevices && x/n >= th.ShareRatio*max(p, th.ShareFloor)
}

// add counts one event of device dv (nil when untracked) at scale i.
func (w *cohortWin) add(typ uint16, dv *device, i int) {
	w.Events++
	w.Types[typ]++
	if dv == nil || dv.Seen[i] == w.Start {
		return
	}
	dv.Seen[i] = w.Start
	w.Devices++
	w.IDs = appendListed(w.IDs, dv.ID)
	if dv.Joined >= w.Start {
		w.Fresh++
		for j, on := range [numSignals]bool{dv.Emulator, dv.Jailbroken, dv.Odd != ""} {
			if on {
				w.FreshSig[j]++
				w.FreshIDs[j] = appendListed(w.FreshIDs[j], dv.ID)
			}
		}
	}
	if dv.Emulator {
		w.Emu++
		w.EmuIDs = appendListed(w.EmuIDs, dv.ID)
	}
	if dv.Jailbroken {
		w.Jail++
		w.JailIDs = appendListed(w.JailIDs, dv.ID)
	}
	if dv.Odd != "" {
		w.Odd++
		w.OddIDs = appendListed(w.OddIDs, dv.ID)
	}
}

func appendListed(xs []string, x string) []string {
	if len(xs) < maxListed {
		xs = append(xs, x)
	}
	return xs
}

// addGap samples a gap (reservoir of 1024, deterministic).
func (w *cohortWin) addGap(g float64) {
	w.GapsSeen++
	if len(w.Gaps) < 1024 {
		w.Gaps = append(w.Gaps, g)
		return
	}
	if j := mix64(w.GapSeed+uint64(w.GapsSeen)) % uint64(w.GapsSeen); j < 1024 {
		w.Gaps[j] = g
	}
}

// verdict applies the alert rule to one kind at one scale and emits when an
// episode starts (Rule.Step); score and threshold are the anomaly's, for
// the escalation.
func (d *Detector) verdict(b *baseline, kind detectv1.AnomalyKind, hit bool, score, threshold float64, skip int64, make func() *detectv1.Anomaly) {
	strong := Escalates(score, threshold, d.cfg.Escalate)
	var start bool
	b.Hist[kind], b.Firing[kind], start = d.cfg.Rule.Step(b.Hist[kind], b.Firing[kind], skip, hit, strong)
	if start && make != nil {
		d.emit(make())
	}
}

// closeWindow scores a closed window of cohort c at scale i against the
// baseline, then lets the baseline learn the parts that did not alert.
func (d *Detector) closeWindow(c *cohort, i int, w *cohortWin) {
	s := c.Scales[i]
	b := &s.B
	th := d.cfg.Thresholds
	win := Window{w.Start, w.End}
	skip := int64(0)
	if b.Scored {
		skip = max((w.Start-b.LastStart)/s.Size-1, 0)
	}
	f := 1.0
	if b.Source != sourceOwn && b.Own < int64(d.cfg.Warmup) {
		f = th.InheritedFactor
	}
	warm := b.Windows >= int64(d.cfg.Warmup)
	a := d.st.Apps[c.Key.App]
	ps := a.platform(c.Key.Platform)
	rule := d.cfg.Rule
	summary := func(expected, spread, observed float64, hour int) *detectv1.BaselineSummary {
		return &detectv1.BaselineSummary{Source: b.Source, Windows: b.Windows, Expected: expected, Spread: spread, Observed: observed, Hour: int32(hour)}
	}

	if i == 0 && !c.ReasonsDone {
		c.ReasonsDone = true
		if len(c.Reasons) > 0 {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_UNKNOWN_BUILD, c, "", win, float64(len(c.Reasons)), 1, immediate)
			an.Summary = fmt.Sprintf("build %s of version %s never seen before: %s", c.Key.Build, c.Key.Version, strings.Join(c.Reasons, "; "))
			an.Devices = slices.Clone(w.IDs)
			an.Baseline = summary(0, 0, float64(w.Devices), -1)
			for _, r := range c.Reasons {
				an.Evidence = append(an.Evidence, &detectv1.Evidence{Key: r, Observed: 1, Contribution: 1 / float64(len(c.Reasons))})
			}
			d.emit(an)
		}
	}

	// Event-type mix: JSD with a G-test and minimum counts. The usual JSD is
	// learned from the start, so that the first scored windows know how much
	// the mix moves by itself.
	mixHit := false
	var jsd float64
	mixCounted := w.Events >= th.MixMinEvents && sum(b.Mix) >= th.MixMinEvents
	if mixCounted {
		exp := make([]float64, numTypes)
		for t, v := range b.Mix {
			exp[t] = v + 0.5
		}
		terms := make([]float64, numTypes)
		jsd = JSD(w.Types, exp, terms)
		if warm {
			g, df := GTest(w.Types, exp)
			z := ChiSquareZ(g, df)
			thr := th.MixJSD
			if med, sig, n := b.JSD.Stats(); n >= 5 {
				thr = max(thr, med+th.MixJSDSigmas*sig)
			}
			thr *= f
			mixHit = jsd >= thr && z >= th.MixZ
			d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_MIX_SHIFT, mixHit, jsd, thr, skip, func() *detectv1.Anomaly {
				an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_MIX_SHIFT, c, "", win, jsd, thr, rule)
				med, sig, _ := b.JSD.Stats()
				an.Baseline = summary(nanZero(med), nanZero(sig), jsd, -1)
				an.Evidence = mixEvidence(w.Types, exp, terms, jsd)
				an.Summary = fmt.Sprintf("event mix diverges from the baseline: JSD %.3f bits (threshold %.3f), G-test z %.1f over %.0f events", jsd, thr, z, w.Events)
				return an
			})
		}
	}
	if !mixCounted || !warm {
		d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_MIX_SHIFT, false, 0, 0, skip, nil)
	}

	// Transitions: mean negative log-likelihood under the Markov model.
	transHit := false
	vocabS := len(a.ScreenNames)
	typeTerms, screenTerms := map[uint32]float64{}, map[uint32]float64{}
	nllT, nT := b.Types.MeanNLL(w.TypeTr, smoothing, numTypes, typeTerms)
	nllS, nS := b.Screens.MeanNLL(w.ScreenTr, smoothing, vocabS, screenTerms)
	nTrans := nT + nS
	var nll float64
	if nTrans > 0 {
		nll = (nllT*nT + nllS*nS) / nTrans
	}
	med, sig, n := b.NLL.Stats()
	if warm && nTrans >= th.TransMinCount && n >= 5 {
		z := RobustZ(nll, med, sig, 0.02)
		transHit = z >= th.TransZ*f && nll-med >= th.TransMinDelta*f
		d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_RARE_TRANSITIONS, transHit, z, th.TransZ*f, skip, func() *detectv1.Anomaly {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_RARE_TRANSITIONS, c, "", win, z, th.TransZ*f, rule)
			an.Baseline = summary(med, sig, nll, -1)
			an.Evidence = transitionEvidence(a, b, w, typeTerms, screenTerms, med)
			an.Summary = fmt.Sprintf("transitions the baseline finds rare: %.2f nats per transition, usually %.2f (robust z %.1f)", nll, med, z)
			return an
		})
	} else {
		d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_RARE_TRANSITIONS, false, 0, 0, skip, nil)
	}

	// Rate: events per active device, seasonal EWMA + CUSUM.
	rateHit := false
	hour := HourOf(w.Start)
	var epd float64
	if w.Devices > 0 {
		epd = w.Events / float64(w.Devices)
	}
	if warm && b.Rate.Global.N >= int64(d.cfg.Warmup) && float64(w.Devices) >= th.RateMinDevices {
		mean, sd, used := b.Rate.Expect(hour, int64(d.cfg.Warmup))
		sd = max(sd, th.RateMinRelSD*mean, 1e-9)
		z := (epd - mean) / sd
		b.Cusum = min(CUSUM(b.Cusum, z, th.RateCusumK), 2*th.RateCusumH)
		thr := th.RateCusumH * f
		rateHit = b.Cusum >= thr
		d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_RATE_SPIKE, rateHit, b.Cusum, thr, skip, func() *detectv1.Anomaly {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_RATE_SPIKE, c, "", win, b.Cusum, thr, rule)
			an.Baseline = summary(mean, sd, epd, used)
			an.Evidence = []*detectv1.Evidence{{Key: "events_per_device", Observed: epd, Expected: mean, Contribution: 1}}
			an.Summary = fmt.Sprintf("%.1f events per active device, expected %.1f ± %.1f (CUSUM %.1f)", epd, mean, sd, b.Cusum)
			return an
		})
	} else {
		d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_RATE_SPIKE, false, 0, 0, skip, nil)
	}

	// Timing: the median gap between a device's events, robust z.
	timingHit := false
	var gapMed float64
	if float64(len(w.Gaps)) >= th.TimingMinGaps {
		gapMed = Median(slices.Clone(w.Gaps))
		hmed, hsig, hn := b.Gap.Stats()
		if warm && hn >= 5 && hmed > 0 {
			z := RobustZ(gapMed, hmed, hsig, 0.05*hmed)
			rel := math.Abs(gapMed-hmed) / hmed
			timingHit = math.Abs(z) >= th.TimingZ*f && rel >= th.TimingMinRel
			d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_TIMING_SHIFT, timingHit, math.Abs(z), th.TimingZ*f, skip, func() *detectv1.Anomaly {
				an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_TIMING_SHIFT, c, "", win, math.Abs(z), th.TimingZ*f, rule)
				an.Baseline = summary(hmed, hsig, gapMed, -1)
				an.Evidence = []*detectv1.Evidence{{Key: "median_gap_ms", Observed: gapMed, Expected: hmed, Contribution: 1}}
				an.Summary = fmt.Sprintf("median gap between a device's events %.0f ms, usually %.0f ms (robust z %.1f)", gapMed, hmed, z)
				return an
			})
		} else {
			d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_TIMING_SHIFT, false, 0, 0, skip, nil)
		}
	} else {
		d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_TIMING_SHIFT, false, 0, 0, skip, nil)
	}

	// Device signals: emulator, jailbroken and inconsistent shares, of all
	// active devices and of the devices new to the cohort, against the
	// larger of the cohort's usual share and the platform's.
	shareHit := false
	type signal struct {
		key       string
		x         int64
		base      *EWMA
		ids       []string
		fresh     int64
		freshIDs  []string
		p         float64 // expected share
		freshTest bool    // the hit is among the new devices
	}
	sigs := []signal{
		{key: "emulator_share", x: w.Emu, base: &b.Emu, ids: w.EmuIDs},
		{key: "jailbroken_share", x: w.Jail, base: &b.Jail, ids: w.JailIDs},
		{key: "inconsistent_context_share", x: w.Odd, base: &b.Odd, ids: w.OddIDs},
	}
	var flagged []string
	if warm && w.Devices > 0 && b.Emu.N >= int64(d.cfg.Warmup) {
		best, bestZ := -1, 0.0
		n := float64(w.Devices)
		var ev []*detectv1.Evidence
		for j := range sigs {
			sg := &sigs[j]
			sg.fresh, sg.freshIDs = w.FreshSig[j], w.FreshIDs[j]
			sg.p = max(sg.base.Mean, ps.signalShare(j, int64(d.cfg.Warmup)))
			z, hit := th.shareTest(float64(sg.x), n, sg.p, f)
			zf, hitFresh := th.shareTest(float64(sg.fresh), float64(w.Fresh), sg.p, f)
			if hit {
				ev = append(ev, &detectv1.Evidence{Key: sg.key, Observed: float64(sg.x) / n, Expected: sg.p, Contribution: z})
				// Devices that carried the signal while the share was usual are
				// the cohort's normal, not behind the finding.
				for _, id := range sg.ids {
					if dv := d.st.Devices[c.Key.App+"\x00"+id]; dv == nil || !dv.Usual {
						flagged = appendUnique(flagged, id)
					}
				}
			}
			if hitFresh {
				ev = append(ev, &detectv1.Evidence{Key: sg.key + "_of_new_devices", Observed: float64(sg.fresh) / float64(w.Fresh), Expected: sg.p, Contribution: zf})
				flagged = appendUnique(flagged, sg.freshIDs...)
			}
			if hit && z > bestZ {
				best, bestZ, sg.freshTest = j, z, false
			}
			if hitFresh && zf > bestZ {
				best, bestZ, sg.freshTest = j, zf, true
			}
		}
		shareHit = best >= 0
		b.SignalIDs = append(b.SignalIDs, flagged)
		if len(b.SignalIDs) > d.cfg.Rule.N {
			b.SignalIDs = b.SignalIDs[len(b.SignalIDs)-d.cfg.Rule.N:]
		}
		mk := func(devices []string) *detectv1.Anomaly {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS, c, "", win, bestZ, th.ShareZ*f, rule)
			sg := sigs[best]
			an.Baseline = summary(sg.p, sg.base.SD(), float64(sg.x)/n, -1)
			var total float64
			for _, e := range ev {
				total += e.Contribution
			}
			for _, e := range ev {
				e.Contribution /= total
			}
			sort.Slice(ev, func(i, j int) bool { return ev[i].GetContribution() > ev[j].GetContribution() })
			an.Evidence = ev
			an.Devices = devices
			if b.Reported == nil {
				b.Reported = map[string]bool{}
			}
			for _, id := range devices {
				if len(b.Reported) < 10*maxListed {
					b.Reported[id] = true
				}
			}
			what := strings.TrimSuffix(sg.key, "_share")
			if sg.freshTest {
				an.Summary = fmt.Sprintf("%d of %d devices new to the cohort with %s, expected share %.4f (binomial z %.1f)", sg.fresh, w.Fresh, what, sg.p, bestZ)
			} else {
				an.Summary = fmt.Sprintf("%d of %d active devices with %s, expected share %.4f (binomial z %.1f)", sg.x, w.Devices, what, sg.p, bestZ)
			}
			return an
		}
		emitted := false
		d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS, shareHit, bestZ, th.ShareZ*f, skip, func() *detectv1.Anomaly {
			emitted = true
			var recent []string
			for _, ids := range b.SignalIDs {
				recent = appendUnique(recent, ids...)
			}
			return mk(recent)
		})
		// While it fires, devices that join the finding are reported too.
		if shareHit && b.Firing[detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS] && !emitted {
			var fresh []string
			for _, id := range flagged {
				if !b.Reported[id] {
					fresh = append(fresh, id)
				}
			}
			if len(fresh) > 0 {
				d.emit(mk(fresh))
			}
		}
		if !b.Firing[detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS] {
			b.Reported = nil
		}
	} else {
		d.verdict(b, detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS, false, 0, 0, skip, nil)
	}
	if i == 0 && !shareHit {
		// Devices with a signal in a window whose shares were usual are part
		// of the cohort's normal: later findings do not name them.
		for _, ids := range [][]string{w.EmuIDs, w.JailIDs, w.OddIDs} {
			for _, id := range ids {
				if dv := d.st.Devices[c.Key.App+"\x00"+id]; dv != nil {
					dv.Usual = true
				}
			}
		}
	}

	// Learn: fully from what did not alert, with a small weight from what
	// did (a lasting change is adopted slowly instead of alerting forever).
	weight := func(hit bool) float64 {
		if hit {
			return alertedWeight
		}
		return 1
	}
	b.Windows++
	b.Own++
	b.LastStart, b.Scored, b.Active = w.Start, true, w.Devices
	for t := range b.Mix {
		b.Mix[t] = b.Mix[t]*d.decay[i] + w.Types[t]*weight(mixHit)
	}
	if mixCounted && !mixHit {
		b.JSD.Add(jsd, robustN)
	}
	b.Types.Learn(w.TypeTr, d.decay[i], weight(transHit))
	b.Screens.Learn(w.ScreenTr, d.decay[i], weight(transHit))
	if nTrans >= th.TransMinCount && !transHit {
		b.NLL.Add(nll, robustN)
	}
	if i == 0 {
		decay := d.decay[0]
		if ps.LastStart == w.Start && ps.Windows > 0 {
			decay = 1 // another cohort of the platform already decayed it this window
		} else {
			ps.Windows++
			ps.LastStart = w.Start
			ps.WindowDevices, ps.OpenDevices = ps.OpenDevices, 0
		}
		ps.OpenDevices += w.Devices
		ps.Types.Learn(w.TypeTr, decay, weight(transHit))
		ps.Screens.Learn(w.ScreenTr, decay, weight(transHit))
		ps.Types.LearnNovel(w.TypeNovel, 1)
		ps.Screens.LearnNovel(w.ScreenNovel, 1)
		wt := weight(shareHit)
		for j, x := range [numSignals]int64{w.Emu, w.Jail, w.Odd} {
			ps.Signals[j] = ps.Signals[j]*decay + float64(x)*wt
		}
		ps.Active = ps.Active*decay + float64(w.Devices)*wt
	}
	if w.Devices > 0 {
		b.Rate.Add(hour, epd, d.alpha[i], weight(rateHit))
		n := float64(w.Devices)
		for _, sg := range sigs {
			sg.base.AddWeighted(float64(sg.x)/n, d.alpha[i], weight(shareHit))
		}
	}
	if !timingHit && float64(len(w.Gaps)) >= th.TimingMinGaps {
		b.Gap.Add(gapMed, robustN)
	}
}

func sum(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

func nanZero(x float64) float64 {
	if math.IsNaN(x) {
		return 0
	}
	return x
}

func appendUnique(xs []string, ys ...string) []string {
	for _, y := range ys {
		if len(xs) >= maxListed {
			break
		}
		if !slices.Contains(xs, y) {
			xs = append(xs, y)
		}
	}
	return xs
}

// mixEvidence lists the event types that explain most of the divergence.
func mixEvidence(obs, exp, terms []float64, jsd float64) []*detectv1.Evidence {
	so, se := sum(obs), sum(exp)
	idx := make([]int, 0, len(terms))
	for t := range terms {
		if terms[t] > 0 {
			idx = append(idx, t)
		}
	}
	sort.Slice(idx, func(i, j int) bool { return terms[idx[i]] > terms[idx[j]] })
	var out []*detectv1.Evidence
	for _, t := range idx[:min(len(idx), 10)] {
		out = append(out, &detectv1.Evidence{Key: TypeName(uint16(t)), Observed: obs[t] / so, Expected: exp[t] / se, Contribution: terms[t] / jsd})
	}
	return out
}

// transitionEvidence lists the transitions with the most surprise beyond
// the usual per-transition NLL.
func transitionEvidence(a *appState, b *baseline, w *cohortWin, typeTerms, screenTerms map[uint32]float64, usual float64) []*detectv1.Evidence {
	type item struct {
		key    string
		excess float64
		obs    float64
		exp    float64
	}
	var items []item
	var total float64
	add := func(terms map[uint32]float64, counts map[uint32]float64, m *Markov, vocab int, name func(uint16) string, prefix string) {
		from := map[uint16]float64{}
		for k, c := range counts {
			f, _ := splitKey(k)
			from[f] += c
		}
		for k, s := range terms {
			c := counts[k]
			excess := s - c*usual
			if excess <= 0 {
				continue
			}
			f, t := splitKey(k)
			items = append(items, item{prefix + name(f) + ">" + name(t), excess, c, from[f] * m.Prob(k, smoothing, vocab)})
			total += excess
		}
	}
	add(typeTerms, w.TypeTr, &b.Types, numTypes, TypeName, "type:")
	add(screenTerms, w.ScreenTr, &b.Screens, len(a.ScreenNames), func(id uint16) string { return "screen:" + a.screenName(id) }, "")
	sort.Slice(items, func(i, j int) bool { return items[i].excess > items[j].excess })
	var out []*detectv1.Evidence
	for _, it := range items[:min(len(items), 10)] {
		out = append(out, &detectv1.Evidence{Key: it.key, Observed: it.obs, Expected: it.exp, Contribution: it.excess / total})
	}
	return out
}

func (a *appState) screenName(id uint16) string {
	if int(id) < len(a.ScreenNames) {
		return a.ScreenNames[id]
	}
	return "(other)"
}

// baselineProto describes scale i of the cohort.
func (c *cohort) baselineProto(d *Detector, i int) *detectv1.Baseline {
	s := c.Scales[i]
	b := &s.B
	a := d.st.Apps[c.Key.App]
	out := &detectv1.Baseline{
		Cohort: c.Key.proto(), WindowMs: s.Size, Source: b.Source, Windows: b.Windows, OwnWindows: b.Own,
		EventMix:          map[string]float64{},
		EventsPerDevice:   b.Rate.Global.Mean,
		EventsPerDeviceSd: b.Rate.Global.SD(),
		EmulatorShare:     b.Emu.Mean,
		JailbrokenShare:   b.Jail.Mean,
		ActiveDevices:     b.Active,
		TransitionNll:     0,
		EventsPerDeviceByHour: func() []float64 {
			out := make([]float64, 24)
			for h := range 24 {
				out[h] = b.Rate.Hours[h].Mean
			}
			return out
		}(),
	}
	if b.Scored {
		out.LastWindowEndMs = b.LastStart + s.Size
	}
	if total := sum(b.Mix); total > 0 {
		for t, v := range b.Mix {
			if v > 0 {
				out.EventMix[TypeName(uint16(t))] = v / total
			}
		}
	}
	if m, sg, n := b.Gap.Stats(); n > 0 {
		out.MedianGapMs, out.MedianGapSigmaMs = m, sg
	}
	if m, sg, n := b.NLL.Stats(); n > 0 {
		out.TransitionNll, out.TransitionNllSigma = m, sg
	}
	var trs []*detectv1.Transition
	for k, v := range b.Types.Counts {
		f, t := splitKey(k)
		trs = append(trs, &detectv1.Transition{Key: "type:" + TypeName(f) + ">" + TypeName(t), Count: v, Probability: b.Types.Prob(k, smoothing, numTypes)})
	}
	for k, v := range b.Screens.Counts {
		f, t := splitKey(k)
		trs = append(trs, &detectv1.Transition{Key: "screen:" + a.screenName(f) + ">screen:" + a.screenName(t), Count: v, Probability: b.Screens.Prob(k, smoothing, len(a.ScreenNames))})
	}
	sort.Slice(trs, func(i, j int) bool {
		if trs[i].Count != trs[j].Count {
			return trs[i].Count > trs[j].Count
		}
		return trs[i].Key < trs[j].Key
	})
	out.Transitions = trs[:min(len(trs), 50)]
	return out
}
