package eval

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/detect"
	"causality.dev/services/internal/sim"
)

const minute = int64(60_000)

func TestScoreDevices(t *testing.T) {
	labels := []sim.Label{
		{Device: "g1"}, {Device: "g2"}, {Device: "g3"},
		{Device: "t1", Tampered: true, Onset: 10 * minute},
		{Device: "t2", Tampered: true, Onset: 10 * minute},
		{Device: "t3", Tampered: true, Onset: 20 * minute},
		{Device: "t4", Tampered: true, Onset: 20 * minute},
		{Device: "quiet", Tampered: true}, // never showed it
	}
	tests := []struct {
		name                 string
		named                Named
		tp, fp, fn, notShown int
		precision, recall    float64
		ttd                  []float64
	}{
		{"nothing named", Named{}, 0, 0, 4, 1, math.NaN(), 0, nil},
		{"all found, one late", Named{"t1": {11 * minute}, "t2": {12 * minute, 10 * minute}, "t3": {23 * minute}, "t4": {20*minute + 30_000}},
			4, 0, 0, 1, 1, 1, []float64{0, 0.5, 1, 3}},
		{"false positives", Named{"g1": {minute}, "g2": {5 * minute, 7 * minute}, "t1": {15 * minute}},
			1, 2, 3, 1, 1.0 / 3, 0.25, []float64{5}},
		{"named before onset only", Named{"t3": {5 * minute}, "t4": {25 * minute}},
			1, 1, 3, 1, 0.5, 0.25, []float64{5}},
		{"the quiet device named is not scored", Named{"quiet": {minute}}, 0, 0, 4, 1, math.NaN(), 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ScoreDevices(labels, tt.named, time.Minute)
			if s.TP != tt.tp || s.FP != tt.fp || s.FN != tt.fn || s.NotShown != tt.notShown {
				t.Fatalf("TP %d FP %d FN %d not shown %d, want %d %d %d %d", s.TP, s.FP, s.FN, s.NotShown, tt.tp, tt.fp, tt.fn, tt.notShown)
			}
			if !same(s.Precision(), tt.precision) || !same(s.Recall(), tt.recall) {
				t.Errorf("precision %v recall %v, want %v %v", s.Precision(), s.Recall(), tt.precision, tt.recall)
			}
			if !slices.Equal(s.TTD, tt.ttd) {
				t.Errorf("time to detect %v, want %v", s.TTD, tt.ttd)
			}
		})
	}
}

func same(a, b float64) bool { return (math.IsNaN(a) && math.IsNaN(b)) || math.Abs(a-b) < 1e-9 }

func TestF1AndTTD(t *testing.T) {
	s := Score{TP: 8, FP: 2, FN: 2, TTD: []float64{0.5, 1, 1.5, 2, 9}}
	if got := s.F1(); !same(got, 0.8) {
		t.Errorf("F1 %v, want 0.8", got)
	}
	if s.TTDMedian() != 1.5 || s.TTDMax() != 9 {
		t.Errorf("TTD median %v max %v, want 1.5 and 9", s.TTDMedian(), s.TTDMax())
	}
	if f := (Score{FN: 3}).F1(); f != 0 {
		t.Errorf("F1 without detections %v, want 0", f)
	}
	if m := (Score{}).TTDMedian(); !math.IsNaN(m) {
		t.Errorf("median of nothing %v, want NaN", m)
	}
}

func TestNameDevices(t *testing.T) {
	bad := &detectv1.Cohort{AppId: "a", AppVersion: "2.5.0", BuildNumber: "2507", Platform: eventv1.Platform_PLATFORM_ANDROID}
	as := []*detectv1.Anomaly{
		{Kind: detectv1.AnomalyKind_ANOMALY_KIND_REPLAY, DeviceId: "d1", WatermarkMs: 100},
		{Kind: detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS, Devices: []string{"d2", "d3"}, WatermarkMs: 200},
		{Kind: detectv1.AnomalyKind_ANOMALY_KIND_MIX_SHIFT, WatermarkMs: 300},
		{Kind: detectv1.AnomalyKind_ANOMALY_KIND_UNKNOWN_BUILD, Cohort: bad, Devices: []string{"r1"}, WatermarkMs: 400},
	}
	cohorts := map[string]map[string]int64{detect.CohortLabel(bad): {"r1": 50, "r2": 900}}
	named, unattributed := NameDevices(as, cohorts, 10*time.Millisecond)
	want := Named{"d1": {110}, "d2": {210}, "d3": {210}, "r1": {410, 410}, "r2": {900}}
	if unattributed != 1 || len(named) != len(want) {
		t.Fatalf("named %v, %d unattributed; want %v and 1", named, unattributed, want)
	}
	for d, ts := range want {
		if !slices.Equal(named[d], ts) {
			t.Errorf("%s named at %v, want %v", d, named[d], ts)
		}
	}
}

