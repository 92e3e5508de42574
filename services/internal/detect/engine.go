package detect

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
)

// EngineConfig configures the service around the Detector.
type EngineConfig struct {
	Checkpoint         string        // state file; "" = none
	CheckpointInterval time.Duration // how often it is written (and on shutdown)
	RingSize           int           // anomalies kept for Subscribe resumes and outputs
	IdleAfter          time.Duration // no events for this long (wall clock): the watermark follows the wall clock
}

// RegisterFlags registers the -detect.* flags of the service.
func (c *EngineConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Checkpoint, "detect.checkpoint", ".causality/detector.ckpt", "file the detector's state (baselines, devices, retained anomalies, output positions) is saved to and restored from; empty = none")
	fs.DurationVar(&c.CheckpointInterval, "detect.checkpoint-interval", time.Minute, "how often the state is saved (also on shutdown)")
	fs.IntVar(&c.RingSize, "detect.ring-size", 100_000, "anomalies kept in memory: how far back Subscribe can resume and outputs can lag")
	fs.DurationVar(&c.IdleAfter, "detect.idle-after", time.Minute, "with no events for this long, windows are closed as if event time followed the wall clock (0 = never)")
}

// Validate reports the first invalid setting.
func (c *EngineConfig) Validate() error {
	switch {
	case c.Checkpoint != "" && c.CheckpointInterval < time.Second:
		return errors.New("-detect.checkpoint-interval must be at least 1s")
	case c.RingSize < 1:
		return errors.New("-detect.ring-size must be at least 1")
	case c.IdleAfter < 0:
		return errors.New("-detect.idle-after must not be negative")
	}
	return nil
}

// Output is one destination of anomalies (a Kafka topic, ClickHouse,
// webhooks). It is fed from the ring in offset order, from a cursor kept in
// the checkpoint, so every anomaly is written at least once; Write is
// retried with backoff until it succeeds.
type Output struct {
	Name  string
	Write func(ctx context.Context, as []*detectv1.Anomaly) error
	// Save and Restore, when set, keep the output's own state in the
	// checkpoint (e.g. the webhook ids already delivered).
	Save    func() []byte
	Restore func([]byte) error
}

type output struct {
	Output
	cursor atomic.Uint64
}

// Engine runs a Detector as a service: events in (Handle, Feed), anomalies
// out to a Ring and to outputs, checkpoints, metrics.
type Engine struct {
	cfg     EngineConfig
	det     *Detector
	ring    *Ring
	outputs []*output
	logger  *slog.Logger
	now     func() time.Time
	m       engineMetrics

	mu          sync.Mutex // guards det, last, lastArrival
	last        Stats
	lastArrival time.Time
}

type engineMetrics struct {
	events, late, windows, anomalies *prometheus.CounterVec
	scoring                          prometheus.Histogram
	watermarkLag                     prometheus.Gauge
	devices, cohorts, bytes          prometheus.Gauge
	refused, expired                 prometheus.Counter
	ckptSeconds                      prometheus.Histogram
	ckptBytes                        prometheus.Gauge
	ckptErrors                       prometheus.Counter
	outWritten, outErrors, outLost   *prometheus.CounterVec
	outLag                           *prometheus.GaugeVec
}

