// Package eval is the labelled evaluation of the detector. Scenarios of the
// simulator (sim.Scenario: genuine fleets, legitimate changes, tampered
// cohorts with labels known by construction) flow into a Pipeline (in
// `causality eval`: the collector over TCP, Kafka, the detector); the
// anomalies flow back and are scored per device against the labels, beside
// a fixed-threshold rule baseline computed on the same events. Out come
// Results, a Markdown report and a PNG bar chart.
package eval

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/detect"
	"causality.dev/services/internal/sim"
)

// Config says which scenarios to run and how big.
type Config struct {
	Scenarios []string
	Seed      uint64
	// Seeds is how many times every scenario runs, each time with another
	// seed (another fleet: devices, flows, which of them are tampered).
	Seeds      int
	Devices    int           // fleet at its daily peak
	Start      time.Time     // simulated start of every scenario
	Duration   time.Duration // simulated length
	ChangeAt   time.Duration // onset of tampering or of the legitimate change
	Prevalence float64
	GapMean    time.Duration
	Window     time.Duration // the detector's smallest window: the unit of time to detect
	Lateness   time.Duration // the detector's: watermark + lateness = the event time when found
}

// DefaultConfig is what `make eval` runs: 2000 devices at the daily peak
// (about 1100 active), 45 simulated minutes from 07:00 UTC of day (30 of
// genuine history, then 15 of the change), 1% prevalence, every scenario
// with 3 seeds.
func DefaultConfig(day time.Time) Config {
	return Config{
		Scenarios: sim.ScenarioNames(), Seed: 1, Seeds: 3, Devices: 2000,
		Start:    time.Date(day.Year(), day.Month(), day.Day(), 7, 0, 0, 0, time.UTC),
		Duration: 45 * time.Minute, ChangeAt: 30 * time.Minute, Prevalence: 0.01, GapMean: 3 * time.Second,
		Window: time.Minute, Lateness: detect.DefaultConfig().Lateness,
	}
}

// SeedOf is the seed of run r (0-based) of the i-th scenario: Seed + 100r + i.
func (c Config) SeedOf(r, i int) uint64 { return c.Seed + uint64(100*r+i) }

func (c Config) scenario(name string, seed uint64) sim.ScenarioConfig {
	return sim.ScenarioConfig{Name: name, App: "eval-" + name, Seed: seed, Devices: c.Devices, Start: c.Start,
		Duration: c.Duration, ChangeAt: c.ChangeAt, Prevalence: c.Prevalence, GapMean: c.GapMean}
}

// Pipeline takes one scenario's events (next returns them in order, then
// false) for app, and returns every anomaly the detector found once all of
// them, up to end (simulated), have been scored.
type Pipeline interface {
	Run(ctx context.Context, app string, end time.Time, next func() (sim.Timed, bool)) (*Delivery, error)
}

// Delivery is what came out of a pipeline.
type Delivery struct {
	Anomalies []*detectv1.Anomaly
	Late      int64 // events the detector counted late (smallest window)
	Retries   int64 // events the simulator had to send again
	// Source says where Anomalies were read (e.g. "grpc"); CrossChecked, when
	// not empty, names a second source that held exactly the same ids.
	Source, CrossChecked string
}

// PipelineFunc adapts a function to Pipeline.
type PipelineFunc func(ctx context.Context, app string, end time.Time, next func() (sim.Timed, bool)) (*Delivery, error)

// Run calls f.
func (f PipelineFunc) Run(ctx context.Context, app string, end time.Time, next func() (sim.Timed, bool)) (*Delivery, error) {
	return f(ctx, app, end, next)
}

// InProcess is a Pipeline without the network: the detector fed directly,
// with sent_at_ms and received_at_ms stamped as the SDK and collector do.
// The harness's unit tests use it.
func InProcess(cfg detect.Config) Pipeline {
	return PipelineFunc(func(_ context.Context, _ string, _ time.Time, next func() (sim.Timed, bool)) (*Delivery, error) {
		d, err := detect.New(cfg)
		if err != nil {
			return nil, err
		}
		var out []*detectv1.Anomaly
		for {
			t, ok := next()
			if !ok {
				break
			}
			true_ := t.Event.GetTimestampMs() - t.Skew.Milliseconds()
			t.Event.SentAtMs = true_ + t.Skew.Milliseconds() + 200
			t.Event.ReceivedAtMs = true_ + 250
			out = append(out, d.Observe(t.Event)...)
		}
		return &Delivery{Anomalies: append(out, d.Flush()...), Late: d.Stats().Late[0], Source: "in process"}, nil
	})
}