func TestBaselineRules(t *testing.T) {
	c := newCounter(time.Minute)
	ev := func(dev string, ms int64) sim.Timed {
		return sim.Timed{Event: &eventv1.Event{DeviceId: dev, TimestampMs: ms + 5000}, Skew: 5 * time.Second}
	}
	for i := range 30 { // busy: 30 events in minute 0
		c.add(ev("busy", int64(i)*1000))
	}
	for i := range 10 { // calm: 10 a minute for 10 minutes
		for j := range 10 {
			c.add(ev("calm", int64(i)*minute+int64(j)*5000))
		}
	}
	th := c.calibrate()
	if th != (Thresholds{DeviceMinute: 31, AppMinute: 41, DeviceWindow: 101}) {
		t.Fatalf("thresholds %+v", th)
	}
	named, alerts, unattr := c.apply(Thresholds{DeviceMinute: 20, AppMinute: 1000, DeviceWindow: 100})
	if alerts != 2 || unattr != 0 || !slices.Equal(named["busy"], []int64{minute}) || !slices.Equal(named["calm"], []int64{10 * minute}) {
		t.Errorf("named %v, %d alerts, %d unattributed", named, alerts, unattr)
	}
	if _, alerts, unattr := c.apply(Thresholds{DeviceMinute: 100, AppMinute: 40, DeviceWindow: 1000}); alerts != 1 || unattr != 1 {
		t.Errorf("app rate: %d alerts, %d unattributed; want 1 and 1", alerts, unattr)
	}
}

// smallConfig: 200 devices, 24 simulated minutes, the change at minute 14.
func smallConfig(scenarios ...string) Config {
	c := DefaultConfig(time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC))
	c.Scenarios, c.Devices, c.Duration, c.ChangeAt, c.Prevalence, c.Seeds = scenarios, 200, 24*time.Minute, 14*time.Minute, 0.03, 2
	return c
}

// TestRunInProcess is the harness's smoke test: two scenarios through the
// detector in process, a report and a plot.
func TestRunInProcess(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rep, err := Run(context.Background(), smallConfig(sim.Genuine, sim.Replay), InProcess(detect.DefaultConfig()), logger)
	if err != nil {
		t.Fatal(err)
	}
	// Two scenarios, two seeds each: scenario i of run r has seed 1+100r+i.
	if len(rep.Results) != 4 {
		t.Fatalf("%d results, want 4", len(rep.Results))
	}
	for j, want := range []struct {
		scenario string
		seed     uint64
	}{{sim.Genuine, 1}, {sim.Replay, 2}, {sim.Genuine, 101}, {sim.Replay, 102}} {
		r := rep.Results[j]
		if r.Scenario != want.scenario || r.Seed != want.seed || r.Events == 0 {
			t.Errorf("result %d: %s seed %d with %d events, want %s seed %d", j, r.Scenario, r.Seed, r.Events, want.scenario, want.seed)
		}
	}
	if rep.Results[0].Events == rep.Results[2].Events {
		t.Errorf("both seeds of the genuine scenario sent %d events: the same fleet?", rep.Results[0].Events)
	}
	for _, r := range []Result{rep.Results[1], rep.Results[3]} {
		if r.Tampered == 0 || r.Detector.TP == 0 {
			t.Errorf("replay scenario, seed %d: no replaying device detected: %+v", r.Seed, r.Detector)
		}
	}
	var md, img bytes.Buffer
	if err := WriteMarkdown(&md, rep, Meta{Command: "go test", Machine: "test", Pipeline: "in process", PNG: "x.png"}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| replay |", "| genuine |", "## Legitimate scenarios", "### Per seed", "| replay | 102 |", "| genuine | 1 / 101 |", "1+*i*, 101+*i*"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, md.String())
		}
	}
	if err := WritePlot(&img, rep); err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(&img); err != nil {
		t.Fatalf("plot is not a PNG: %v", err)
	}
}

