package ingest

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protowire"
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

// EncodedPublisher is a Publisher that can also take the protobuf encoding
// of each event, so that it need not marshal the events again: values[i]
// decodes to exactly events[i].
type EncodedPublisher interface {
	PublishEncoded(ctx context.Context, events []*eventv1.Event, values [][]byte) error
}

// ingest processes one batch for app and returns its ack. It never returns
// an event as accepted unless the publisher durably took it.
func (p *pipeline) ingest(ctx context.Context, transport, app string, b *ingestv1.Batch) *ingestv1.Ack {
	return p.ingestEncoded(ctx, transport, app, b, nil)
}

// ingestEncoded is ingest for a batch whose events arrived encoded as
// raw[i] (raw nil: unknown). An EncodedPublisher then gets each event's
// encoding as received with the fields the collector stamped appended
// (the last value of a field wins), instead of marshalling the event.
func (p *pipeline) ingestEncoded(ctx context.Context, transport, app string, b *ingestv1.Batch, raw [][]byte) *ingestv1.Ack {
	start := p.now()
	nowMs := start.UnixMilli()
	events := b.GetEvents()
	results := make([]*ingestv1.EventResult, len(events))
	p.metrics.batchEvents.Observe(float64(len(events)))
	if d := b.GetDroppedEvents(); d > 0 {
		p.metrics.dropped.Add(float64(d))
		p.logger.Warn("client queue dropped events", "app", app, "count", d)
	}
	enc, _ := p.pub.(EncodedPublisher)
	if enc == nil || len(raw) != len(events) {
		raw = nil
	}
	var slab []byte // every value, one allocation
	if raw != nil {
		n := 0
		for _, r := range raw {
			n += len(r) + stampedMax + len(app)
		}
		slab = make([]byte, 0, n)
	}

	// First the checks of each event alone; valid[i] then holds its id.
	ids := make([][16]byte, len(events))
	valid := make([]bool, len(events))
	values := make([][]byte, len(events))
	for i, e := range events {
		was := stampOf(e)
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
		now := stampOf(e)
		now.id = strings.ToLower(e.GetEventId()) // one text form downstream: lower-case canonical
		size := -1                               // unknown: validate computes it
		if raw != nil {
			from := len(slab)
			slab = appendStamped(append(slab, raw[i]...), was, now)
			values[i] = slab[from:len(slab):len(slab)]
			size = len(values[i])
		}
		if bad := p.limits.check(e, app, size); bad != nil {
			results[i] = &ingestv1.EventResult{Status: ingestv1.EventStatus_EVENT_STATUS_INVALID, EventId: e.GetEventId(), Reason: bad.reason, Detail: bad.detail}
			p.deadLetter(transport, e, bad)
			continue
		}
		e.EventId = now.id
		ids[i], valid[i] = uuid.MustParse(e.GetEventId()), true
	}
	seen := p.seen.containsAll(ids, valid) // one lock for the batch

	var pass []*eventv1.Event
	var passValues [][]byte
	var passIdx []int
	var passIDs [][16]byte
	inBatch := make(map[[16]byte]int, len(events)) // id -> index of its first copy
	var copies [][2]int                            // later copy, first copy
	for i, e := range events {
		if !valid[i] {
			continue
		}
		id := ids[i]
		if first, dup := inBatch[id]; dup {
			copies = append(copies, [2]int{i, first}) // answered like its first copy, below
			continue
		}
		if seen[i] {
			results[i] = &ingestv1.EventResult{Status: ingestv1.EventStatus_EVENT_STATUS_DUPLICATE, EventId: e.GetEventId()}
			continue
		}
		inBatch[id] = i
		if wait := p.limiter.take(app, start); wait > 0 {
			results[i] = &ingestv1.EventResult{Status: ingestv1.EventStatus_EVENT_STATUS_RATE_LIMITED, EventId: e.GetEventId(), RetryAfterMs: uint32(wait.Milliseconds()) + 1}
			continue
		}
		pass, passIdx, passIDs = append(pass, e), append(passIdx, i), append(passIDs, id)
		if raw != nil {
			passValues = append(passValues, values[i])
		}
	}

	if len(pass) > 0 {
		pctx, cancel := context.WithTimeout(ctx, p.timeout)
		var err error
		if passValues != nil {
			err = enc.PublishEncoded(pctx, pass, passValues)
		} else {
			err = p.pub.Publish(pctx, pass)
		}
		cancel()
		status := ingestv1.EventStatus_EVENT_STATUS_ACCEPTED
		var retry uint32
		if err != nil {
			p.logger.Warn("publish failed; client will retry", "app", app, "events", len(pass), "err", err)
			status, retry = ingestv1.EventStatus_EVENT_STATUS_RETRY, 1000
		} else {
			p.seen.add(passIDs...) // only after Kafka has them: a failed publish must stay retryable
			p.countApps(pass)
		}
		for j, i := range passIdx {
			results[i] = &ingestv1.EventResult{Status: status, EventId: pass[j].GetEventId(), RetryAfterMs: retry}
		}
	}
	// A copy is a duplicate only if its first copy was stored; otherwise it
	// must be resent like the first, or a client that forgets it loses it.
	for _, c := range copies {
		first := results[c[1]]
		r := &ingestv1.EventResult{Status: ingestv1.EventStatus_EVENT_STATUS_DUPLICATE, EventId: events[c[0]].GetEventId()}
		if first.GetStatus() != ingestv1.EventStatus_EVENT_STATUS_ACCEPTED {
			r.Status, r.RetryAfterMs = first.GetStatus(), first.GetRetryAfterMs()
		}
		results[c[0]] = r
	}
	// One counter update per run of equal outcomes, not per event.
	for i := 0; i < len(results); {
		j := i + 1
		for j < len(results) && results[j].GetStatus() == results[i].GetStatus() && results[j].GetReason() == results[i].GetReason() {
			j++
		}
		p.metrics.events.WithLabelValues(transport, statusLabel(results[i].GetStatus()), reasonLabel(results[i].GetReason())).Add(float64(j - i))
		i = j
	}
	p.metrics.ackSeconds.WithLabelValues(transport).Observe(p.now().Sub(start).Seconds())
	return &ingestv1.Ack{Seq: b.GetSeq(), Results: results}
}

