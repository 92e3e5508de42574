package sdk_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/sdk"
	"causality.dev/sdk/sdktest"
	"google.golang.org/protobuf/proto"
)

// guard bounds waits in tests; it is a hang detector, not a threshold.
const guard = 30 * time.Second

func ctxGuard(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	t.Cleanup(cancel)
	return ctx
}

// newClient returns a client of addr with fast reconnects, closed when the
// test ends.
func newClient(t *testing.T, addr string, opts ...sdk.Option) *sdk.Client {
	t.Helper()
	opts = append([]sdk.Option{sdk.WithBackoff(5*time.Millisecond, 50*time.Millisecond)}, opts...)
	c, err := sdk.New(addr, sdktest.Key, opts...)
	if err != nil {
		t.Fatalf("sdk.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

func flush(t *testing.T, c *sdk.Client) {
	t.Helper()
	if err := c.Flush(ctxGuard(t)); err != nil {
		t.Fatalf("Flush: %v", err)
	}
}

func screen(i int) *eventv1.Event {
	return &eventv1.Event{Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: fmt.Sprintf("s%d", i)}}}
}

func ids(events []*eventv1.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.GetEventId())
	}
	return out
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now().Truncate(time.Millisecond)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

func TestDelivery(t *testing.T) {
	col := sdktest.Start(t, nil)
	dc := &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_ANDROID, AppVersion: "1.2.3"}
	c := newClient(t, col.Addr, sdk.WithDeviceContext(dc), sdk.WithQueueDir(t.TempDir()))
	c.Identify("user-1")
	c.ScreenView("home", "")
	c.ButtonTap("buy", "Buy", "home")
	c.Purchase("order-1", 1999, "EUR", &eventv1.PurchaseItem{ProductId: "p1", Quantity: 1, PriceCents: 1999})
	c.Custom("level_up", map[string]any{"level": 3, "hard": true, "score": 1.5, "hero": "x"})
	for i := range 96 {
		c.Track(screen(i))
	}
	flush(t, c)

	got := col.Accepted()
	if len(got) != 100 {
		t.Fatalf("accepted %d events, want 100", len(got))
	}
	for i, e := range got {
		switch {
		case e.GetSequence() != uint64(i+1):
			t.Fatalf("event %d has sequence %d", i, e.GetSequence())
		case len(e.GetEventId()) != 36 || e.GetEventId()[14] != '7':
			t.Fatalf("event id %q is not a UUIDv7", e.GetEventId())
		case e.GetDeviceId() == "" || e.GetDeviceId() != e.GetInstallId():
			t.Fatalf("device id %q, install id %q: the device id defaults to the install id", e.GetDeviceId(), e.GetInstallId())
		case e.GetSessionId() != got[0].GetSessionId() || e.GetSessionId() == "":
			t.Fatalf("session changed within one burst of events")
		case e.GetUserId() != "user-1":
			t.Fatalf("user id %q", e.GetUserId())
		case e.GetTimestampMs() == 0:
			t.Fatal("timestamp not set")
		case e.GetDeviceContext().GetAppVersion() != "1.2.3" || e.GetDeviceContext().GetSdkVersion() != sdk.Name+"/"+sdk.Version:
			t.Fatalf("device context %v", e.GetDeviceContext())
		}
	}
	if ce := got[3].GetCustomEvent(); ce.GetIntParams()["level"] != 3 || !ce.GetBoolParams()["hard"] || ce.GetFloatParams()["score"] != 1.5 || ce.GetStringParams()["hero"] != "x" {
		t.Fatalf("custom event params %v", ce)
	}
	for _, b := range col.Batches() {
		if b.GetSentAtMs() == 0 {
			t.Fatal("batch without sent_at_ms")
		}
	}
	if st := c.Stats(); st.Acked != 100 || st.Queued != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestTrackNeverBlocks: with the collector hung and the in-memory buffer
