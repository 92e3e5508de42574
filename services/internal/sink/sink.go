// Package sink moves events from Kafka into the warehouse. Batches of Kafka
// messages flow in through Handler.Prepare (the kafka.Consumer's Stage) or
// Handler.Handle; each message is decoded into an event, events whose id
// was stored recently are dropped, the rest go out through Writer.Write in
// one call, and messages that cannot be decoded go out through
// DeadLetterer.Write. The handler returns an error, and so leaves the
// offsets uncommitted, until both have succeeded: at-least-once into the
// warehouse, where copies collapse by event id.
package sink

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/eventcodec"
	"causality.dev/services/internal/kafka"
)

// Writer stores events and returns once they are durably stored.
type Writer interface {
	Write(ctx context.Context, events []*eventv1.Event) error
}

// Preparer is a Writer that can do the CPU-bound part of a write ahead of
// it (building rows): the returned insert does the rest, and may be called
// again after it failed.
type Preparer interface {
	Prepare(events []*eventv1.Event) (insert func(ctx context.Context) error)
}

// DeadLetterer keeps refused messages with their reason and returns once
// they are durably kept.
type DeadLetterer interface {
	Write(ctx context.Context, letters []kafka.DeadLetter) error
}

// Dead-letter reasons (the dlq_reason header and the metric label).
const (
	ReasonUndecodable = "undecodable" // not an Event protobuf
	ReasonInvalid     = "invalid"     // an Event without a UUID event_id or an app_id
)

// Handler decodes, deduplicates and writes batches. It is not safe for
// concurrent use: one consumer calls it, through Handle or through
// Prepare, not both.
type Handler struct {
	w      Writer
	dlq    DeadLetterer
	recent *Recent
	logger *slog.Logger
	last   *batch // prepared last by Prepare

	duplicates prometheus.Counter
	letters    *prometheus.CounterVec
}

// NewHandler remembers the last cacheSize stored event ids.
func NewHandler(w Writer, dlq DeadLetterer, cacheSize int, logger *slog.Logger, reg prometheus.Registerer) (*Handler, error) {
	h := &Handler{
		w: w, dlq: dlq, recent: NewRecent(cacheSize), logger: logger,
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "causality_sink_duplicates_dropped_total",
			Help: "Events not written because their id was stored recently or appeared earlier in the same batch.",
		}),
		letters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_sink_dead_letters_total",
			Help: "Messages sent to the dead-letter topic, by reason.",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{h.duplicates, h.letters} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register sink metrics: %w", err)
		}
	}
	for _, r := range []string{ReasonUndecodable, ReasonInvalid} {
		h.letters.WithLabelValues(r)
	}
	return h, nil
}

// Handle writes the events of msgs not stored recently, then dead-letters
// the messages that are not events. It returns nil only when both are
// durable; the consumer then commits, else it retries the same batch.
func (h *Handler) Handle(ctx context.Context, msgs []kafka.Message) error {
	return h.store(ctx, h.prepare(msgs, nil))
}

// Prepare is Handle in two steps, for kafka.Consumer.RunStaged: it decodes
// msgs, drops copies and builds the rows, and returns the store, which
// writes them and the dead letters. The batches it prepares must be stored
// in order; the next one is prepared while this one is stored, so an event
// of the batch before that is not stored yet is held back, and dropped
// once that batch is stored (or written after all if it never was).
func (h *Handler) Prepare(_ context.Context, msgs []kafka.Message) func(context.Context) error {
	b := h.prepare(msgs, h.last)
	h.last = b
	return func(ctx context.Context) error { return h.store(ctx, b) }
}

// batch is one prepared batch of messages.
type batch struct {
	seen    map[[16]byte]struct{} // every event id of the batch
	events  []*eventv1.Event      // to write
	ids     [][16]byte            // of events
	insert  func(context.Context) error
	letters []kafka.DeadLetter
	dups    int

	after    *batch           // prepared before this one; nil once stored
	held     []*eventv1.Event // copies of events of after
	heldIDs  [][16]byte
	resolved bool        // held is decided: dropped, or appended to events
	written  bool        // events are stored
	stored   atomic.Bool // the whole batch is
}

