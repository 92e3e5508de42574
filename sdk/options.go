package sdk

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Defaults, each overridable with an Option (docs/sdk.md).
const (
	DefaultFlushEvents   = 50
	DefaultFlushInterval = time.Second
	DefaultQueueEvents   = 10_000
	DefaultQueueBytes    = 8 << 20
	DefaultBuffer        = 1024
	DefaultTimeout       = 10 * time.Second
	DefaultMinBackoff    = 250 * time.Millisecond
	DefaultMaxBackoff    = 30 * time.Second
	// DefaultCompressionThreshold: batches whose events serialize to more
	// bytes than this are gzipped, when the collector inflates gzip.
	DefaultCompressionThreshold = 4 << 10
)

// Consent is the user's answer to the app's tracking consent prompt.
type Consent int

const (
	// ConsentGranted: events are queued and sent (the default).
	ConsentGranted Consent = iota
	// ConsentPending: events are held in memory (bounded by the queue's
	// event limit) until the answer is known.
	ConsentPending
	// ConsentDenied: events are discarded, including those held while pending.
	ConsentDenied
)

func (c Consent) String() string {
	switch c {
	case ConsentGranted:
		return "granted"
	case ConsentPending:
		return "pending"
	case ConsentDenied:
		return "denied"
	}
	return fmt.Sprintf("Consent(%d)", int(c))
}

type config struct {
	transport     Transport
	dir           string
	logger        *slog.Logger
	flushEvents   int
	flushInterval time.Duration
	queueEvents   int
	queueBytes    int64
	buffer        int
	sampleRate    float64
	deviceID      string
	device        *eventv1.DeviceContext
	consent       Consent
	now           func() time.Time
	timeout       time.Duration
	minBackoff    time.Duration
	maxBackoff    time.Duration
	fsync         bool
	compressAbove int
}

func defaults() config {
	return config{
		transport:     defaultTransport(),
		logger:        slog.New(slog.DiscardHandler),
		flushEvents:   DefaultFlushEvents,
		flushInterval: DefaultFlushInterval,
		queueEvents:   DefaultQueueEvents,
		queueBytes:    DefaultQueueBytes,
		buffer:        DefaultBuffer,
		sampleRate:    1,
		now:           time.Now,
		timeout:       DefaultTimeout,
		minBackoff:    DefaultMinBackoff,
		maxBackoff:    DefaultMaxBackoff,
		fsync:         true,
		compressAbove: DefaultCompressionThreshold,
	}
}

func (c *config) validate() error {
	switch {
	case c.transport == nil:
		return errors.New("transport is nil (in js/wasm pass WithTransport(wstransport.New()))")
	case c.logger == nil:
		return errors.New("logger is nil")
	case c.now == nil:
		return errors.New("clock is nil")
	case c.flushEvents < 1:
		return fmt.Errorf("flush size %d: must be at least 1", c.flushEvents)
	case c.flushInterval <= 0:
		return fmt.Errorf("flush interval %s: must be positive", c.flushInterval)
	case c.queueEvents < 1:
		return fmt.Errorf("queue limit of %d events: must be at least 1", c.queueEvents)
	case c.queueBytes < 64<<10:
		return fmt.Errorf("queue limit of %d bytes: must be at least 64 KiB", c.queueBytes)
	case c.buffer < 1:
		return fmt.Errorf("buffer of %d events: must be at least 1", c.buffer)
	case !(c.sampleRate >= 0 && c.sampleRate <= 1):
		return fmt.Errorf("sample rate %v: must be within [0, 1]", c.sampleRate)
	case c.consent < ConsentGranted || c.consent > ConsentDenied:
		return fmt.Errorf("consent %d: unknown", c.consent)
	case c.timeout <= 0:
		return fmt.Errorf("timeout %s: must be positive", c.timeout)
	case c.minBackoff <= 0 || c.maxBackoff < c.minBackoff:
		return fmt.Errorf("backoff %s..%s: need 0 < min <= max", c.minBackoff, c.maxBackoff)
	case c.compressAbove < 0:
		return fmt.Errorf("compression threshold %d bytes: must be 0 (off) or positive", c.compressAbove)
	}
	return nil
}

// An Option configures a Client.
type Option func(*config)

// WithTransport selects how the client reaches the collector (default TCP{}).
func WithTransport(t Transport) Option { return func(c *config) { c.transport = t } }

// WithQueueDir keeps the queue, the install id, the user id and the opt-out
// flag in dir, so that they survive restarts and killed processes. Without
// it everything is in memory: queued events are lost when the process ends
// and every launch is a new install.
func WithQueueDir(dir string) Option { return func(c *config) { c.dir = dir } }

// WithLogger sets the logger; by default the client logs nothing.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithFlush sends a batch once events waiting reach size or the oldest has
// waited interval (defaults 50 events, 1 s).
func WithFlush(size int, interval time.Duration) Option {
	return func(c *config) { c.flushEvents, c.flushInterval = size, interval }
}

// WithQueueLimits bounds the queue (defaults 10 000 events, 8 MiB on disk or
// in memory). When full, the oldest events are dropped, counted and reported
// to the collector.
func WithQueueLimits(events int, bytes int64) Option {
	return func(c *config) { c.queueEvents, c.queueBytes = events, bytes }
}

// WithBuffer sets how many events Track can hand over before the background
// writer has queued them (default 1024). Track drops and counts events that
// do not fit rather than wait.
func WithBuffer(events int) Option { return func(c *config) { c.buffer = events } }

// WithSampleRate keeps the events of this fraction of devices (default 1).
// The choice is a hash of the device id, so a device is always in or out.
func WithSampleRate(r float64) Option { return func(c *config) { c.sampleRate = r } }

// WithDeviceID sets the device id stamped on every event (default: the
// install id).
func WithDeviceID(id string) Option { return func(c *config) { c.deviceID = id } }

// WithDeviceContext sets the device context stamped on every event that has
// none. The client keeps d: do not modify it afterwards.
func WithDeviceContext(d *eventv1.DeviceContext) Option { return func(c *config) { c.device = d } }

// WithConsent sets the consent state at start (default ConsentGranted); see
// Client.SetConsent.
func WithConsent(s Consent) Option { return func(c *config) { c.consent = s } }

// WithClock sets the clock used for event timestamps, sessions and sent_at
// times (default time.Now). Timers (flush interval, heartbeats, backoff)
// always use real time.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

// WithTimeout bounds dialing, the Hello/Welcome handshake and each frame
// write (default 10 s).
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithBackoff sets the reconnect backoff: full jitter over an exponential
// ceiling from min to max (defaults 250 ms, 30 s).
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) { c.minBackoff, c.maxBackoff = min, max }
}

// WithFsync chooses whether queue writes are fsynced before the events are
// sent (default true). Without fsync, queued events survive a killed process
// but not a power loss.
func WithFsync(on bool) Option { return func(c *config) { c.fsync = on } }

// WithCompressionThreshold gzips a batch whose events serialize to more than
// bytes (default 4 KiB; 0 never compresses). Only collectors that list gzip
// in Welcome.compressions get compressed batches, and a batch is sent
// compressed only when that makes it smaller.
func WithCompressionThreshold(bytes int) Option { return func(c *config) { c.compressAbove = bytes } }
