package warehouse

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Writer inserts events into the events table, one native batch per Write.
type Writer struct {
	client *Client
	insert string
	logger *slog.Logger

	rows    prometheus.Counter
	size    prometheus.Histogram
	latency prometheus.Histogram
	errs    *prometheus.CounterVec

	mu      sync.Mutex
	lastErr error // of the last insert; nil after a success
}

// NewWriter returns a Writer on client's database; its metrics go to reg.
func NewWriter(client *Client, logger *slog.Logger, reg prometheus.Registerer) (*Writer, error) {
	w := &Writer{
		client: client,
		insert: "INSERT INTO " + quoteIdent(client.Database()) + ".events (" + strings.Join(columns, ", ") + ")",
		logger: logger,
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "causality_warehouse_rows_written_total",
			Help: "Rows inserted into the events table.",
		}),
		size: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "causality_warehouse_batch_rows",
			Help:    "Rows per insert into the events table.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "causality_warehouse_insert_seconds",
			Help:    "Time of one batch insert, from preparing the batch to the server's acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_warehouse_insert_errors_total",
			Help: "Failed inserts by reason: refused, connection, timeout, server, canceled, other.",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{w.rows, w.size, w.latency, w.errs} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register warehouse metrics: %w", err)
		}
	}
	return w, nil
}

// Write inserts the events as one batch and returns once ClickHouse has
// acknowledged it. On error nothing or everything may have been stored:
// callers retry the whole batch, and copies collapse by event_id.
func (w *Writer) Write(ctx context.Context, events []*eventv1.Event) error {
	if len(events) == 0 {
		return nil
	}
	return w.Prepare(events)(ctx)
}

// Prepare builds the rows of events, the CPU-bound part of a Write, and
// returns the insert, which does the rest and may be called again after it
// failed. The rows are kept until the insert is dropped.
func (w *Writer) Prepare(events []*eventv1.Event) func(ctx context.Context) error {
	if len(events) == 0 {
		return func(context.Context) error { return nil }
	}
	b := newBlock(len(events))
	for _, e := range events {
		b.add(e)
	}
	b.finish()
	return func(ctx context.Context) error { return w.store(ctx, b, len(events)) }
}

func (w *Writer) store(ctx context.Context, b *block, n int) error {
	start := time.Now()
	err := w.send(ctx, b)
	w.latency.Observe(time.Since(start).Seconds())
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			w.errs.WithLabelValues(errorReason(err)).Inc()
		}
		return fmt.Errorf("insert %d events into clickhouse at %s: %w", n, w.client.cfg.Addr, err)
	}
	w.rows.Add(float64(n))
	w.size.Observe(float64(n))
	return nil
}

func (w *Writer) send(ctx context.Context, b *block) error {
	batch, err := w.client.conn.PrepareBatch(ctx, w.insert)
	if err != nil {
		return err
	}
	for i, v := range b.values() {
		if err := batch.Column(i).Append(v); err != nil {
			batch.Abort()
			return fmt.Errorf("column %s: %w", columns[i], err)
		}
	}
	return batch.Send()
}

// Ready fails while the last insert failed or the server does not answer:
// the sink is then not making progress.
func (w *Writer) Ready(ctx context.Context) error {
	w.mu.Lock()
	err := w.lastErr
	w.mu.Unlock()
	if err != nil {
		return fmt.Errorf("last insert failed: %w", err)
	}
	return w.client.Ping(ctx)
}