func newEngineMetrics(reg prometheus.Registerer) (engineMetrics, error) {
	m := engineMetrics{
		events:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_detect_events_total", Help: "Events taken by the detector, by result: scored, duplicate, replay, invalid, undecodable."}, []string{"result"}),
		late:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_detect_late_events_total", Help: "Events whose window had closed, dropped from that window size."}, []string{"window"}),
		windows:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_detect_windows_closed_total", Help: "Cohort windows closed and scored, by window size."}, []string{"window"}),
		anomalies:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_detect_anomalies_total", Help: "Anomalies found, by kind."}, []string{"kind"}),
		scoring:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "causality_detect_scoring_seconds", Help: "Time to score one batch of events (windows closed by it included).", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		watermarkLag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "causality_detect_watermark_lag_seconds", Help: "Wall clock minus the watermark: how far behind real time windows close."}),
		devices:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "causality_detect_state_devices", Help: "Devices with state."}),
		cohorts:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "causality_detect_state_cohorts", Help: "Cohorts with baselines."}),
		bytes:        prometheus.NewGauge(prometheus.GaugeOpts{Name: "causality_detect_state_bytes", Help: "Estimated bytes of detector state (devices, cohorts, dedup set, sketches)."}),
		refused:      prometheus.NewCounter(prometheus.CounterOpts{Name: "causality_detect_devices_refused_total", Help: "New devices not tracked because -detect.max-devices was reached."}),
		expired:      prometheus.NewCounter(prometheus.CounterOpts{Name: "causality_detect_devices_expired_total", Help: "Device states dropped after -detect.device-ttl without events."}),
		ckptSeconds:  prometheus.NewHistogram(prometheus.HistogramOpts{Name: "causality_detect_checkpoint_seconds", Help: "Time to write a checkpoint.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		ckptBytes:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "causality_detect_checkpoint_bytes", Help: "Size of the last checkpoint."}),
		ckptErrors:   prometheus.NewCounter(prometheus.CounterOpts{Name: "causality_detect_checkpoint_errors_total", Help: "Checkpoints that failed."}),
		outWritten:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_detect_output_anomalies_total", Help: "Anomalies written, by output."}, []string{"output"}),
		outErrors:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_detect_output_errors_total", Help: "Failed writes (retried), by output."}, []string{"output"}),
		outLost:      prometheus.NewCounterVec(prometheus.CounterOpts{Name: "causality_detect_output_lost_total", Help: "Anomalies that left the ring before an output wrote them."}, []string{"output"}),
		outLag:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "causality_detect_output_lag", Help: "Anomalies found but not yet written, by output."}, []string{"output"}),
	}
	for _, c := range []prometheus.Collector{m.events, m.late, m.windows, m.anomalies, m.scoring, m.watermarkLag, m.devices, m.cohorts, m.bytes,
		m.refused, m.expired, m.ckptSeconds, m.ckptBytes, m.ckptErrors, m.outWritten, m.outErrors, m.outLost, m.outLag} {
		if err := reg.Register(c); err != nil {
			return m, fmt.Errorf("register detector metrics: %w", err)
		}
	}
	return m, nil
}

// NewEngine wraps det and restores the checkpoint when there is one. now
// is the wall clock (detected_at_ms, idle windows, offsets after a restart).
func NewEngine(cfg EngineConfig, det *Detector, outputs []Output, logger *slog.Logger, reg prometheus.Registerer, now func() time.Time) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newEngineMetrics(reg)
	if err != nil {
		return nil, err
	}
	if cfg.Checkpoint != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.Checkpoint), 0o700); err != nil {
			return nil, fmt.Errorf("-detect.checkpoint: %w", err)
		}
	}
	// Offsets start at the wall clock in µs-like units, so that they keep
	// increasing across restarts even when the last checkpoint is older
	// than the last anomalies served.
	e := &Engine{cfg: cfg, det: det, ring: NewRing(cfg.RingSize, uint64(now().UnixMilli())*1000), logger: logger, now: now, m: m, lastArrival: now()}
	names := map[string]bool{}
	for _, o := range outputs {
		if o.Name == "" || names[o.Name] || o.Write == nil {
			return nil, fmt.Errorf("detector output %q: needs a unique name and a Write", o.Name)
		}
		names[o.Name] = true
		e.outputs = append(e.outputs, &output{Output: o})
	}
	e.last = det.Stats()
	cursors, err := e.restore()
	if err != nil {
		return nil, err
	}
	for _, o := range e.outputs {
		c, ok := cursors[o.Name]
		if !ok {
			c = e.ring.Next() - 1 // a new output starts with what is found from now on
		}
		o.cursor.Store(c)
	}
	return e, nil
}

func (e *Engine) restore() (map[string]uint64, error) {
	if e.cfg.Checkpoint == "" {
		return nil, nil
	}
	b, err := os.ReadFile(e.cfg.Checkpoint)
	if errors.Is(err, fs.ErrNotExist) {
		e.logger.Info("no checkpoint yet: starting without baselines", "file", e.cfg.Checkpoint)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	cp, err := decodeCheckpoint(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w (move it away to start without baselines)", e.cfg.Checkpoint, err)
	}
	if err := e.det.Restore(cp.State); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w (move it away to start without baselines)", e.cfg.Checkpoint, err)
	}
	as, err := unmarshalAnomalies(cp.Anomalies)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", e.cfg.Checkpoint, err)
	}
	e.ring.restore(as, cp.Next, cp.Evicted)
	for _, o := range e.outputs {
		if o.Restore != nil && cp.Outputs[o.Name] != nil {
			if err := o.Restore(cp.Outputs[o.Name]); err != nil {
				return nil, fmt.Errorf("checkpoint %s: output %s: %w", e.cfg.Checkpoint, o.Name, err)
			}
		}
	}
	devices, cohorts, _ := e.det.Size()
	e.logger.Info("checkpoint restored", "file", e.cfg.Checkpoint, "saved_at", time.UnixMilli(cp.SavedAtMs).UTC(), "devices", devices, "cohorts", cohorts, "anomalies", len(as))
	return cp.Cursors, nil
}

