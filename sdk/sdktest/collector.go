// Package sdktest is a fake collector for SDK tests: it speaks the real
// stream protocol (length-prefixed ClientFrame/ServerFrame over TCP) on
// 127.0.0.1:0, and each connection is scripted by a handler, so a test can
// ack normally or misbehave (drop, hang, garbage, oversized frames, Drain,
// Throttle, per-event retry/rate_limited/duplicate/invalid). Events it
// accepts are recorded for assertions. It needs no server code: the SDK
// module depends on the api module only.
package sdktest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// Key is the only ingest key the fake accepts; AppID is the app bound to it.
const (
	Key   = "cik_test"
	AppID = "test-app"
)

// WaitTimeout bounds Collector.WaitFor: a guard against a hung test, not a
// performance threshold.
var WaitTimeout = 30 * time.Second

// Collector is a fake collector.
type Collector struct {
	Addr string

	ln     net.Listener
	handle func(*Conn)
	wg     sync.WaitGroup

	mu       sync.Mutex
	conns    []*Conn
	accepted []*eventv1.Event
	seen     map[string]bool
	dups     int
	batches  []*ingestv1.Batch
	sizes    []int
	changed  chan struct{} // closed and replaced on every change
}

// Start listens on 127.0.0.1:0 and serves each connection with handle, in its
// own goroutine; nil handle means (*Conn).Serve(nil): ack everything. The
// collector stops when the test ends.
func Start(t testing.TB, handle func(*Conn)) *Collector {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fake collector: %v", err)
	}
	if handle == nil {
		handle = func(c *Conn) { _ = c.Serve(nil) }
	}
	c := &Collector{Addr: ln.Addr().String(), ln: ln, handle: handle, seen: map[string]bool{}, changed: make(chan struct{})}
	c.wg.Add(1)
	go c.accept()
	t.Cleanup(c.Close)
	return c
}

func (c *Collector) accept() {
	defer c.wg.Done()
	for {
		nc, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		conn := &Conn{N: len(c.conns) + 1, col: c, nc: nc, r: bufio.NewReader(nc)}
		c.conns = append(c.conns, conn)
		c.changedLocked()
		c.mu.Unlock()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer nc.Close()
			c.handle(conn)
		}()
	}
}

// Close stops listening, closes every connection and waits for the handlers.
func (c *Collector) Close() {
	c.ln.Close()
	c.mu.Lock()
	for _, conn := range c.conns {
		conn.nc.Close()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *Collector) changedLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Accepted returns the events acked accepted, each id once, in arrival order.
func (c *Collector) Accepted() []*eventv1.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*eventv1.Event(nil), c.accepted...)
}

// Duplicates returns how many received events had an id already accepted.
func (c *Collector) Duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dups
}

// Batches returns every batch received, acked or not.
func (c *Collector) Batches() []*ingestv1.Batch {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*ingestv1.Batch(nil), c.batches...)
}

// BatchBytes returns the size on the wire of each batch frame in Batches
// (payload, without the length prefix).
func (c *Collector) BatchBytes() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.sizes...)
}

// Conns returns how many connections were accepted.
func (c *Collector) Conns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// WaitFor waits until cond holds, re-checking it whenever the collector
// records something (and every 50 ms, for conditions on other state). It
// fails the test after WaitTimeout.
func (c *Collector) WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(WaitTimeout)
	for !cond() {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("fake collector: gave up waiting for %s", what)
		}
	}
}

// Conn is one client connection, for a handler to script.
type Conn struct {
	N     int // 1 for the first connection
	Hello *ingestv1.Hello
	col   *Collector
	nc    net.Conn
	r     *bufio.Reader
	last  int // size of the last frame read
}

// ReadFrame reads one ClientFrame.
func (c *Conn) ReadFrame() (*ingestv1.ClientFrame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 64<<20 {
		return nil, fmt.Errorf("fake collector: bad frame length %d", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return nil, err
	}
	c.last = len(b)
	f := &ingestv1.ClientFrame{}
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("fake collector: decode frame: %w", err)
	}
	return f, nil
}

// Send writes one ServerFrame.
func (c *Conn) Send(f *ingestv1.ServerFrame) error {
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	return c.WriteRaw(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b)
}

// WriteRaw writes bytes as they are (garbage, bad lengths).
func (c *Conn) WriteRaw(bs ...[]byte) error {
	for _, b := range bs {
		if _, err := c.nc.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// SetReadDeadline bounds the next reads (zero: none).
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// Hang reads and discards whatever the client sends, answering nothing,
// until the connection closes.
func (c *Conn) Hang() { _, _ = io.Copy(io.Discard, c.r) }

// CloseWrite half-closes the connection: the client reads EOF after what
// was sent, and nothing it sent is lost to a reset.
func (c *Conn) CloseWrite() { _ = c.nc.(*net.TCPConn).CloseWrite() }

// Close drops the connection.
func (c *Conn) Close() { c.nc.Close() }

// DefaultWelcome is what Handshake sends when given nil. It lists no
// compression (as an older collector); GzipWelcome does.
func DefaultWelcome() *ingestv1.Welcome {
	return &ingestv1.Welcome{ConnectionId: "fake", AppId: AppID, MaxFrameBytes: 1 << 20, Credits: 8, HeartbeatIntervalMs: 15000, MaxBatchEvents: 1000}
}

// GzipWelcome is DefaultWelcome listing gzip in compressions.
func GzipWelcome() *ingestv1.Welcome {
	w := DefaultWelcome()
	w.Compressions = []ingestv1.Compression{ingestv1.Compression_COMPRESSION_GZIP}
	return w
}

// Handshake reads Hello and answers Welcome (w, or DefaultWelcome), or an
// Error when the key is not Key.
func (c *Conn) Handshake(w *ingestv1.Welcome) error {
	f, err := c.ReadFrame()
	if err != nil {
		return err
	}
	c.Hello = f.GetHello()
	if c.Hello == nil {
		return errors.New("fake collector: first frame is not Hello")
	}
	if c.Hello.GetApiKey() != Key {
		_ = c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Error{Error: &ingestv1.Error{Code: ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, Message: "unknown ingest key"}}})
		return errors.New("fake collector: unknown key")
	}
	if w == nil {
		w = DefaultWelcome()
	}
	w.ServerTimeMs = time.Now().UnixMilli()
	return c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Welcome{Welcome: w}})
}

