package main

// Integration tests of the Go SDK (causality.dev/sdk) against the real
// collector and Kafka: a client process killed with -9, a collector
// restarted mid-stream, a slowed Kafka, and each transport.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"causality.dev/sdk"
	"causality.dev/sdk/grpctransport"
	"causality.dev/sdk/wstransport"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/kafkatest"
)

// The child process: the test binary runs itself with TestSDKChild and
// these variables.
const (
	sdkChildEnv = "CAUSALITY_SDK_CHILD" // "track" or "drain"
	sdkAddrEnv  = "CAUSALITY_SDK_ADDR"
	sdkKeyEnv   = "CAUSALITY_SDK_KEY"
	sdkDirEnv   = "CAUSALITY_SDK_DIR" // queue dir
	sdkLogEnv   = "CAUSALITY_SDK_LOG" // dir of intent.log and durable.log
)

// TestSDKChild is not a test: it is the app process of TestSDKKill9.
//
// In "track" mode it tracks events forever, ten at a time: it appends their
// ids to intent.log before Track, calls Sync (which returns once they are in
// the queue file), then appends the ids to durable.log. An id in durable.log
// is therefore an event Track accepted and the SDK says is durable.
//
// In "drain" mode it opens the same queue, flushes it, and prints its stats.
func TestSDKChild(t *testing.T) {
	mode := os.Getenv(sdkChildEnv)
	if mode == "" {
		t.Skip("run by TestSDKKill9")
	}
	c, err := sdk.New(os.Getenv(sdkAddrEnv), os.Getenv(sdkKeyEnv), sdk.WithQueueDir(os.Getenv(sdkDirEnv)), sdk.WithBackoff(10*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sdkGuard)
	defer cancel()
	if mode == "drain" {
		before := c.Stats()
		err := c.Flush(ctx)
		after := c.Stats()
		if cerr := c.Close(ctx); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewEncoder(os.Stdout).Encode(map[string]any{"queued_at_start": before.Queued, "torn": before.Torn, "acked": after.Acked, "invalid": after.Invalid})
		return
	}
	logDir := os.Getenv(sdkLogEnv)
	intent, err1 := os.OpenFile(filepath.Join(logDir, "intent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	durable, err2 := os.OpenFile(filepath.Join(logDir, "durable.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i += 10 {
		var ids []string
		for range 10 {
			ids = append(ids, sdk.NewEventID())
		}
		line := strings.Join(ids, "\n") + "\n"
		if _, err := intent.WriteString(line); err != nil {
			t.Fatal(err)
		}
		for j, id := range ids {
			c.Track(sdkScreen(id, i+j))
		}
		if err := c.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := durable.WriteString(line); err != nil {
			t.Fatal(err)
		}
	}
}

func sdkReadLines(t testing.TB, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); len(l) == 36 { // a line cut by the kill is not an id
			lines = append(lines, l)
		}
	}
	return lines
}

// TestSDKKill9: an app using the SDK with a disk queue is killed with -9
// while tracking and while the collector holds acks back; restarted on the
// same queue dir, it delivers every event Track accepted and Sync reported
// durable, exactly once by event id, with no gap in the install's sequence.
func TestSDKKill9(t *testing.T) {
	kcfg := kafkatest.Config(t)
	col := startSDKCollector(t, kcfg, sdkIngestConfig(t, "127.0.0.1:0"), nil)
	qdir, logDir := t.TempDir(), t.TempDir()
	child := func(mode string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSDKChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), sdkChildEnv+"="+mode, sdkAddrEnv+"="+col.tcp, sdkKeyEnv+"="+col.key, sdkDirEnv+"="+qdir, sdkLogEnv+"="+logDir)
		cmd.Stderr = os.Stderr
		return cmd
	}
	durableCount := func() int { return len(sdkReadLines(t, filepath.Join(logDir, "durable.log"))) }
	waitDurable := func(n int) {
		t.Helper()
		deadline := time.Now().Add(sdkGuard)
		for durableCount() < n {
			if time.Now().After(deadline) {
				t.Fatalf("the child made only %d events durable", durableCount())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	app := child("track")
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	waitDurable(1000)
	col.gate.pause() // acks stop: what follows is durable and unacknowledged
	waitDurable(1500)
	if err := app.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = app.Wait()
	col.gate.resume()

	out, err := child("drain").Output()
	if err != nil {
		t.Fatalf("restarted app: %v\n%s", err, out)
	}
	var st struct {
		QueuedAtStart int `json:"queued_at_start"`
		Torn          int `json:"torn"`
	}
	if err := json.Unmarshal(out[:strings.IndexByte(string(out), '\n')+1], &st); err != nil {
		t.Fatalf("restarted app printed %q: %v", out, err)
	}

	intent := sdkReadLines(t, filepath.Join(logDir, "intent.log"))
	durable := sdkReadLines(t, filepath.Join(logDir, "durable.log"))
	count, events := sdkDelivered(t, kcfg, int(col.published.Load()))
	var lost []string
	for _, id := range durable {
		if count[id] == 0 {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d durable events never reached Kafka, e.g. %s", len(lost), len(durable), lost[0])
	}
	for id := range count {
		if !slices.Contains(intent, id) {
			t.Fatalf("Kafka holds %s, which the app never tracked", id)
		}
	}
	// Every event that reached the queue got the next sequence, so the
	// delivered sequences of this install must be 1..n without a gap.
	var seqs []uint64
	for _, e := range events {
		seqs = append(seqs, e.GetSequence())
	}
	slices.Sort(seqs)
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("delivered sequences have a gap or repeat at %d (got %d): an event that reached the queue was lost or renumbered", i+1, s)
		}
	}
	if st.QueuedAtStart == 0 {
		t.Fatal("the restarted app found an empty queue: the kill did not catch unacknowledged events")
	}
	t.Logf("kill -9: %d ids written before Track, %d durable; after restart %d queued (torn records %d); Kafka has %d distinct ids (%d tracked but not yet durable at the kill), %d duplicate messages",
		len(intent), len(durable), st.QueuedAtStart, st.Torn, len(count), len(count)-len(durable), sdkDuplicates(count))
}

// TestSDKCollectorRestart: the collector is stopped (it drains the stream)
// and started again on the same address while the app tracks; the SDK
// reconnects and resends, Track never blocks or drops, nothing is lost.
func TestSDKCollectorRestart(t *testing.T) {
	kcfg := kafkatest.Config(t)
	col := startSDKCollector(t, kcfg, sdkIngestConfig(t, "127.0.0.1:0"), nil)
	c, err := sdk.New(col.tcp, col.key, sdk.WithQueueDir(t.TempDir()), sdk.WithBackoff(10*time.Millisecond, 200*time.Millisecond), sdk.WithFlush(50, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sdkGuard)
	defer cancel()
	t.Cleanup(func() { _ = c.Close(ctx) })

	const n = 4000
	var tracked []string
	restart := make(chan struct{})
	restarted := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := range n {
			id := sdk.NewEventID()
			tracked = append(tracked, id)
			c.Track(sdkScreen(id, i))
			if i%50 == 49 { // an app's pace: the writer keeps up
				if err := c.Sync(ctx); err != nil {
					done <- err
					return
				}
			}
			switch i {
			case n / 4:
				close(restart)
			case n / 2:
				<-restarted // the second half goes to the new collector
			}
		}
		done <- nil
	}()
	<-restart
	col.stop()
	col2 := startSDKCollector(t, kcfg, sdkIngestConfig(t, ""), col)
	close(restarted)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(sdkGuard):
		t.Fatal("Track blocked")
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Dropped != 0 || st.Tracked != n {
		t.Fatalf("stats %+v: want %d tracked, none dropped", st, n)
	}
	count, _ := sdkDelivered(t, kcfg, int(col2.published.Load()))
	for _, id := range tracked {
		if count[id] == 0 {
			t.Fatalf("event %s never reached Kafka", id)
		}
	}
	if len(count) != n {
		t.Fatalf("Kafka holds %d distinct ids, want %d", len(count), n)
	}
	t.Logf("collector restart: %d events delivered, %d duplicate messages in Kafka, last error %v", n, sdkDuplicates(count), st.LastError)
}

// TestSDKCollectorKill9: the collector process is killed with -9 mid-stream
// (no Drain, acks lost) and started again on the same address; the SDK
// reconnects and resends what was not acknowledged, Track never blocks or
// drops, and every event reaches Kafka.
func TestSDKCollectorKill9(t *testing.T) {
	kcfg := kafkatest.Config(t)
	bin := sdkBinary(t)
	key := ingest.NewKey()
	keys := sdkKeysFile(t, key)
	addr := sdkFreeAddr(t)
	first := startSDKChildCollector(t, bin, kcfg, keys, addr)
	c, err := sdk.New(addr, key, sdk.WithQueueDir(t.TempDir()), sdk.WithBackoff(10*time.Millisecond, 200*time.Millisecond), sdk.WithFlush(50, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sdkGuard)
	defer cancel()
	t.Cleanup(func() { _ = c.Close(ctx) })

	const n = 3000
	tracked := make([]string, 0, n)
	kill, restarted := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for i := range n {
			id := sdk.NewEventID()
			tracked = append(tracked, id)
			c.Track(sdkScreen(id, i))
			if i%50 == 49 {
				if err := c.Sync(ctx); err != nil {
					done <- err
					return
				}
			}
			switch i {
			case n / 3:
				close(kill)
			case 2 * n / 3:
				<-restarted
			}
		}
		done <- nil
	}()
	<-kill
	if err := first.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	startSDKChildCollector(t, bin, kcfg, keys, addr)
	close(restarted)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(sdkGuard):
		t.Fatal("Track blocked")
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Dropped != 0 || st.Tracked != n {
		t.Fatalf("stats %+v: want %d tracked, none dropped", st, n)
	}
	count := sdkReadIDs(t, kcfg, tracked)
	for _, id := range tracked {
		if count[id] == 0 {
			t.Fatalf("event %s never reached Kafka", id)
		}
	}
	t.Logf("collector kill -9: %d events delivered, %d duplicate messages in Kafka (published, ack lost in the kill, resent), last error: %v", n, sdkDuplicates(count), st.LastError)
}

// TestSDKSlowKafka: with Kafka slowed below the app's pace the SDK's queue
// stays within its bounds, drops the oldest, counts them and reports them
// to the collector; what was not dropped arrives.
func TestSDKSlowKafka(t *testing.T) {
	kcfg := kafkatest.Config(t)
	icfg := sdkIngestConfig(t, "127.0.0.1:0")
	icfg.MaxBatchEvents = 50
	icfg.Credits = 2
	col := startSDKCollector(t, kcfg, icfg, nil)
	col.delay.Store(int64(100 * time.Millisecond)) // at most 2 × 50 events per 100 ms
	const limit = 500
	c, err := sdk.New(col.tcp, col.key, sdk.WithQueueDir(t.TempDir()), sdk.WithQueueLimits(limit, 8<<20), sdk.WithFlush(50, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sdkGuard)
	defer cancel()
	t.Cleanup(func() { _ = c.Close(ctx) })

	const n = 5000
	maxQueued := 0
	var ms runtime.MemStats
	var maxHeap uint64
	for i := range n {
		c.Track(sdkScreen(sdk.NewEventID(), i))
		if i%100 == 99 {
			if err := c.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			st := c.Stats()
			maxQueued = max(maxQueued, st.Queued)
			if st.Queued > limit {
				t.Fatalf("queue holds %d events, limit %d", st.Queued, limit)
			}
			runtime.ReadMemStats(&ms)
			maxHeap = max(maxHeap, ms.HeapInuse)
		}
	}
	col.delay.Store(0)
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Dropped == 0 {
		t.Fatal("nothing was dropped: Kafka was not slow enough for this test")
	}
	count, _ := sdkDelivered(t, kcfg, int(col.published.Load()))
	if uint64(len(count))+st.Dropped != n {
		t.Fatalf("%d delivered + %d dropped != %d tracked", len(count), st.Dropped, n)
	}
	if got := col.counter(t, "causality_ingest_client_dropped_events_total"); got != float64(st.Dropped) {
		t.Fatalf("the collector was told of %v dropped events, the SDK dropped %d", got, st.Dropped)
	}
	t.Logf("slow Kafka: %d tracked, %d delivered, %d dropped (reported), queue peak %d of %d, heap in use peak %.1f MiB (test process, collector included)",
		n, len(count), st.Dropped, maxQueued, limit, float64(maxHeap)/(1<<20))
}

// TestSDKTransports delivers through each transport to the real collector.
func TestSDKTransports(t *testing.T) {
	kcfg := kafkatest.Config(t)
	col := startSDKCollector(t, kcfg, sdkIngestConfig(t, "127.0.0.1:0"), nil)
	tests := []struct {
		name string
		addr string
		tr   sdk.Transport
	}{
		{"tcp", col.tcp, sdk.TCP{}},
		{"grpc", col.grpc, grpctransport.New(grpc.WithTransportCredentials(insecure.NewCredentials()))},
		{"websocket", col.http, wstransport.New()},
		{"websocket-url", "ws://" + col.http + "/v1/stream", wstransport.New()},
	}
	var all []string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := sdk.New(tt.addr, col.key, sdk.WithTransport(tt.tr))
			if err != nil {
				t.Fatal(err)
			}
			for i := range 200 {
				id := sdk.NewEventID()
				all = append(all, id)
				c.Track(sdkScreen(id, i))
			}
			ctx, cancel := context.WithTimeout(context.Background(), sdkGuard)
			defer cancel()
			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if st := c.Stats(); st.Acked != 200 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
	count, _ := sdkDelivered(t, kcfg, int(col.published.Load()))
	for _, id := range all {
		if count[id] != 1 {
			t.Fatalf("event %s is %d times in Kafka", id, count[id])
		}
	}
}