// Ring is where the anomalies go.
func (e *Engine) Ring() *Ring { return e.ring }

// Handle is the kafka.Handler of the events topic: it decodes and scores a
// batch. Undecodable messages are counted and skipped (the sink dead-letters
// them); it never fails, so offsets are committed after each batch.
func (e *Engine) Handle(_ context.Context, msgs []kafka.Message) error {
	e.Feed(e.Decode(msgs))
	return nil
}

// Decode returns the events of msgs, counting those that do not decode
// (they are skipped). Another consumer of the same batch (the rules) can
// share its result.
func (e *Engine) Decode(msgs []kafka.Message) []*eventv1.Event {
	events := make([]*eventv1.Event, 0, len(msgs))
	for _, m := range msgs {
		ev := &eventv1.Event{}
		if err := proto.Unmarshal(m.Value, ev); err != nil {
			e.m.events.WithLabelValues("undecodable").Inc()
			continue
		}
		events = append(events, ev)
	}
	return events
}

// Feed scores events in order and returns the anomalies they revealed,
// which are also in the ring (with offsets and detected_at_ms). An
// evaluation harness can call it directly.
func (e *Engine) Feed(events []*eventv1.Event) []*detectv1.Anomaly {
	start := time.Now()
	e.mu.Lock()
	var found []*detectv1.Anomaly
	for _, ev := range events {
		found = append(found, e.det.Observe(ev)...)
	}
	if len(events) > 0 {
		e.lastArrival = e.now()
	}
	e.publish(found)
	e.mu.Unlock()
	e.m.scoring.Observe(time.Since(start).Seconds())
	return found
}

// publish appends to the ring and counts; e.mu is held, so the ring's order
// is the detector's.
func (e *Engine) publish(found []*detectv1.Anomaly) {
	e.ring.Append(e.now(), found...)
	for _, a := range found {
		e.logger.Info("anomaly", "kind", KindLabel(a.GetKind()), "app", a.GetAppId(), "cohort", CohortLabel(a.GetCohort()),
			"device", a.GetDeviceId(), "window_start", time.UnixMilli(a.GetWindowStartMs()).UTC(), "score", a.GetScore(),
			"threshold", a.GetThreshold(), "id", a.GetId(), "summary", a.GetSummary())
	}
	s := e.det.Stats()
	e.m.events.WithLabelValues("scored").Add(float64(s.Events - e.last.Events))
	e.m.events.WithLabelValues("duplicate").Add(float64(s.Duplicates - e.last.Duplicates))
	e.m.events.WithLabelValues("replay").Add(float64(s.Replays - e.last.Replays))
	e.m.events.WithLabelValues("invalid").Add(float64(s.Invalid - e.last.Invalid))
	for i, size := range e.det.Sizes() {
		w := (time.Duration(size) * time.Millisecond).String()
		e.m.late.WithLabelValues(w).Add(float64(s.Late[i] - e.last.Late[i]))
		e.m.windows.WithLabelValues(w).Add(float64(s.WindowsClosed[i] - e.last.WindowsClosed[i]))
	}
	for k, n := range s.Anomalies {
		e.m.anomalies.WithLabelValues(KindLabel(k)).Add(float64(n - e.last.Anomalies[k]))
	}
	e.m.refused.Add(float64(s.DevicesRefused - e.last.DevicesRefused))
	e.m.expired.Add(float64(s.DevicesExpired - e.last.DevicesExpired))
	e.last = s
}

// KindLabel is the kind as a metric label or column value, e.g. "mix_shift".
func KindLabel(k detectv1.AnomalyKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "ANOMALY_KIND_"))
}

// Baseline answers GetBaseline.
func (e *Engine) Baseline(c *detectv1.Cohort, windowMs int64) (*detectv1.Baseline, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.det.Baseline(c, windowMs)
}

