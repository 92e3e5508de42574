// Package detect finds modified apps and automated clients in the event
// stream by comparing behaviour with learned baselines.
//
// Events (causality.event.v1.Event) flow into Detector.Observe in any order;
// the detector keeps per-cohort windows of event time (cohort = app, app
// version, build number, platform) and per-device state, and when the
// watermark closes a window it scores the window against the cohort's
// baseline and each device's sequence against the cohort's Markov model.
// Anomalies (causality.detect.v1.Anomaly) flow out of Observe, AdvanceTo
// and Flush. The Detector is pure: no clock, goroutine or I/O; it is not
// safe for concurrent use.
//
// Engine (engine.go) wraps it for the service: Kafka messages in, a ring of
// anomalies out (ring.go) that the gRPC DetectorService (server.go) and the
// outputs (Kafka topic, ClickHouse, webhooks) read, and checkpoints
// (checkpoint.go). docs/detector.md describes features, scores and choices.
package detect

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Config tunes the detector. DefaultConfig gives the documented defaults.
type Config struct {
	// Window sizes, ascending; each a multiple of the first. Devices are
	// checked at the first (smallest) size; cohorts at every size.
	Windows []time.Duration
	// How far behind the largest event time seen an event may be and still
	// count: a window closes when the largest event time minus Lateness
	// reaches its end.
	Lateness time.Duration
	// Horizon of the decayed counts of the event mix and the transitions.
	Memory time.Duration
	// Windows a cohort baseline must have learned before it alerts.
	Warmup int
	// Cohort alert rule and per-device rule for statistical device checks.
	Rule, DeviceRule Rule
	// Escalate: a window whose score is at least this many times its
	// threshold alerts at once, without waiting for the rule (0: never).
	Escalate float64
	// Event ids remembered to drop duplicates.
	DedupSize int
	// Event time without events after which a device's state is dropped.
	DeviceTTL time.Duration
	// At most this many devices and cohorts are tracked.
	MaxDevices, MaxCohorts int
	// DeviceClock takes timestamp_ms as event time as it is, without the
	// skew correction from sent_at_ms and received_at_ms: for recorded or
	// simulated streams whose clock is not the server's.
	DeviceClock bool
	Thresholds  Thresholds
}

// Thresholds are the effect sizes and significance levels of the checks
// (docs/detector.md). They are the same for every app and cohort: scale-free
// ratios, shares and z-scores.
type Thresholds struct {
	MixMinEvents      float64 // events in the window and in the baseline before the mix is tested
	MixJSD            float64 // Jensen-Shannon divergence floor, bits
	MixJSDSigmas      float64 // or the usual JSD plus this many sigmas, whichever is larger
	MixZ              float64 // G-test significance (normal z)
	TransMinCount     float64 // transitions in the window before the NLL is scored
	TransZ            float64 // robust z of the mean transition NLL
	TransMinDelta     float64 // and at least this many nats above the usual
	RateMinDevices    float64 // active devices before events per device is scored
	RateMinRelSD      float64 // spread floor as a share of the expected rate
	RateCusumK        float64 // CUSUM slack, sigmas
	RateCusumH        float64 // CUSUM alarm level, sigmas
	TimingMinGaps     float64 // gaps sampled before the median gap is scored
	TimingZ           float64 // robust z of the median gap (either way)
	TimingMinRel      float64 // and at least this relative change
	ShareZ            float64 // binomial z of the emulator/jailbroken/inconsistent share
	ShareMinDevices   float64 // and at least this many such devices
	ShareRatio        float64 // and at least this many times the expected share
	ShareFloor        float64 // expected share never below this
	InheritedFactor   float64 // thresholds × this while a cohort runs on an inherited baseline
	CVMax             float64 // device timing: coefficient of variation of gaps below this is a hit
	CVMinGaps         int     // over at least this many gaps
	ReplayMin         int     // repeated sequence numbers or (timestamp, type) pairs per window
	ImpossibleMinFrom float64 // an unseen transition is impossible only if its origin was seen this often
	CommonShare       float64 // a transition done by this share of the cohort's devices (and ≥ 3) is not forged
	ForgedScore       float64 // -log10 chance of a device's unseen transitions in one window that fires at once
	ForgedHit         float64 // and that counts as a hit for the device rule
	PathMinDistinct   int     // distinct 4-grams a device's window path needs to be compared
	PathMinDevices    int     // devices with the same path set
	DeviceRateMin     float64 // device events per window before the device rate is checked
	DeviceRateFactor  float64 // and this many times the median device of its cohort
}

