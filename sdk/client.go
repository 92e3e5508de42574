package sdk

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// SDK name and version sent in Hello and stamped in DeviceContext.sdk_version.
const (
	Name    = "causality-go"
	Version = "0.1.0"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("causality: client closed")

// Files of the queue dir besides the queue itself.
const (
	installIDFile = "install_id"
	userIDFile    = "user_id"
	optOutFile    = "opt_out"
)

// Client records events and delivers them to one collector. Its methods are
// safe for concurrent use. Track never blocks: it stamps the event and hands
// it to a bounded buffer; a background writer queues it (on disk with
// WithQueueDir) and a background sender delivers it.
type Client struct {
	cfg       config
	addr, key string
	q         *queue

	in        chan input    // Track → writer
	poke      chan struct{} // wakes the writer after a state change
	flushMu   sync.Mutex
	flushQ    []flushReq    // writer → sender: flush marks
	flushGone bool          // the sender has stopped
	flushWake chan struct{} // a token when flushQ grows
	life      chan struct{} // wakes the sender after Background/Foreground
	quit      chan struct{} // closed by Close: finish up
	kill      context.CancelFunc
	killCtx   context.Context // ended when Close's ctx ends: stop now
	wg        sync.WaitGroup
	senderEnd chan struct{}

	mu        sync.Mutex
	closed    bool
	optedOut  bool
	consent   Consent
	userID    string
	dirty     bool // userID or optedOut changed: the writer persists them
	sess      sessions
	installID string
	deviceID  string
	device    *eventv1.DeviceContext
	sampled   bool
	lastErr   error

	background atomic.Bool
	connected  atomic.Bool
	held       atomic.Int64
	tracked    atomic.Uint64
	discarded  atomic.Uint64
	overflow   atomic.Uint64 // dropped by Track, not yet moved into the queue's count
	dropped    atomic.Uint64 // dropped by Track or while held, total
	acked      atomic.Uint64
	invalid    atomic.Uint64
}

// input is what Track and Flush hand to the writer.
type input struct {
	e       *eventv1.Event
	pending bool    // tracked while consent was pending
	mark    *marker // a Flush or Sync
}

type marker struct {
	flush bool       // wait for acknowledgement, not only the disk
	done  chan error // buffered
}

// New returns a client for the collector at addr (host:port for TCP) with
// the app's ingest key. It does not connect: the first event does. It fails
// on bad options or when the queue dir cannot be used.
func New(addr, key string, opts ...Option) (*Client, error) {
	if addr == "" {
		return nil, errors.New("causality: collector address is empty")
	}
	if key == "" {
		return nil, errors.New("causality: ingest key is empty")
	}
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("causality: %w", err)
	}
	q, err := openQueue(cfg.dir, cfg.queueEvents, cfg.queueBytes, cfg.fsync, cfg.logger)
	if err != nil {
		return nil, fmt.Errorf("causality: %w", err)
	}
	c := &Client{
		cfg: cfg, addr: addr, key: key, q: q,
		in:        make(chan input, cfg.buffer),
		poke:      make(chan struct{}, 1),
		flushWake: make(chan struct{}, 1),
		life:      make(chan struct{}, 1),
		quit:      make(chan struct{}),
		senderEnd: make(chan struct{}),
		consent:   cfg.consent,
	}
	c.killCtx, c.kill = context.WithCancel(context.Background())
	if err := c.loadState(); err != nil {
		q.close()
		return nil, fmt.Errorf("causality: %w", err)
	}
	c.deviceID = cfg.deviceID
	if c.deviceID == "" {
		c.deviceID = c.installID
	}
	c.sampled = sampled(c.deviceID, cfg.sampleRate)
	c.device = &eventv1.DeviceContext{}
	if cfg.device != nil {
		c.device = proto.Clone(cfg.device).(*eventv1.DeviceContext)
	}
	if c.device.SdkVersion == "" {
		c.device.SdkVersion = Name + "/" + Version
	}
	c.wg.Add(1)
	go c.writeLoop()
	go c.sendLoop()
	return c, nil
}

