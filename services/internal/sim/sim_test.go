package sim

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/ingest"
)

const testKey = "cik_test_key_for_the_simulator"

// recorder is a Publisher that keeps what it was given; fail, if set, makes
// a Publish call fail.
type recorder struct {
	mu     sync.Mutex
	calls  int
	events map[string]*eventv1.Event
	count  map[string]int
	fail   func(call int) bool
}

func newRecorder() *recorder {
	return &recorder{events: map[string]*eventv1.Event{}, count: map[string]int{}}
}

func (r *recorder) Publish(_ context.Context, evs []*eventv1.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil && r.fail(r.calls) {
		return errors.New("injected publish failure")
	}
	for _, e := range evs {
		r.events[e.GetEventId()] = e
		r.count[e.GetEventId()]++
	}
	return nil
}

// startCollector serves a real ingest.Server on 127.0.0.1 (tcpAddr "" picks
// a free port) for the app "shop" until the returned stop is called.
func startCollector(t *testing.T, tcpAddr string, pub ingest.Publisher, tweak func(*ingest.Config)) (addr string, stop func()) {
	t.Helper()
	var cfg ingest.Config
	cfg.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	if tcpAddr == "" {
		tcpAddr = "127.0.0.1:0"
	}
	cfg.TCPAddr, cfg.GRPCAddr, cfg.HTTPAddr = tcpAddr, "127.0.0.1:0", "127.0.0.1:0"
	cfg.DrainTimeout = 2 * time.Second
	if tweak != nil {
		tweak(&cfg)
	}
	keys, err := ingest.NewKeyring([]ingest.KeyEntry{{AppID: "shop", SHA256: ingest.HashKey(testKey)}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ingest.NewServer(cfg, keys, pub, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("collector: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	addr, _, _ = srv.Addrs()
	return addr, stop
}

func simConfig(addr string) Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("sim", flag.ContinueOnError))
	c.Addr, c.Key, c.KeepIDs = addr, testKey, true
	c.Duration, c.Rate = 0, 0
	c.FlushTimeout = 20 * time.Second
	return c
}

func run(t *testing.T, cfg Config) *Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sum, err := Run(ctx, cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return sum
}

// checkAcked asserts that every generated event was acknowledged and that
// the acknowledged ids are exactly the ones the publisher got.
func checkAcked(t *testing.T, sum *Summary, rec *recorder) {
	t.Helper()
	if sum.Acked() != sum.Generated || sum.RejectedTotal() != 0 || sum.Unacked != 0 {
		t.Fatalf("generated %d, acknowledged %d, rejected %v, unacknowledged %d", sum.Generated, sum.Acked(), sum.Rejected, sum.Unacked)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(sum.AckedIDs) != int(sum.Acked()) {
		t.Fatalf("%d acked ids for %d acknowledged events", len(sum.AckedIDs), sum.Acked())
	}
	acked := map[string]bool{}
	for _, id := range sum.AckedIDs {
		if acked[id] {
			t.Fatalf("event %s acknowledged twice", id)
		}
		acked[id] = true
		if rec.count[id] == 0 {
			t.Fatalf("event %s acknowledged but never published", id)
		}
	}
	for id := range rec.events {
		if !acked[id] {
			t.Fatalf("event %s published but not acknowledged", id)
		}
	}
}

func TestRunSendsValidEventsOfEveryType(t *testing.T) {
	rec := newRecorder()
	addr, _ := startCollector(t, "", rec, nil)
	cfg := simConfig(addr)
	cfg.Devices, cfg.Events, cfg.Connections = 300, 40000, 3
	sum := run(t, cfg)
	if sum.Generated != 40000 || sum.App != "shop" {
		t.Fatalf("generated %d events of app %q, want 40000 of shop", sum.Generated, sum.App)
	}
	checkAcked(t, sum, rec)
	if sum.Duplicate != 0 || sum.Retries != 0 {
		t.Errorf("a healthy collector gave %d duplicates and %d retries", sum.Duplicate, sum.Retries)
	}
	types := map[string]int{}
	for _, e := range rec.events {
		types[payloadName(e)]++
		if e.GetSentAtMs() == 0 || e.GetReceivedAtMs() == 0 {
			t.Fatalf("event %s: sent_at %d received_at %d", e.GetEventId(), e.GetSentAtMs(), e.GetReceivedAtMs())
		}
	}
	if len(types) != 29 {
		t.Errorf("the collector got %d payload types, want all 29: %v", len(types), types)
	}
}

func TestRunResendsRetriedAndRateLimitedEvents(t *testing.T) {
	rec := newRecorder()
	rec.fail = func(call int) bool { return call%5 == 0 }
	addr, _ := startCollector(t, "", rec, func(c *ingest.Config) { c.RateLimit = 1000 })
	cfg := simConfig(addr)
	cfg.Devices, cfg.Events, cfg.Connections = 100, 3000, 2
	sum := run(t, cfg)
	checkAcked(t, sum, rec)
	if sum.RetryResult == 0 || sum.RateLimited == 0 || sum.Retries < sum.RetryResult+sum.RateLimited {
		t.Errorf("retry results %d, rate_limited %d, resends %d: want both results seen and each resent", sum.RetryResult, sum.RateLimited, sum.Retries)
	}
}

func TestRunObeysDrainAndReconnects(t *testing.T) {
	recA, recB := newRecorder(), newRecorder()
	addr, stopA := startCollector(t, "", recA, nil)
	cfg := simConfig(addr)
	cfg.Devices, cfg.Connections, cfg.Rate, cfg.Duration = 50, 2, 4000, 3*time.Second

	type result struct {
		sum *Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		sum, err := Run(context.Background(), cfg, slog.New(slog.DiscardHandler), nil)
		done <- result{sum, err}
	}()
	// Let the simulator send to A for a while, then shut A down (Drain) and
	// bring up B on the same address.
	for recA.published() < 2000 {
		select {
		case r := <-done:
			t.Fatalf("the run ended (%v) before A got 2000 events", r.err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	stopA()
	startCollector(t, addr, recB, nil)
	r := <-done
	if r.err != nil {
		t.Fatalf("Run: %v", r.err)
	}
	sum := r.sum

	if sum.Drains == 0 {
		t.Errorf("no Drain obeyed")
	}
	if recB.published() == 0 {
		t.Fatalf("nothing reached the second collector")
	}
	// Both collectors together got each acknowledged event.
	both := newRecorder()
	for _, r := range []*recorder{recA, recB} {
		for id, e := range r.events {
			both.events[id], both.count[id] = e, both.count[id]+r.count[id]
		}
	}
	checkAcked(t, sum, both)
}

func (r *recorder) published() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func TestRunRejections(t *testing.T) {
	addr, _ := startCollector(t, "", newRecorder(), nil)
	t.Run("wrong app", func(t *testing.T) {
		cfg := simConfig(addr)
		cfg.App, cfg.Devices, cfg.Events = "someone-else", 10, 50
		sum := run(t, cfg)
		if sum.Rejected["app_mismatch"] != 50 || sum.Acked() != 0 {
			t.Fatalf("rejected %v, acknowledged %d; want 50 app_mismatch", sum.Rejected, sum.Acked())
		}
	})
	t.Run("unknown key", func(t *testing.T) {
		cfg := simConfig(addr)
		cfg.Key, cfg.Events = "cik_nope", 10
		_, err := Run(context.Background(), cfg, slog.New(slog.DiscardHandler), nil)
		if !errors.Is(err, ErrKeyRejected) {
			t.Fatalf("err = %v, want ErrKeyRejected", err)
		}
	})
	t.Run("no collector", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		free := ln.Addr().String()
		ln.Close()
		cfg := simConfig(free)
		cfg.Events = 10
		_, err = Run(context.Background(), cfg, slog.New(slog.DiscardHandler), nil)
		if err == nil || !strings.Contains(err.Error(), "connect to the collector") {
			t.Fatalf("err = %v, want a connect error", err)
		}
	})
}

func TestSummaryText(t *testing.T) {
	s := &Summary{App: "shop", Devices: 3, Connections: 1, Generated: 10, Sent: 10, Accepted: 7, Duplicate: 1,
		Rejected: map[string]int64{"app_mismatch": 2}, Elapsed: 2 * time.Second}
	var b strings.Builder
	s.WriteText(&b)
	for _, want := range []string{"acknowledged  8 (accepted 7, duplicate 1)", "rejected      2 app_mismatch=2", "rate          4 events/s"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}