// DefaultConfig returns the defaults documented in docs/detector.md.
func DefaultConfig() Config {
	return Config{
		Windows:    []time.Duration{time.Minute, 10 * time.Minute},
		Lateness:   30 * time.Second,
		Memory:     6 * time.Hour,
		Warmup:     10,
		Rule:       Rule{K: 2, N: 3},
		DeviceRule: Rule{K: 2, N: 3},
		Escalate:   3,
		DedupSize:  1 << 20,
		DeviceTTL:  30 * time.Minute,
		MaxDevices: 1 << 20,
		MaxCohorts: 10000,
		Thresholds: Thresholds{
			MixMinEvents: 300, MixJSD: 0.02, MixJSDSigmas: 6, MixZ: 5,
			TransMinCount: 300, TransZ: 6, TransMinDelta: 0.25,
			RateMinDevices: 20, RateMinRelSD: 0.1, RateCusumK: 1, RateCusumH: 5,
			TimingMinGaps: 100, TimingZ: 6, TimingMinRel: 0.3,
			ShareZ: 5, ShareMinDevices: 3, ShareRatio: 2, ShareFloor: 0.002,
			InheritedFactor: 1.5,
			CVMax:           0.25, CVMinGaps: 16,
			ReplayMin:         2,
			ImpossibleMinFrom: 200, CommonShare: 0.1, ForgedScore: 9, ForgedHit: 7,
			PathMinDistinct: 10, PathMinDevices: 3,
			DeviceRateMin: 100, DeviceRateFactor: 20,
		},
	}
}

// RegisterFlags registers the -detect.* flags of the detector's maths.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	*c = DefaultConfig()
	fs.Var((*durations)(&c.Windows), "detect.windows", "window sizes of event time, ascending, each a multiple of the first (devices are checked at the first)")
	fs.DurationVar(&c.Lateness, "detect.lateness", c.Lateness, "allowed lateness: events older than the largest event time seen minus this, whose window has closed, are counted and dropped")
	fs.DurationVar(&c.Memory, "detect.memory", c.Memory, "horizon of the decayed event-mix and transition counts of baselines")
	fs.IntVar(&c.Warmup, "detect.warmup", c.Warmup, "windows a cohort baseline learns before it alerts")
	fs.Var(&c.Rule, "detect.rule", "cohort alert rule: K/N = the threshold crossed in K of the last N windows")
	fs.Var(&c.DeviceRule, "detect.device-rule", "alert rule of the statistical per-device checks (timing regularity, forged sequences), K/N")
	fs.Float64Var(&c.Escalate, "detect.escalate", c.Escalate, "a window whose score is at least this many times its threshold alerts at once, without waiting for the rules (0 = never)")
	fs.IntVar(&c.DedupSize, "detect.dedup-size", c.DedupSize, "recent event ids remembered to ignore duplicates (about 40 bytes each)")
	fs.DurationVar(&c.DeviceTTL, "detect.device-ttl", c.DeviceTTL, "event time without events after which a device's state is forgotten")
	fs.IntVar(&c.MaxDevices, "detect.max-devices", c.MaxDevices, "most devices tracked at once (new devices beyond it are scored only in their cohort)")
	fs.IntVar(&c.MaxCohorts, "detect.max-cohorts", c.MaxCohorts, "most cohorts tracked at once (the least recently active is forgotten)")
	fs.BoolVar(&c.DeviceClock, "detect.device-clock", false, "event time is timestamp_ms as sent, without skew correction (replays of recorded or time-compressed simulated streams)")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if len(c.Windows) == 0 {
		return errors.New("-detect.windows: at least one window size is required")
	}
	if len(c.Windows) > 4 {
		return errors.New("-detect.windows: at most 4 window sizes")
	}
	for i, w := range c.Windows {
		if w < time.Second || w%time.Millisecond != 0 {
			return fmt.Errorf("-detect.windows: %s is not a whole number of ms of at least 1s", w)
		}
		if i > 0 && (w <= c.Windows[i-1] || w%c.Windows[0] != 0) {
			return fmt.Errorf("-detect.windows: %s must be larger than %s and a multiple of %s", w, c.Windows[i-1], c.Windows[0])
		}
	}
	switch {
	case c.Lateness < 0:
		return errors.New("-detect.lateness must not be negative")
	case c.Memory < c.Windows[0]:
		return fmt.Errorf("-detect.memory must be at least the smallest window (%s)", c.Windows[0])
	case c.Warmup < 1:
		return errors.New("-detect.warmup must be at least 1")
	case c.DedupSize < 2:
		return errors.New("-detect.dedup-size must be at least 2")
	case c.DeviceTTL < c.Windows[0]:
		return fmt.Errorf("-detect.device-ttl must be at least the smallest window (%s)", c.Windows[0])
	case c.MaxDevices < 1 || c.MaxCohorts < 1:
		return errors.New("-detect.max-devices and -detect.max-cohorts must be at least 1")
	case c.Escalate != 0 && !(c.Escalate >= 1):
		return fmt.Errorf("-detect.escalate: %g must be 0 (off) or at least 1", c.Escalate)
	}
	for name, r := range map[string]Rule{"-detect.rule": c.Rule, "-detect.device-rule": c.DeviceRule} {
		if r.K < 1 || r.N < r.K || r.N > 64 {
			return fmt.Errorf("%s: %d/%d needs 1 <= K <= N <= 64", name, r.K, r.N)
		}
	}
	return nil
}

