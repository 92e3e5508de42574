package sdk

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// Connection errors, in Stats.LastError and the log.
var (
	ErrHandshakeTimeout = errors.New("causality: no Welcome from the collector in time")
	ErrServerSilent     = errors.New("causality: collector silent for three heartbeat intervals")
	ErrWriteTimeout     = errors.New("causality: frame write timed out")
	ErrProtocol         = errors.New("causality: collector broke the protocol")
)

// ServerError is an Error frame: the collector closed the stream.
type ServerError struct {
	Code    ingestv1.ErrorCode
	Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("causality: collector closed the stream: %s: %s", e.Code, e.Message)
}

// flushReq asks the sender to report when every sequence up to last is
// finished.
type flushReq struct {
	last uint64
	done chan error
}

// Limits used when Welcome leaves a field at zero.
const (
	defaultMaxFrame     = 1 << 20
	defaultBatchEvents  = 1000
	defaultHeartbeat    = 15 * time.Second
	maxBatchEventsLimit = 500 // the client's own cap, unless WithFlush asks for more
	minRetryAfter       = 100 * time.Millisecond
)

// sender is the state of the sender goroutine.
type sender struct {
	c          *Client
	waiters    []flushReq
	attempt    int       // failed connections in a row
	readySince time.Time // when events first waited to be sent
	pauseUntil time.Time // rate limited, retry or throttled
	closing    bool      // Close was called
}

// sendLoop is the sender goroutine: it connects when there is something to
// send, keeps one stream, and reconnects with backoff after a failure.
func (c *Client) sendLoop() {
	defer close(c.senderEnd)
	s := &sender{c: c}
	defer func() {
		c.flushMu.Lock()
		c.flushGone = true
		s.waiters = append(s.waiters, c.flushQ...)
		c.flushQ = nil
		c.flushMu.Unlock()
		for _, w := range s.waiters {
			w.done <- ErrClosed
		}
	}()
	for {
		s.settle()
		if s.closing {
			return
		}
		if !s.wantConn() {
			if !s.idle() {
				return
			}
			continue
		}
		cn, err := c.connect()
		if err == nil {
			c.connected.Store(true)
			var after time.Duration
			after, err = s.serve(cn)
			c.connected.Store(false)
			cn.close()
			if err == nil {
				// After a Drain: reconnect after the delay asked, spread so that
				// the clients of one collector do not all come back at once.
				if after > 0 && !s.sleep(after+rand.N(after)) {
					return
				}
				continue
			}
		}
		if c.killCtx.Err() != nil {
			return
		}
		s.attempt++
		var se *ServerError
		if errors.As(err, &se) && (se.Code == ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED || se.Code == ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED) {
			s.attempt = 32 // a key problem is not fixed by retrying soon
		}
		c.setErr(err)
		d := s.backoff()
		c.cfg.logger.Warn("causality: connection failed", "addr", c.addr, "err", err, "attempt", s.attempt, "retry_in", d)
		if !s.sleep(d) {
			return
		}
	}
}

// wantConn reports whether there is anything to deliver.
func (s *sender) wantConn() bool {
	_, ready := s.c.q.counts()
	return ready > 0 || len(s.waiters) > 0
}

// idle waits, disconnected, for something to do; false means stop.
func (s *sender) idle() bool {
	c := s.c
	select {
	case <-c.q.notify:
	case <-c.flushWake:
		s.takeFlushes()
	case <-c.life:
	case <-c.quit:
		s.closing = true
	case <-c.killCtx.Done():
		return false
	}
	return true
}

// sleep waits d while still taking flush requests; false means stop.
func (s *sender) sleep(d time.Duration) bool {
	c := s.c
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return true
		case <-c.flushWake:
			s.takeFlushes()
		case <-c.quit:
			// Close flushed as far as it could; stop retrying.
			s.closing = true
			return false
		case <-c.killCtx.Done():
			return false
		}
	}
}

// backoff is full jitter over an exponential ceiling.
func (s *sender) backoff() time.Duration {
	ceil := s.c.cfg.maxBackoff
	if s.attempt < 32 {
		ceil = min(ceil, s.c.cfg.minBackoff<<(s.attempt-1))
	}
	return rand.N(ceil) + 1
}

