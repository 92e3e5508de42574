package ingest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compressedList(t *testing.T, events ...*eventv1.Event) []byte {
	t.Helper()
	raw, err := proto.Marshal(&ingestv1.EventList{Events: events})
	if err != nil {
		t.Fatal(err)
	}
	return gzipBytes(t, raw)
}

func TestInflateBatchRoundTrip(t *testing.T) {
	events := []*eventv1.Event{
		{EventId: "0b7e5f3c-8a52-4d6c-9d0e-1f2a3b4c5d6e", AppId: "app", DeviceId: "d1"},
		{EventId: "1b7e5f3c-8a52-4d6c-9d0e-1f2a3b4c5d6e", AppId: "app", DeviceId: "d2"},
	}
	b := &ingestv1.Batch{Seq: 7, CompressedEvents: compressedList(t, events...), Compression: ingestv1.Compression_COMPRESSION_GZIP}
	if err := inflateBatch(b, 1<<20); err != nil {
		t.Fatalf("inflateBatch: %v", err)
	}
	if b.CompressedEvents != nil {
		t.Errorf("CompressedEvents still set (%d bytes)", len(b.CompressedEvents))
	}
	if len(b.Events) != len(events) {
		t.Fatalf("got %d events, want %d", len(b.Events), len(events))
	}
	for i := range events {
		if !proto.Equal(b.Events[i], events[i]) {
			t.Errorf("event %d = %v, want %v", i, b.Events[i], events[i])
		}
	}
}

func TestInflateBatchErrors(t *testing.T) {
	ev := &eventv1.Event{EventId: "0b7e5f3c-8a52-4d6c-9d0e-1f2a3b4c5d6e", AppId: "app", DeviceId: "d1"}
	gz := ingestv1.Compression_COMPRESSION_GZIP
	bomb := gzipBytes(t, make([]byte, 1<<20)) // 1 MiB of zeros: ~1 KiB compressed
	valid := compressedList(t, ev)
	tests := []struct {
		name  string
		batch *ingestv1.Batch
		max   int
		want  error
	}{
		{name: "both set", batch: &ingestv1.Batch{Events: []*eventv1.Event{ev}, CompressedEvents: valid, Compression: gz}, want: ErrMalformedFrame},
		{name: "unknown codec", batch: &ingestv1.Batch{CompressedEvents: valid, Compression: ingestv1.Compression(9)}, want: ErrMalformedFrame},
		{name: "codec unspecified", batch: &ingestv1.Batch{CompressedEvents: valid}, want: ErrMalformedFrame},
		{name: "bomb", batch: &ingestv1.Batch{CompressedEvents: bomb, Compression: gz}, max: 64 << 10, want: ErrInflatedTooLarge},
		{name: "not gzip", batch: &ingestv1.Batch{CompressedEvents: []byte("plainly not gzip"), Compression: gz}, want: ErrMalformedFrame},
		{name: "truncated gzip", batch: &ingestv1.Batch{CompressedEvents: valid[:len(valid)-6], Compression: gz}, want: ErrMalformedFrame},
		{name: "gzip of garbage", batch: &ingestv1.Batch{CompressedEvents: gzipBytes(t, []byte{0xff, 0xff, 0xff}), Compression: gz}, want: ErrMalformedFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.max
			if max == 0 {
				max = 1 << 20
			}
			err := inflateBatch(tt.batch, max)
			if !errors.Is(err, tt.want) {
				t.Fatalf("inflateBatch = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestInflateBatchLimitIsInclusive(t *testing.T) {
	ev := &eventv1.Event{EventId: "0b7e5f3c-8a52-4d6c-9d0e-1f2a3b4c5d6e", AppId: "app", DeviceId: "d1"}
	raw, err := proto.Marshal(&ingestv1.EventList{Events: []*eventv1.Event{ev}})
	if err != nil {
		t.Fatal(err)
	}
	gz := ingestv1.Compression_COMPRESSION_GZIP
	if err := inflateBatch(&ingestv1.Batch{CompressedEvents: gzipBytes(t, raw), Compression: gz}, len(raw)); err != nil {
		t.Errorf("exactly the limit: %v", err)
	}
	if err := inflateBatch(&ingestv1.Batch{CompressedEvents: gzipBytes(t, raw), Compression: gz}, len(raw)-1); !errors.Is(err, ErrInflatedTooLarge) {
		t.Errorf("one byte over the limit: %v, want %v", err, ErrInflatedTooLarge)
	}
}

func TestInflateBatchEmpty(t *testing.T) {
	ev := &eventv1.Event{EventId: "0b7e5f3c-8a52-4d6c-9d0e-1f2a3b4c5d6e"}
	t.Run("not compressed", func(t *testing.T) {
		b := &ingestv1.Batch{Seq: 1, Events: []*eventv1.Event{ev}}
		if err := inflateBatch(b, 1<<20); err != nil {
			t.Fatal(err)
		}
		if len(b.Events) != 1 || !proto.Equal(b.Events[0], ev) {
			t.Errorf("events changed: %v", b.Events)
		}
	})
	t.Run("no events at all", func(t *testing.T) {
		b := &ingestv1.Batch{Seq: 1, Compression: ingestv1.Compression_COMPRESSION_GZIP}
		if err := inflateBatch(b, 1<<20); err != nil {
			t.Fatal(err)
		}
		if len(b.Events) != 0 {
			t.Errorf("got %d events", len(b.Events))
		}
	})
	t.Run("empty list compressed", func(t *testing.T) {
		b := &ingestv1.Batch{Seq: 1, CompressedEvents: gzipBytes(t, nil), Compression: ingestv1.Compression_COMPRESSION_GZIP}
		if err := inflateBatch(b, 1<<20); err != nil {
			t.Fatal(err)
		}
		if len(b.Events) != 0 || b.CompressedEvents != nil {
			t.Errorf("got %d events, %d compressed bytes", len(b.Events), len(b.CompressedEvents))
		}
	})
}