// String and Set make Rule a flag.Value ("K/N").
func (r *Rule) String() string { return fmt.Sprintf("%d/%d", r.K, r.N) }

// Set parses "K/N".
func (r *Rule) Set(s string) error {
	k, n, ok := strings.Cut(s, "/")
	ki, err1 := strconv.Atoi(strings.TrimSpace(k))
	ni, err2 := strconv.Atoi(strings.TrimSpace(n))
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("%q is not K/N, e.g. 2/3", s)
	}
	r.K, r.N = ki, ni
	return nil
}

type durations []time.Duration

func (d *durations) String() string {
	var parts []string
	for _, x := range *d {
		parts = append(parts, x.String())
	}
	return strings.Join(parts, ",")
}

func (d *durations) Set(s string) error {
	var out []time.Duration
	for _, p := range strings.Split(s, ",") {
		x, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil {
			return err
		}
		out = append(out, x)
	}
	*d = out
	return nil
}

// Stats are cumulative counts since the detector was made (not
// checkpointed): the engine turns them into metrics.
type Stats struct {
	Events, Duplicates, Invalid int64
	Replays                     int64   // events found replayed, kept out of windows
	Late                        []int64 // per window size
	WindowsClosed               []int64 // per window size (cohort windows)
	Anomalies                   map[detectv1.AnomalyKind]int64
	DevicesRefused              int64
	DevicesExpired              int64
}

// State is everything the detector learned; the checkpoint stores it.
type State struct {
	Sizes      []int64 // window sizes, ms: a checkpoint applies only to the same sizes
	Started    bool
	MaxTime    int64 // largest event time seen
	Watermark  int64 // MaxTime - lateness, or further after AdvanceTo
	Pending    map[int64]bool
	Dedup      *RecentSet
	Apps       map[string]*appState
	Cohorts    map[uint32]*cohort
	CohortIDs  map[string]uint32
	NextCohort uint32
	Devices    map[string]*device
	Rounds     int64
}

// Detector is the stateful engine; see the package comment.
type Detector struct {
	cfg   Config
	sizes []int64
	decay []float64 // kept share of decayed counts per window, per size
	alpha []float64 // EWMA weight per window, per size
	st    *State
	out   []*detectv1.Anomaly
	dirty []*device
	paths *CountMin
	stats Stats
}

// New returns a detector with empty state.
func New(cfg Config) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Detector{cfg: cfg, paths: NewCountMin(1<<15, 4)}
	for _, w := range cfg.Windows {
		ms := w.Milliseconds()
		d.sizes = append(d.sizes, ms)
		d.decay = append(d.decay, math.Exp(-float64(ms)/float64(cfg.Memory.Milliseconds())))
		d.alpha = append(d.alpha, max(1-math.Exp(-float64(ms)/float64(cfg.Memory.Milliseconds())), 0.01))
	}
	d.stats = Stats{Late: make([]int64, len(d.sizes)), WindowsClosed: make([]int64, len(d.sizes)), Anomalies: map[detectv1.AnomalyKind]int64{}}
	d.st = d.newState()
	return d, nil
}

func (d *Detector) newState() *State {
	return &State{
		Sizes: slices.Clone(d.sizes), Pending: map[int64]bool{}, Dedup: NewRecentSet(d.cfg.DedupSize),
		Apps: map[string]*appState{}, Cohorts: map[uint32]*cohort{}, CohortIDs: map[string]uint32{}, Devices: map[string]*device{},
	}
}

