package detect

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// ev is one buffered event of a device: enough to replay its sequence.
type ev struct {
	T       int64
	Seq     uint64
	Type    uint16
	Screen  uint16
	Cohort  uint32
	Session uint64
}

// trans is one transition a device made in the current window.
type trans struct {
	Key    uint32
	Screen bool
	Cohort uint32
	T      int64
}

const (
	seqWindow = 1024 // sequence numbers remembered below the largest
	stampRing = 32   // (timestamp, type) pairs remembered
	gapRing   = 32   // gaps kept for the coefficient of variation
	maxGap    = 5 * 60 * 1000
	maxBuf    = 4096 // events buffered per device per window; beyond, only counted
	// futureBits is the surprise of an event timed after it was sent (-log10
	// of its chance for a genuine device).
	futureBits = 3.0
)

// device is the state of one device of one app. Exported fields are
// checkpointed; the lower-case ones live for one window.
type device struct {
	Key, ID, App string
	Cohort       uint32
	Install      uint64
	Platform     int32
	Manufacturer string
	Model        string
	Emulator     bool
	Jailbroken   bool
	Odd          string // why its context is inconsistent, "" when it is not
	LastSeen     int64
	Seen         [4]int64 // per window size, the start of the window it was last counted in
	Joined       int64    // event time it joined its cohort (first event, or an app update)
	Usual        bool     // counted with a device signal in a window whose shares were usual

	// Replays, checked on arrival.
	MaxSeq  uint64
	SeqBits [seqWindow / 64]uint64
	Stamps  [stampRing]uint64
	StampN  int

	// Sequence state, in event-time order.
	Started      bool
	LastT        int64
	LastType     uint16
	LastScreen   uint16
	LastSeq      uint64
	Session      uint64
	Known        bool // seen since a session start, without sequence gaps: funnels can be judged
	CheckoutOpen bool
	Gaps         [gapRing]float32
	GapN         int
	Toks         [3]uint32
	TokN         int

	Hist      [numKinds]History
	Firing    [numKinds]bool
	LastRound int64
	Buf       []ev
	Novel     []novelTr // its unseen transitions, until they may teach (learnNovel)

	dirty   bool
	replays int // repeated sequence numbers this window
	stamps  int // repeated (timestamp, type) this window
	future  int // events timed after they were sent
	events  int
	funnel  int
	trans   []trans
	grams   []uint64
}

func (dv *device) bytes() int64 {
	return 600 + int64(len(dv.Key)+len(dv.ID)+len(dv.App)+len(dv.Model)+len(dv.Manufacturer)) + int64(cap(dv.Buf))*40 + int64(cap(dv.trans))*24 + int64(cap(dv.grams))*8 + int64(cap(dv.Novel))*12
}

// device returns the state of e's device, creating it; nil when the
// device limit is reached.
func (d *Detector) device(a *appState, c *cohort, e *eventv1.Event, t int64) *device {
	key := a.ID + "\x00" + e.GetDeviceId()
	dv := d.st.Devices[key]
	if dv == nil {
		if len(d.st.Devices) >= d.cfg.MaxDevices {
			d.stats.DevicesRefused++
			return nil
		}
		ctx := e.GetDeviceContext()
		dv = &device{Key: key, ID: e.GetDeviceId(), App: a.ID, Platform: int32(ctx.GetPlatform()), Manufacturer: ctx.GetManufacturer(), Model: ctx.GetDeviceModel(),
			Install: hashString(e.GetInstallId())}
		for i := range dv.Seen {
			dv.Seen[i] = math.MinInt64
		}
		dv.Odd = inconsistent(ctx)
		d.st.Devices[key] = dv
	}
	if dv.Cohort != c.ID {
		dv.Cohort, dv.Joined = c.ID, t
	}
	dv.LastSeen = max(dv.LastSeen, t)
	return dv
}

