package sim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/services/internal/ingest"
)

// ErrKeyRejected is returned when the collector refuses the ingest key.
var ErrKeyRejected = errors.New("ingest key rejected")

const (
	sdkName          = "causality-sim"
	sdkVersion       = "0.1.0"
	maxServerFrame   = 16 << 20
	ioTimeout        = 10 * time.Second
	minRetryDelay    = 50 * time.Millisecond
	maxReconnectWait = 5 * time.Second
)

// conn is one TCP connection speaking the collector's frame protocol
// (docs/protocol.md): Hello, Welcome, then batches and acks.
type conn struct {
	nc      net.Conn
	welcome *ingestv1.Welcome
	frames  chan *ingestv1.ServerFrame // closed when the connection ends
	err     error                      // why it ended; read after frames is closed
	done    chan struct{}
	out     []byte
}

// dial connects, says Hello and waits for Welcome.
func dial(ctx context.Context, addr, key string) (*conn, error) {
	d := net.Dialer{Timeout: ioTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to the collector at %s: %w", addr, err)
	}
	c := &conn{nc: nc, frames: make(chan *ingestv1.ServerFrame, 16), done: make(chan struct{})}
	hello := &ingestv1.Hello{ApiKey: key, SdkName: sdkName, SdkVersion: sdkVersion, ClientTimeMs: time.Now().UnixMilli()}
	if err := c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Hello{Hello: hello}}); err != nil {
		nc.Close()
		return nil, fmt.Errorf("send Hello to %s: %w", addr, err)
	}
	r := bufio.NewReaderSize(nc, 64<<10)
	_ = nc.SetReadDeadline(time.Now().Add(ioTimeout))
	f, err := readServerFrame(r)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("wait for Welcome from %s: %w", addr, err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	switch f := f.GetFrame().(type) {
	case *ingestv1.ServerFrame_Welcome:
		c.welcome = f.Welcome
	case *ingestv1.ServerFrame_Error:
		nc.Close()
		switch f.Error.GetCode() {
		case ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED:
			return nil, fmt.Errorf("%w by %s: %s", ErrKeyRejected, addr, f.Error.GetMessage())
		}
		return nil, fmt.Errorf("collector at %s refused the stream: %s: %s", addr, f.Error.GetCode(), f.Error.GetMessage())
	default:
		nc.Close()
		return nil, fmt.Errorf("collector at %s answered Hello with %T, not Welcome", addr, f)
	}
	go c.read(r)
	return c, nil
}

func readServerFrame(r *bufio.Reader) (*ingestv1.ServerFrame, error) {
	b, err := ingest.ReadFrame(r, maxServerFrame, nil)
	if err != nil {
		return nil, err
	}
	f := &ingestv1.ServerFrame{}
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("decode server frame: %w", err)
	}
	return f, nil
}

func (c *conn) read(r *bufio.Reader) {
	defer close(c.frames)
	for {
		f, err := readServerFrame(r)
		if err != nil {
			c.err = err
			return
		}
		select {
		case c.frames <- f:
		case <-c.done:
			c.err = net.ErrClosed
			return
		}
	}
}

func (c *conn) send(f *ingestv1.ClientFrame) error {
	out, err := ingest.AppendFrame(c.out[:0], f)
	if err != nil {
		return err
	}
	c.out = out
	_ = c.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err = c.nc.Write(out)
	return err
}

// close ends the connection, saying Goodbye first when polite.
func (c *conn) close(polite bool) {
	if polite {
		_ = c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Goodbye{Goodbye: &ingestv1.Goodbye{Reason: "simulation done"}}})
	}
	close(c.done)
	c.nc.Close()
}

// item is one event on its way: queued, in flight or waiting for a retry.
type item struct {
	ev    *eventv1.Event
	skew  time.Duration
	sends int
}

type flight struct {
	items  []*item
	sentAt time.Time
}

type waiting struct {
	it *item
	at time.Time
}

// link carries the events of some devices over one connection at a time,
// reconnecting when it breaks, until its input is closed and every event is
// acknowledged or rejected, or ctx ends. It owns its items: only its
// goroutine touches them.
type link struct {
	cfg    *Config
	in     chan *item
	st     *stats
	logger *slog.Logger
	c      *conn

	pending  []*item
	waiting  []waiting
	inflight map[uint64]*flight
	seq      uint64
	backoff  time.Duration
	redial   time.Time // no dial before this
	throttle time.Time // no batch before this
	draining bool
	lastSend time.Time
	since    time.Time // when the oldest pending item arrived
}