// full, Track drops and counts instead of waiting.
func TestTrackNeverBlocks(t *testing.T) {
	hello := make(chan struct{}, 1)
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		if c.N == 1 {
			hello <- struct{}{}
			c.Hang() // reads Hello, never answers
			return
		}
		_ = c.Serve(nil)
	})
	// A long timeout keeps the first connection hung for the whole test.
	c := newClient(t, col.Addr, sdk.WithBuffer(8), sdk.WithTimeout(time.Hour))
	c.Track(screen(0))
	<-hello

	const n = 20000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range n {
			c.Track(screen(i))
		}
	}()
	select {
	case <-done:
	case <-time.After(guard):
		t.Fatal("Track blocked while the collector hung")
	}
	if len(col.Batches()) != 0 {
		t.Fatal("the hung collector got a batch")
	}
	if err := c.Sync(ctxGuard(t)); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	if st.Tracked+st.Dropped != n+1 || st.Queued != int(st.Tracked) {
		t.Fatalf("stats %+v: want tracked + dropped = %d, all tracked queued", st, n+1)
	}
	t.Logf("with the writer keeping up: %d queued, %d dropped by a full buffer", st.Queued, st.Dropped)
}

func TestReconnectResends(t *testing.T) {
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		if c.N == 1 {
			_ = c.Handshake(nil)
			_, _ = c.NextBatch() // read a batch, never ack it, drop the connection
			return
		}
		_ = c.Serve(nil)
	})
	c := newClient(t, col.Addr)
	for i := range 10 {
		c.Track(screen(i))
	}
	flush(t, c)
	first := col.Batches()[0]
	if got := ids(col.Accepted()); !isSubset(ids(first.GetEvents()), got) || len(got) != 10 {
		t.Fatalf("accepted %d events; the unacknowledged first batch must be among them", len(got))
	}
	if col.Conns() < 2 {
		t.Fatalf("connections = %d, want a reconnect", col.Conns())
	}
}

func isSubset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

// TestBadServer: each misbehaviour ends the connection with a clear error,
// no panic, and the client recovers on the next connection.
func TestBadServer(t *testing.T) {
	tests := []struct {
		name  string
		first func(c *sdktest.Conn)
		opts  []sdk.Option
		want  func(error) bool
	}{
		{"garbage frame", func(c *sdktest.Conn) {
			_ = c.Handshake(nil)
			_ = c.WriteRaw([]byte{0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff})
			c.Hang()
		}, nil, is(sdk.ErrMalformedFrame)},
		{"oversized length", func(c *sdktest.Conn) {
			_ = c.Handshake(nil)
			_ = c.WriteRaw([]byte{0xff, 0xff, 0xff, 0xf0})
			c.Hang()
		}, nil, is(sdk.ErrFrameTooLarge)},
		{"empty frame", func(c *sdktest.Conn) {
			_ = c.Handshake(nil)
			_ = c.WriteRaw([]byte{0, 0, 0, 0})
			c.Hang()
		}, nil, is(sdk.ErrEmptyFrame)},
		{"truncated frame", func(c *sdktest.Conn) {
			_ = c.Handshake(nil)
			_ = c.WriteRaw([]byte{0, 0, 0, 9, 1, 2})
			c.CloseWrite()
			c.Hang()
		}, nil, is(sdk.ErrTruncatedFrame)},
		{"hung before Welcome", func(c *sdktest.Conn) {
			c.Hang()
		}, []sdk.Option{sdk.WithTimeout(200 * time.Millisecond)}, is(sdk.ErrHandshakeTimeout)},
		{"hung after Welcome", func(c *sdktest.Conn) {
			w := sdktest.DefaultWelcome()
			w.HeartbeatIntervalMs = 50
			_ = c.Handshake(w)
			c.Hang()
		}, nil, is(sdk.ErrServerSilent)},
		{"Error frame", func(c *sdktest.Conn) {
			_, _ = c.ReadFrame()
			_ = c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Error{Error: &ingestv1.Error{Code: ingestv1.ErrorCode_ERROR_CODE_INTERNAL, Message: "boom"}}})
		}, nil, func(err error) bool {
			var se *sdk.ServerError
			return errors.As(err, &se) && se.Code == ingestv1.ErrorCode_ERROR_CODE_INTERNAL && se.Message == "boom"
		}},
		{"ack with the wrong number of results", func(c *sdktest.Conn) {
			_ = c.Handshake(nil)
			b, _ := c.NextBatch()
			_ = c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Ack{Ack: &ingestv1.Ack{Seq: b.GetSeq()}}})
			c.Hang()
		}, nil, is(sdk.ErrProtocol)},
		{"ack for an unknown batch", func(c *sdktest.Conn) {
			_ = c.Handshake(nil)
			_, _ = c.NextBatch()
			_ = c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Ack{Ack: &ingestv1.Ack{Seq: 999}}})
			c.Hang()
		}, nil, is(sdk.ErrProtocol)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := sdktest.Start(t, func(c *sdktest.Conn) {
				if c.N == 1 {
					tt.first(c)
					return
				}
				_ = c.Serve(nil)
			})
			c := newClient(t, col.Addr, tt.opts...)
			for i := range 5 {
				c.Track(screen(i))
			}
			flush(t, c)
			if err := c.Stats().LastError; !tt.want(err) {
				t.Fatalf("last error %v", err)
			}
			t.Logf("error: %v", c.Stats().LastError)
			if n := len(col.Accepted()); n != 5 {
				t.Fatalf("accepted %d after recovery, want 5", n)
			}
		})
	}
}