// TestFullInProcess runs the whole evaluation in process when asked
// (CAUSALITY_EVAL_INPROCESS=out.md): a quick look before `make eval`.
func TestFullInProcess(t *testing.T) {
	out := os.Getenv("CAUSALITY_EVAL_INPROCESS")
	if out == "" {
		t.Skip("set CAUSALITY_EVAL_INPROCESS=FILE to run")
	}
	rep, err := Run(context.Background(), DefaultConfig(time.Now().AddDate(0, 0, -1)), InProcess(detect.DefaultConfig()), slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, rep, Meta{Command: "go test", Machine: "local", Pipeline: "in process", PNG: "x.png"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, md.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTargetsAndSpread(t *testing.T) {
	run := func(tp, fp, fn int, ttd []float64, baseF1 float64) Result {
		// A baseline score with the given F1: P = R = F1.
		bl := Score{}
		if baseF1 > 0 {
			bl = Score{TP: int(math.Round(baseF1 * 100)), FP: 100 - int(math.Round(baseF1*100)), FN: 100 - int(math.Round(baseF1*100))}
		}
		return Result{Detector: Score{TP: tp, FP: fp, FN: fn, TTD: ttd}, Baseline: bl}
	}
	tests := []struct {
		name                                   string
		r                                      Result
		recall, precision, ttd, f1, f1Possible bool
	}{
		{"everything met", run(10, 0, 0, []float64{1, 1.5, 2.5}, 0.3), true, true, true, true, true},
		{"slow", run(10, 0, 0, []float64{2, 2.5, 2.5}, 0), true, true, false, true, true},
		{"a false positive too many", run(10, 1, 0, []float64{1}, 0), true, false, true, true, true},
		{"recall 0.8", run(8, 0, 2, []float64{1}, 0), false, true, true, true, true},
		{"nothing found", run(0, 0, 10, nil, 0), false, false, false, false, true},
		{"baseline F1 0.6: twice it is above 1", run(10, 0, 0, []float64{1}, 0.6), true, true, true, false, false},
		{"baseline F1 exactly 0.5: possible only with F1 1", run(10, 0, 0, []float64{1}, 0.5), true, true, true, true, true},
		{"baseline F1 0.45 with detector F1 0.8", run(8, 2, 2, []float64{1}, 0.45), false, false, true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, p, d, f, fp := tt.r.Met()
			if r != tt.recall || p != tt.precision || d != tt.ttd || f != tt.f1 || fp != tt.f1Possible {
				t.Errorf("Met() = %v %v %v %v %v, want %v %v %v %v %v", r, p, d, f, fp, tt.recall, tt.precision, tt.ttd, tt.f1, tt.f1Possible)
			}
		})
	}

	runs := []Result{{Detector: Score{TP: 9, FN: 1}}, {Detector: Score{TP: 10}}, {Detector: Score{FN: 0}}}
	recall := func(r Result) float64 { return r.Detector.Recall() }
	if got := spread(runs, recall); got != "0.95 (0.90–1.00)" {
		t.Errorf("spread of recall 0.9, 1 and undefined = %q, want the mean and range of the defined two", got)
	}
	if got := spread(runs[1:2], recall); got != "1.00" {
		t.Errorf("spread of one run = %q", got)
	}
	if got := spread(runs[2:], recall); got != "–" {
		t.Errorf("spread of nothing defined = %q", got)
	}
	if got := allRuns(runs, func(r Result) bool { return r.Detector.TP > 0 }); got != "**no** (2 of 3)" {
		t.Errorf("allRuns = %q", got)
	}
	if got := each(runs, func(r Result) string { return fmt.Sprint(r.Detector.TP) }); got != "9 / 10 / 0" {
		t.Errorf("each = %q", got)
	}
}
