package ingest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/api/gen/causality/ingest/v1/ingestv1grpc"
)

// safety bounds every wait in these tests, so a broken server fails the
// test instead of hanging it. No assertion depends on it.
const safety = 20 * time.Second

// testServer is a Server on loopback ports with a fake publisher.
type testServer struct {
	*Server
	tcpAddr, grpcAddr, httpAddr string
	stop                        context.CancelFunc
	done                        chan error
}

// startServer runs a Server with test defaults changed by mod.
func startServer(tb testing.TB, pub Publisher, mod func(*Config)) *testServer {
	tb.Helper()
	cfg := Config{
		TCPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		MaxFrameBytes: DefaultMaxFrameBytes, Credits: 4, Heartbeat: 10 * time.Second, MaxBatchEvents: 10,
		HelloTimeout: 10 * time.Second, DrainTimeout: 10 * time.Second, PublishTimeout: 10 * time.Second,
		DedupSize: 1000, MaxConnections: 100, Limits: DefaultLimits,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := NewServer(cfg, testKeyring(tb), pub, &deadLetters{}, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		tb.Fatalf("NewServer: %v", err)
	}
	if err := srv.Listen(); err != nil {
		tb.Fatalf("Listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: srv, stop: cancel, done: make(chan error, 1)}
	ts.tcpAddr, ts.grpcAddr, ts.httpAddr = srv.Addrs()
	go func() { ts.done <- srv.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				tb.Errorf("Serve: %v", err)
			}
		case <-time.After(safety):
			tb.Errorf("Serve did not return %s after shutdown", safety)
		}
	})
	return ts
}

// waitFor polls cond until it holds; it is for state the client cannot
// observe on the wire, such as "the server has read my frame".
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(safety)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (ts *testServer) frames(typ string) float64 {
	return testutil.ToFloat64(ts.metrics.frames.WithLabelValues(TransportTCP, typ))
}

// gate is a publisher that holds every batch until released.
type gate struct {
	calls   chan []*eventv1.Event
	release chan struct{}
}

func newGate() *gate {
	return &gate{calls: make(chan []*eventv1.Event, 64), release: make(chan struct{})}
}

func (g *gate) Publish(ctx context.Context, events []*eventv1.Event) error {
	g.calls <- events
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitCall waits until the publisher holds one more batch.
func (g *gate) waitCall(tb testing.TB) []*eventv1.Event {
	tb.Helper()
	select {
	case evs := <-g.calls:
		return evs
	case <-time.After(safety):
		tb.Fatal("the publisher was never called")
		return nil
	}
}

// client is a raw TCP client written from docs/protocol.md.
type client struct {
	tb   testing.TB
	conn *net.TCPConn
	r    *bufio.Reader
}

func dial(tb testing.TB, addr string) *client {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(safety))
	return &client{tb: tb, conn: c.(*net.TCPConn), r: bufio.NewReader(c)}
}

func (c *client) write(b []byte) {
	c.tb.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
}

func (c *client) send(f *ingestv1.ClientFrame) {
	c.tb.Helper()
	c.write(frameOf(c.tb, f))
}

// recv reads one server frame.
func (c *client) recv() *ingestv1.ServerFrame {
	c.tb.Helper()
	b, err := ReadFrame(c.r, DefaultMaxFrameBytes, nil)
	if err != nil {
		c.tb.Fatalf("read frame: %v", err)
	}
	f := &ingestv1.ServerFrame{}
	if err := proto.Unmarshal(b, f); err != nil {
		c.tb.Fatalf("decode server frame: %v", err)
	}
	return f
}

func (c *client) hello(key string) *ingestv1.Welcome {
	c.tb.Helper()
	c.send(helloFrame(key))
	f := c.recv()
	if f.GetWelcome() == nil {
		c.tb.Fatalf("answer to Hello: %v, want Welcome", f)
	}
	return f.GetWelcome()
}