// TestUnknownFrameIgnored: a frame type newer than the SDK is skipped, not
// an error (docs/protocol.md, 2.7).
func TestUnknownFrameIgnored(t *testing.T) {
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		_ = c.Handshake(nil)
		_ = c.WriteRaw([]byte{0, 0, 0, 2, 0x78, 0x01}) // field 15: no ServerFrame type yet
		_ = c.Loop(nil)
	})
	c := newClient(t, col.Addr)
	for i := range 5 {
		c.Track(screen(i))
	}
	flush(t, c)
	if st := c.Stats(); st.LastError != nil || col.Conns() != 1 || st.Acked != 5 {
		t.Fatalf("stats %+v on %d connections: want 5 acked on one, no error", st, col.Conns())
	}
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func TestResults(t *testing.T) {
	var mu sync.Mutex
	attempts := map[string]int{}
	retried := map[string]time.Time{}
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		_ = c.Serve(func(e *eventv1.Event) *ingestv1.EventResult {
			mu.Lock()
			defer mu.Unlock()
			attempts[e.GetEventId()]++
			n := attempts[e.GetEventId()]
			switch e.GetScreenView().GetScreenName() {
			case "invalid":
				return &ingestv1.EventResult{Status: ingestv1.EventStatus_EVENT_STATUS_INVALID, Reason: ingestv1.InvalidReason_INVALID_REASON_MISSING_REQUIRED_FIELD}
			case "retry", "rate_limited":
				if n == 1 {
					retried[e.GetEventId()] = time.Now()
					s := ingestv1.EventStatus_EVENT_STATUS_RETRY
					if e.GetScreenView().GetScreenName() == "rate_limited" {
						s = ingestv1.EventStatus_EVENT_STATUS_RATE_LIMITED
					}
					return sdktest.Result(s, 150)
				}
				if since := time.Since(retried[e.GetEventId()]); since < 150*time.Millisecond {
					return sdktest.Result(ingestv1.EventStatus_EVENT_STATUS_INVALID, 0) // resent too early: make the test fail
				}
			case "duplicate":
				return sdktest.Result(ingestv1.EventStatus_EVENT_STATUS_DUPLICATE, 0)
			}
			return nil
		})
	})
	c := newClient(t, col.Addr)
	for _, name := range []string{"ok", "invalid", "retry", "rate_limited", "duplicate", "ok"} {
		c.ScreenView(name, "")
	}
	flush(t, c)
	st := c.Stats()
	if st.Acked != 5 || st.Invalid != 1 || st.Queued != 0 {
		t.Fatalf("stats %+v: want 5 acked (ok×2, retry, rate_limited, duplicate), 1 invalid", st)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range col.Accepted() {
		if n := e.GetScreenView().GetScreenName(); (n == "retry" || n == "rate_limited") && attempts[e.GetEventId()] != 2 {
			t.Fatalf("%s event sent %d times, want 2", n, attempts[e.GetEventId()])
		}
	}
}

