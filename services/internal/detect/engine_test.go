package detect

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
)

func newEngine(t testing.TB, cfg EngineConfig, outputs ...Output) *Engine {
	t.Helper()
	e, err := NewEngine(cfg, newDetector(t, testConfig()), outputs, discard(), prometheus.NewRegistry(), func() time.Time { return time.UnixMilli(t0 + 1000) })
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	return e
}

// collect gathers a fleet's events.
func collect(f *fleet, end int64) []*eventv1.Event {
	var out []*eventv1.Event
	f.until(end, func(e *eventv1.Event) { out = append(out, e) })
	return out
}

func TestCheckpointRoundTrip(t *testing.T) {
	dir := t.TempDir()
	cfg := EngineConfig{Checkpoint: filepath.Join(dir, "sub", "detector.ckpt"), CheckpointInterval: time.Minute, RingSize: 1000}
	f := newFleet(42)
	f.add(150, t0, genuine, genuineMix)
	warm := collect(f, t0+20*minute)
	f.add(3, t0+20*minute, paywall, genuineMix)
	f.add(3, t0+20*minute, bot, func(int) *eventv1.DeviceContext { return androidCtx() })
	before := collect(f, t0+22*minute+30_000) // the checkpoint falls in the middle of a window
	after := collect(f, t0+30*minute)

	a := newEngine(t, cfg)
	a.Feed(warm)
	a.Feed(before)
	if err := a.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	b := newEngine(t, cfg)

	cohort := &detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_IOS}
	ba, _ := a.Baseline(cohort, 0)
	bb, ok := b.Baseline(cohort, 0)
	if !ok || !proto.Equal(ba, bb) {
		t.Fatalf("restored baseline differs:\n%v\nwant\n%v", bb, ba)
	}
	ra, _, _ := a.Ring().Read(0, 1000)
	rb, _, _ := b.Ring().Read(0, 1000)
	if len(ra) == 0 || len(ra) != len(rb) {
		t.Fatalf("ring: %d anomalies before, %d restored (want the same, and some)", len(ra), len(rb))
	}
	for i := range ra {
		if !proto.Equal(ra[i], rb[i]) {
			t.Errorf("restored anomaly %d differs: %v, want %v", i, rb[i], ra[i])
		}
	}
	if b.Ring().Next() <= ra[len(ra)-1].GetOffset() {
		t.Errorf("next offset %d after restore, not above the last served %d", b.Ring().Next(), ra[len(ra)-1].GetOffset())
	}
	// Both go on with the same events and find the same things: nothing was
	// forgotten, open windows and device sequences included.
	fa, fb := a.Feed(after), b.Feed(after)
	if len(fa) == 0 || len(fa) != len(fb) {
		t.Fatalf("after the checkpoint: %d anomalies from the original, %d from the restored", len(fa), len(fb))
	}
	for i := range fa {
		if fa[i].GetId() != fb[i].GetId() || fa[i].GetScore() != fb[i].GetScore() {
			t.Errorf("anomaly %d: restored found %s %v, original %s %v", i, fb[i].GetKind(), fb[i].GetScore(), fa[i].GetKind(), fa[i].GetScore())
		}
	}
}

func TestCheckpointErrors(t *testing.T) {
	dir := t.TempDir()
	t.Run("garbage file", func(t *testing.T) {
		path := filepath.Join(dir, "garbage")
		os.WriteFile(path, []byte("hello"), 0o600)
		_, err := NewEngine(EngineConfig{Checkpoint: path, CheckpointInterval: time.Minute, RingSize: 10}, newDetector(t, testConfig()), nil, discard(), prometheus.NewRegistry(), time.Now)
		if err == nil {
			t.Error("a file that is not a checkpoint was accepted")
		}
	})
	t.Run("other window sizes", func(t *testing.T) {
		path := filepath.Join(dir, "sizes")
		e := newEngine(t, EngineConfig{Checkpoint: path, CheckpointInterval: time.Minute, RingSize: 10})
		if err := e.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig()
		cfg.Windows = []time.Duration{2 * time.Minute}
		d, _ := New(cfg)
		_, err := NewEngine(EngineConfig{Checkpoint: path, CheckpointInterval: time.Minute, RingSize: 10}, d, nil, discard(), prometheus.NewRegistry(), time.Now)
		if !errors.Is(err, ErrCheckpointMismatch) {
			t.Errorf("restoring with other window sizes: %v, want ErrCheckpointMismatch", err)
		}
	})
}