// takeFlushes moves the writer's flush requests to the waiters.
func (s *sender) takeFlushes() {
	c := s.c
	c.flushMu.Lock()
	s.waiters = append(s.waiters, c.flushQ...)
	c.flushQ = c.flushQ[:0]
	c.flushMu.Unlock()
}

// settle answers the flush requests whose events are all finished.
func (s *sender) settle() {
	if len(s.waiters) == 0 {
		return
	}
	low := s.c.q.lowWater()
	keep := s.waiters[:0]
	for _, w := range s.waiters {
		if w.last < low {
			w.done <- nil
		} else {
			keep = append(keep, w)
		}
	}
	s.waiters = keep
}

// conn is one stream after the handshake.
type conn struct {
	st        Stream
	frames    chan recvd
	stop      chan struct{}
	welcome   *ingestv1.Welcome
	logger    *slog.Logger
	timeout   time.Duration
	maxFrame  int
	maxEvents int
	heartbeat time.Duration
	credits   int
	lastSent  time.Time
	lastRecv  time.Time
	buf       []byte
	gzip      bool   // the collector inflates gzip
	zbuf      []byte // compressed events, reused
}

type recvd struct {
	f   *ingestv1.ServerFrame
	err error
}

func (cn *conn) close() {
	cn.st.Close()
	close(cn.stop)
}

// send writes one frame, closing the stream if the write outlasts the
// timeout (a hung collector, a full TCP window).
func (cn *conn) send(frame []byte) error {
	t := time.AfterFunc(cn.timeout, func() { cn.st.Close() })
	err := cn.st.Send(frame)
	if !t.Stop() {
		return fmt.Errorf("%w after %s", ErrWriteTimeout, cn.timeout)
	}
	if err != nil {
		return fmt.Errorf("causality: send: %w", err)
	}
	cn.lastSent = time.Now()
	return nil
}

func (cn *conn) sendMsg(f *ingestv1.ClientFrame) error {
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	return cn.send(b)
}

// connect dials, says Hello and waits for Welcome.
func (c *Client) connect() (*conn, error) {
	ctx, cancel := context.WithTimeout(c.killCtx, c.cfg.timeout)
	defer cancel()
	st, err := c.cfg.transport.Dial(ctx, c.addr)
	if err != nil {
		return nil, fmt.Errorf("causality: dial %s: %w", c.addr, err)
	}
	cn := &conn{st: st, frames: make(chan recvd), stop: make(chan struct{}), timeout: c.cfg.timeout, logger: c.cfg.logger}
	go cn.recvLoop()
	hello := &ingestv1.Hello{ApiKey: c.key, SdkName: Name, SdkVersion: Version, ClientTimeMs: c.cfg.now().UnixMilli()}
	if err := cn.sendMsg(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Hello{Hello: hello}}); err != nil {
		cn.close()
		return nil, err
	}
	var r recvd
	select {
	case r = <-cn.frames:
	case <-ctx.Done():
		cn.close()
		if c.killCtx.Err() != nil {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("%w (%s)", ErrHandshakeTimeout, c.cfg.timeout)
	}
	if r.err == nil {
		switch f := r.f.Frame.(type) {
		case *ingestv1.ServerFrame_Welcome:
			cn.setWelcome(f.Welcome, c.cfg.flushEvents)
			return cn, nil
		case *ingestv1.ServerFrame_Error:
			r.err = &ServerError{Code: f.Error.GetCode(), Message: f.Error.GetMessage()}
		default:
			r.err = fmt.Errorf("%w: %T before Welcome", ErrProtocol, f)
		}
	}
	cn.close()
	return nil, r.err
}

func (cn *conn) setWelcome(w *ingestv1.Welcome, flushEvents int) {
	cn.welcome = w
	cn.maxFrame = int(w.GetMaxFrameBytes())
	if cn.maxFrame == 0 {
		cn.maxFrame = defaultMaxFrame
	}
	cn.maxEvents = int(w.GetMaxBatchEvents())
	if cn.maxEvents == 0 {
		cn.maxEvents = defaultBatchEvents
	}
	cn.maxEvents = min(cn.maxEvents, max(maxBatchEventsLimit, flushEvents))
	cn.heartbeat = time.Duration(w.GetHeartbeatIntervalMs()) * time.Millisecond
	if cn.heartbeat <= 0 {
		cn.heartbeat = defaultHeartbeat
	}
	cn.credits = max(int(w.GetCredits()), 1)
	cn.gzip = slices.Contains(w.GetCompressions(), ingestv1.Compression_COMPRESSION_GZIP)
	cn.lastRecv = time.Now()
}