// countApps adds accepted events to the per-app counter, once per run of
// one app (a keyed stream carries one app; keyless dev HTTP may mix them).
func (p *pipeline) countApps(events []*eventv1.Event) {
	for i := 0; i < len(events); {
		j := i + 1
		for j < len(events) && events[j].GetAppId() == events[i].GetAppId() {
			j++
		}
		p.metrics.appEvents.WithLabelValues(events[i].GetAppId()).Add(float64(j - i))
		i = j
	}
}

// stamp holds the fields of an event the pipeline may change.
type stamp struct {
	id, app                 string
	timestamp, sent, recvAt int64
}

func stampOf(e *eventv1.Event) stamp {
	return stamp{e.GetEventId(), e.GetAppId(), e.GetTimestampMs(), e.GetSentAtMs(), e.GetReceivedAtMs()}
}

// Field numbers of the stamped fields, from the descriptor.
var (
	eventFields     = (&eventv1.Event{}).ProtoReflect().Descriptor().Fields()
	fieldEventID    = eventFields.ByName("event_id").Number()
	fieldAppID      = eventFields.ByName("app_id").Number()
	fieldTimestamp  = eventFields.ByName("timestamp_ms").Number()
	fieldSentAt     = eventFields.ByName("sent_at_ms").Number()
	fieldReceivedAt = eventFields.ByName("received_at_ms").Number()
)

// stampedMax bounds what appendStamped adds besides the app id's bytes: a
// 36-byte event id, the app id's tag and length, and three int64 varints
// with their tags.
const stampedMax = 2 + 36 + 2 + 3*(1+10)

// appendStamped appends to dst, which holds an encoding of an event whose
// stamped fields were was, the fields that are now different, so that dst
// decodes as the stamped event: for a singular field the last value
// encoded wins, and an explicit zero overrides an earlier value.
func appendStamped(dst []byte, was, now stamp) []byte {
	if now.id != was.id {
		dst = protowire.AppendTag(dst, fieldEventID, protowire.BytesType)
		dst = protowire.AppendString(dst, now.id)
	}
	if now.app != was.app {
		dst = protowire.AppendTag(dst, fieldAppID, protowire.BytesType)
		dst = protowire.AppendString(dst, now.app)
	}
	for _, f := range [...]struct {
		num      protowire.Number
		was, now int64
	}{{fieldTimestamp, was.timestamp, now.timestamp}, {fieldSentAt, was.sent, now.sent}, {fieldReceivedAt, was.recvAt, now.recvAt}} {
		if f.now != f.was {
			dst = protowire.AppendTag(dst, f.num, protowire.VarintType)
			dst = protowire.AppendVarint(dst, uint64(f.now))
		}
	}
	return dst
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

// containsAll reports, for each ids[i] with check[i], whether it is in the
// set, taking the lock once.
func (r *recentIDs) containsAll(ids [][16]byte, check []bool) []bool {
	out := make([]bool, len(ids))
	if r == nil {
		return out
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, id := range ids {
		if check[i] {
			_, out[i] = r.set[id]
		}
	}
	return out
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
