package ingest

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// Publisher hands events to the next stage and returns once they are durably
// accepted (in Kafka, acknowledged by all in-sync replicas).
type Publisher interface {
	Publish(ctx context.Context, events []*eventv1.Event) error
}

// PublishFunc adapts a function to Publisher.
type PublishFunc func(ctx context.Context, events []*eventv1.Event) error

// Publish calls f.
func (f PublishFunc) Publish(ctx context.Context, events []*eventv1.Event) error {
	return f(ctx, events)
}

// DeadLetterer keeps refused input with its reason, without blocking.
type DeadLetterer interface {
	DeadLetter(key, value []byte, source, reason, detail string)
}

// pipeline is what every front door does with a batch: stamp, validate,
// drop duplicates, rate-limit, publish, and answer one result per event.
type pipeline struct {
	pub     Publisher
	dlq     DeadLetterer
	limits  Limits
	timeout time.Duration
	seen    *recentIDs
	limiter *appLimiter
	metrics *metrics
	logger  *slog.Logger
	now     func() time.Time
}

// ingest processes one batch for app and returns its ack. It never returns
// an event as accepted unless the publisher durably took it.
func (p *pipeline) ingest(ctx context.Context, transport, app string, b *ingestv1.Batch) *ingestv1.Ack {
	start := p.now()
	nowMs := start.UnixMilli()
	results := make([]*ingestv1.EventResult, len(b.GetEvents()))
	p.metrics.batchEvents.Observe(float64(len(b.GetEvents())))
	if d := b.GetDroppedEvents(); d > 0 {
		p.metrics.dropped.Add(float64(d))
		p.logger.Warn("client queue dropped events", "app", app, "count", d)
	}

	var pass []*eventv1.Event
	var passIdx []int
	var ids [][16]byte
	inBatch := make(map[[16]byte]int, len(b.GetEvents())) // id -> index of its first copy
	var copies [][2]int                                   // later copy, first copy
	for i, e := range b.GetEvents() {
		e.ReceivedAtMs = nowMs
		if e.GetSentAtMs() == 0 {
			e.SentAtMs = b.GetSentAtMs()
		}
		if e.GetAppId() == "" {
			e.AppId = app
		}
		if e.GetTimestampMs() == 0 { // the prototype's JSON has none: use arrival time
			e.TimestampMs, e.SentAtMs = nowMs, 0
		}
		if bad := p.limits.validate(e, app); bad != nil {
			results[i] = &ingestv1.EventResult{Status: ingestv1.EventStatus_EVENT_STATUS_INVALID, EventId: e.GetEventId(), Reason: bad.reason, Detail: bad.detail}
			p.deadLetter(transport, e, bad)
			continue
		}
		id := uuid.MustParse(e.GetEventId())
		e.EventId = id.String() // one text form downstream: lower-case canonical
		if first, dup := inBatch[id]; dup {
			copies = append(copies, [2]int{i, first}) // answered like its first copy, below
			continue
		}
		if p.seen.contains(id) {
			results[i] = &ingestv1.EventResult{Status: ingestv1.EventStatus_EVENT_STATUS_DUPLICATE, EventId: e.GetEventId()}
			continue
		}
		inBatch[id] = i
		if wait := p.limiter.take(app, start); wait > 0 {
			results[i] = &ingestv1.EventResult{Status: ingestv1.EventStatus_EVENT_STATUS_RATE_LIMITED, EventId: e.GetEventId(), RetryAfterMs: uint32(wait.Milliseconds()) + 1}
			continue
		}
		pass, passIdx, ids = append(pass, e), append(passIdx, i), append(ids, id)
	}

	if len(pass) > 0 {
		pctx, cancel := context.WithTimeout(ctx, p.timeout)
		err := p.pub.Publish(pctx, pass)
		cancel()
		status := ingestv1.EventStatus_EVENT_STATUS_ACCEPTED
		var retry uint32
		if err != nil {
			p.logger.Warn("publish failed; client will retry", "app", app, "events", len(pass), "err", err)
			status, retry = ingestv1.EventStatus_EVENT_STATUS_RETRY, 1000
		} else {
			p.seen.add(ids...) // only after Kafka has them: a failed publish must stay retryable
		}
		for j, i := range passIdx {
			results[i] = &ingestv1.EventResult{Status: status, EventId: pass[j].GetEventId(), RetryAfterMs: retry}
		}
	}
	// A copy is a duplicate only if its first copy was stored; otherwise it
	// must be resent like the first, or a client that forgets it loses it.
	for _, c := range copies {
		first := results[c[1]]
		r := &ingestv1.EventResult{Status: ingestv1.EventStatus_EVENT_STATUS_DUPLICATE, EventId: b.GetEvents()[c[0]].GetEventId()}
		if first.GetStatus() != ingestv1.EventStatus_EVENT_STATUS_ACCEPTED {
			r.Status, r.RetryAfterMs = first.GetStatus(), first.GetRetryAfterMs()
		}
		results[c[0]] = r
	}
	for _, r := range results {
		p.metrics.events.WithLabelValues(transport, statusLabel(r.GetStatus()), reasonLabel(r.GetReason())).Inc()
	}
	p.metrics.ackSeconds.WithLabelValues(transport).Observe(p.now().Sub(start).Seconds())
	return &ingestv1.Ack{Seq: b.GetSeq(), Results: results}
}

func (p *pipeline) deadLetter(transport string, e *eventv1.Event, bad *invalid) {
	if p.dlq == nil {
		return
	}
	b, err := proto.Marshal(e)
	if err != nil {
		return
	}
	p.dlq.DeadLetter([]byte(e.GetDeviceId()), b, "collector_"+transport, reasonLabel(bad.reason), bad.detail)
}

// recentIDs is a bounded set of recently accepted event ids (FIFO eviction).
type recentIDs struct {
	mu   sync.Mutex
	set  map[[16]byte]struct{}
	ring [][16]byte
	next int
}

func newRecentIDs(n int) *recentIDs {
	if n <= 0 {
		return nil
	}
	return &recentIDs{set: make(map[[16]byte]struct{}, n), ring: make([][16]byte, 0, n)}
}

func (r *recentIDs) contains(id [16]byte) bool {
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[id]
	return ok
}

func (r *recentIDs) add(ids ...[16]byte) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if _, ok := r.set[id]; ok {
			continue
		}
		if len(r.ring) < cap(r.ring) {
			r.ring = append(r.ring, id)
		} else {
			delete(r.set, r.ring[r.next])
			r.ring[r.next] = id
			r.next = (r.next + 1) % len(r.ring)
		}
		r.set[id] = struct{}{}
	}
}

// appLimiter is a token bucket per app; a zero rate disables it.
type appLimiter struct {
	rate    float64 // events per second
	burst   float64
	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newAppLimiter(rate float64) *appLimiter {
	return &appLimiter{rate: rate, burst: max(rate, 1), buckets: map[string]*bucket{}}
}

// take spends one token of app at now; it returns how long to wait when
// none is left.
func (l *appLimiter) take(app string, now time.Time) time.Duration {
	if l.rate <= 0 {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[app]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[app] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	return time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}
