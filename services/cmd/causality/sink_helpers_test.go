package main

// Helpers of the sink's end-to-end tests: a sink run in-process through
// serveSink (with its admin port) or as a child process of the built
// binary, events produced with the real kafka.Producer, and checks of what
// landed in ClickHouse.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/warehousetest"
)

// sinkWait bounds every wait of the sink tests (the consumer's retry
// backoff is at most 10 s, a group join a few seconds).
const sinkWait = 60 * time.Second

func testSinkConfig(k kafka.Config, w warehouse.Config) sinkConfig {
	return sinkConfig{
		Kafka: k, Warehouse: w, Admin: admin.Config{Addr: "127.0.0.1:0"},
		Group:     "sink-" + uuid.NewString()[:8],
		BatchSize: 500, BatchAge: 100 * time.Millisecond, CacheSize: 100000, LagInterval: 200 * time.Millisecond,
	}
}

// inProcessSink is serveSink running in the test process.
type inProcessSink struct {
	adm    *admin.Server
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startSink(t testing.TB, cfg sinkConfig) *inProcessSink {
	t.Helper()
	reg := prometheus.NewRegistry()
	adm := admin.New(cfg.Admin, reg)
	if err := adm.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &inProcessSink{adm: adm, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { _ = adm.Serve(ctx) }()
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	go func() { s.done <- serveSink(ctx, cfg, logger, reg, adm) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop cancels the sink and waits for serveSink to return.
func (s *inProcessSink) stop(t testing.TB) {
	t.Helper()
	s.once.Do(func() {
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("serveSink: %v", err)
			}
		case <-time.After(sinkWait):
			t.Error("serveSink did not return after cancel")
		}
	})
}

// ready returns the status code and body of /readyz.
func (s *inProcessSink) ready(t testing.TB) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + s.adm.Addr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric sums the samples of name whose labels include the given pairs.
func (s *inProcessSink) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// sinkEvents makes n events of one app spread over 20 devices, every field
// of the envelope and device context set.
func sinkEvents(n int) []*eventv1.Event {
	out := make([]*eventv1.Event, n)
	now := time.Now().UnixMilli()
	for i := range out {
		ts := now - int64(n-i)*10
		out[i] = &eventv1.Event{
			EventId: uuid.Must(uuid.NewV7()).String(), AppId: "sinkapp", DeviceId: fmt.Sprintf("dev-%d", i%20),
			InstallId: fmt.Sprintf("inst-%d", i%20), SessionId: fmt.Sprintf("sess-%d", i%20), UserId: "u",
			TimestampMs: ts, SentAtMs: ts + 500, ReceivedAtMs: ts + 500 + 3000, Sequence: uint64(i/20 + 1),
			DeviceContext: &eventv1.DeviceContext{
				Platform: eventv1.Platform_PLATFORM_IOS, OsVersion: "17.4", AppVersion: "3.1.0", BuildNumber: "310",
				DeviceModel: "iPhone15,2", Manufacturer: "Apple", ScreenWidth: 1179, ScreenHeight: 2556,
				Locale: "en-US", Timezone: "America/New_York", NetworkType: eventv1.NetworkType_NETWORK_TYPE_WIFI,
				Carrier: "AT&T", IsEmulator: i%10 == 0, SdkVersion: "0.2.0",
			},
			Properties: map[string]string{"plan": "free", "n": fmt.Sprint(i)},
			Payload:    &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: fmt.Sprintf("screen-%d", i%5), PreviousScreen: "Home"}},
		}
	}
	return out
}

// produce publishes events in batches of 200 with the real producer.
func produce(t testing.TB, cfg kafka.Config, events []*eventv1.Event) {
	t.Helper()
	p, err := kafka.NewProducer(cfg, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), sinkWait)
	defer cancel()
	for i := 0; i < len(events); i += 200 {
		if err := p.Publish(ctx, events[i:min(i+200, len(events))]); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
}

// eventually polls cond every 100 ms until it holds or sinkWait passes;
// cond returns whether it holds and what it saw.
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(sinkWait)
	for {
		ok, saw := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s (last: %s)", what, sinkWait, saw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// distinct counts the distinct event ids stored, or -1 when ClickHouse
// does not answer (it may be stopped, or the database not created yet).
func distinct(cfg warehouse.Config) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := warehouse.Open(ctx, cfg)
	if err != nil {
		return -1
	}
	defer c.Close()
	res, err := c.Query(ctx, "SELECT uniqExact(event_id) FROM events", 0)
	if err != nil || len(res.Rows) != 1 {
		return -1
	}
	var n int64
	fmt.Sscan(res.Rows[0][0], &n)
	return n
}

// checkExactlyOnce fails unless the stored events are exactly want, each
// shown once by FINAL and by GROUP BY event_id.
func checkExactlyOnce(t testing.TB, cfg warehouse.Config, want []*eventv1.Event) {
	t.Helper()
	c := warehousetest.Open(t, cfg)
	if n := warehousetest.Int(t, c, "SELECT count() FROM events FINAL"); n != int64(len(want)) {
		t.Errorf("events FINAL: %d rows, want %d", n, len(want))
	}
	stored := map[string]bool{}
	for _, r := range warehousetest.Query(t, c, "SELECT event_id, count() FROM events FINAL GROUP BY event_id") {
		if r[1] != "1" {
			t.Errorf("event %s shown %s times by FINAL", r[0], r[1])
		}
		stored[r[0]] = true
	}
	missing := 0
	for _, e := range want {
		if !stored[e.EventId] {
			missing++
		}
		delete(stored, e.EventId)
	}
	if missing > 0 || len(stored) > 0 {
		t.Errorf("%d events missing, %d unexpected ids stored", missing, len(stored))
	}
}

// freePort returns a TCP port nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var (
	sinkBinOnce sync.Once
	sinkBin     string
	sinkBinErr  error
)

// sinkBinary is $CAUSALITY_BIN (make test builds bin/causality) or a
// binary built once per test run.
func sinkBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("CAUSALITY_BIN"); bin != "" {
		return bin
	}
	sinkBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "causality-sink-test-")
		if err != nil {
			sinkBinErr = err
			return
		}
		sinkBin = filepath.Join(dir, "causality")
		if out, err := exec.Command("go", "build", "-o", sinkBin, ".").CombinedOutput(); err != nil {
			sinkBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if sinkBinErr != nil {
		t.Fatal(sinkBinErr)
	}
	return sinkBin
}

// sinkArgs are the flags of `causality sink` for cfg.
func sinkArgs(cfg sinkConfig) []string {
	return []string{
		"-kafka.brokers=" + cfg.Kafka.Brokers, "-kafka.topic=" + cfg.Kafka.Topic, "-kafka.dlq-topic=" + cfg.Kafka.DLQTopic,
		"-kafka.partitions=3",
		"-clickhouse.addr=" + cfg.Warehouse.Addr, "-clickhouse.database=" + cfg.Warehouse.Database,
		"-admin.addr=127.0.0.1:0", "-sink.group=" + cfg.Group,
		fmt.Sprintf("-sink.batch-size=%d", cfg.BatchSize), "-sink.batch-age=" + cfg.BatchAge.String(),
		"-log.format=text", "-log.level=warn",
	}
}