// inconsistent says what in a device context cannot be true together.
func inconsistent(ctx *eventv1.DeviceContext) string {
	maker, model := strings.ToLower(ctx.GetManufacturer()), ctx.GetDeviceModel()
	apple := strings.HasPrefix(model, "iPhone") || strings.HasPrefix(model, "iPad") || strings.HasPrefix(model, "iPod")
	switch ctx.GetPlatform() {
	case eventv1.Platform_PLATFORM_IOS:
		if maker != "" && maker != "apple" {
			return fmt.Sprintf("iOS device made by %q", ctx.GetManufacturer())
		}
		if model != "" && !apple && model != "arm64" && model != "x86_64" {
			return fmt.Sprintf("iOS device with model %q", model)
		}
	case eventv1.Platform_PLATFORM_ANDROID:
		if maker == "apple" || apple {
			return fmt.Sprintf("Android device %q by %q", model, ctx.GetManufacturer())
		}
	case eventv1.Platform_PLATFORM_WEB:
		if ctx.GetIsJailbroken() || ctx.GetIsEmulator() {
			return "web client reporting a jailbroken or emulated device"
		}
	}
	return ""
}

// arrive runs the checks that do not need order: replays (sequence numbers
// and timestamps repeating under new event ids), events timed after they
// were sent, and device context changes. It reports whether the event is a
// replay, which is then kept out of windows and sequences.
func (d *Detector) arrive(dv *device, e *eventv1.Event, typ uint16) (replay bool) {
	ctx := e.GetDeviceContext()
	dv.Emulator, dv.Jailbroken = ctx.GetIsEmulator(), ctx.GetIsJailbroken()
	if dv.Odd == "" {
		switch {
		case int32(ctx.GetPlatform()) != dv.Platform:
			dv.Odd = fmt.Sprintf("platform changed from %s to %s", platformName(dv.Platform), platformName(int32(ctx.GetPlatform())))
		case ctx.GetDeviceModel() != dv.Model || ctx.GetManufacturer() != dv.Manufacturer:
			dv.Odd = fmt.Sprintf("device changed from %s %s to %s %s", dv.Manufacturer, dv.Model, ctx.GetManufacturer(), ctx.GetDeviceModel())
		default:
			dv.Odd = inconsistent(ctx)
		}
	}
	if in := hashString(e.GetInstallId()); in != dv.Install {
		dv.Install, dv.MaxSeq, dv.SeqBits = in, 0, [seqWindow / 64]uint64{}
		dv.Stamps, dv.StampN = [stampRing]uint64{}, 0
	}
	hits := dv.replays + dv.stamps
	if seq := e.GetSequence(); seq > 0 {
		switch {
		case seq > dv.MaxSeq:
			if seq-dv.MaxSeq >= seqWindow || dv.MaxSeq == 0 {
				dv.SeqBits = [seqWindow / 64]uint64{}
			} else {
				for s := dv.MaxSeq + 1; s < seq; s++ {
					dv.SeqBits[(s%seqWindow)/64] &^= 1 << (s % 64)
				}
			}
			dv.MaxSeq = seq
			dv.SeqBits[(seq%seqWindow)/64] |= 1 << (seq % 64)
		case dv.MaxSeq-seq < seqWindow:
			bit := uint64(1) << (seq % 64)
			if dv.SeqBits[(seq%seqWindow)/64]&bit != 0 {
				dv.replays++
			} else {
				dv.SeqBits[(seq%seqWindow)/64] |= bit
			}
		default:
			dv.replays++ // far below the largest: not a retry
		}
	}
	// Without sequence numbers, a repeated (timestamp, type) is the replay
	// signal. With them it is not: two taps can share a millisecond.
	if e.GetSequence() == 0 {
		stamp := mix64(uint64(e.GetTimestampMs())) ^ uint64(typ)
		if slices.Contains(dv.Stamps[:min(dv.StampN, stampRing)], stamp) {
			dv.stamps++
		} else {
			dv.Stamps[dv.StampN%stampRing] = stamp
			dv.StampN++
		}
	}
	if e.GetSentAtMs() > 0 && e.GetTimestampMs() > e.GetSentAtMs()+1000 {
		dv.future++
	}
	if dv.replays+dv.stamps+dv.future > 0 {
		d.markDirty(dv)
	}
	return dv.replays+dv.stamps > hits
}

// due reports whether the device has something to check in the round
// ending at b.
func (dv *device) due(b int64) bool {
	if dv.replays+dv.stamps+dv.future > 0 {
		return true
	}
	for _, e := range dv.Buf {
		if e.T < b {
			return true
		}
	}
	return false
}