func (c *client) batch(seq uint64, events ...*eventv1.Event) {
	c.tb.Helper()
	c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: seq, SentAtMs: time.Now().UnixMilli(), Events: events}}})
}

func (c *client) ack() *ingestv1.Ack {
	c.tb.Helper()
	f := c.recv()
	if f.GetAck() == nil {
		c.tb.Fatalf("got %v, want an Ack", f)
	}
	return f.GetAck()
}

// expectClosed reads until the server closes the connection.
func (c *client) expectClosed() {
	c.tb.Helper()
	n, err := io.Copy(io.Discard, c.r)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.tb.Fatalf("waiting for the close: %v", err)
	}
	if n > 0 {
		c.tb.Fatalf("%d more bytes before the close", n)
	}
}

// expectError reads the next frame, which must be Error with code, and
// then the close.
func (c *client) expectError(code ingestv1.ErrorCode) {
	c.tb.Helper()
	f := c.recv()
	if f.GetError().GetCode() != code {
		c.tb.Fatalf("got %v, want Error %v", f, code)
	}
	if f.GetError().GetMessage() == "" {
		c.tb.Errorf("Error %v without a message", code)
	}
	c.expectClosed()
}

// liveEvent is a valid event of app-a timestamped now.
func liveEvent(n int) *eventv1.Event {
	e := eventN(n)
	e.TimestampMs = time.Now().UnixMilli()
	return e
}

func TestSessionHappyPath(t *testing.T) {
	pub := &recorder{}
	ts := startServer(t, PublishFunc(pub.publish), nil)
	c := dial(t, ts.tcpAddr)

	w := c.hello(keyA)
	if w.GetAppId() != "app-a" || w.GetCredits() != 4 || w.GetMaxFrameBytes() != DefaultMaxFrameBytes ||
		w.GetHeartbeatIntervalMs() != 10000 || w.GetMaxBatchEvents() != 10 || w.GetConnectionId() == "" || w.GetServerTimeMs() == 0 {
		t.Fatalf("Welcome %v", w)
	}

	c.batch(1, liveEvent(1), liveEvent(2))
	a := c.ack()
	if a.GetSeq() != 1 {
		t.Fatalf("ack seq %d, want 1", a.GetSeq())
	}
	wantStatuses(t, a, "accepted", "accepted")
	wantPublished(t, pub, eventN(1).GetEventId(), eventN(2).GetEventId())

	// A seq may be reused once acked; a resent event is a duplicate.
	c.batch(1, liveEvent(2), liveEvent(3))
	wantStatuses(t, c.ack(), "duplicate", "accepted")

	// Pipelined batches up to the credits are all acked.
	for seq := uint64(10); seq < 14; seq++ {
		c.batch(seq, liveEvent(int(seq)))
	}
	got := map[uint64]bool{}
	for range 4 {
		a := c.ack()
		wantStatuses(t, a, "accepted")
		got[a.GetSeq()] = true
	}
	if len(got) != 4 {
		t.Fatalf("acks for seqs %v, want 10..13", got)
	}

	c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Goodbye{Goodbye: &ingestv1.Goodbye{Reason: "done"}}})
	c.expectClosed()
	waitFor(t, "the goodbye disconnect to be counted", func() bool {
		return testutil.ToFloat64(ts.metrics.disconnects.WithLabelValues(TransportTCP, string(byGoodbye))) == 1
	})
}

func TestSessionPingPong(t *testing.T) {
	ts := startServer(t, PublishFunc((&recorder{}).publish), nil)
	c := dial(t, ts.tcpAddr)
	c.hello(keyA)
	before := time.Now().UnixMilli()
	c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{ClientTimeMs: 12345}}})
	f := c.recv()
	after := time.Now().UnixMilli()
	p := f.GetPong()
	if p == nil {
		t.Fatalf("got %v, want Pong", f)
	}
	if p.GetClientTimeMs() != 12345 {
		t.Errorf("Pong echoes client time %d, want 12345", p.GetClientTimeMs())
	}
	if p.GetServerTimeMs() < before || p.GetServerTimeMs() > after {
		t.Errorf("Pong server time %d outside [%d, %d]", p.GetServerTimeMs(), before, after)
	}
}

