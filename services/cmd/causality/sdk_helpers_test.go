package main

// Helpers of the SDK integration tests (sdk_*_test.go): an in-process
// collector (ingest.Server + the real Kafka producer) whose Publisher can be
// slowed or paused, and readers of what reached Kafka.

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
)

// sdkGuard bounds every wait of the SDK tests: a hang detector, not a
// performance threshold.
const sdkGuard = 60 * time.Second

const sdkApp = "sdk-test-app"

// sdkCollector is a collector served in-process on loopback.
type sdkCollector struct {
	tcp, grpc, http string
	key             string
	reg             *prometheus.Registry
	published       *atomic.Int64 // events Kafka acknowledged, across restarts
	gate            *sdkGate
	delay           *atomic.Int64 // nanoseconds slept before each Publish
	stop            func()
}

// sdkGate pauses publishing: while closed, Publish waits (until its timeout).
type sdkGate struct {
	mu   sync.Mutex
	open chan struct{}
}

func newSDKGate() *sdkGate {
	g := &sdkGate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *sdkGate) pause() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

func (g *sdkGate) resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *sdkGate) wait(ctx context.Context) error {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// sdkIngestConfig is the collector's default configuration on loopback.
func sdkIngestConfig(t testing.TB, tcpAddr string) ingest.Config {
	t.Helper()
	var cfg ingest.Config
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg.TCPAddr, cfg.GRPCAddr, cfg.HTTPAddr = tcpAddr, "127.0.0.1:0", "127.0.0.1:0"
	cfg.DrainTimeout = 2 * time.Second
	return cfg
}

// startSDKCollector serves a collector writing to kcfg. With prev, it reuses
// prev's TCP address, key and counters (a restart).
func startSDKCollector(t testing.TB, kcfg kafka.Config, icfg ingest.Config, prev *sdkCollector) *sdkCollector {
	t.Helper()
	c := &sdkCollector{key: ingest.NewKey(), reg: prometheus.NewRegistry(), published: &atomic.Int64{}, gate: newSDKGate(), delay: &atomic.Int64{}}
	if prev != nil {
		c.key, c.published, c.gate, c.delay = prev.key, prev.published, prev.gate, prev.delay
		icfg.TCPAddr = prev.tcp
	}
	keys, err := ingest.NewKeyring([]ingest.KeyEntry{{AppID: sdkApp, SHA256: ingest.HashKey(c.key)}})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	producer, err := kafka.NewProducer(kcfg, logger, c.reg)
	if err != nil {
		t.Fatal(err)
	}
	pub := ingest.PublishFunc(func(ctx context.Context, events []*eventv1.Event) error {
		if d := time.Duration(c.delay.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if err := c.gate.wait(ctx); err != nil {
			return err
		}
		if err := producer.Publish(ctx, events); err != nil {
			return err
		}
		c.published.Add(int64(len(events)))
		return nil
	})
	srv, err := ingest.NewServer(icfg, keys, pub, producer, logger, c.reg)
	if err != nil {
		t.Fatal(err)
	}
	// A restart binds the same port again; another test may hold it briefly.
	for i := 0; ; i++ {
		if err = srv.Listen(); err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		producer.Close()
		t.Fatalf("collector listen: %v", err)
	}
	c.tcp, c.grpc, c.http = srv.Addrs()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("collector Serve: %v", err)
				}
			case <-time.After(sdkGuard):
				t.Error("collector did not stop")
			}
			producer.Close()
		})
	}
	t.Cleanup(c.stop)
	return c
}

// counter returns the value of a counter of the collector's registry.
func (c *sdkCollector) counter(t testing.TB, name string) float64 {
	t.Helper()
	mfs, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// sdkDelivered reads exactly n messages of the events topic (n from the
// collector's publish count) and counts them per event id.
func sdkDelivered(t testing.TB, kcfg kafka.Config, n int) (map[string]int, []*eventv1.Event) {
	t.Helper()
	msgs := kafkatest.ReadN(t, kcfg, kcfg.Topic, n, sdkGuard)
	if len(msgs) != n {
		t.Fatalf("read %d messages from %s, the collector published %d", len(msgs), kcfg.Topic, n)
	}
	count := map[string]int{}
	var events []*eventv1.Event
	for _, m := range msgs {
		e := &eventv1.Event{}
		if err := proto.Unmarshal(m.Value, e); err != nil {
			t.Fatalf("decode message at offset %d: %v", m.Offset, err)
		}
		if count[e.GetEventId()] == 0 {
			events = append(events, e)
		}
		count[e.GetEventId()]++
	}
	return count, events
}

// sdkDuplicates is how many messages repeat an id.
func sdkDuplicates(count map[string]int) int {
	n := 0
	for _, c := range count {
		n += c - 1
	}
	return n
}

// sdkScreen is a small event with an id chosen by the caller.
func sdkScreen(id string, i int) *eventv1.Event {
	return &eventv1.Event{EventId: id, Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: fmt.Sprintf("screen-%d", i%20)}}}
}

// sdkReadIDs reads the events topic until every id of want is there (or
// the guard ends) and counts the messages per event id.
func sdkReadIDs(t testing.TB, kcfg kafka.Config, want []string) map[string]int {
	t.Helper()
	n := len(want)
	for {
		msgs := kafkatest.ReadN(t, kcfg, kcfg.Topic, n, sdkGuard)
		count := map[string]int{}
		for _, m := range msgs {
			e := &eventv1.Event{}
			if err := proto.Unmarshal(m.Value, e); err != nil {
				t.Fatalf("decode message at offset %d: %v", m.Offset, err)
			}
			count[e.GetEventId()]++
		}
		missing := 0
		for _, id := range want {
			if count[id] == 0 {
				missing++
			}
		}
		if missing == 0 || len(msgs) < n { // all there, or the topic has no more
			return count
		}
		n += missing // duplicates took their place: read further
	}
}

// sdkBinary returns $CAUSALITY_BIN (make test builds it) or builds the
// binary into a temporary dir.
func sdkBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("CAUSALITY_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "causality")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startSDKChildCollector runs `causality collector` as a child process with
// its TCP door on tcpAddr and waits until it accepts connections.
func startSDKChildCollector(t testing.TB, bin string, kcfg kafka.Config, keysFile, tcpAddr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "collector",
		"-ingest.tcp-addr="+tcpAddr, "-ingest.grpc-addr=127.0.0.1:0", "-ingest.http-addr=127.0.0.1:0", "-admin.addr=127.0.0.1:0",
		"-ingest.keys-file="+keysFile, "-kafka.brokers="+kcfg.Brokers, "-kafka.topic="+kcfg.Topic, "-kafka.dlq-topic="+kcfg.DLQTopic,
		fmt.Sprintf("-kafka.partitions=%d", kcfg.Partitions))
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("collector %s logs:\n%s", tcpAddr, logs.String())
		}
	})
	deadline := time.Now().Add(sdkGuard)
	for {
		if conn, err := net.DialTimeout("tcp", tcpAddr, time.Second); err == nil {
			conn.Close()
			return cmd
		}
		select {
		case <-exited:
			t.Fatalf("collector exited: %s", logs.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("collector did not listen")
		}
	}
}

// sdkKeysFile writes a keys file binding key to sdkApp.
func sdkKeysFile(t testing.TB, key string) string {
	t.Helper()
	b, err := json.Marshal(ingest.KeysFile{Keys: []ingest.KeyEntry{{AppID: sdkApp, SHA256: ingest.HashKey(key)}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "keys.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sdkFreeAddr returns a loopback address nobody listens on now.
func sdkFreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