// recordingOutput fails its first failures writes, then records.
type recordingOutput struct {
	mu       sync.Mutex
	failures int
	got      []string
	done     chan struct{}
	want     int
}

func (r *recordingOutput) write(_ context.Context, as []*detectv1.Anomaly) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failures > 0 {
		r.failures--
		return errors.New("down")
	}
	for _, a := range as {
		r.got = append(r.got, a.GetId())
	}
	if len(r.got) >= r.want && r.done != nil {
		close(r.done)
		r.done = nil
	}
	return nil
}

func TestOutputsRetryInOrderAndResumeAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ckpt")
	cfg := EngineConfig{Checkpoint: path, CheckpointInterval: time.Hour, RingSize: 100}
	out := &recordingOutput{failures: 2, done: make(chan struct{}), want: 3}
	e := newEngine(t, cfg, Output{Name: "rec", Write: out.write})
	now := time.UnixMilli(t0)
	mk := func(id string) *detectv1.Anomaly { return &detectv1.Anomaly{Id: id, AppId: "shop"} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	e.mu.Lock()
	e.ring.Append(now, mk("a"), mk("b"))
	e.ring.Append(now, mk("c"))
	e.mu.Unlock()
	<-out.done
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out.got, []string{"a", "b", "c"}) {
		t.Errorf("written %v, want a b c once each, in order, after two failures", out.got)
	}
	// Found while the output was not running: written after the restart.
	e.mu.Lock()
	e.ring.Append(now, mk("d"))
	e.mu.Unlock()
	if err := e.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	out2 := &recordingOutput{done: make(chan struct{}), want: 1}
	e2 := newEngine(t, cfg, Output{Name: "rec", Write: out2.write})
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- e2.Run(ctx2) }()
	<-out2.done
	cancel2()
	<-done
	if !slices.Equal(out2.got, []string{"d"}) {
		t.Errorf("after restart written %v, want only d", out2.got)
	}
}

func TestEngineMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := NewEngine(EngineConfig{RingSize: 100}, newDetector(t, testConfig()), nil, discard(), reg, func() time.Time { return time.UnixMilli(t0) })
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(9)
	f.add(150, t0, genuine, genuineMix)
	f.add(3, t0+20*minute, paywall, genuineMix)
	events := collect(f, t0+25*minute)
	e.Feed(events[:10])
	e.Feed(events[:10]) // duplicates
	e.Feed(events[10:])
	bad := []kafka.Message{{Value: []byte("not a protobuf \xff\xff")}}
	e.Handle(context.Background(), bad)
	s := e.det.Stats()
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"causality_detect_events_total", []string{"result", "scored"}, float64(len(events))},
		{"causality_detect_events_total", []string{"result", "duplicate"}, 10},
		{"causality_detect_events_total", []string{"result", "undecodable"}, 1},
		{"causality_detect_windows_closed_total", []string{"window", "1m0s"}, float64(s.WindowsClosed[0])},
		{"causality_detect_anomalies_total", []string{"kind", "funnel_bypass"}, float64(s.Anomalies[detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS])},
	}
	for _, tt := range tests {
		if got := metricValue(t, reg, tt.name, tt.labels...); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	if s.Anomalies[detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS] < 3 {
		t.Errorf("%d funnel bypasses found, want one per paywall device at least", s.Anomalies[detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS])
	}
	if s.WindowsClosed[0] < 40 {
		t.Errorf("only %d windows closed", s.WindowsClosed[0])
	}
	if n := histogramCount(t, reg, "causality_detect_scoring_seconds"); n != 4 {
		t.Errorf("scoring latency observed %d times, want once per batch (4)", n)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}
