package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/eval"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/sim"
)

func init() {
	commands["eval"] = command{"run the labelled scenarios through collector, Kafka and detector; write the evaluation report and plot", runEval}
}

type evalFlags struct {
	Kafka     kafka.Config
	Log       logFlags
	Out, PNG  string
	Bench     string
	Command   string
	Scenarios string
	Devices   int
	Seed      uint64
	Duration  time.Duration
	ChangeAt  time.Duration
	Conns     int
}

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f evalFlags
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	f.Kafka.RegisterFlags(fs)
	f.Log.register(fs)
	setDefault(fs, "log.format", "text")
	def := eval.DefaultConfig(time.Now())
	fs.StringVar(&f.Out, "eval.out", "docs/evaluation.md", "report to write (Markdown)")
	fs.StringVar(&f.PNG, "eval.png", "docs/evaluation.png", "plot to write (PNG), referenced from the report by its base name")
	fs.StringVar(&f.Bench, "eval.bench", "", "file of `go test -bench` output to quote in the report (optional)")
	fs.StringVar(&f.Command, "eval.command", "make eval", "how the report says it was made")
	fs.StringVar(&f.Scenarios, "eval.scenarios", strings.Join(def.Scenarios, ","), "scenarios to run, comma-separated")
	fs.IntVar(&f.Devices, "eval.devices", def.Devices, "fleet size at the daily peak")
	fs.Uint64Var(&f.Seed, "eval.seed", def.Seed, "seed of the first scenario (scenario i uses seed+i; the baseline is calibrated with seed+1000)")
	fs.DurationVar(&f.Duration, "eval.duration", def.Duration, "simulated length of each scenario")
	fs.DurationVar(&f.ChangeAt, "eval.change-at", def.ChangeAt, "simulated time at which tampering or the legitimate change starts")
	fs.IntVar(&f.Conns, "eval.connections", 1, "TCP connections the simulator sends over (more reorder events across connections, which the compressed clock turns into lateness)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if f.Conns < 1 {
		return fmt.Errorf("-eval.connections: %d is below 1", f.Conns)
	}
	if err := f.Kafka.Validate(); err != nil {
		return err
	}
	logger, err := f.Log.logger(stderr)
	if err != nil {
		return err
	}
	var bench string
	if f.Bench != "" {
		b, err := os.ReadFile(f.Bench)
		if err != nil {
			return fmt.Errorf("-eval.bench: %w", err)
		}
		bench = benchLines(string(b))
	}
	// Simulated time runs yesterday from 07:00 UTC: in the past, as the
	// collector requires, and at the same hour of day on every run.
	cfg := eval.DefaultConfig(time.Now().UTC().AddDate(0, 0, -1))
	cfg.Scenarios = strings.Split(f.Scenarios, ",")
	cfg.Devices, cfg.Seed, cfg.Duration, cfg.ChangeAt = f.Devices, f.Seed, f.Duration, f.ChangeAt
	p := &pipeline{kafka: f.Kafka, logger: logger, conns: f.Conns, run: fmt.Sprintf("%d", time.Now().UnixNano())}
	rep, err := eval.Run(ctx, cfg, p, logger)
	if err != nil {
		return err
	}
	var md, img bytes.Buffer
	if err := eval.WritePlot(&img, rep); err != nil {
		return err
	}
	meta := eval.Meta{Command: f.Command, Machine: machine(), Bench: bench, PNG: filepath.Base(f.PNG), Pipeline: pipelineText}
	if err := eval.WriteMarkdown(&md, rep, meta); err != nil {
		return err
	}
	for path, b := range map[string][]byte{f.Out: md.Bytes(), f.PNG: img.Bytes()} {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	fmt.Fprintf(stdout, "wrote %s and %s in %s\n", f.Out, f.PNG, rep.Wall.Round(time.Second))
	return nil
}