// Score is the device-level outcome of one method on one scenario.
type Score struct {
	TP, FP, FN   int
	NotShown     int       // tampered devices that never showed it (not scored)
	TTD          []float64 // windows from onset to detection, per detected device, ascending
	Alerts       int       // alerts raised (anomalies, or rule firings)
	Unattributed int       // of which name no device
}

// Precision is TP/(TP+FP); NaN when nothing was flagged.
func (s Score) Precision() float64 { return ratio(s.TP, s.TP+s.FP) }

// Recall is TP/(TP+FN); NaN without positives.
func (s Score) Recall() float64 { return ratio(s.TP, s.TP+s.FN) }

// F1 is the harmonic mean of precision and recall (0 when either is 0 or
// undefined).
func (s Score) F1() float64 {
	p, r := s.Precision(), s.Recall()
	if math.IsNaN(p) || math.IsNaN(r) || p+r == 0 {
		return 0
	}
	return 2 * p * r / (p + r)
}

// TTDMedian and TTDMax are over the detected devices (NaN when none).
func (s Score) TTDMedian() float64 { return quantile(s.TTD, 0.5) }

// TTDMax is the slowest detection, in windows.
func (s Score) TTDMax() float64 { return quantile(s.TTD, 1) }

func ratio(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[int(math.Ceil(q*float64(len(s)-1)))]
}

// Named is when each device was named by an alert: simulated Unix ms.
type Named map[string][]int64

// ScoreDevices scores named devices against the labels, at device level:
//   - a tampered device that showed its tampering (Onset > 0) is a true
//     positive when an alert names it at or after its onset (time to detect
//     = first such time − onset, in windows), else a false negative;
//   - a genuine device named at any time is a false positive, and so is a
//     tampered device named only before its onset;
//   - a tampered device that never showed it is left out (NotShown).
func ScoreDevices(labels []sim.Label, named Named, window time.Duration) Score {
	var s Score
	for _, l := range labels {
		times := named[l.Device]
		switch {
		case !l.Tampered:
			if len(times) > 0 {
				s.FP++
			}
		case l.Onset == 0:
			s.NotShown++
		default:
			first := int64(math.MaxInt64)
			for _, t := range times {
				if t >= l.Onset {
					first = min(first, t)
				}
			}
			switch {
			case first != math.MaxInt64:
				s.TP++
				s.TTD = append(s.TTD, float64(first-l.Onset)/float64(window.Milliseconds()))
			case len(times) > 0:
				s.FP++
				s.FN++
			default:
				s.FN++
			}
		}
	}
	slices.Sort(s.TTD)
	return s
}

// cohortOf is the detector's cohort of an event.
func cohortOf(e *eventv1.Event) string {
	c := e.GetDeviceContext()
	return detect.CohortLabel(&detectv1.Cohort{AppId: e.GetAppId(), AppVersion: c.GetAppVersion(), BuildNumber: c.GetBuildNumber(), Platform: c.GetPlatform()})
}

// NameDevices turns anomalies into named devices: the device of a
// per-device anomaly, the listed devices of a cohort anomaly, and for
// UNKNOWN_BUILD (a finding about the build itself) every device seen in
// that cohort. A device is named at the anomaly's watermark plus lateness
// (the largest event time the detector had seen when it found it; for a
// cohort device, at the latest at its first event in the cohort).
// cohorts maps a cohort label to its devices' first event time. It also
// returns how many anomalies named no device.
func NameDevices(as []*detectv1.Anomaly, cohorts map[string]map[string]int64, lateness time.Duration) (Named, int) {
	named := Named{}
	unattributed := 0
	for _, a := range as {
		at := a.GetWatermarkMs() + lateness.Milliseconds()
		n := 0
		if d := a.GetDeviceId(); d != "" {
			named[d] = append(named[d], at)
			n++
		}
		for _, d := range a.GetDevices() {
			named[d] = append(named[d], at)
			n++
		}
		if a.GetKind() == detectv1.AnomalyKind_ANOMALY_KIND_UNKNOWN_BUILD {
			for d, first := range cohorts[detect.CohortLabel(a.GetCohort())] {
				named[d] = append(named[d], max(at, first))
				n++
			}
		}
		if n == 0 {
			unattributed++
		}
	}
	return named, unattributed
}