// NextBatch reads frames, answering Pings, until a Batch. A compressed batch
// is inflated: Events are set, CompressedEvents cleared and Compression kept,
// so a test can tell. It returns io.EOF after a Goodbye.
func (c *Conn) NextBatch() (*ingestv1.Batch, error) {
	for {
		f, err := c.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.Frame.(type) {
		case *ingestv1.ClientFrame_Batch:
			if err := inflate(f.Batch); err != nil {
				return nil, err
			}
			c.col.mu.Lock()
			c.col.batches = append(c.col.batches, f.Batch)
			c.col.sizes = append(c.col.sizes, c.last)
			c.col.changedLocked()
			c.col.mu.Unlock()
			return f.Batch, nil
		case *ingestv1.ClientFrame_Ping:
			pong := &ingestv1.Pong{ClientTimeMs: f.Ping.GetClientTimeMs(), ServerTimeMs: time.Now().UnixMilli()}
			if err := c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Pong{Pong: pong}}); err != nil {
				return nil, err
			}
		case *ingestv1.ClientFrame_Goodbye:
			return nil, io.EOF
		default:
			return nil, fmt.Errorf("fake collector: unexpected %T", f)
		}
	}
}

// inflate gunzips Batch.compressed_events into Batch.events.
func inflate(b *ingestv1.Batch) error {
	if len(b.GetCompressedEvents()) == 0 {
		return nil
	}
	if len(b.GetEvents()) > 0 || b.GetCompression() != ingestv1.Compression_COMPRESSION_GZIP {
		return fmt.Errorf("fake collector: batch %d: events %d, compression %v", b.GetSeq(), len(b.GetEvents()), b.GetCompression())
	}
	zr, err := gzip.NewReader(bytes.NewReader(b.GetCompressedEvents()))
	if err != nil {
		return fmt.Errorf("fake collector: gunzip: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, 64<<20))
	if err != nil {
		return fmt.Errorf("fake collector: gunzip: %w", err)
	}
	var list ingestv1.EventList
	if err := proto.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("fake collector: decode EventList: %w", err)
	}
	b.Events, b.CompressedEvents = list.Events, nil
	return nil
}

// Answer decides the result for one event; nil means accept (or duplicate,
// when the id was accepted before).
type Answer func(e *eventv1.Event) *ingestv1.EventResult

// Result is a helper for answers: a result of the given status.
func Result(s ingestv1.EventStatus, retryAfterMs uint32) *ingestv1.EventResult {
	return &ingestv1.EventResult{Status: s, RetryAfterMs: retryAfterMs}
}

// Ack answers b, recording accepted events.
func (c *Conn) Ack(b *ingestv1.Batch, answer Answer) error {
	ack := &ingestv1.Ack{Seq: b.GetSeq()}
	c.col.mu.Lock()
	for _, e := range b.GetEvents() {
		var r *ingestv1.EventResult
		if answer != nil {
			r = answer(e)
		}
		if r == nil {
			r = Result(ingestv1.EventStatus_EVENT_STATUS_ACCEPTED, 0)
		}
		r = proto.Clone(r).(*ingestv1.EventResult)
		r.EventId = e.GetEventId()
		if s := r.GetStatus(); s == ingestv1.EventStatus_EVENT_STATUS_ACCEPTED || s == ingestv1.EventStatus_EVENT_STATUS_DUPLICATE {
			if c.col.seen[e.GetEventId()] {
				r.Status = ingestv1.EventStatus_EVENT_STATUS_DUPLICATE
				c.col.dups++
			} else {
				c.col.seen[e.GetEventId()] = true
				c.col.accepted = append(c.col.accepted, e)
			}
		}
		ack.Results = append(ack.Results, r)
	}
	c.col.changedLocked()
	c.col.mu.Unlock()
	return c.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Ack{Ack: ack}})
}

// Serve handshakes with the default Welcome and acks every batch with
// answer until the client leaves. A Goodbye returns nil.
func (c *Conn) Serve(answer Answer) error {
	if err := c.Handshake(nil); err != nil {
		return err
	}
	return c.Loop(answer)
}

// Loop acks every batch with answer until the client leaves.
func (c *Conn) Loop(answer Answer) error {
	for {
		b, err := c.NextBatch()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := c.Ack(b, answer); err != nil {
			return err
		}
	}
}