// sequence replays the device's events before b in event-time order:
// transitions, gaps, funnels and path 4-grams.
func (d *Detector) sequence(dv *device, b int64) {
	sort.SliceStable(dv.Buf, func(i, j int) bool {
		if dv.Buf[i].T != dv.Buf[j].T {
			return dv.Buf[i].T < dv.Buf[j].T
		}
		return dv.Buf[i].Seq < dv.Buf[j].Seq
	})
	n := 0
	for n < len(dv.Buf) && dv.Buf[n].T < b {
		n++
	}
	// The window's sequence numbers: an event numbered above the next one
	// expected shows lost events only if the numbers between are not here
	// (timestamps may put a device's events slightly out of sequence).
	seqs := make([]uint64, 0, n)
	for _, e := range dv.Buf[:n] {
		if e.Seq > 0 {
			seqs = append(seqs, e.Seq)
		}
	}
	slices.Sort(seqs)
	for _, e := range dv.Buf[:n] {
		c := d.st.Cohorts[e.Cohort]
		if c == nil {
			continue
		}
		dv.events++
		if e.Type == typeAppStart || e.Session != dv.Session {
			dv.Session, dv.LastScreen = e.Session, screenStart
			dv.TokN = 0
			// A checkout does not outlive its session: one abandoned earlier
			// must not let a later purchase without checkout pass.
			dv.CheckoutOpen = false
			if e.Type == typeAppStart {
				dv.Known = true
			}
		}
		if !dv.Started && e.Seq == 1 {
			dv.Known = true
		}
		if e.Seq > 0 && dv.LastSeq > 0 && e.Seq > dv.LastSeq+1 && seqGap(seqs, dv.LastSeq, e.Seq) {
			dv.Known = false // events were lost: the flow cannot be judged until the next start
		}
		if dv.Started {
			if g := e.T - dv.LastT; g >= 0 && g < maxGap {
				dv.Gaps[dv.GapN%gapRing] = float32(g)
				dv.GapN++
				for i := range c.Scales {
					if w := c.openAt(i, e.T); w != nil {
						w.addGap(float64(g))
					}
				}
			}
			k := TransitionKey(dv.LastType, e.Type)
			dv.addTrans(c, k, false, e.T)
		}
		if e.Type == typeScreenView {
			dv.addTrans(c, TransitionKey(dv.LastScreen, e.Screen), true, e.T)
			dv.LastScreen = e.Screen
		}
		switch e.Type {
		case typeCheckoutStart:
			dv.CheckoutOpen = true
		case typePurchaseComplete:
			if !dv.CheckoutOpen && dv.Known {
				dv.funnel++
			}
			dv.CheckoutOpen = false
		}
		tok := uint32(e.Type)<<16 | uint32(e.Screen)
		if dv.TokN >= 3 {
			g := mix64(uint64(dv.Toks[0])<<32|uint64(dv.Toks[1])) ^ mix64(uint64(dv.Toks[2])<<32|uint64(tok)^0x5bd1e995)
			dv.grams = append(dv.grams, g)
		}
		dv.Toks[0], dv.Toks[1], dv.Toks[2] = dv.Toks[1], dv.Toks[2], tok
		dv.TokN++
		// The highest sequence number so far, unless numbering restarted (a
		// reinstall) or the event has none.
		if e.Seq == 0 || e.Seq > dv.LastSeq || dv.LastSeq-e.Seq >= seqWindow {
			dv.LastSeq = e.Seq
		}
		dv.Started, dv.LastT, dv.LastType = true, e.T, e.Type
	}
	rest := copy(dv.Buf, dv.Buf[n:])
	dv.Buf = dv.Buf[:rest]
	if cap(dv.Buf) > 256 && rest < cap(dv.Buf)/4 {
		dv.Buf = slices.Clip(dv.Buf)
	}
}

// seqGap reports whether a sequence number strictly between last and next
// is missing from seqs (sorted).
func seqGap(seqs []uint64, last, next uint64) bool {
	if next-last-1 > uint64(len(seqs)) {
		return true // more numbers missing than there are events
	}
	for s := last + 1; s < next; s++ {
		if _, found := slices.BinarySearch(seqs, s); !found {
			return true
		}
	}
	return false
}