func TestThrottle(t *testing.T) {
	const delay = 300 * time.Millisecond
	var throttled, second time.Time
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		_ = c.Handshake(nil)
		b, err := c.NextBatch()
		if err != nil {
			return
		}
		// Like the collector: Throttle first, then the ack.
		throttled = time.Now()
		_ = c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Throttle{Throttle: &ingestv1.Throttle{DelayMs: uint32(delay.Milliseconds())}}})
		_ = c.Ack(b, nil)
		if b, err = c.NextBatch(); err != nil {
			return
		}
		second = time.Now()
		_ = c.Ack(b, nil)
		_ = c.Loop(nil)
	})
	c := newClient(t, col.Addr)
	c.Track(screen(1))
	flush(t, c)
	c.Track(screen(2))
	flush(t, c)
	if d := second.Sub(throttled); d < delay {
		t.Fatalf("next batch %s after a Throttle of %s", d, delay)
	}
}

func TestDrain(t *testing.T) {
	goodbye := make(chan error, 1)
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		if c.N > 1 {
			_ = c.Serve(nil)
			return
		}
		_ = c.Handshake(nil)
		b, err := c.NextBatch()
		if err != nil {
			goodbye <- err
			return
		}
		_ = c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Drain{Drain: &ingestv1.Drain{Reason: "test", ReconnectAfterMs: 20}}})
		_ = c.Ack(b, nil)
		// After Drain the client sends no batch, only Goodbye.
		_, err = c.NextBatch()
		goodbye <- err
	})
	c := newClient(t, col.Addr)
	c.Track(screen(1))
	flush(t, c)
	if err := <-goodbye; !errors.Is(err, io.EOF) {
		t.Fatalf("after Drain the first connection got %v, want Goodbye", err)
	}
	c.Track(screen(2))
	flush(t, c)
	if len(col.Accepted()) != 2 || col.Conns() != 2 {
		t.Fatalf("accepted %d on %d connections, want 2 on 2", len(col.Accepted()), col.Conns())
	}
}

func TestHeartbeat(t *testing.T) {
	pings := make(chan struct{}, 16)
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		w := sdktest.DefaultWelcome()
		w.HeartbeatIntervalMs = 20
		_ = c.Handshake(w)
		for {
			f, err := c.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.Frame.(type) {
			case *ingestv1.ClientFrame_Ping:
				_ = c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Pong{Pong: &ingestv1.Pong{ClientTimeMs: f.Ping.GetClientTimeMs()}}})
				select {
				case pings <- struct{}{}:
				default:
				}
			case *ingestv1.ClientFrame_Batch:
				_ = c.Ack(f.Batch, nil)
			}
		}
	})
	c := newClient(t, col.Addr)
	c.Track(screen(1))
	flush(t, c)
	for range 3 {
		select {
		case <-pings:
		case <-time.After(guard):
			t.Fatal("no Ping from an idle client")
		}
	}
	if !c.Stats().Connected {
		t.Fatal("an idle client answering Pongs lost its connection")
	}
}

func TestDroppedEventsReported(t *testing.T) {
	release := make(chan struct{})
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		<-release
		_ = c.Serve(nil)
	})
	c := newClient(t, col.Addr, sdk.WithQueueLimits(10, 1<<20), sdk.WithTimeout(time.Hour), sdk.WithQueueDir(t.TempDir()))
	for i := range 30 {
		c.Track(screen(i))
	}
	if err := c.Sync(ctxGuard(t)); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Queued != 10 || st.Dropped != 20 {
		t.Fatalf("stats %+v: want 10 queued, 20 dropped", st)
	}
	close(release)
	flush(t, c)
	var seqs []uint64
	for _, e := range col.Accepted() {
		seqs = append(seqs, e.GetSequence())
	}
	if want := []uint64{21, 22, 23, 24, 25, 26, 27, 28, 29, 30}; !slices.Equal(seqs, want) {
		t.Fatalf("delivered sequences %v, want the newest %v", seqs, want)
	}
	var reported uint64
	for _, b := range col.Batches() {
		reported += b.GetDroppedEvents()
	}
	if reported != 20 {
		t.Fatalf("batches reported %d dropped events, want 20", reported)
	}
}

func TestQueueSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	down := sdktest.Start(t, func(c *sdktest.Conn) { c.Hang() })
	c1, err := sdk.New(down.Addr, sdktest.Key, sdk.WithQueueDir(dir), sdk.WithTimeout(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		c1.Track(screen(i))
	}
	if err := c1.Sync(ctxGuard(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c1.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a hung collector: %v, want the deadline", err)
	}

	col := sdktest.Start(t, nil)
	c2 := newClient(t, col.Addr, sdk.WithQueueDir(dir))
	flush(t, c2)
	got := col.Accepted()
	if len(got) != 25 || got[0].GetSequence() != 1 || got[24].GetSequence() != 25 {
		t.Fatalf("after restart delivered %d events (sequences %d..%d), want 1..25", len(got), got[0].GetSequence(), got[len(got)-1].GetSequence())
	}
	install := got[0].GetInstallId()
	if err := c2.Close(ctxGuard(t)); err != nil {
		t.Fatal(err)
	}

	// The next launch keeps the install id and the sequence, with an empty queue.
	c3 := newClient(t, col.Addr, sdk.WithQueueDir(dir))
	c3.Track(screen(99))
	flush(t, c3)
	last := col.Accepted()[25]
	if last.GetInstallId() != install || last.GetSequence() != 26 {
		t.Fatalf("third launch: install %s sequence %d; want %s and 26", last.GetInstallId(), last.GetSequence(), install)
	}
}

func TestConsent(t *testing.T) {
	col := sdktest.Start(t, nil)
	clock := newFakeClock()
	c := newClient(t, col.Addr, sdk.WithConsent(sdk.ConsentPending), sdk.WithClock(clock.Now))
	var times []int64
	for i := range 3 {
		times = append(times, clock.Now().UnixMilli())
		c.Track(screen(i))
		clock.Advance(time.Second)
	}
	flush(t, c) // held events are not waited for
	if st := c.Stats(); st.Held != 3 || len(col.Batches()) != 0 {
		t.Fatalf("pending: stats %+v, %d batches; want 3 held, nothing sent", st, len(col.Batches()))
	}
	c.SetConsent(sdk.ConsentGranted)
	c.Track(screen(3))
	flush(t, c)
	got := col.Accepted()
	if len(got) != 4 {
		t.Fatalf("after granting: %d delivered, want 4", len(got))
	}
	for i, ts := range times {
		if got[i].GetTimestampMs() != ts {
			t.Fatalf("held event %d sent with timestamp %d, want its original %d", i, got[i].GetTimestampMs(), ts)
		}
	}

	c.SetConsent(sdk.ConsentPending)
	c.Track(screen(4))
	c.Track(screen(5))
	c.SetConsent(sdk.ConsentDenied)
	c.Track(screen(6))
	flush(t, c)
	if st := c.Stats(); st.Held != 0 || st.Discarded != 3 || len(col.Accepted()) != 4 {
		t.Fatalf("denied: stats %+v, %d delivered; want 0 held, 3 discarded, still 4", st, len(col.Accepted()))
	}
}

func TestOptOut(t *testing.T) {
	col := sdktest.Start(t, nil)
	dir := t.TempDir()
	c := newClient(t, col.Addr, sdk.WithQueueDir(dir))
	c.OptOut(true)
	c.Track(screen(1))
	flush(t, c)
	if err := c.Close(ctxGuard(t)); err != nil {
		t.Fatal(err)
	}
	c = newClient(t, col.Addr, sdk.WithQueueDir(dir)) // the choice is kept
	c.Track(screen(2))
	flush(t, c)
	if n := len(col.Accepted()); n != 0 || c.Stats().Discarded != 1 {
		t.Fatalf("opted out: %d delivered, stats %+v", n, c.Stats())
	}
	c.OptOut(false)
	c.Track(screen(3))
	flush(t, c)
	if got := col.Accepted(); len(got) != 1 || got[0].GetScreenView().GetScreenName() != "s3" {
		t.Fatalf("after opting in again delivered %v", ids(got))
	}
}

func TestSampling(t *testing.T) {
	col := sdktest.Start(t, nil)
	kept := 0
	const devices = 200
	for i := range devices {
		c := newClient(t, col.Addr, sdk.WithSampleRate(0.3), sdk.WithDeviceID(fmt.Sprintf("device-%d", i)))
		for range 3 {
			c.Track(screen(i))
		}
		flush(t, c)
		if st := c.Stats(); st.Discarded == 0 {
			kept++
		} else if st.Discarded != 3 {
			t.Fatalf("device %d: %d of 3 events discarded; sampling is per device", i, st.Discarded)
		}
		if err := c.Close(ctxGuard(t)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(col.Accepted()); n != 3*kept {
		t.Fatalf("delivered %d events from %d sampled devices", n, kept)
	}
	// 0.3 of 200 devices: 60 expected, standard deviation 6.5.
	if kept < 30 || kept > 90 {
		t.Fatalf("%d of %d devices sampled at rate 0.3", kept, devices)
	}
	// The same device always gets the same answer, launch after launch.
	for i := range 20 {
		id := fmt.Sprintf("device-%d", i)
		var kept []bool
		for range 2 {
			c := newClient(t, col.Addr, sdk.WithSampleRate(0.3), sdk.WithDeviceID(id))
			c.Track(screen(0))
			kept = append(kept, c.Stats().Discarded == 0)
		}
		if kept[0] != kept[1] {
			t.Fatalf("%s sampled in on one launch and out on the other", id)
		}
	}
}

func TestSessions(t *testing.T) {
	col := sdktest.Start(t, nil)
	clock := newFakeClock()
	c := newClient(t, col.Addr, sdk.WithClock(clock.Now))
	steps := []struct {
		name string
		do   func()
		same bool
	}{
		{"first event", func() {}, false},
		{"29 min idle", func() { clock.Advance(29 * time.Minute) }, true},
		{"30 min idle", func() { clock.Advance(30 * time.Minute) }, false},
		{"10 s in background", func() { c.Background(); clock.Advance(10 * time.Second); c.Foreground() }, true},
		{"30 s in background", func() { c.Background(); clock.Advance(30 * time.Second); c.Foreground() }, false},
		{"event 40 s into the background", func() { c.Background(); clock.Advance(40 * time.Second) }, false},
		{"back in the foreground at once", func() { c.Foreground() }, true},
		{"Reset", func() { c.Reset() }, false},
	}
	for i, s := range steps {
		s.do()
		c.Track(screen(i))
	}
	flush(t, c)
	got := col.Accepted()
	if len(got) != len(steps) {
		t.Fatalf("delivered %d, want %d", len(got), len(steps))
	}
	for i := 1; i < len(steps); i++ {
		same := got[i].GetSessionId() == got[i-1].GetSessionId()
		if same != steps[i].same {
			t.Errorf("%s: same session = %v, want %v", steps[i].name, same, steps[i].same)
		}
	}
}

func TestCloseSaysGoodbye(t *testing.T) {
	bye := make(chan error, 1)
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		_ = c.Handshake(nil)
		bye <- c.Loop(nil) // nil after a Goodbye
	})
	c, err := sdk.New(col.Addr, sdktest.Key)
	if err != nil {
		t.Fatal(err)
	}
	c.Track(screen(1))
	if err := c.Close(ctxGuard(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-bye; err != nil {
		t.Fatalf("collector saw %v, want Goodbye", err)
	}
	if len(col.Accepted()) != 1 {
		t.Fatal("Close did not deliver the tracked event")
	}
	c.Track(screen(2))
	if st := c.Stats(); st.Discarded != 1 {
		t.Fatalf("Track after Close: %+v", st)
	}
	if err := c.Flush(ctxGuard(t)); !errors.Is(err, sdk.ErrClosed) {
		t.Fatalf("Flush after Close: %v", err)
	}
}

func TestBackgroundDisconnects(t *testing.T) {
	bye := make(chan error, 4)
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		_ = c.Handshake(nil)
		bye <- c.Loop(nil)
	})
	c := newClient(t, col.Addr)
	c.Track(screen(1))
	c.Background() // sends at once, then leaves
	if err := <-bye; err != nil {
		t.Fatalf("collector saw %v, want Goodbye", err)
	}
	if len(col.Accepted()) != 1 {
		t.Fatal("the event tracked before Background was not delivered")
	}
	c.Foreground()
	c.Track(screen(2))
	flush(t, c)
	if len(col.Accepted()) != 2 || col.Conns() != 2 {
		t.Fatalf("delivered %d on %d connections, want 2 on 2", len(col.Accepted()), col.Conns())
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name      string
		addr, key string
		opts      []sdk.Option
	}{
		{"empty address", "", "k", nil},
		{"empty key", "a:1", "", nil},
		{"sample rate above 1", "a:1", "k", []sdk.Option{sdk.WithSampleRate(1.5)}},
		{"flush size 0", "a:1", "k", []sdk.Option{sdk.WithFlush(0, time.Second)}},
		{"tiny queue", "a:1", "k", []sdk.Option{sdk.WithQueueLimits(10, 100)}},
		{"nil transport", "a:1", "k", []sdk.Option{sdk.WithTransport(nil)}},
		{"backoff min above max", "a:1", "k", []sdk.Option{sdk.WithBackoff(time.Second, time.Millisecond)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, err := sdk.New(tt.addr, tt.key, tt.opts...); err == nil {
				c.Close(context.Background())
				t.Fatal("New accepted it")
			} else {
				t.Log(err)
			}
		})
	}
}

// TestBatchLimits: batches respect Welcome's frame size, batch size and
// credits; an event that can never fit a frame is dropped as invalid.
func TestBatchLimits(t *testing.T) {
	const maxFrame, maxEvents, credits = 4096, 7, 2
	errs := make(chan error, 1)
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		w := sdktest.DefaultWelcome()
		w.MaxFrameBytes, w.MaxBatchEvents, w.Credits = maxFrame, maxEvents, credits
		if err := c.Handshake(w); err != nil {
			return
		}
		var held []*ingestv1.Batch
		for {
			// While batches are held, wait a little for more: a client that
			// respects its credits sends none beyond them.
			deadline := time.Time{}
			if len(held) > 0 {
				deadline = time.Now().Add(200 * time.Millisecond)
			}
			_ = c.SetReadDeadline(deadline)
			f, err := c.ReadFrame()
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				for _, b := range held {
					_ = c.Ack(b, nil)
				}
				held = held[:0]
				continue
			}
			if err != nil {
				return
			}
			b := f.GetBatch()
			if b == nil {
				continue
			}
			size := proto.Size(f)
			if size > maxFrame || len(b.GetEvents()) > maxEvents || len(held) == credits {
				errs <- fmt.Errorf("batch of %d events, %d bytes, with %d unacknowledged", len(b.GetEvents()), size, len(held))
				return
			}
			held = append(held, b)
		}
	})
	c := newClient(t, col.Addr)
	for i := range 40 {
		c.Track(screen(i))
	}
	big := screen(40)
	big.Properties = map[string]string{"blob": strings.Repeat("x", 3000)}
	huge := screen(41)
	huge.Properties = map[string]string{"blob": strings.Repeat("x", 5000)}
	c.Track(big)
	c.Track(huge)
	flush(t, c)
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if st := c.Stats(); st.Acked != 41 || st.Invalid != 1 {
		t.Fatalf("stats %+v: want 41 acked, the 5 KB event invalid", st)
	}
}