func (l *link) run(ctx context.Context) error {
	l.inflight = map[uint64]*flight{}
	l.backoff = 100 * time.Millisecond
	in := l.in
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	defer func() {
		if l.c != nil {
			l.c.close(false)
		}
	}()
	for {
		now := time.Now()
		l.release(now)
		if in == nil && len(l.pending)+len(l.waiting)+len(l.inflight) == 0 {
			if l.c != nil {
				l.c.close(true)
				l.c = nil
			}
			return nil
		}
		if l.c == nil && !now.Before(l.redial) {
			if err := l.connect(ctx); err != nil {
				return err
			}
			now = time.Now()
		}
		if l.c != nil {
			l.flush(now, in == nil)
		}
		if l.c != nil && l.draining && len(l.inflight) == 0 {
			l.c.close(true) // drained: come back after reconnect_after_ms
			l.c = nil
		}
		if l.c != nil && now.Sub(l.lastSend) >= l.heartbeat() {
			l.ping(now)
		}

		timer.Reset(max(l.nextWake(now, in == nil).Sub(now), time.Millisecond))
		var frames <-chan *ingestv1.ServerFrame
		if l.c != nil {
			frames = l.c.frames
		}
		inCh := in
		if len(l.pending)+len(l.waiting) >= l.cfg.maxPending() {
			inCh = nil // backpressure: the generator blocks
		}
		select {
		case it, ok := <-inCh:
			if !ok {
				in = nil
				continue
			}
			l.queue(it, now)
			// Take what else is ready without going round the loop.
			for more := true; more && len(l.pending) < l.cfg.maxPending(); {
				select {
				case it, ok := <-in:
					if !ok {
						in, more = nil, false
					} else {
						l.queue(it, now)
					}
				default:
					more = false
				}
			}
		case f, ok := <-frames:
			if !ok {
				l.lost(l.c.err)
				continue
			}
			if err := l.handle(f); err != nil {
				return err
			}
		case <-timer.C:
		case <-ctx.Done():
			return nil
		}
	}
}

func (l *link) queue(it *item, now time.Time) {
	if len(l.pending) == 0 {
		l.since = now
	}
	l.pending = append(l.pending, it)
}

// release moves items whose retry time has come back to the front of the
// queue.
func (l *link) release(now time.Time) {
	var back []*item
	keep := l.waiting[:0]
	for _, w := range l.waiting {
		if now.Before(w.at) {
			keep = append(keep, w)
		} else {
			back = append(back, w.it)
		}
	}
	l.waiting = keep
	if len(back) > 0 {
		if len(l.pending) == 0 {
			l.since = now
		}
		l.pending = append(back, l.pending...)
	}
}

func (l *link) connect(ctx context.Context) error {
	c, err := dial(ctx, l.cfg.Addr, l.cfg.Key)
	switch {
	case errors.Is(err, ErrKeyRejected):
		return err
	case err != nil:
		if ctx.Err() == nil {
			l.logger.Warn("collector unreachable; retrying", "in", l.backoff, "err", err)
		}
		l.redial = time.Now().Add(l.backoff)
		l.backoff = min(2*l.backoff, maxReconnectWait)
		return nil
	}
	l.c, l.draining, l.backoff = c, false, 100*time.Millisecond
	l.lastSend = time.Now()
	l.st.connects.Add(1)
	return nil
}

func (l *link) canSend(now time.Time) bool {
	return l.c != nil && !l.draining && !now.Before(l.throttle) &&
		len(l.inflight) < int(max(1, l.c.welcome.GetCredits())) && len(l.pending) > 0
}

func (l *link) batchLimit() int {
	n := l.cfg.BatchSize
	if m := int(l.c.welcome.GetMaxBatchEvents()); m > 0 {
		n = min(n, m)
	}
	return n
}

// flush sends batches while credits allow: full ones, or the partial one
// once it lingered long enough (or at the end).
func (l *link) flush(now time.Time, ending bool) {
	for l.canSend(now) {
		n := l.batchLimit()
		if len(l.pending) < n && now.Sub(l.since) < l.cfg.Linger && !ending {
			return
		}
		maxBytes := int(l.c.welcome.GetMaxFrameBytes())
		if maxBytes == 0 {
			maxBytes = ingest.DefaultMaxFrameBytes
		}
		maxBytes -= 1024 // frame overhead, sent_at fields
		size, k := 0, 0
		for k < min(n, len(l.pending)) {
			s := proto.Size(l.pending[k].ev) + 8
			if k > 0 && size+s > maxBytes {
				break
			}
			size += s
			k++
		}
		items := slices.Clone(l.pending[:k])
		b := &ingestv1.Batch{Seq: l.seq + 1, SentAtMs: now.UnixMilli(), Events: make([]*eventv1.Event, k)}
		for i, it := range items {
			it.ev.SentAtMs = now.Add(it.skew).UnixMilli() // the device clock at send time
			b.Events[i] = it.ev
		}
		if err := l.c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: b}}); err != nil {
			l.lost(err)
			return
		}
		l.seq++
		for _, it := range items {
			if it.sends == 0 {
				l.st.sent.Add(1)
			} else {
				l.st.retries.Add(1)
			}
			it.sends++
		}
		l.inflight[l.seq] = &flight{items: items, sentAt: now}
		l.pending = l.pending[k:]
		l.since, l.lastSend = now, now
	}
}