func TestSessionProtocolErrors(t *testing.T) {
	pub := &recorder{}
	ts := startServer(t, PublishFunc(pub.publish), nil)
	ping := frameOf(t, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{}}})
	tooMany := make([]*eventv1.Event, 11) // MaxBatchEvents is 10
	for i := range tooMany {
		tooMany[i] = liveEvent(i)
	}
	tests := []struct {
		name      string
		hello     string // key of a Hello sent first; "" for none
		input     []byte
		halfClose bool
		want      ingestv1.ErrorCode
	}{
		{name: "batch before hello", input: frameOf(t, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: 1}}}), want: ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED},
		{name: "ping before hello", input: ping, want: ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED},
		{name: "unknown key", input: frameOf(t, helloFrame(NewKey())), want: ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
		{name: "empty key", input: frameOf(t, helloFrame("")), want: ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
		{name: "revoked key", input: frameOf(t, helloFrame(keyRevoked)), want: ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED},
		{name: "zero-length frame first", input: header(0), want: ingestv1.ErrorCode_ERROR_CODE_EMPTY_FRAME},
		{name: "zero-length frame after hello", hello: keyA, input: header(0), want: ingestv1.ErrorCode_ERROR_CODE_EMPTY_FRAME},
		{name: "oversized length first", input: header(DefaultMaxFrameBytes + 1), want: ingestv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE},
		{name: "oversized frame with its body after hello", hello: keyA, input: append(header(DefaultMaxFrameBytes+1), make([]byte, DefaultMaxFrameBytes+1)...), want: ingestv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE},
		{name: "garbage: an HTTP request", input: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), want: ingestv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE},
		{name: "garbage: not protobuf", input: append(header(4), 0xff, 0xff, 0xff, 0xff), want: ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{name: "garbage after hello", hello: keyA, input: append(header(3), 0x0a, 0x7f, 0x00), want: ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{name: "frame with no type set", input: append(header(2), 0x28, 0x01), want: ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{name: "truncated header then half-close", input: []byte{0, 0}, halfClose: true, want: ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{name: "truncated frame then half-close", hello: keyA, input: ping[:len(ping)-1], halfClose: true, want: ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{name: "second hello", hello: keyA, input: frameOf(t, helloFrame(keyA)), want: ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED},
		{name: "batch too large", hello: keyA, input: frameOf(t, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: 1, Events: tooMany}}}), want: ingestv1.ErrorCode_ERROR_CODE_BATCH_TOO_LARGE},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, ts.tcpAddr)
			if tt.hello != "" {
				c.hello(tt.hello)
			}
			// Write from another goroutine: the server stops reading at the
			// error, so a large write may not complete.
			go func() {
				if _, err := c.conn.Write(tt.input); err == nil && tt.halfClose {
					_ = c.conn.CloseWrite()
				}
			}()
			c.expectError(tt.want)
		})
	}
	if n := len(pub.ids()); n != 0 {
		t.Errorf("%d events published by failing connections", n)
	}
}

func TestSessionHalfCloseWithoutFrames(t *testing.T) {
	ts := startServer(t, PublishFunc((&recorder{}).publish), nil)
	c := dial(t, ts.tcpAddr)
	c.hello(keyA)
	if err := c.conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.expectClosed() // a clean end between frames: no Error
}

func TestSessionHelloTimeout(t *testing.T) {
	ts := startServer(t, PublishFunc((&recorder{}).publish), func(c *Config) { c.HelloTimeout = 50 * time.Millisecond })
	dial(t, ts.tcpAddr).expectError(ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED)
}

