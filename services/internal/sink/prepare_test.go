package sink_test

import (
	"context"
	"errors"
	"testing"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
)

// preparingWriter is a fakeWriter that is also a sink.Preparer: it records
// what it prepared and what its inserts stored.
type preparingWriter struct {
	fakeWriter
	prepared [][]string
	inserts  int
}

func (w *preparingWriter) Prepare(events []*eventv1.Event) func(context.Context) error {
	var ids []string
	for _, e := range events {
		ids = append(ids, e.EventId)
	}
	w.prepared = append(w.prepared, ids)
	return func(ctx context.Context) error {
		w.inserts++
		if w.fail != nil {
			return w.fail
		}
		w.stored = append(w.stored, ids...)
		return nil
	}
}

func ids(events ...*eventv1.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.EventId)
	}
	return out
}

func wantStored(t *testing.T, got []string, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("stored %v, want %v", got, want)
		}
	}
}

// TestHandlerPrepareHoldsCopiesOfTheBatchBeingStored prepares the next
// batch before the one it follows is stored, as RunStaged does: a copy of
// an event of that batch is dropped once the batch is stored.
func TestHandlerPrepareHoldsCopiesOfTheBatchBeingStored(t *testing.T) {
	w, d := &preparingWriter{}, &fakeDLQ{}
	h, reg := newHandler(t, w, d, 10)
	a, ma := event(t)
	b, mb := event(t)
	ctx := context.Background()
	store1 := h.Prepare(ctx, []kafka.Message{ma})
	store2 := h.Prepare(ctx, []kafka.Message{ma, mb}) // a copy of a, not yet stored
	if err := store1(ctx); err != nil {
		t.Fatal(err)
	}
	if err := store2(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, w.stored, ids(a, b)...)
	if len(w.prepared) != 2 || len(w.prepared[1]) != 1 || w.prepared[1][0] != b.EventId {
		t.Errorf("prepared %v, want the second batch without the copy", w.prepared)
	}
	if w.calls != 0 {
		t.Errorf("Write called %d times: the prepared inserts should have been used", w.calls)
	}
	if got := counter(t, reg, "causality_sink_duplicates_dropped_total", ""); got != 1 {
		t.Errorf("duplicates dropped = %v, want 1", got)
	}
}

// TestHandlerPrepareWritesCopiesOfABatchNeverStored: when the batch
// prepared before is abandoned (its pipeline ended before storing it, so
// its offsets were not committed), the copies held back are written.
func TestHandlerPrepareWritesCopiesOfABatchNeverStored(t *testing.T) {
	w, d := &preparingWriter{}, &fakeDLQ{}
	h, reg := newHandler(t, w, d, 10)
	a, ma := event(t)
	b, mb := event(t)
	ctx := context.Background()
	_ = h.Prepare(ctx, []kafka.Message{ma, mb}) // never stored
	if err := h.Prepare(ctx, []kafka.Message{ma, mb})(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, w.stored, ids(a, b)...)
	if got := counter(t, reg, "causality_sink_duplicates_dropped_total", ""); got != 0 {
		t.Errorf("duplicates dropped = %v, want 0", got)
	}
}

// TestHandlerPreparedStoreRetries: a failed insert is retried with the rows
// already built, and a failed dead-letter write after a stored insert does
// not store the rows again.
func TestHandlerPreparedStoreRetries(t *testing.T) {
	w, d := &preparingWriter{}, &fakeDLQ{}
	h, reg := newHandler(t, w, d, 10)
	a, ma := event(t)
	garbage := kafka.Message{Topic: "events", Partition: 2, Offset: 9, Value: []byte{0xff}}
	ctx := context.Background()
	store := h.Prepare(ctx, []kafka.Message{ma, ma, garbage})
	w.fail = errors.New("clickhouse down")
	if err := store(ctx); err == nil {
		t.Fatal("store succeeded while the insert fails")
	}
	w.fail, d.fail = nil, errors.New("kafka down")
	if err := store(ctx); err == nil {
		t.Fatal("store succeeded while the DLQ fails")
	}
	d.fail = nil
	if err := store(ctx); err != nil {
		t.Fatal(err)
	}
	wantStored(t, w.stored, a.EventId)
	if len(w.prepared) != 1 || w.inserts != 2 {
		t.Errorf("prepared %d times and inserted %d times, want once and twice", len(w.prepared), w.inserts)
	}
	if len(d.letters) != 1 {
		t.Errorf("dead letters %+v, want the garbage once", d.letters)
	}
	if got := counter(t, reg, "causality_sink_duplicates_dropped_total", ""); got != 1 {
		t.Errorf("duplicates dropped = %v, want 1 (the copy in the batch, counted once)", got)
	}
}