// loadState reads the install id, user id and opt-out flag of the queue dir,
// creating the install id on first launch.
func (c *Client) loadState() error {
	dir := c.cfg.dir
	if dir == "" {
		c.installID = newID(c.cfg.now())
		return nil
	}
	id, err := readSmallFile(dir, installIDFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read install id: %w", err)
	}
	if id == "" {
		id = newID(c.cfg.now())
		if err := writeSmallFile(dir, installIDFile, id, c.cfg.fsync); err != nil {
			return fmt.Errorf("save install id: %w", err)
		}
	}
	c.installID = id
	c.userID, _ = readSmallFile(dir, userIDFile)
	_, err = os.Stat(filepath.Join(dir, optOutFile))
	c.optedOut = err == nil
	return nil
}

// saveState persists the user id and opt-out flag; the writer calls it.
func (c *Client) saveState() {
	c.mu.Lock()
	dirty, user, out := c.dirty, c.userID, c.optedOut
	c.dirty = false
	c.mu.Unlock()
	dir := c.cfg.dir
	if !dirty || dir == "" {
		return
	}
	var err error
	if user == "" {
		err = removeIfExists(filepath.Join(dir, userIDFile))
	} else {
		err = writeSmallFile(dir, userIDFile, user, c.cfg.fsync)
	}
	if out {
		err = errors.Join(err, writeSmallFile(dir, optOutFile, "1", c.cfg.fsync))
	} else {
		err = errors.Join(err, removeIfExists(filepath.Join(dir, optOutFile)))
	}
	if err != nil {
		c.cfg.logger.Warn("causality: save identity", "err", err)
	}
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// sampled reports whether deviceID falls within rate: a hash of the id,
// so the same device is always in or always out. FNV-1a alone leaves ids
// that differ in their last byte close together in the high bits, so the
// MurmurHash3 finalizer mixes it.
func sampled(deviceID string, rate float64) bool {
	h := fnv.New64a()
	h.Write([]byte(deviceID))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return float64(x>>11)/(1<<53) < rate
}

// Track records e. It never blocks and never touches the disk or the
// network: it fills what e leaves empty (event id, timestamp, device,
// install, session and user ids, device context) and hands e to a bounded
// buffer. When the buffer is full the event is dropped and counted (and the
// count reported to the collector). The client owns e from then on: do not
// modify or reuse it.
//
// Track's event is durable (in the queue file) once the background writer
// has written it, normally within microseconds; Sync and Flush wait for it.
// Events discarded by opt-out, denied consent or sampling are not queued.
func (c *Client) Track(e *eventv1.Event) {
	if e == nil {
		return
	}
	now := c.cfg.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.optedOut || !c.sampled || c.consent == ConsentDenied {
		c.discarded.Add(1)
		return
	}
	if e.EventId == "" {
		e.EventId = newID(now)
	}
	if e.TimestampMs == 0 {
		e.TimestampMs = now.UnixMilli()
	}
	if e.DeviceId == "" {
		e.DeviceId = c.deviceID
	}
	if e.InstallId == "" {
		e.InstallId = c.installID
	}
	if s := c.sess.at(now); e.SessionId == "" {
		e.SessionId = s
	}
	if e.UserId == "" {
		e.UserId = c.userID
	}
	if e.DeviceContext == nil {
		e.DeviceContext = c.device
	}
	select {
	case c.in <- input{e: e, pending: c.consent == ConsentPending}:
		c.tracked.Add(1)
	default:
		c.overflow.Add(1)
		c.dropped.Add(1)
	}
}

// Identify sets the user id stamped on later events (persisted in the queue
// dir). Events already tracked keep theirs.
func (c *Client) Identify(userID string) {
	c.mu.Lock()
	c.userID, c.dirty = userID, true
	c.mu.Unlock()
	c.wakeWriter()
}

// Reset forgets the user id and starts a new session (a user logged out).
func (c *Client) Reset() {
	c.mu.Lock()
	c.userID, c.dirty = "", true
	c.sess.reset()
	c.mu.Unlock()
	c.wakeWriter()
}

// SetConsent changes the consent state. Granted queues the events held while
// pending, with their original timestamps; denied discards them and every
// later event. Events queued while consent was granted are still delivered.
func (c *Client) SetConsent(s Consent) {
	c.mu.Lock()
	c.consent = s
	c.mu.Unlock()
	c.wakeWriter()
}

// OptOut stops (true) or resumes (false) tracking for this install. Opting
// out also deletes queued events that were not yet delivered. The choice is
// kept in the queue dir across launches.
func (c *Client) OptOut(out bool) {
	c.mu.Lock()
	c.optedOut, c.dirty = out, true
	c.mu.Unlock()
	c.wakeWriter()
}

// Background tells the client the app went to the background: queued
// events are sent at once, and the connection is closed once nothing is left
// to send. After SessionBackgroundTimeout in the background the session ends.
func (c *Client) Background() {
	c.mu.Lock()
	c.sess.toBackground(c.cfg.now())
	c.mu.Unlock()
	c.background.Store(true)
	c.wakeSender()
}

// Foreground tells the client the app is in the foreground again.
func (c *Client) Foreground() {
	c.mu.Lock()
	c.sess.toForeground(c.cfg.now())
	c.mu.Unlock()
	c.background.Store(false)
	c.wakeSender()
}

func (c *Client) wakeWriter() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

func (c *Client) wakeSender() {
	select {
	case c.life <- struct{}{}:
	default:
	}
}

// Sync returns once every event tracked before the call is in the queue
// (written, and fsynced unless WithFsync(false)), or ctx ends. Events held
// for consent are not waited for.
func (c *Client) Sync(ctx context.Context) error { return c.mark(ctx, false) }

// Flush returns once every event tracked before the call has been
// acknowledged by the collector (or given up: invalid, or dropped because the
// queue was full), or ctx ends. It makes the client send at once. Events held
// for consent are not waited for.
func (c *Client) Flush(ctx context.Context) error { return c.mark(ctx, true) }

func (c *Client) mark(ctx context.Context, flush bool) error {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return c.waitMark(ctx, flush)
}

func (c *Client) waitMark(ctx context.Context, flush bool) error {
	m := &marker{flush: flush, done: make(chan error, 1)}
	select {
	case c.in <- input{mark: m}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-m.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close flushes (see Flush), says Goodbye to the collector and stops the
// client. Events not acknowledged when ctx ends stay in the queue dir for
// the next launch (or are lost, without one); Close then returns ctx.Err().
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closed = true // Track discards from now on
	c.mu.Unlock()
	err := c.waitMark(ctx, true)
	close(c.quit)
	select {
	case <-c.senderEnd:
	case <-ctx.Done():
		c.kill()
		<-c.senderEnd
	}
	c.kill()
	c.wg.Wait()
	c.q.close()
	return err
}

// Stats is a snapshot of a client's counters.
type Stats struct {
	Tracked   uint64 // events Track handed to the writer
	Discarded uint64 // not kept on purpose: opt-out, denied consent, sampling, after Close
	Dropped   uint64 // lost because the buffer, the queue or the consent hold was full; reported to the collector
	Invalid   uint64 // refused by the collector as invalid, or too large to send
	Acked     uint64 // accepted by the collector (or already there)
	Queued    int    // in the queue, not yet acknowledged
	Held      int    // held in memory while consent is pending
	Torn      int    // torn records cut off the queue files when opening
	Connected bool
	LastError error // the last connection failure, if any
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	live, _ := c.q.counts()
	c.q.mu.Lock()
	qs := c.q.stats
	c.q.mu.Unlock()
	c.mu.Lock()
	lastErr := c.lastErr
	c.mu.Unlock()
	return Stats{
		Tracked:   c.tracked.Load(),
		Discarded: c.discarded.Load(),
		Dropped:   c.dropped.Load() + qs.dropped,
		Invalid:   c.invalid.Load(),
		Acked:     c.acked.Load(),
		Queued:    live,
		Held:      int(c.held.Load()),
		Torn:      qs.torn,
		Connected: c.connected.Load(),
		LastError: lastErr,
	}
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}