func TestSessionIdleTimeout(t *testing.T) {
	ts := startServer(t, PublishFunc((&recorder{}).publish), func(c *Config) { c.Heartbeat = 100 * time.Millisecond })
	c := dial(t, ts.tcpAddr)
	if w := c.hello(keyA); w.GetHeartbeatIntervalMs() != 100 {
		t.Fatalf("heartbeat_interval_ms %d, want 100", w.GetHeartbeatIntervalMs())
	}
	c.expectError(ingestv1.ErrorCode_ERROR_CODE_IDLE_TIMEOUT)
}

func TestSessionCreditsExceeded(t *testing.T) {
	tests := []struct {
		name    string
		credits int
		seqs    [2]uint64
	}{
		{"more batches than credits", 1, [2]uint64{1, 2}},
		{"seq reused while unacknowledged", 4, [2]uint64{7, 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate()
			ts := startServer(t, g, func(c *Config) { c.Credits = tt.credits })
			c := dial(t, ts.tcpAddr)
			c.hello(keyA)
			c.batch(tt.seqs[0], liveEvent(1))
			g.waitCall(t)
			c.batch(tt.seqs[1], liveEvent(2))
			waitFor(t, "the server to read the second batch", func() bool { return ts.frames("batch") == 2 })
			close(g.release)
			// The batch in flight is still acked before the Error.
			a := c.ack()
			if a.GetSeq() != tt.seqs[0] {
				t.Fatalf("ack seq %d, want %d", a.GetSeq(), tt.seqs[0])
			}
			wantStatuses(t, a, "accepted")
			c.expectError(ingestv1.ErrorCode_ERROR_CODE_CREDITS_EXCEEDED)
		})
	}
}

func TestSessionGoodbyeStillGetsAcks(t *testing.T) {
	g := newGate()
	ts := startServer(t, g, nil)
	c := dial(t, ts.tcpAddr)
	c.hello(keyA)
	c.batch(1, liveEvent(1))
	c.batch(2, liveEvent(2))
	g.waitCall(t)
	g.waitCall(t)
	c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Goodbye{Goodbye: &ingestv1.Goodbye{}}})
	waitFor(t, "the server to read Goodbye", func() bool { return ts.frames("goodbye") == 1 })
	close(g.release)
	seqs := map[uint64]bool{}
	for range 2 {
		a := c.ack()
		wantStatuses(t, a, "accepted")
		seqs[a.GetSeq()] = true
	}
	if !seqs[1] || !seqs[2] {
		t.Fatalf("acks for %v, want 1 and 2", seqs)
	}
	c.expectClosed()
}

func TestSessionShutdownDrains(t *testing.T) {
	g := newGate()
	ts := startServer(t, g, nil)
	c := dial(t, ts.tcpAddr)
	c.hello(keyA)
	c.batch(1, liveEvent(1))
	g.waitCall(t)

	ts.stop()
	c.batch(2, liveEvent(2)) // on the wire while the server drains: still acked
	f := c.recv()
	d := f.GetDrain()
	if d == nil {
		t.Fatalf("got %v, want Drain", f)
	}
	if d.GetReason() == "" || d.GetReconnectAfterMs() == 0 {
		t.Errorf("Drain %v: want a reason and reconnect_after_ms", d)
	}
	g.waitCall(t)
	close(g.release)
	seqs := map[uint64]bool{}
	for range 2 {
		a := c.ack()
		wantStatuses(t, a, "accepted")
		seqs[a.GetSeq()] = true
	}
	if !seqs[1] || !seqs[2] {
		t.Fatalf("acks for %v, want 1 and 2", seqs)
	}
	c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Goodbye{Goodbye: &ingestv1.Goodbye{Reason: "drained"}}})
	c.expectClosed()

	select {
	case err := <-ts.done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
		ts.done <- nil // for the cleanup
	case <-time.After(safety):
		t.Fatal("Serve did not return after the drained client left")
	}
	if _, err := net.Dial("tcp", ts.tcpAddr); err == nil {
		t.Error("a stopped server accepted a connection")
	}
}