// addTrans counts a transition in the cohort's windows and remembers it for
// the device check.
func (dv *device) addTrans(c *cohort, k uint32, screen bool, t int64) {
	for i := range c.Scales {
		if w := c.openAt(i, t); w != nil {
			if screen {
				w.ScreenTr[k]++
			} else {
				w.TypeTr[k]++
			}
		}
	}
	dv.trans = append(dv.trans, trans{Key: k, Screen: screen, Cohort: c.ID, T: t})
}

// signature is the hash of the set of path 4-grams of the window, or 0 when
// the path is too short to compare.
func (dv *device) signature(minDistinct int) uint64 {
	if len(dv.grams) < minDistinct {
		return 0
	}
	g := slices.Clone(dv.grams)
	slices.Sort(g)
	g = slices.Compact(g)
	if len(g) < minDistinct {
		return 0
	}
	h := hashString(dv.App)
	for _, x := range g {
		h = mix64(h ^ x)
	}
	return h | 1
}

func (dv *device) resetRound() {
	dv.replays, dv.stamps, dv.future, dv.events, dv.funnel = 0, 0, 0, 0, 0
	dv.trans, dv.grams = dv.trans[:0], dv.grams[:0]
}

// checkDevices runs the per-device checks of the window w for the devices
// that had events in it.
func (d *Detector) checkDevices(devs []*device, w Window) {
	th := d.cfg.Thresholds
	type ckey struct {
		cohort uint32
		screen bool
		key    uint32
	}
	common := map[ckey]int{}
	active := map[uint32]int{}
	counts := map[uint32][]float64{}
	for _, dv := range devs {
		active[dv.Cohort]++
		counts[dv.Cohort] = append(counts[dv.Cohort], float64(dv.events))
		seen := map[ckey]bool{}
		for _, tr := range dv.trans {
			k := ckey{tr.Cohort, tr.Screen, tr.Key}
			if !seen[k] {
				seen[k] = true
				common[k]++
			}
		}
	}
	medians := map[uint32]float64{}
	for c, xs := range counts {
		medians[c] = Median(xs)
	}
	d.paths.Reset()
	sigs := make([]uint64, len(devs))
	for j, dv := range devs {
		if sigs[j] = dv.signature(th.PathMinDistinct); sigs[j] != 0 {
			d.paths.Add(sigs[j])
		}
	}
	same := map[uint64][]string{}
	for j, dv := range devs {
		if sigs[j] != 0 && d.paths.Estimate(sigs[j]) >= th.PathMinDevices {
			same[sigs[j]] = append(same[sigs[j]], dv.ID)
		}
	}

	type ukey struct {
		m    *Markov
		from uint16
	}
	unseen := map[ukey][2]float64{}
	// surprise is -log10 of the chance that a genuine device makes the
	// transition: 0 when someone does it (seen in the baseline of the cohort
	// or of the app, or by several devices now), else the Good-Turing chance
	// of any unseen transition from its origin.
	surprise := func(tr trans) float64 {
		c := d.st.Cohorts[tr.Cohort]
		if c == nil {
			return 0
		}
		b := &c.Scales[0].B
		ps := d.st.Apps[c.Key.App].platform(c.Key.Platform)
		m, am := &b.Types, &ps.Types
		if tr.Screen {
			m, am = &b.Screens, &ps.Screens
		}
		cnt, from := m.Seen(tr.Key)
		acnt, afrom := am.Seen(tr.Key)
		if cnt >= 0.5 || acnt >= 0.5 || max(from, afrom) < th.ImpossibleMinFrom {
			return 0
		}
		if n := common[ckey{tr.Cohort, tr.Screen, tr.Key}]; n >= 3 && float64(n) >= th.CommonShare*float64(active[tr.Cohort]) {
			return 0
		}
		f, _ := splitKey(tr.Key)
		u, ok := unseen[ukey{am, f}]
		if !ok {
			u[0], u[1] = am.unseenMass(f)
			unseen[ukey{am, f}] = u
		}
		return max(-math.Log10(max(u[0], am.Novel[tr.Key])/u[1]), 0)
	}

	for j, dv := range devs {
		c := d.st.Cohorts[dv.Cohort]
		if c == nil {
			dv.resetRound()
			continue
		}
		a := d.st.Apps[c.Key.App]
		// A device's rules count its own active windows: evidence from a
		// device that pauses between sessions still adds up. After an hour
		// without events it starts over.
		skip := int64(0)
		if dv.LastRound != 0 && w.End-dv.LastRound > time.Hour.Milliseconds() {
			skip = 64
		}
		dv.LastRound = w.End
		b := &c.Scales[0].B
		base := func(expected, spread, observed float64) *detectv1.BaselineSummary {
			return &detectv1.BaselineSummary{Source: b.Source, Windows: b.Windows, Expected: expected, Spread: spread, Observed: observed, Hour: -1}
		}

		// Forged sequences: transitions nobody does, events timed after
		// sending. The score is -log10 of a bound on the chance that a genuine
		// device does all of them in one window: the product of their chances,
		// times C(n, k) for which k of its n transitions they are.
		var bad []trans
		var badBits []float64
		score := 0.0
		counted := map[ckey]bool{}
		prev := [2]float64{} // surprise of the previous type and screen transition
		for _, tr := range dv.trans {
			chain := 0
			if tr.Screen {
				chain = 1
			}
			s := surprise(tr)
			before := prev[chain]
			prev[chain] = s
			if s <= 0 {
				continue
			}
			bad, badBits = append(bad, tr), append(badBits, 0)
			if k := (ckey{tr.Cohort, tr.Screen, tr.Key}); !counted[k] {
				// A repeat of the same transition is not independent evidence,
				// nor are the way into a rare event and the way out of it: of
				// two unseen transitions in a row, only the larger counts.
				counted[k] = true
				badBits[len(badBits)-1] = max(s-before, 0)
				score += max(s-before, 0)
			}
			for i := range c.Scales { // not learned: it stays impossible
				if cw := c.openAt(i, tr.T); cw != nil {
					m := cw.TypeTr
					if tr.Screen {
						m = cw.ScreenTr
					}
					if m[tr.Key] > 0 {
						m[tr.Key]--
					}
				}
			}
		}
		score -= log10Choose(len(dv.trans), len(counted))
		score += futureBits * float64(dv.future)
		score = max(score, 0)
		d.deviceVerdict(dv, detectv1.AnomalyKind_ANOMALY_KIND_FORGED_SEQUENCE, score >= th.ForgedHit, score >= th.ForgedScore, d.cfg.DeviceRule, skip, func() *detectv1.Anomaly {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_FORGED_SEQUENCE, c, dv.ID, w, score, th.ForgedScore, d.cfg.DeviceRule)
			an.Baseline = base(0, 0, float64(len(bad)+dv.future))
			byKey := map[string]float64{}
			bits := map[string]float64{}
			var keys []string
			var total float64
			for j, tr := range bad {
				k := transitionName(a, tr)
				if byKey[k] == 0 {
					keys = append(keys, k)
				}
				byKey[k]++
				bits[k] += badBits[j]
				total += badBits[j]
			}
			if dv.future > 0 {
				keys = append(keys, "timestamp_after_sent_at")
				byKey["timestamp_after_sent_at"] = float64(dv.future)
				bits["timestamp_after_sent_at"] = futureBits * float64(dv.future)
				total += bits["timestamp_after_sent_at"]
			}
			sort.SliceStable(keys, func(i, j int) bool { return bits[keys[i]] > bits[keys[j]] })
			for _, k := range keys[:min(len(keys), 10)] {
				an.Evidence = append(an.Evidence, &detectv1.Evidence{Key: k, Observed: byKey[k], Expected: 0, Contribution: bits[k] / total})
			}
			an.Summary = fmt.Sprintf("%d transitions that genuine devices do not make (or events timed after they were sent): about a 1 in 10^%.0f chance", len(bad)+dv.future, score)
			return an
		})

		d.learnNovel(dv, c, w, bad, score >= th.ForgedHit)

		// Funnel bypass: purchase_complete without checkout_start.
		d.deviceVerdict(dv, detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS, dv.funnel > 0, false, immediate, skip, func() *detectv1.Anomaly {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS, c, dv.ID, w, float64(dv.funnel), 1, immediate)
			an.Baseline = base(0, 0, float64(dv.funnel))
			an.Evidence = []*detectv1.Evidence{{Key: "purchase_complete_without_checkout_start", Observed: float64(dv.funnel), Expected: 0, Contribution: 1}}
			an.Summary = fmt.Sprintf("%d purchase_complete without checkout_start before it", dv.funnel)
			return an
		})

		// Replays.
		r := dv.replays + dv.stamps
		d.deviceVerdict(dv, detectv1.AnomalyKind_ANOMALY_KIND_REPLAY, r >= th.ReplayMin, false, immediate, skip, func() *detectv1.Anomaly {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_REPLAY, c, dv.ID, w, float64(r), float64(th.ReplayMin), immediate)
			an.Baseline = base(0, 0, float64(r))
			if dv.replays > 0 {
				an.Evidence = append(an.Evidence, &detectv1.Evidence{Key: "repeated_sequence_number", Observed: float64(dv.replays), Contribution: float64(dv.replays) / float64(r)})
			}
			if dv.stamps > 0 {
				an.Evidence = append(an.Evidence, &detectv1.Evidence{Key: "repeated_timestamp_and_type", Observed: float64(dv.stamps), Contribution: float64(dv.stamps) / float64(r)})
			}
			an.Summary = fmt.Sprintf("%d events replayed under new event ids (sequence numbers or timestamps repeating)", r)
			return an
		})

		// Timing regularity: coefficient of variation of the last gaps.
		if dv.events >= 2 && dv.GapN >= th.CVMinGaps {
			n := min(dv.GapN, gapRing)
			gaps := make([]float64, n)
			for k := range n {
				gaps[k] = float64(dv.Gaps[k])
			}
			cv := CV(gaps)
			if math.IsNaN(cv) {
				cv = 0 // all gaps 0: as regular as it gets
			}
			score := 1 / max(cv, 1e-3)
			d.deviceVerdict(dv, detectv1.AnomalyKind_ANOMALY_KIND_TIMING_REGULARITY, cv < th.CVMax, Escalates(score, 1/th.CVMax, d.cfg.Escalate), d.cfg.DeviceRule, skip, func() *detectv1.Anomaly {
				an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_TIMING_REGULARITY, c, dv.ID, w, score, 1/th.CVMax, d.cfg.DeviceRule)
				an.Baseline = base(1, 0, cv)
				an.Evidence = []*detectv1.Evidence{
					{Key: "cv_of_gaps", Observed: cv, Expected: 1, Contribution: 1},
					{Key: "mean_gap_ms", Observed: sum(gaps) / float64(n), Expected: nanZero(medianOf(b.Gap.Vals))},
				}
				an.Summary = fmt.Sprintf("gaps between events too regular: coefficient of variation %.3f over %d gaps (a person's is near 1)", cv, n)
				return an
			})
		} else {
			d.deviceVerdict(dv, detectv1.AnomalyKind_ANOMALY_KIND_TIMING_REGULARITY, false, false, d.cfg.DeviceRule, skip, nil)
		}

		// Identical paths across devices.
		others := same[sigs[j]]
		sameHit := sigs[j] != 0 && len(others) >= th.PathMinDevices
		d.deviceVerdict(dv, detectv1.AnomalyKind_ANOMALY_KIND_IDENTICAL_PATHS, sameHit, Escalates(float64(len(others)), float64(th.PathMinDevices), d.cfg.Escalate), d.cfg.DeviceRule, skip, func() *detectv1.Anomaly {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_IDENTICAL_PATHS, c, dv.ID, w, float64(len(others)), float64(th.PathMinDevices), d.cfg.DeviceRule)
			an.Baseline = base(1, 0, float64(len(others)))
			an.Devices = appendUnique(nil, others...)
			an.Evidence = []*detectv1.Evidence{{Key: "devices_with_the_same_path", Observed: float64(len(others)), Expected: 1, Contribution: 1}}
			an.Summary = fmt.Sprintf("the same path (set of %d-step sequences) as %d other devices in this window", 4, len(others)-1)
			return an
		})

		// A device sending far more than its cohort's devices.
		med := medians[dv.Cohort]
		rateHit := float64(dv.events) >= th.DeviceRateMin && float64(dv.events) >= th.DeviceRateFactor*med
		d.deviceVerdict(dv, detectv1.AnomalyKind_ANOMALY_KIND_RATE_SPIKE, rateHit, false, immediate, skip, func() *detectv1.Anomaly {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_RATE_SPIKE, c, dv.ID, w, float64(dv.events)/max(med, 1), th.DeviceRateFactor, immediate)
			an.Baseline = base(med, 0, float64(dv.events))
			an.Evidence = []*detectv1.Evidence{{Key: "events_in_window", Observed: float64(dv.events), Expected: med, Contribution: 1}}
			an.Summary = fmt.Sprintf("%d events in the window, the cohort's median device sent %.0f", dv.events, med)
			return an
		})

		// Inconsistent device context.
		d.deviceVerdict(dv, detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS, dv.Odd != "", false, immediate, skip, func() *detectv1.Anomaly {
			an := d.newAnomaly(detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS, c, dv.ID, w, 1, 1, immediate)
			an.Baseline = base(0, 0, 1)
			an.Evidence = []*detectv1.Evidence{{Key: "inconsistent_context", Observed: 1, Expected: 0, Contribution: 1}}
			an.Summary = "inconsistent device context: " + dv.Odd
			return an
		})
		dv.resetRound()
	}
}