// recvLoop decodes frames until the stream fails.
func (cn *conn) recvLoop() {
	for {
		b, err := cn.st.Recv()
		var f *ingestv1.ServerFrame
		if err == nil {
			f = &ingestv1.ServerFrame{}
			if uerr := proto.Unmarshal(b, f); uerr != nil {
				err = fmt.Errorf("causality: %w: %v", ErrMalformedFrame, uerr)
			} else if f.Frame == nil {
				// A frame type newer than this SDK: ignore it (docs/protocol.md 2.7).
				cn.logger.Debug("causality: ignoring a frame of unknown type", "bytes", len(b))
				continue
			}
		} else {
			err = fmt.Errorf("causality: receive: %w", err)
		}
		select {
		case cn.frames <- recvd{f, err}:
		case <-cn.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// batch is a Batch in flight.
type batch struct {
	recs    []*record
	dropped uint64
}

// serve runs one stream until it fails (error), or ends cleanly: drained
// (wait the returned duration, then reconnect), idle in the background, or
// closing.
func (s *sender) serve(cn *conn) (time.Duration, error) {
	c := s.c
	inflight := map[uint64]*batch{}
	var seq uint64
	defer func() {
		for _, b := range inflight {
			c.q.release(b.recs)
			c.q.reported(b.dropped, false)
		}
	}()
	draining := false
	var reconnectAfter time.Duration
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.settle()
		now := time.Now()
		force := len(s.waiters) > 0 || c.background.Load()
		// Send what may be sent.
		for !draining && !s.closing && len(inflight) < cn.credits && !now.Before(s.pauseUntil) {
			_, ready := c.q.counts()
			if ready == 0 {
				s.readySince = time.Time{}
				break
			}
			if s.readySince.IsZero() {
				s.readySince = now
			}
			if !force && ready < c.cfg.flushEvents && now.Sub(s.readySince) < c.cfg.flushInterval {
				break
			}
			b, frame := s.buildBatch(cn, seq+1)
			if b == nil {
				continue
			}
			seq++
			inflight[seq] = b
			if err := cn.send(frame); err != nil {
				return 0, err
			}
			if _, ready := c.q.counts(); ready == 0 {
				s.readySince = time.Time{}
			}
		}
		// Leave cleanly when nothing is owed.
		if len(inflight) == 0 {
			_, ready := c.q.counts()
			idleBG := c.background.Load() && ready == 0 && len(s.waiters) == 0
			if draining || s.closing || idleBG {
				_ = cn.sendMsg(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Goodbye{Goodbye: &ingestv1.Goodbye{Reason: goodbyeReason(draining, s.closing)}}})
				return reconnectAfter, nil
			}
		}
		// Wait for the next thing to do.
		next := cn.lastRecv.Add(3 * cn.heartbeat) // silence deadline
		next = earliest(next, cn.lastSent.Add(cn.heartbeat))
		if !s.readySince.IsZero() {
			next = earliest(next, s.readySince.Add(c.cfg.flushInterval))
		}
		if now.Before(s.pauseUntil) {
			next = earliest(next, s.pauseUntil)
		}
		timer.Reset(max(next.Sub(now), time.Millisecond))
		select {
		case r := <-cn.frames:
			if r.err != nil {
				return 0, r.err
			}
			cn.lastRecv = time.Now()
			switch f := r.f.Frame.(type) {
			case *ingestv1.ServerFrame_Ack:
				b := inflight[f.Ack.GetSeq()]
				if b == nil {
					return 0, fmt.Errorf("%w: ack for unknown batch %d", ErrProtocol, f.Ack.GetSeq())
				}
				if len(f.Ack.GetResults()) != len(b.recs) {
					return 0, fmt.Errorf("%w: ack for batch %d has %d results for %d events", ErrProtocol, f.Ack.GetSeq(), len(f.Ack.GetResults()), len(b.recs))
				}
				delete(inflight, f.Ack.GetSeq())
				s.ack(b, f.Ack)
			case *ingestv1.ServerFrame_Pong:
				c.cfg.logger.Debug("causality: pong", "rtt", time.Since(time.UnixMilli(f.Pong.GetClientTimeMs())))
			case *ingestv1.ServerFrame_Throttle:
				s.pause(time.Duration(f.Throttle.GetDelayMs()) * time.Millisecond)
				c.cfg.logger.Info("causality: throttled", "delay_ms", f.Throttle.GetDelayMs(), "reason", f.Throttle.GetReason())
			case *ingestv1.ServerFrame_Drain:
				draining = true
				reconnectAfter = time.Duration(f.Drain.GetReconnectAfterMs()) * time.Millisecond
				c.cfg.logger.Info("causality: collector draining", "reason", f.Drain.GetReason(), "reconnect_after", reconnectAfter)
			case *ingestv1.ServerFrame_Error:
				return 0, &ServerError{Code: f.Error.GetCode(), Message: f.Error.GetMessage()}
			default:
				return 0, fmt.Errorf("%w: unexpected %T", ErrProtocol, f)
			}
		case <-timer.C:
			now := time.Now()
			if now.Sub(cn.lastRecv) >= 3*cn.heartbeat {
				return 0, fmt.Errorf("%w (%s)", ErrServerSilent, 3*cn.heartbeat)
			}
			if now.Sub(cn.lastSent) >= cn.heartbeat {
				ping := &ingestv1.Ping{ClientTimeMs: c.cfg.now().UnixMilli()}
				if err := cn.sendMsg(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: ping}}); err != nil {
					return 0, err
				}
			}
		case <-c.q.notify:
		case <-c.flushWake:
			s.takeFlushes()
		case <-c.life:
		case <-c.quit:
			s.closing = true
		case <-c.killCtx.Done():
			return 0, ErrClosed
		}
	}
}