const pipelineText = "each scenario gets its own app, ingest key and topics (1 partition, so that one consumer reads events in the order they were produced) and a fresh in-process collector (`ingest.Server`, raw TCP on 127.0.0.1) and detector (`serveDetector`, the code of `causality detector`, its own consumer group, default flags, no checkpoint) against the real Kafka broker. The simulator (`sim.Run` with the scenario as its source, over one TCP connection, see the limits below) sends the events as fast as the collector acknowledges them. **Time compression:** each event's `timestamp_ms` is on the simulated clock (plus the device's clock skew), while `sent_at_ms` is stamped with the wall clock (plus the same skew) when the batch leaves, so the detector's usual skew correction (`timestamp + received_at − sent_at`) maps every event back to simulated time: hours of behaviour take seconds, and windows, baselines and time to detect are all in simulated event time. A last event 11 simulated minutes after the end closes every window; the report waits until the detector has consumed every event and its Kafka output has written every anomaly, then reads `causality.anomalies.v1` (the scenario's copy) back. The fixed-threshold baseline is computed by the harness on the same events, in simulated time."

// benchLines keeps the benchmark result lines and the cpu line.
func benchLines(s string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "Benchmark") || strings.HasPrefix(l, "cpu:") || strings.HasPrefix(l, "goos:") || strings.HasPrefix(l, "goarch:") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// machine describes the host: CPU model and count, OS, Go version.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s/%s, %s", model, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// pipeline runs one scenario through a collector, Kafka and a detector made
// for it.
type pipeline struct {
	kafka  kafka.Config
	logger *slog.Logger
	run    string
	conns  int
	n      int
}