func TestSessionBadConnectionsDoNotAffectOthers(t *testing.T) {
	pub := &recorder{}
	ts := startServer(t, PublishFunc(pub.publish), nil)
	good := dial(t, ts.tcpAddr)
	good.hello(keyA)

	bad := []struct {
		name  string
		input []byte
		want  ingestv1.ErrorCode
	}{
		{"garbage", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello"), ingestv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE},
		{"zero length", header(0), ingestv1.ErrorCode_ERROR_CODE_EMPTY_FRAME},
		{"no hello", frameOf(t, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{}}}), ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED},
		{"wrong key", frameOf(t, helloFrame(keyB+"x")), ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
	}
	t.Run("concurrently", func(t *testing.T) {
		for _, b := range bad {
			t.Run(b.name, func(t *testing.T) {
				t.Parallel()
				for range 5 {
					c := dial(t, ts.tcpAddr)
					c.write(b.input)
					c.expectError(b.want)
				}
			})
		}
		t.Run("good", func(t *testing.T) {
			t.Parallel()
			good := &client{tb: t, conn: good.conn, r: good.r}
			for seq := range uint64(20) {
				good.batch(seq, liveEvent(int(seq)))
				a := good.ack()
				if a.GetSeq() != seq {
					t.Fatalf("ack seq %d, want %d", a.GetSeq(), seq)
				}
				wantStatuses(t, a, "accepted")
			}
		})
	})
	// The good connection is still open and served.
	good.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{ClientTimeMs: 1}}})
	if f := good.recv(); f.GetPong() == nil {
		t.Fatalf("got %v, want Pong", f)
	}
	if n := len(pub.ids()); n != 20 {
		t.Fatalf("%d events published, want 20", n)
	}
}

// wsClient speaks the protocol over a WebSocket.
type wsClient struct {
	tb   testing.TB
	conn *websocket.Conn
}

func dialWS(tb testing.TB, addr string) *wsClient {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	tb.Cleanup(cancel)
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/stream", nil)
	if err != nil {
		tb.Fatalf("dial websocket: %v", err)
	}
	tb.Cleanup(func() { conn.CloseNow() })
	return &wsClient{tb: tb, conn: conn}
}

func (c *wsClient) write(typ websocket.MessageType, b []byte) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	if err := c.conn.Write(ctx, typ, b); err != nil {
		c.tb.Fatalf("websocket write: %v", err)
	}
}

func (c *wsClient) send(f *ingestv1.ClientFrame) {
	c.tb.Helper()
	c.write(websocket.MessageBinary, mustMarshal(c.tb, f))
}

// recv reads one server frame, or returns the close error.
func (c *wsClient) recv() (*ingestv1.ServerFrame, error) {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	typ, b, err := c.conn.Read(ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageBinary {
		c.tb.Fatalf("server sent a %v message", typ)
	}
	f := &ingestv1.ServerFrame{}
	if err := proto.Unmarshal(b, f); err != nil {
		c.tb.Fatalf("decode server frame: %v", err)
	}
	return f, nil
}

func (c *wsClient) mustRecv() *ingestv1.ServerFrame {
	c.tb.Helper()
	f, err := c.recv()
	if err != nil {
		c.tb.Fatalf("websocket read: %v", err)
	}
	return f
}

// expectClose reads until the close and checks its status.
func (c *wsClient) expectClose(want websocket.StatusCode) {
	c.tb.Helper()
	f, err := c.recv()
	if err == nil {
		c.tb.Fatalf("got %v, want a close with %v", f, want)
	}
	if got := websocket.CloseStatus(err); got != want {
		c.tb.Fatalf("close status %v (%v), want %v", got, err, want)
	}
}

func TestWebSocketHappyPath(t *testing.T) {
	pub := &recorder{}
	ts := startServer(t, PublishFunc(pub.publish), nil)
	c := dialWS(t, ts.httpAddr)
	c.send(helloFrame(keyA))
	if w := c.mustRecv().GetWelcome(); w.GetAppId() != "app-a" || w.GetCredits() != 4 {
		t.Fatalf("Welcome %v", w)
	}
	c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: 3, Events: []*eventv1.Event{liveEvent(1)}}}})
	a := c.mustRecv().GetAck()
	if a.GetSeq() != 3 {
		t.Fatalf("ack %v, want seq 3", a)
	}
	wantStatuses(t, a, "accepted")
	wantPublished(t, pub, eventN(1).GetEventId())
	c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Goodbye{Goodbye: &ingestv1.Goodbye{}}})
	c.expectClose(websocket.StatusNormalClosure)
}