func goodbyeReason(draining, closing bool) string {
	switch {
	case draining:
		return "drained"
	case closing:
		return "closing"
	}
	return "idle in background"
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// pause holds new batches for d (rate limited, retry, throttle).
func (s *sender) pause(d time.Duration) {
	if until := time.Now().Add(d); until.After(s.pauseUntil) {
		s.pauseUntil = until
	}
}

// ack applies the per-event results of a batch.
func (s *sender) ack(b *batch, a *ingestv1.Ack) {
	c := s.c
	var finished, again []*record
	var retryAfter time.Duration
	for i, res := range a.GetResults() {
		r := b.recs[i]
		switch res.GetStatus() {
		case ingestv1.EventStatus_EVENT_STATUS_ACCEPTED, ingestv1.EventStatus_EVENT_STATUS_DUPLICATE:
			finished = append(finished, r)
			c.acked.Add(1)
		case ingestv1.EventStatus_EVENT_STATUS_INVALID:
			finished = append(finished, r)
			c.invalid.Add(1)
			c.cfg.logger.Warn("causality: event refused as invalid", "event_id", res.GetEventId(), "reason", res.GetReason().String(), "detail", res.GetDetail())
		default: // rate limited, retry, or a status this SDK does not know
			again = append(again, r)
			retryAfter = max(retryAfter, time.Duration(res.GetRetryAfterMs())*time.Millisecond)
		}
	}
	c.q.done(finished...)
	c.q.release(again)
	c.q.reported(b.dropped, true)
	if len(again) > 0 {
		s.pause(max(retryAfter, minRetryAfter))
	}
	s.attempt = 0 // the collector works
}

// buildBatch takes ready records and encodes a ClientFrame{Batch}. Events
// are copied from the queue as they are stored (already serialized), so a
// batch costs no marshalling. It returns nil when nothing could be taken.
func (s *sender) buildBatch(cn *conn, seq uint64) (*batch, []byte) {
	c := s.c
	const head = 6            // room for the ClientFrame tag and the Batch length
	const tail = 3 * (1 + 10) // seq, sent_at_ms, dropped_events
	recs, tooLarge := c.q.take(cn.maxEvents, cn.maxFrame-head-tail)
	if tooLarge > 0 {
		c.invalid.Add(uint64(tooLarge))
		c.cfg.logger.Warn("causality: events larger than the collector's frame limit; dropped", "count", tooLarge)
	}
	if len(recs) == 0 {
		return nil, nil
	}
	buf := append(cn.buf[:0], make([]byte, head)...)
	kept := recs[:0]
	var lost []*record
	for _, r := range recs {
		start := len(buf)
		buf = protowire.AppendTag(buf, 2, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(r.n))
		var ok bool
		if buf, ok = c.q.appendData(buf, r); ok {
			kept = append(kept, r)
		} else {
			buf = buf[:start]
			lost = append(lost, r)
		}
	}
	c.q.done(lost...)
	if len(kept) == 0 {
		return nil, nil
	}
	if n := len(buf) - head; cn.gzip && c.cfg.compressAbove > 0 && n > c.cfg.compressAbove {
		buf = cn.compress(buf, head)
	}
	b := &batch{recs: kept, dropped: c.q.takeDropped()}
	buf = protowire.AppendTag(buf, 1, protowire.VarintType)
	buf = protowire.AppendVarint(buf, seq)
	buf = protowire.AppendTag(buf, 3, protowire.VarintType)
	buf = protowire.AppendVarint(buf, uint64(c.cfg.now().UnixMilli()))
	if b.dropped > 0 {
		buf = protowire.AppendTag(buf, 4, protowire.VarintType)
		buf = protowire.AppendVarint(buf, b.dropped)
	}
	// Fields may come in any order, so events first and seq after is a
	// valid Batch. Now put the ClientFrame.batch tag and length in front.
	n := uint64(len(buf) - head)
	start := head - 1 - protowire.SizeVarint(n)
	protowire.AppendVarint(protowire.AppendTag(buf[start:start], 2, protowire.BytesType), n) // writes in place
	if cap(buf) <= 4<<20 {
		cn.buf = buf
	}
	return b, buf[start:]
}

// compress replaces the events in buf[head:] (Batch.events fields) with
// Batch.compressed_events and Batch.compression, when gzip makes them
// smaller. The events are already an EventList but for their field number
// (Batch.events is 2, EventList.events is 1), which is one tag byte each.
func (cn *conn) compress(buf []byte, head int) []byte {
	events := buf[head:]
	if !setEventTags(events, protowire.EncodeTag(1, protowire.BytesType)) {
		return buf
	}
	cn.zbuf = gzipAppend(cn.zbuf[:0], events)
	const tail = 1 + 10 + 2 // compressed_events tag and length, compression
	if len(cn.zbuf)+tail >= len(events) {
		setEventTags(events, protowire.EncodeTag(2, protowire.BytesType))
		return buf
	}
	buf = protowire.AppendTag(buf[:head], 5, protowire.BytesType)
	buf = protowire.AppendBytes(buf, cn.zbuf)
	buf = protowire.AppendTag(buf, 6, protowire.VarintType)
	buf = protowire.AppendVarint(buf, uint64(ingestv1.Compression_COMPRESSION_GZIP))
	if cap(cn.zbuf) > 4<<20 {
		cn.zbuf = nil
	}
	return buf
}

// setEventTags rewrites the one-byte tag of each length-delimited field in
// b, which holds only such fields; false if b is not that.
func setEventTags(b []byte, tag uint64) bool {
	for i := 0; i < len(b); {
		_, n := protowire.ConsumeBytes(b[i+1:])
		if n < 0 {
			return false
		}
		b[i] = byte(tag)
		i += 1 + n
	}
	return true
}

// gzipWriters are reused: a gzip.Writer allocates about 800 KiB.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed)
	return zw
}}

// gzipAppend appends src, gzipped, to dst.
func gzipAppend(dst, src []byte) []byte {
	zw := gzipWriters.Get().(*gzip.Writer)
	out := bytes.NewBuffer(dst)
	zw.Reset(out)
	_, _ = zw.Write(src) // a bytes.Buffer does not fail
	_ = zw.Close()
	zw.Reset(io.Discard)
	gzipWriters.Put(zw)
	return out.Bytes()
}
