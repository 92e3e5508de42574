package sink_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/sink"
)

// fakeWriter records what it stored; fail makes the next calls fail.
type fakeWriter struct {
	stored []string
	calls  int
	fail   error
}

func (w *fakeWriter) Write(_ context.Context, events []*eventv1.Event) error {
	w.calls++
	if w.fail != nil {
		return w.fail
	}
	for _, e := range events {
		w.stored = append(w.stored, e.EventId)
	}
	return nil
}

type fakeDLQ struct {
	letters []kafka.DeadLetter
	fail    error
}

func (d *fakeDLQ) Write(_ context.Context, l []kafka.DeadLetter) error {
	if d.fail != nil {
		return d.fail
	}
	d.letters = append(d.letters, l...)
	return nil
}

func event(t *testing.T) (*eventv1.Event, kafka.Message) {
	t.Helper()
	e := &eventv1.Event{EventId: uuid.Must(uuid.NewV7()).String(), AppId: "a", DeviceId: "d",
		Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "home"}}}
	b, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return e, kafka.Message{Topic: "events", Partition: 1, Offset: 7, Value: b}
}

func newHandler(t *testing.T, w sink.Writer, d sink.DeadLetterer, cache int) (*sink.Handler, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := sink.NewHandler(w, d, cache, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	return h, reg
}

func counter(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() != name {
				continue
			}
			if reason == "" || (len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == reason) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestHandlerDropsDuplicates(t *testing.T) {
	w, d := &fakeWriter{}, &fakeDLQ{}
	h, reg := newHandler(t, w, d, 10)
	a, ma := event(t)
	b, mb := event(t)
	ctx := context.Background()
	if err := h.Handle(ctx, []kafka.Message{ma, mb, ma}); err != nil { // a copy in the same batch
		t.Fatal(err)
	}
	if err := h.Handle(ctx, []kafka.Message{mb}); err != nil { // redelivered later
		t.Fatal(err)
	}
	if len(w.stored) != 2 || w.stored[0] != a.EventId || w.stored[1] != b.EventId {
		t.Errorf("stored %v, want %s and %s once", w.stored, a.EventId, b.EventId)
	}
	if w.calls != 1 {
		t.Errorf("writer called %d times, want once (an all-duplicate batch writes nothing)", w.calls)
	}
	if got := counter(t, reg, "causality_sink_duplicates_dropped_total", ""); got != 2 {
		t.Errorf("duplicates dropped = %v, want 2", got)
	}
}

func TestHandlerFailedWriteIsRetried(t *testing.T) {
	w, d := &fakeWriter{fail: errors.New("clickhouse down")}, &fakeDLQ{}
	h, _ := newHandler(t, w, d, 10)
	a, ma := event(t)
	garbage := kafka.Message{Topic: "events", Partition: 2, Offset: 9, Value: []byte{0xff, 0xff, 0xff}}
	ctx := context.Background()
	if err := h.Handle(ctx, []kafka.Message{ma, garbage}); err == nil {
		t.Fatal("Handle succeeded while the writer fails")
	}
	if len(d.letters) != 0 {
		t.Errorf("dead letters written before the batch was stored: %v", d.letters)
	}
	w.fail = nil
	if err := h.Handle(ctx, []kafka.Message{ma, garbage}); err != nil {
		t.Fatal(err)
	}
	if len(w.stored) != 1 || w.stored[0] != a.EventId {
		t.Errorf("stored %v after the retry, want %s (the failed write must not mark it seen)", w.stored, a.EventId)
	}
	if len(d.letters) != 1 || d.letters[0].Reason != sink.ReasonUndecodable || d.letters[0].Source != "sink" || string(d.letters[0].Value) != "\xff\xff\xff" {
		t.Errorf("dead letters = %+v, want the garbage once as undecodable", d.letters)
	}
}

func TestHandlerFailedDeadLetterIsRetriedWithoutRewriting(t *testing.T) {
	w, d := &fakeWriter{}, &fakeDLQ{fail: errors.New("kafka down")}
	h, reg := newHandler(t, w, d, 10)
	_, ma := event(t)
	invalid, _ := proto.Marshal(&eventv1.Event{EventId: "not-a-uuid", AppId: "a"})
	bad := kafka.Message{Value: invalid}
	ctx := context.Background()
	if err := h.Handle(ctx, []kafka.Message{ma, bad}); err == nil {
		t.Fatal("Handle succeeded while the DLQ fails")
	}
	d.fail = nil
	if err := h.Handle(ctx, []kafka.Message{ma, bad}); err != nil {
		t.Fatal(err)
	}
	if len(w.stored) != 1 || len(d.letters) != 1 || d.letters[0].Reason != sink.ReasonInvalid {
		t.Errorf("stored %d events and letters %+v, want 1 event and 1 invalid letter", len(w.stored), d.letters)
	}
	if got := counter(t, reg, "causality_sink_dead_letters_total", sink.ReasonInvalid); got != 1 {
		t.Errorf("dead letters metric = %v, want 1", got)
	}
}

func TestRecentForgetsOldestFirst(t *testing.T) {
	ids := make([][16]byte, 5)
	for i := range ids {
		ids[i] = uuid.New()
	}
	for _, tc := range []struct {
		name     string
		size     int
		add      [][16]byte
		want     []bool // Contains for each of ids
		wantSize int
	}{
		{"empty", 3, nil, []bool{false, false, false, false, false}, 0},
		{"under the size", 3, ids[:2], []bool{true, true, false, false, false}, 2},
		{"over the size", 3, ids, []bool{false, false, true, true, true}, 3},
		{"re-adding does not refresh", 2, [][16]byte{ids[0], ids[1], ids[0], ids[2]}, []bool{false, true, true, false, false}, 2},
		{"size zero remembers nothing", 0, ids, []bool{false, false, false, false, false}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := sink.NewRecent(tc.size)
			r.Add(tc.add...)
			for i, id := range ids {
				if got := r.Contains(id); got != tc.want[i] {
					t.Errorf("Contains(ids[%d]) = %v, want %v", i, got, tc.want[i])
				}
			}
			if r.Len() != tc.wantSize {
				t.Errorf("Len = %d, want %d", r.Len(), tc.wantSize)
			}
		})
	}
}