func TestWebSocketErrors(t *testing.T) {
	ts := startServer(t, PublishFunc((&recorder{}).publish), func(c *Config) { c.MaxFrameBytes = 1024 })
	tests := []struct {
		name      string
		hello     bool
		typ       websocket.MessageType
		msg       []byte
		wantError ingestv1.ErrorCode // UNSPECIFIED: no Error frame expected
		wantClose websocket.StatusCode
	}{
		{"text message first", false, websocket.MessageText, []byte(`{"hello":{}}`), ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, websocket.StatusPolicyViolation},
		{"text message after hello", true, websocket.MessageText, []byte("hi"), ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, websocket.StatusPolicyViolation},
		{"empty message", true, websocket.MessageBinary, nil, ingestv1.ErrorCode_ERROR_CODE_EMPTY_FRAME, websocket.StatusPolicyViolation},
		{"bad protobuf", true, websocket.MessageBinary, []byte{0xff, 0xff}, ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME, websocket.StatusPolicyViolation},
		{"no hello", false, websocket.MessageBinary, mustMarshal(t, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{}}}), ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED, websocket.StatusPolicyViolation},
		{"revoked key", false, websocket.MessageBinary, mustMarshal(t, helloFrame(keyRevoked)), ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED, websocket.StatusPolicyViolation},
		{"above max", true, websocket.MessageBinary, make([]byte, 1025), ingestv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE, websocket.StatusPolicyViolation},
		{"above twice max", true, websocket.MessageBinary, make([]byte, 2049), ingestv1.ErrorCode_ERROR_CODE_UNSPECIFIED, websocket.StatusMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialWS(t, ts.httpAddr)
			if tt.hello {
				c.send(helloFrame(keyA))
				if f := c.mustRecv(); f.GetWelcome() == nil {
					t.Fatalf("got %v, want Welcome", f)
				}
			}
			c.write(tt.typ, tt.msg)
			if tt.wantError != ingestv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
				if f := c.mustRecv(); f.GetError().GetCode() != tt.wantError {
					t.Fatalf("got %v, want Error %v", f, tt.wantError)
				}
			}
			c.expectClose(tt.wantClose)
		})
	}
	waitFor(t, "every failed WebSocket counted as a protocol or auth failure", func() bool {
		return testutil.ToFloat64(ts.metrics.disconnects.WithLabelValues(TransportWS, string(byProtocol))) == 7 &&
			testutil.ToFloat64(ts.metrics.disconnects.WithLabelValues(TransportWS, string(byAuth))) == 1
	})
}