func (l *link) heartbeat() time.Duration {
	hb := time.Duration(l.c.welcome.GetHeartbeatIntervalMs()) * time.Millisecond
	if hb <= 0 {
		hb = 15 * time.Second
	}
	return hb
}

func (l *link) ping(now time.Time) {
	if err := l.c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{ClientTimeMs: now.UnixMilli()}}}); err != nil {
		l.lost(err)
		return
	}
	l.lastSend = now
}

// nextWake is when something may become possible without a frame arriving.
func (l *link) nextWake(now time.Time, ending bool) time.Time {
	wake := now.Add(time.Second)
	if l.c == nil {
		wake = minTime(wake, l.redial)
	} else {
		wake = minTime(wake, l.lastSend.Add(l.heartbeat()))
		if now.Before(l.throttle) {
			wake = minTime(wake, l.throttle)
		} else if l.canSend(now) && !ending {
			wake = minTime(wake, l.since.Add(l.cfg.Linger))
		}
	}
	for _, w := range l.waiting {
		wake = minTime(wake, w.at)
	}
	return wake
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// lost handles a broken connection: everything in flight is sent again on
// the next one (the collector answers duplicate for what it already has).
func (l *link) lost(err error) {
	if l.c == nil {
		return
	}
	if !l.draining {
		l.logger.Warn("connection to the collector lost; reconnecting", "in_flight_batches", len(l.inflight), "err", err)
	}
	l.c.close(false)
	l.c = nil
	l.st.reconnects.Add(1)
	seqs := make([]uint64, 0, len(l.inflight))
	for s := range l.inflight {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	var back []*item
	for _, s := range seqs {
		back = append(back, l.inflight[s].items...)
	}
	clear(l.inflight)
	if len(back) > 0 {
		l.since = time.Now()
		l.pending = append(back, l.pending...)
	}
	if l.redial.Before(time.Now()) {
		l.redial = time.Now().Add(l.backoff)
		l.backoff = min(2*l.backoff, maxReconnectWait)
	}
}

func (l *link) handle(f *ingestv1.ServerFrame) error {
	now := time.Now()
	switch f := f.GetFrame().(type) {
	case *ingestv1.ServerFrame_Ack:
		fl, ok := l.inflight[f.Ack.GetSeq()]
		if !ok {
			l.logger.Warn("ack for a batch not in flight", "seq", f.Ack.GetSeq())
			return nil
		}
		delete(l.inflight, f.Ack.GetSeq())
		l.st.observe(now.Sub(fl.sentAt))
		results := f.Ack.GetResults()
		for i, it := range fl.items {
			var r *ingestv1.EventResult
			if i < len(results) {
				r = results[i]
			}
			switch r.GetStatus() {
			case ingestv1.EventStatus_EVENT_STATUS_ACCEPTED:
				l.st.acked(it.ev.GetEventId(), false)
			case ingestv1.EventStatus_EVENT_STATUS_DUPLICATE:
				l.st.acked(it.ev.GetEventId(), true)
			case ingestv1.EventStatus_EVENT_STATUS_INVALID:
				l.st.reject(strings.ToLower(strings.TrimPrefix(r.GetReason().String(), "INVALID_REASON_")))
			default: // rate_limited, retry, or a result missing: send it again later
				if r.GetStatus() == ingestv1.EventStatus_EVENT_STATUS_RATE_LIMITED {
					l.st.rateLimited.Add(1)
				} else {
					l.st.retryResults.Add(1)
				}
				wait := max(time.Duration(r.GetRetryAfterMs())*time.Millisecond, minRetryDelay)
				l.waiting = append(l.waiting, waiting{it, now.Add(wait)})
			}
		}
	case *ingestv1.ServerFrame_Throttle:
		l.throttle = now.Add(time.Duration(f.Throttle.GetDelayMs()) * time.Millisecond)
	case *ingestv1.ServerFrame_Drain:
		// Send nothing new, wait for the acks, then reconnect later.
		l.draining = true
		l.redial = now.Add(time.Duration(f.Drain.GetReconnectAfterMs()) * time.Millisecond)
		l.st.drains.Add(1)
	case *ingestv1.ServerFrame_Error:
		switch f.Error.GetCode() {
		case ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED:
			return fmt.Errorf("%w: %s", ErrKeyRejected, f.Error.GetMessage())
		}
		l.logger.Warn("collector closed the stream", "code", f.Error.GetCode().String(), "msg", f.Error.GetMessage())
	case *ingestv1.ServerFrame_Pong:
	}
	return nil
}