// Sizes returns the window sizes in ms.
func (d *Detector) Sizes() []int64 { return slices.Clone(d.sizes) }

// Stats returns a copy of the counters.
func (d *Detector) Stats() Stats {
	s := d.stats
	s.Late, s.WindowsClosed = slices.Clone(s.Late), slices.Clone(s.WindowsClosed)
	s.Anomalies = make(map[detectv1.AnomalyKind]int64, len(d.stats.Anomalies))
	for k, v := range d.stats.Anomalies {
		s.Anomalies[k] = v
	}
	return s
}

// Watermark is the event time up to which windows are closed, Unix ms
// (math.MinInt64 before the first event).
func (d *Detector) Watermark() int64 {
	if !d.st.Started {
		return math.MinInt64
	}
	return d.st.Watermark
}

// Size reports how many devices and cohorts are tracked and an estimate of
// the bytes they hold.
func (d *Detector) Size() (devices, cohorts int, bytes int64) {
	for _, dv := range d.st.Devices {
		bytes += dv.bytes()
	}
	for _, c := range d.st.Cohorts {
		bytes += c.bytes()
	}
	bytes += int64(d.st.Dedup.Len())*40 + int64(d.paths.Bytes())
	return len(d.st.Devices), len(d.st.Cohorts), bytes
}

// Observe takes one event and returns the anomalies found because its
// event time moved the watermark past the end of windows (usually none).
func (d *Detector) Observe(e *eventv1.Event) []*detectv1.Anomaly {
	d.observe(e)
	d.advance()
	return d.take()
}

// AdvanceTo moves the watermark to wm (Unix ms) when it is ahead, closing
// the windows that end by then: the service calls it when no events arrive,
// so that quiet periods still close windows.
func (d *Detector) AdvanceTo(wm int64) []*detectv1.Anomaly {
	if d.st.Started && wm > d.st.Watermark {
		d.st.Watermark = wm
		d.advance()
	}
	return d.take()
}

// Flush closes every open window, as if all events had arrived.
func (d *Detector) Flush() []*detectv1.Anomaly {
	end := int64(math.MinInt64)
	for e := range d.st.Pending {
		end = max(end, e)
	}
	if end > math.MinInt64 {
		return d.AdvanceTo(end)
	}
	return d.take()
}

func (d *Detector) take() []*detectv1.Anomaly {
	if len(d.out) == 0 {
		return nil
	}
	out := d.out
	d.out = nil
	return out
}

func (d *Detector) observe(e *eventv1.Event) {
	if e.GetAppId() == "" || e.GetDeviceId() == "" {
		d.stats.Invalid++
		return
	}
	if id := e.GetEventId(); id != "" && d.st.Dedup.Add(hashString(id)) {
		d.stats.Duplicates++
		return
	}
	d.stats.Events++
	t := EventTime(e)
	if d.cfg.DeviceClock {
		t = e.GetTimestampMs()
	}
	typ := TypeOf(e)
	if !d.st.Started {
		d.st.Started, d.st.MaxTime, d.st.Watermark = true, t, t-d.cfg.Lateness.Milliseconds()
	}
	a := d.app(e.GetAppId())
	c := d.cohortFor(a, e.GetDeviceContext(), t)
	dv := d.device(a, c, e, t)
	if dv != nil && d.arrive(dv, e, typ) {
		d.stats.Replays++
		return // counted against the device; its content is not new
	}
	late := false
	for i, size := range d.sizes {
		if Late(t, size, d.st.Watermark) {
			d.stats.Late[i]++
			late = late || i == 0
			continue
		}
		w := c.window(i, t, size, d.st.Pending)
		w.add(typ, dv, i)
	}
	if dv != nil && !late && len(dv.Buf) < maxBuf {
		screen := uint16(0)
		if typ == typeScreenView {
			screen = a.screen(e.GetScreenView().GetScreenName())
		}
		dv.Buf = append(dv.Buf, ev{T: t, Seq: e.GetSequence(), Type: typ, Screen: screen, Cohort: c.ID, Session: hashString(e.GetSessionId())})
		d.markDirty(dv)
	}
	if t > d.st.MaxTime {
		d.st.MaxTime = t
		d.st.Watermark = max(d.st.Watermark, t-d.cfg.Lateness.Milliseconds())
	}
}

func (d *Detector) markDirty(dv *device) {
	if !dv.dirty {
		dv.dirty = true
		d.dirty = append(d.dirty, dv)
	}
}