// Run feeds the outputs, closes windows when no events arrive, writes
// checkpoints and state metrics, until ctx ends; then it lets the outputs
// drain for a few seconds. The caller writes the last checkpoint with
// Checkpoint once the consumer has stopped.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, o := range e.outputs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.pump(ctx, o)
		}()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastCkpt, lastSize := e.now(), time.Time{}
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-tick.C:
		}
		now := e.now()
		e.idle(now)
		if now.Sub(lastSize) >= 10*time.Second {
			lastSize = now
			e.mu.Lock()
			devices, cohorts, bytes := e.det.Size()
			e.mu.Unlock()
			e.m.devices.Set(float64(devices))
			e.m.cohorts.Set(float64(cohorts))
			e.m.bytes.Set(float64(bytes))
		}
		if e.cfg.Checkpoint != "" && now.Sub(lastCkpt) >= e.cfg.CheckpointInterval {
			lastCkpt = now
			if err := e.Checkpoint(); err != nil {
				e.logger.Error("checkpoint", "file", e.cfg.Checkpoint, "err", err)
			}
		}
	}
}

// idle closes windows when no event arrived for IdleAfter: event time is
// taken to have moved on with the wall clock.
func (e *Engine) idle(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	wm := e.det.Watermark()
	if wm != int64(-1<<63) {
		e.m.watermarkLag.Set(float64(now.UnixMilli()-wm) / 1000)
	}
	quiet := now.Sub(e.lastArrival)
	if e.cfg.IdleAfter <= 0 || quiet < e.cfg.IdleAfter || wm == int64(-1<<63) {
		return
	}
	e.publish(e.det.AdvanceTo(e.det.MaxEventTime() - e.det.cfg.Lateness.Milliseconds() + quiet.Milliseconds()))
}

// MaxEventTime is the largest event time seen, Unix ms.
func (d *Detector) MaxEventTime() int64 { return d.st.MaxTime }

// pump writes the ring to one output from its cursor. After ctx ends it
// keeps writing what is already there for up to 5 seconds.
func (e *Engine) pump(ctx context.Context, o *output) {
	backoff := 100 * time.Millisecond
	var drain context.Context
	for {
		cursor := o.cursor.Load()
		items, gap, wait := e.ring.Read(cursor, 500)
		if gap {
			oldest := e.ring.Oldest()
			e.m.outLost.WithLabelValues(o.Name).Add(float64(oldest - 1 - cursor))
			e.logger.Error("anomalies left the ring before the output wrote them", "output", o.Name, "lost_after", cursor, "oldest", oldest)
			o.cursor.Store(oldest - 1)
			continue
		}
		e.m.outLag.WithLabelValues(o.Name).Set(float64(e.ring.Next() - 1 - cursor))
		if len(items) == 0 {
			if ctx.Err() != nil {
				return
			}
			select {
			case <-wait:
			case <-ctx.Done():
			}
			continue
		}
		wctx := ctx
		if ctx.Err() != nil {
			if drain == nil {
				var cancel context.CancelFunc
				drain, cancel = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
			}
			if drain.Err() != nil {
				return
			}
			wctx = drain
		}
		if err := o.Write(wctx, items); err != nil {
			e.m.outErrors.WithLabelValues(o.Name).Inc()
			e.logger.Warn("detector output failed; retrying", "output", o.Name, "anomalies", len(items), "backoff", backoff, "err", err)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-wctx.Done():
				t.Stop()
				if ctx.Err() != nil && (drain == nil || drain.Err() != nil) {
					return
				}
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		e.m.outWritten.WithLabelValues(o.Name).Add(float64(len(items)))
		o.cursor.Store(items[len(items)-1].GetOffset())
	}
}

// Checkpoint writes the state file (nothing when no file is configured).
// Events are held back while the state is encoded.
func (e *Engine) Checkpoint() error {
	if e.cfg.Checkpoint == "" {
		return nil
	}
	start := time.Now()
	var buf bytes.Buffer
	e.mu.Lock()
	items, next, evicted := e.ring.snapshot()
	cp := &checkpoint{SavedAtMs: e.now().UnixMilli(), State: e.det.State(), Next: next, Evicted: evicted, Cursors: map[string]uint64{}, Outputs: map[string][]byte{}}
	for _, o := range e.outputs {
		cp.Cursors[o.Name] = o.cursor.Load()
		if o.Save != nil {
			cp.Outputs[o.Name] = o.Save()
		}
	}
	var err error
	if cp.Anomalies, err = marshalAnomalies(items); err == nil {
		err = encodeCheckpoint(&buf, cp)
	}
	e.mu.Unlock()
	if err == nil {
		err = writeFileAtomic(e.cfg.Checkpoint, buf.Bytes())
	}
	if err != nil {
		e.m.ckptErrors.Inc()
		return fmt.Errorf("checkpoint %s: %w", e.cfg.Checkpoint, err)
	}
	e.m.ckptSeconds.Observe(time.Since(start).Seconds())
	e.m.ckptBytes.Set(float64(buf.Len()))
	return nil
}