func TestGRPC(t *testing.T) {
	pub := &recorder{}
	ts := startServer(t, PublishFunc(pub.publish), nil)
	cc, err := grpc.NewClient(ts.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	cl := ingestv1grpc.NewIngestServiceClient(cc)
	ctx, cancel := context.WithTimeout(t.Context(), safety)
	defer cancel()

	t.Run("stream", func(t *testing.T) {
		st, err := cl.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		recv := func() *ingestv1.ServerFrame {
			t.Helper()
			f, err := st.Recv()
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			return f
		}
		if err := st.Send(helloFrame(keyA)); err != nil {
			t.Fatal(err)
		}
		if w := recv().GetWelcome(); w.GetAppId() != "app-a" {
			t.Fatalf("Welcome %v", w)
		}
		if err := st.Send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: 1, Events: []*eventv1.Event{liveEvent(1)}}}}); err != nil {
			t.Fatal(err)
		}
		wantStatuses(t, recv().GetAck(), "accepted")
		if err := st.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if f, err := st.Recv(); err != io.EOF {
			t.Fatalf("after CloseSend: %v, %v; want io.EOF", f, err)
		}
	})
	t.Run("stream bad key", func(t *testing.T) {
		st, err := cl.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(helloFrame("nope")); err != nil {
			t.Fatal(err)
		}
		f, err := st.Recv()
		if err != nil || f.GetError().GetCode() != ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
			t.Fatalf("got %v, %v; want Error UNAUTHENTICATED", f, err)
		}
		if _, err := st.Recv(); err != io.EOF {
			t.Fatalf("after Error: %v, want io.EOF", err)
		}
	})
	t.Run("send", func(t *testing.T) {
		req := &ingestv1.SendRequest{Batch: &ingestv1.Batch{Seq: 5, Events: []*eventv1.Event{liveEvent(2), liveEvent(1)}}}
		if _, err := cl.Send(ctx, req); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Send without a key: %v, want Unauthenticated", err)
		}
		res, err := cl.Send(metadata.AppendToOutgoingContext(ctx, "x-api-key", keyA), req)
		if err != nil {
			t.Fatal(err)
		}
		if res.GetAck().GetSeq() != 5 {
			t.Fatalf("ack %v", res.GetAck())
		}
		wantStatuses(t, res.GetAck(), "accepted", "duplicate")
		_, err = cl.Send(metadata.AppendToOutgoingContext(ctx, "x-api-key", keyA), &ingestv1.SendRequest{})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "batch") {
			t.Fatalf("Send without a batch: %v, want InvalidArgument", err)
		}
	})
	wantPublished(t, pub, eventN(1).GetEventId(), eventN(2).GetEventId())
}

func TestHTTPIdempotencyKeyIsPerApp(t *testing.T) {
	pub := &recorder{}
	ts := startServer(t, PublishFunc(pub.publish), nil)
	post := func(key, body string) (int, *ingestv1.IngestEventResponse) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+ts.httpAddr+"/v1/events/ingest", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", key)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		out := &ingestv1.IngestEventResponse{}
		if err := protojson.Unmarshal(b, out); err != nil {
			t.Fatalf("response %s: %v", b, err)
		}
		return res.StatusCode, out
	}
	// The prototype's JSON: no event id and no app id, but an idempotency key.
	body := `{"event": {"deviceId": "device-001", "idempotencyKey": "order-42", "screenView": {"screenName": "Home"}}}`
	codeA, a := post(keyA, body)
	codeB, b := post(keyB, body)
	if codeA != http.StatusOK || a.GetStatus() != "accepted" || codeB != http.StatusOK || b.GetStatus() != "accepted" {
		t.Fatalf("app-a: %d %v; app-b: %d %v; want both accepted", codeA, a, codeB, b)
	}
	if a.GetEventId() == b.GetEventId() {
		t.Fatalf("two apps got the same event id %s for their own idempotency keys", a.GetEventId())
	}
	// A retry by the same app is the same event.
	code, again := post(keyA, body)
	if code != http.StatusOK || again.GetStatus() != "duplicate" || again.GetEventId() != a.GetEventId() {
		t.Fatalf("retry: %d %v; want duplicate of %s", code, again, a.GetEventId())
	}
	if n := len(pub.ids()); n != 2 {
		t.Fatalf("%d events published, want 2", n)
	}
}