// advance closes, in order, every window that ends by the watermark.
func (d *Detector) advance() {
	for {
		b, ok := int64(math.MaxInt64), false
		for e := range d.st.Pending {
			if e <= d.st.Watermark && e < b {
				b, ok = e, true
			}
		}
		if !ok {
			return
		}
		delete(d.st.Pending, b)
		d.round(b)
	}
}

// round closes everything that ends at b: the devices' events before b are
// put in order and checked, then the cohorts' windows ending at b are
// scored.
func (d *Detector) round(b int64) {
	var devs []*device
	for _, dv := range d.dirty {
		if dv.due(b) {
			devs = append(devs, dv)
		}
	}
	slices.SortFunc(devs, func(x, y *device) int { return strings.Compare(x.Key, y.Key) })
	for _, dv := range devs {
		d.sequence(dv, b)
	}
	if len(devs) > 0 {
		d.checkDevices(devs, Window{b - d.sizes[0], b})
	}
	keep := d.dirty[:0]
	for _, dv := range d.dirty {
		if len(dv.Buf) > 0 {
			keep = append(keep, dv)
		} else {
			dv.dirty = false
		}
	}
	clear(d.dirty[len(keep):])
	d.dirty = keep
	var ids []uint32
	for id, c := range d.st.Cohorts {
		if c.hasWindowBy(b) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		c := d.st.Cohorts[id]
		for i := range c.Scales {
			for _, w := range c.Scales[i].closeBy(b) {
				d.closeWindow(c, i, w)
				d.stats.WindowsClosed[i]++
			}
		}
	}
	d.st.Rounds++
	if d.st.Rounds%16 == 0 {
		d.expire()
	}
}

// expire forgets devices idle for DeviceTTL of event time.
func (d *Detector) expire() {
	limit := d.st.Watermark - d.cfg.DeviceTTL.Milliseconds()
	for k, dv := range d.st.Devices {
		if dv.LastSeen < limit && !dv.dirty {
			delete(d.st.Devices, k)
			d.stats.DevicesExpired++
		}
	}
}

// emit records an anomaly found at the current watermark.
func (d *Detector) emit(a *detectv1.Anomaly) {
	a.WatermarkMs = d.st.Watermark
	d.stats.Anomalies[a.GetKind()]++
	d.out = append(d.out, a)
}

// anomalyID is derived from what the anomaly is about, so finding it again
// gives the same id.
func anomalyID(kind detectv1.AnomalyKind, cohortKey, device string, w Window) string {
	key := fmt.Sprintf("%d|%s|%s|%d|%d", kind, cohortKey, device, w.Start, w.End)
	h1 := hashString(key)
	h2 := mix64(h1 ^ hashString("causality.detect.v1|"+key))
	return fmt.Sprintf("%016x%016x", h1, h2)
}

func (d *Detector) newAnomaly(kind detectv1.AnomalyKind, c *cohort, device string, w Window, score, threshold float64, rule Rule) *detectv1.Anomaly {
	return &detectv1.Anomaly{
		Id:            anomalyID(kind, c.Key.String(), device, w),
		Kind:          kind,
		AppId:         c.Key.App,
		Cohort:        c.Key.proto(),
		DeviceId:      device,
		WindowStartMs: w.Start,
		WindowEndMs:   w.End,
		Score:         score,
		Threshold:     threshold,
		Rule:          rule.describe(),
	}
}

func (r Rule) describe() string {
	if r.K == 1 && r.N == 1 {
		return "every window"
	}
	return fmt.Sprintf("%d of the last %d windows", r.K, r.N)
}

// immediate is the rule of checks that need no repetition.
var immediate = Rule{K: 1, N: 1}

// Baseline returns what the detector learned about a cohort at window size
// windowMs (0 = the smallest), or false when it has not seen the cohort.
func (d *Detector) Baseline(k *detectv1.Cohort, windowMs int64) (*detectv1.Baseline, bool) {
	key := cohortKey{App: k.GetAppId(), Version: k.GetAppVersion(), Build: k.GetBuildNumber(), Platform: int32(k.GetPlatform())}
	id, ok := d.st.CohortIDs[key.String()]
	if !ok {
		return nil, false
	}
	c := d.st.Cohorts[id]
	i := 0
	if windowMs != 0 {
		i = slices.Index(d.sizes, windowMs)
		if i < 0 {
			return nil, false
		}
	}
	return c.baselineProto(d, i), true
}