// log10Choose is log10 of the binomial coefficient C(n, k).
func log10Choose(n, k int) float64 {
	if k <= 0 || k > n {
		return 0
	}
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return (a - b - c) / math.Ln10
}

func medianOf(xs []float64) float64 { return Median(slices.Clone(xs)) }

func transitionName(a *appState, tr trans) string {
	f, t := splitKey(tr.Key)
	if tr.Screen {
		return "screen:" + a.screenName(f) + ">screen:" + a.screenName(t)
	}
	return "type:" + TypeName(f) + ">" + TypeName(t)
}

// novelTr is an unseen transition a device made, Age of its active
// windows ago.
type novelTr struct {
	Key    uint32
	Screen bool
	Age    int
}

// maxNovel bounds the unseen transitions a device holds.
const maxNovel = 32

// learnNovel holds the device's unseen transitions of this window (bad)
// until the forged-sequence rule has seen as many of its windows as it
// looks at (-detect.device-rule N) without a hit, then teaches them to the
// platform's models as Novel (Markov.Unseen): a forger's transitions are
// dropped when it is caught, a genuine device's rare ones are learned as
// rare. Call after the forged-sequence verdict.
func (d *Detector) learnNovel(dv *device, c *cohort, w Window, bad []trans, hit bool) {
	if hit || dv.Firing[detectv1.AnomalyKind_ANOMALY_KIND_FORGED_SEQUENCE] {
		dv.Novel = nil
		return
	}
	for _, tr := range bad {
		if len(dv.Novel) >= maxNovel {
			break
		}
		if !slices.ContainsFunc(dv.Novel, func(n novelTr) bool { return n.Age == 0 && n.Key == tr.Key && n.Screen == tr.Screen }) {
			dv.Novel = append(dv.Novel, novelTr{Key: tr.Key, Screen: tr.Screen})
		}
	}
	if len(dv.Novel) == 0 {
		return
	}
	keep := dv.Novel[:0]
	for _, n := range dv.Novel {
		if n.Age < d.cfg.DeviceRule.N-1 {
			n.Age++
			keep = append(keep, n)
			continue
		}
		cw := c.openAt(0, w.Start)
		if cw == nil {
			continue
		}
		m := &cw.TypeNovel
		if n.Screen {
			m = &cw.ScreenNovel
		}
		if *m == nil {
			*m = map[uint32]float64{}
		}
		(*m)[n.Key]++
	}
	dv.Novel = keep
	if len(keep) == 0 {
		dv.Novel = nil
	}
}

// deviceVerdict applies a device rule to one kind and emits when an
// episode starts (Rule.Step); strong findings fire without waiting for the
// rule.
func (d *Detector) deviceVerdict(dv *device, kind detectv1.AnomalyKind, hit, strong bool, rule Rule, skip int64, make func() *detectv1.Anomaly) {
	var start bool
	dv.Hist[kind], dv.Firing[kind], start = rule.Step(dv.Hist[kind], dv.Firing[kind], skip, hit, strong)
	if start && make != nil {
		d.emit(make())
	}
}