// Result is one scenario's outcome.
type Result struct {
	Scenario  string
	Seed      uint64
	Run       int // 0-based: which of the Seeds runs
	Legit     bool
	Devices   int // devices that sent events
	Tampered  int
	Events    int
	Wall      time.Duration
	Late      int64 // events the detector dropped as late
	Retries   int64 // events sent again by the simulator
	Source    string
	Checked   string // the second source with the same anomalies, or ""
	Detector  Score
	Baseline  Score
	Kinds     map[string]int // anomalies by kind
	Anomalies []*detectv1.Anomaly
}

// Report is every scenario's result and how they were made.
type Report struct {
	Config     Config
	Thresholds Thresholds
	Results    []Result
	Started    time.Time
	Wall       time.Duration
}

// Run calibrates the baseline on a genuine fleet of another seed, then runs
// every scenario through p and scores it.
func Run(ctx context.Context, cfg Config, p Pipeline, logger *slog.Logger) (*Report, error) {
	if cfg.Window <= 0 {
		return nil, fmt.Errorf("eval: window %s must be positive", cfg.Window)
	}
	if cfg.Seeds < 1 {
		return nil, fmt.Errorf("eval: %d seeds, need at least 1", cfg.Seeds)
	}
	rep := &Report{Config: cfg, Started: time.Now()}
	cal, err := sim.NewScenario(cfg.scenario(sim.Genuine, cfg.Seed+1000))
	if err != nil {
		return nil, err
	}
	counts := newCounter(cfg.Window)
	for {
		t, ok := cal.Next()
		if !ok {
			break
		}
		counts.add(t)
	}
	rep.Thresholds = counts.calibrate()
	logger.Info("baseline thresholds chosen on a genuine fleet", "seed", cfg.Seed+1000, "thresholds", fmt.Sprintf("%+v", rep.Thresholds))
	for run := range cfg.Seeds {
		for i, name := range cfg.Scenarios {
			r, err := runScenario(ctx, cfg, p, rep.Thresholds, name, cfg.SeedOf(run, i))
			if err != nil {
				return nil, err
			}
			r.Run = run
			logger.Info("scenario scored", "scenario", name, "seed", r.Seed, "events", r.Events, "wall", r.Wall.Round(time.Millisecond),
				"anomalies", len(r.Anomalies), "detector_f1", r.Detector.F1(), "baseline_f1", r.Baseline.F1(), "ttd_median", r.Detector.TTDMedian())
			rep.Results = append(rep.Results, r)
		}
	}
	rep.Wall = time.Since(rep.Started)
	return rep, nil
}

// runScenario runs one scenario with one seed through p and scores it.
func runScenario(ctx context.Context, cfg Config, p Pipeline, th Thresholds, name string, seed uint64) (Result, error) {
	sc, err := sim.NewScenario(cfg.scenario(name, seed))
	if err != nil {
		return Result{}, err
	}
	counts := newCounter(cfg.Window)
	cohorts := map[string]map[string]int64{}
	events := 0
	next := func() (sim.Timed, bool) {
		t, ok := sc.Next()
		if !ok {
			return t, false
		}
		events++
		counts.add(t)
		c := cohortOf(t.Event)
		if cohorts[c] == nil {
			cohorts[c] = map[string]int64{}
		}
		if _, ok := cohorts[c][t.Event.GetDeviceId()]; !ok {
			cohorts[c][t.Event.GetDeviceId()] = t.Event.GetTimestampMs() - t.Skew.Milliseconds()
		}
		return t, true
	}
	start := time.Now()
	scfg := sc.Config()
	dl, err := p.Run(ctx, scfg.App, scfg.Start.Add(scfg.Duration), next)
	if err != nil {
		return Result{}, fmt.Errorf("scenario %s (seed %d): %w", name, seed, err)
	}
	as := dl.Anomalies
	labels := sc.Labels()
	named, unattributed := NameDevices(as, cohorts, cfg.Lateness)
	r := Result{Scenario: name, Seed: seed, Legit: sim.Legitimate(name), Devices: len(labels), Events: events, Wall: time.Since(start),
		Kinds: map[string]int{}, Anomalies: as, Late: dl.Late, Retries: dl.Retries,
		Source: dl.Source, Checked: dl.CrossChecked}
	for _, l := range labels {
		if l.Tampered {
			r.Tampered++
		}
	}
	r.Detector = ScoreDevices(labels, named, cfg.Window)
	r.Detector.Alerts, r.Detector.Unattributed = len(as), unattributed
	for _, a := range as {
		r.Kinds[detect.KindLabel(a.GetKind())]++
	}
	bnamed, balerts, bunattr := counts.apply(th)
	r.Baseline = ScoreDevices(labels, bnamed, cfg.Window)
	r.Baseline.Alerts, r.Baseline.Unattributed = balerts, bunattr
	return r, nil
}