func (p *pipeline) Run(ctx context.Context, app string, end time.Time, next func() (sim.Timed, bool)) (*eval.Delivery, error) {
	p.n++
	prefix := fmt.Sprintf("causality.eval.%s.%d.", p.run, p.n)
	kcfg := p.kafka
	kcfg.Topic, kcfg.DLQTopic, kcfg.Partitions = prefix+"events", prefix+"dlq", 1
	anomaliesTopic := prefix + "anomalies"
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := kafka.DeleteTopics(dctx, kcfg, kcfg.Topic, kcfg.DLQTopic, anomaliesTopic); err != nil {
			p.logger.Warn("could not delete the scenario's topics", "prefix", prefix, "err", err)
		}
	}()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := kafka.EnsureTopics(tctx, kcfg, anomaliesTopic)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("kafka at %s: %w", kcfg.Brokers, err)
	}
	key := ingest.NewKey()
	keys, err := ingest.NewKeyring([]ingest.KeyEntry{{AppID: app, Name: "eval", SHA256: ingest.HashKey(key)}})
	if err != nil {
		return nil, err
	}
	logger := p.logger.With("app", app)
	quiet := discardInfo(logger)
	reg := prometheus.NewRegistry()

	// The collector.
	var icfg ingest.Config
	icfg.RegisterFlags(flag.NewFlagSet("", flag.ContinueOnError))
	icfg.TCPAddr, icfg.GRPCAddr, icfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	producer, err := kafka.NewProducer(kcfg, quiet, reg)
	if err != nil {
		return nil, err
	}
	defer producer.Close()
	srv, err := ingest.NewServer(icfg, keys, producer, producer, quiet, reg)
	if err != nil {
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	tcpAddr, _, _ := srv.Addrs()

	// The detector, as `causality detector` runs it.
	var dcfg detectorConfig
	dcfg.register(flag.NewFlagSet("", flag.ContinueOnError))
	dcfg.Kafka = kcfg
	dcfg.Server.Addr, dcfg.Server.Token = "127.0.0.1:0", ingest.NewKey()
	dcfg.Engine.Checkpoint = ""
	dcfg.Group, dcfg.AnomaliesTopic = prefix+"detector", anomaliesTopic
	if err := dcfg.validate(); err != nil {
		return nil, err
	}
	adm := admin.New(admin.Config{}, reg)

	sctx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(sctx)
	g.Go(func() error { return srv.Serve(gctx) })
	g.Go(func() error { return serveDetector(gctx, dcfg, quiet, reg, adm) })

	// The events, then one that closes every window.
	closer := &eventv1.Event{
		EventId: uuid.NewString(), AppId: app, DeviceId: "eval-window-closer", InstallId: "eval-window-closer",
		TimestampMs: end.Add(11 * time.Minute).UnixMilli(), Sequence: 1,
		DeviceContext: &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_WEB, AppVersion: "0.0.0", BuildNumber: "0", DeviceModel: "Chrome"},
		Payload:       &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{IsColdStart: true}},
	}
	done := false
	source := func() (sim.Timed, bool) {
		if t, ok := next(); ok {
			return t, true
		}
		if done {
			return sim.Timed{}, false
		}
		done = true
		return sim.Timed{Event: closer}, true
	}
	scfg := sim.Config{Addr: tcpAddr, Key: key, App: app, Devices: 1, Connections: p.conns, BatchSize: 500, Linger: 20 * time.Millisecond,
		FlushTimeout: 60 * time.Second, Source: source}
	dl := &eval.Delivery{}
	g.Go(func() error {
		defer stop()
		sum, err := sim.Run(gctx, scfg, quiet, nil)
		if err != nil {
			return fmt.Errorf("simulator: %w", err)
		}
		if sum.Unacked > 0 || sum.RejectedTotal() > 0 {
			return fmt.Errorf("simulator: %d events unacknowledged, rejected %v", sum.Unacked, sum.Rejected)
		}
		logger.Info("events sent", "acked", sum.Acked(), "retries", sum.Retries, "rate", fmt.Sprintf("%.0f/s", sum.Rate()))
		dl.Retries = sum.Retries
		n, err := waitDetector(gctx, reg, sum.Accepted)
		if err != nil {
			return err
		}
		dl.Late = int64(counterSum(reg, "causality_detect_late_events_total", "1m0s"))
		logger.Info("detector done", "anomalies", n, "late_events", dl.Late)
		rctx, cancel := context.WithTimeout(gctx, time.Minute)
		defer cancel()
		msgs, err := kafka.ReadAll(rctx, kcfg, anomaliesTopic, n)
		if err != nil {
			return fmt.Errorf("read %d anomalies back from %s: %w", n, anomaliesTopic, err)
		}
		for _, m := range msgs {
			a := &detectv1.Anomaly{}
			if err := proto.Unmarshal(m.Value, a); err != nil {
				return fmt.Errorf("anomaly from %s: %w", anomaliesTopic, err)
			}
			dl.Anomalies = append(dl.Anomalies, a)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return dl, nil
}

// waitDetector waits until the detector has taken want events and its
// Kafka output has written every anomaly found; it returns how many.
func waitDetector(ctx context.Context, reg prometheus.Gatherer, want int64) (int, error) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		events, found, written := counterSum(reg, "causality_detect_events_total", ""), counterSum(reg, "causality_detect_anomalies_total", ""),
			counterSum(reg, "causality_detect_output_anomalies_total", "kafka")
		if events >= float64(want) && written >= found {
			return int(found), nil
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("detector took %.0f of %d events, wrote %.0f of %.0f anomalies: %w", events, want, written, found, ctx.Err())
		case <-tick.C:
		}
	}
}

// counterSum adds up a counter's series (those with an output or window
// label of that value when given).
func counterSum(reg prometheus.Gatherer, name, label string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := label == ""
			for _, l := range m.GetLabel() {
				ok = ok || ((l.GetName() == "output" || l.GetName() == "window") && l.GetValue() == label)
			}
			if ok {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

// discardInfo keeps a logger's warnings and errors only: the detector logs
// every anomaly at info.
func discardInfo(l *slog.Logger) *slog.Logger {
	return slog.New(levelHandler{l.Handler()})
}

type levelHandler struct{ slog.Handler }

func (h levelHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= slog.LevelWarn && h.Handler.Enabled(ctx, lv)
}

func (h levelHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return levelHandler{h.Handler.WithAttrs(as)}
}

func (h levelHandler) WithGroup(name string) slog.Handler {
	return levelHandler{h.Handler.WithGroup(name)}
}