// prepare decodes msgs and drops copies: of an event earlier in the batch,
// of one stored recently, and (held back) of one in after.
func (h *Handler) prepare(msgs []kafka.Message, after *batch) *batch {
	b := &batch{seen: make(map[[16]byte]struct{}, len(msgs)), after: after}
	for _, m := range msgs {
		e, err := eventcodec.Unmarshal(m.Value)
		if err != nil {
			b.letters = append(b.letters, letter(m, ReasonUndecodable, err.Error()))
			continue
		}
		id, err := uuid.Parse(e.GetEventId())
		if err != nil || e.GetAppId() == "" {
			b.letters = append(b.letters, letter(m, ReasonInvalid, "event_id must be a UUID and app_id set"))
			continue
		}
		if _, ok := b.seen[id]; ok || h.recent.Contains(id) {
			b.dups++
			continue
		}
		b.seen[id] = struct{}{}
		if after != nil {
			if _, ok := after.seen[id]; ok {
				b.held, b.heldIDs = append(b.held, e), append(b.heldIDs, id)
				continue
			}
		}
		b.events, b.ids = append(b.events, e), append(b.ids, id)
	}
	if p, ok := h.w.(Preparer); ok && len(b.events) > 0 {
		b.insert = p.Prepare(b.events)
	}
	return b
}

// store writes the events of b, then its dead letters; called again after
// a failure, it goes on where it stopped.
func (h *Handler) store(ctx context.Context, b *batch) error {
	if !b.resolved {
		if len(b.held) > 0 && (b.after == nil || !b.after.stored.Load()) {
			// The batch before was never stored (its pipeline ended): the
			// copies held back are the only ones.
			b.events, b.ids = append(b.events, b.held...), append(b.ids, b.heldIDs...)
			b.insert = nil
		} else {
			b.dups += len(b.held)
		}
		b.held, b.heldIDs, b.after, b.resolved = nil, nil, nil, true
	}
	if !b.written {
		if len(b.events) > 0 {
			insert := b.insert
			if insert == nil {
				insert = func(ctx context.Context) error { return h.w.Write(ctx, b.events) }
			}
			if err := insert(ctx); err != nil {
				return err
			}
		}
		h.recent.Add(b.ids...) // a retry after a failed dead-letter write skips them
		b.written, b.events, b.insert = true, nil, nil
	}
	if len(b.letters) > 0 {
		if err := h.dlq.Write(ctx, b.letters); err != nil {
			return err
		}
		for _, l := range b.letters {
			h.letters.WithLabelValues(l.Reason).Inc()
			h.logger.Warn("dead-lettered a message", "reason", l.Reason, "detail", l.Detail)
		}
		b.letters = nil
	}
	h.duplicates.Add(float64(b.dups))
	b.dups = 0
	b.stored.Store(true)
	return nil
}

func letter(m kafka.Message, reason, detail string) kafka.DeadLetter {
	return kafka.DeadLetter{
		Key: m.Key, Value: m.Value, Source: "sink", Reason: reason,
		Detail: fmt.Sprintf("%s/%d@%d: %.200s", m.Topic, m.Partition, m.Offset, detail),
	}
}

// Recent is a bounded set of event ids: the oldest is forgotten first.
type Recent struct {
	mu   sync.Mutex
	set  map[[16]byte]struct{}
	ring [][16]byte
	next int
	size int
}

// NewRecent remembers up to size ids (none when size <= 0). Memory grows
// with use, to about 50 bytes per id.
func NewRecent(size int) *Recent {
	return &Recent{set: map[[16]byte]struct{}{}, size: max(size, 0)}
}

// Contains reports whether id is remembered.
func (r *Recent) Contains(id [16]byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[id]
	return ok
}

// Add remembers ids, forgetting the oldest beyond the size.
func (r *Recent) Add(ids ...[16]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.size == 0 {
			return
		}
		if _, ok := r.set[id]; ok {
			continue
		}
		if len(r.ring) < r.size {
			r.ring = append(r.ring, id)
		} else {
			delete(r.set, r.ring[r.next])
			r.ring[r.next] = id
			r.next = (r.next + 1) % r.size
		}
		r.set[id] = struct{}{}
	}
}

// Len is the number of remembered ids.
func (r *Recent) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.set)
}

// LagFunc reports the consumer group's lag per partition.
type LagFunc func(ctx context.Context) (map[int]int64, error)

// WatchLag sets gauge{partition} from lag every interval until ctx ends.
// Partitions that disappear are removed; a failed probe keeps the last
// values and is logged.
func WatchLag(ctx context.Context, lag LagFunc, every time.Duration, gauge *prometheus.GaugeVec, logger *slog.Logger) {
	seen := map[int]bool{}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, every+5*time.Second)
		l, err := lag(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			logger.Warn("consumer lag probe", "err", err)
		}
		if err == nil {
			for p := range seen {
				if _, ok := l[p]; !ok {
					gauge.DeleteLabelValues(fmt.Sprint(p))
					delete(seen, p)
				}
			}
			for p, n := range l {
				gauge.WithLabelValues(fmt.Sprint(p)).Set(float64(n))
				seen[p] = true
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
