package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/kafkatest"
	"causality.dev/services/internal/sim"
	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/warehousetest"
)

// TestPipelineSimToClickHouse drives the simulator through the real
// collector wiring into the real Kafka broker, and the real sink into the
// real ClickHouse: every acknowledged event is stored, exactly once.
func TestPipelineSimToClickHouse(t *testing.T) {
	wcfg := warehousetest.Config(t) // skips without a ClickHouse
	kcfg := kafkatest.Config(t)
	const app = "pipeline-e2e"
	key := ingest.NewKey()
	keys, err := ingest.NewKeyring([]ingest.KeyEntry{{AppID: app, SHA256: ingest.HashKey(key)}})
	if err != nil {
		t.Fatal(err)
	}

	var cc collectorConfig
	cc.register(flag.NewFlagSet("collector", flag.ContinueOnError))
	cc.Kafka = kcfg
	tcpAddr := pipeFreeAddr(t)
	cc.Ingest.TCPAddr, cc.Ingest.GRPCAddr, cc.Ingest.HTTPAddr = tcpAddr, "127.0.0.1:0", "127.0.0.1:0"
	var sc sinkConfig
	sc.register(flag.NewFlagSet("sink", flag.ContinueOnError))
	sc.Kafka, sc.Warehouse = kcfg, wcfg
	sc.Group = "e2e-" + strings.ReplaceAll(kcfg.Topic, ".", "-")
	sc.BatchAge = 200 * time.Millisecond

	logger := pipeLogger(t)
	reg := admin.NewRegistry()
	adm := admin.New(admin.Config{Addr: "127.0.0.1:0"}, reg)
	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveCollector(gctx, cc, keys, logger, reg, adm) })
	g.Go(func() error { return serveSink(gctx, sc, logger, reg, adm) })
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := g.Wait(); err != nil {
				t.Errorf("collector or sink: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	pipeWaitListening(t, tcpAddr)

	var scfg sim.Config
	scfg.RegisterFlags(flag.NewFlagSet("sim", flag.ContinueOnError))
	scfg.Addr, scfg.Key, scfg.KeepIDs = tcpAddr, key, true
	scfg.Devices, scfg.Events, scfg.Rate, scfg.Duration, scfg.Connections = 500, 20000, 0, 0, 4
	sctx, scancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer scancel()
	sum, err := sim.Run(sctx, scfg, logger, nil)
	if err != nil {
		t.Fatalf("sim: %v", err)
	}
	if sum.Acked() != scfg.Events || len(sum.AckedIDs) != int(scfg.Events) || sum.RejectedTotal() != 0 {
		t.Fatalf("sim: generated %d, acknowledged %d (%d ids), rejected %v; want all %d acknowledged",
			sum.Generated, sum.Acked(), len(sum.AckedIDs), sum.Rejected, scfg.Events)
	}
	t.Logf("sim → collector → Kafka: %d events in %s (%.0f/s), ack p50 %s p99 %s", sum.Acked(), sum.Elapsed.Round(time.Millisecond), sum.Rate(), sum.AckP50, sum.AckP99)

	ch := pipeWaitOpen(t, wcfg)
	table := "`" + wcfg.Database + "`.events"
	start := time.Now()
	deadline := time.Now().Add(90 * time.Second)
	for {
		n := warehousetest.Int(t, ch, "SELECT uniqExact(event_id) FROM "+table)
		if n >= scfg.Events || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("Kafka → sink → ClickHouse caught up %s after the last ack", time.Since(start).Round(time.Millisecond))

	got := warehousetest.Query(t, ch, "SELECT event_id, count() FROM "+table+" FINAL GROUP BY event_id")
	stored := make(map[string]bool, len(got))
	for _, r := range got {
		if r[1] != "1" {
			t.Errorf("event %s is stored %s times after FINAL", r[0], r[1])
		}
		stored[r[0]] = true
	}
	missing := 0
	for _, id := range sum.AckedIDs {
		if !stored[id] {
			missing++
		}
		delete(stored, id)
	}
	if missing > 0 || len(stored) > 0 {
		t.Fatalf("ClickHouse holds %d distinct events: %d acknowledged events missing, %d stored but never acknowledged",
			len(got), missing, len(stored))
	}
	if n := warehousetest.Int(t, ch, "SELECT count() FROM "+table+" WHERE app_id != '"+app+"' OR device_id = '' OR event_type = ''"); n != 0 {
		t.Errorf("%d rows without their app, device or event type", n)
	}
	types := warehousetest.Int(t, ch, "SELECT uniqExact(event_type) FROM "+table)
	if types < 25 {
		t.Errorf("only %d event types stored from the simulated flows", types)
	}
	stop()
}

// pipeFreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago (for servers whose bound address the test cannot ask for).
func pipeFreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// pipeWaitListening waits until addr accepts TCP connections.
func pipeWaitListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never listened: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pipeWaitOpen opens cfg's database once the sink has created it.
func pipeWaitOpen(t testing.TB, cfg warehouse.Config) *warehouse.Client {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := warehouse.Open(ctx, cfg)
		cancel()
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if !errors.Is(err, warehouse.ErrNoDatabase) || time.Now().After(deadline) {
			t.Fatalf("open %s: %v", cfg.Database, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pipeLogger logs at warn and above to the test log, or everything when
// CAUSALITY_TEST_VERBOSE is set.
func pipeLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("CAUSALITY_TEST_VERBOSE") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(pipeLogWriter{t}, &slog.HandlerOptions{Level: level}))
}

type pipeLogWriter struct{ t testing.TB }

func (w pipeLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
