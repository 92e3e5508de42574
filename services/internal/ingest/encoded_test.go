package ingest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// batchFrame encodes a ClientFrame holding a batch of events.
func batchFrame(tb testing.TB, events ...*eventv1.Event) []byte {
	tb.Helper()
	return mustMarshal(tb, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: 1, SentAtMs: testNow - 100, Events: events}}})
}

// appendField appends field num holding the message m.
func appendField(tb testing.TB, b []byte, num protowire.Number, m proto.Message) []byte {
	tb.Helper()
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, mustMarshal(tb, m))
}

func TestEventEncodings(t *testing.T) {
	e1, e2, e3 := eventN(1), eventN(2), eventN(3)
	batch := func(events ...*eventv1.Event) *ingestv1.Batch { return &ingestv1.Batch{Seq: 1, Events: events} }
	hello := &ingestv1.Hello{ApiKey: "k"}
	tests := []struct {
		name  string
		frame []byte
		want  int // events
	}{
		{"one batch", batchFrame(t, e1, e2, e3), 3},
		{"empty batch", batchFrame(t), 0},
		{"hello", mustMarshal(t, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Hello{Hello: hello}}), 0},
		{"two batch fields merge", appendField(t, appendField(t, nil, 2, batch(e1)), 2, batch(e2, e3)), 3},
		{"a hello replaces the batch", appendField(t, appendField(t, appendField(t, nil, 2, batch(e1)), 1, hello), 2, batch(e2, e3)), 2},
		{"a batch after hello", appendField(t, appendField(t, nil, 1, hello), 2, batch(e1)), 1},
		{"events field with another wire type is unknown", func() []byte {
			b := mustMarshal(t, batch(e1))
			b = protowire.AppendTag(b, 2, protowire.VarintType)
			b = protowire.AppendVarint(b, 7)
			b = append(b, mustMarshal(t, batch(e2))...)
			f := protowire.AppendTag(nil, 2, protowire.BytesType)
			return protowire.AppendBytes(f, b)
		}(), 2},
		{"unknown frame fields", func() []byte {
			b := protowire.AppendTag(nil, 99, protowire.BytesType)
			b = protowire.AppendBytes(b, []byte("x"))
			b = protowire.AppendTag(b, 98, protowire.Fixed64Type)
			b = protowire.AppendFixed64(b, 1)
			return appendField(t, b, 2, batch(e1, e2))
		}(), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := decodeClientFrame(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			events := f.GetBatch().GetEvents()
			raw := eventEncodings(tt.frame)
			if len(events) != tt.want || len(raw) != tt.want {
				t.Fatalf("%d events decoded, %d encodings, want %d", len(events), len(raw), tt.want)
			}
			for i, r := range raw {
				got := &eventv1.Event{}
				if err := proto.Unmarshal(r, got); err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, events[i]) {
					t.Errorf("encoding %d decodes to %v, want %v", i, got, events[i])
				}
			}
		})
	}
}

// encodedRecorder is a recording EncodedPublisher.
type encodedRecorder struct {
	mu     sync.Mutex
	events []*eventv1.Event
	values [][]byte
}

func (r *encodedRecorder) Publish(context.Context, []*eventv1.Event) error {
	return errors.New("Publish called, want PublishEncoded")
}

func (r *encodedRecorder) PublishEncoded(_ context.Context, events []*eventv1.Event, values [][]byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range events {
		r.events = append(r.events, proto.Clone(e).(*eventv1.Event))
		r.values = append(r.values, append([]byte(nil), values[i]...))
	}
	return nil
}

// TestPipelineEncoded sends the same frame through the pipeline twice: with
// the events' encodings to an EncodedPublisher, and without them to a plain
// Publisher. The acks and the published events must be the same, and each
// value written must decode to its event.
func TestPipelineEncoded(t *testing.T) {
	ownSent := eventN(2)
	ownSent.SentAtMs = testNow - 50
	noTime := eventN(3)
	noTime.TimestampMs = 0
	forged := eventN(4)
	forged.ReceivedAtMs = 12345
	noApp := eventN(5)
	noApp.AppId = ""
	upper := eventN(6)
	upper.EventId = "0193E2C4-7B7A-7C3E-8A55-00000000000A"
	noDevice := eventN(7)
	noDevice.DeviceId = ""
	full := eventN(8)
	full.DeviceContext = &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_IOS, OsVersion: "17"}
	full.Properties = map[string]string{"a": "1", "b": "2"}
	future := eventN(9)
	future.TimestampMs = testNow + DefaultLimits.MaxFuture.Milliseconds() + 1
	frame := batchFrame(t, eventN(1), ownSent, noTime, forged, noApp, upper, noDevice, full, eventN(1), future)
	// An event from a newer SDK: a field this collector does not know.
	frame = append(frame[:0:0], frame...)
	withUnknown := append(mustMarshal(t, eventN(10)), protowire.AppendString(protowire.AppendTag(nil, 60, protowire.BytesType), "new")...)
	frame = protowire.AppendBytes(protowire.AppendTag(frame, 2, protowire.BytesType), protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), withUnknown))

	plain := newTestPipeline(t, 0)
	f, err := decodeClientFrame(frame)
	if err != nil {
		t.Fatal(err)
	}
	want := plain.ingest(t.Context(), TransportTCP, "app-a", f.GetBatch())

	encoded := newTestPipeline(t, 0)
	rec := &encodedRecorder{}
	encoded.pipeline.pub = rec
	if f, err = decodeClientFrame(frame); err != nil {
		t.Fatal(err)
	}
	raw := eventEncodings(frame)
	if len(raw) != 11 || len(f.GetBatch().GetEvents()) != 11 {
		t.Fatalf("%d encodings of %d events, want 11", len(raw), len(f.GetBatch().GetEvents()))
	}
	got := encoded.ingestEncoded(t.Context(), TransportTCP, "app-a", f.GetBatch(), raw)

	if !proto.Equal(got, want) {
		t.Fatalf("ack with encodings:\n%v\nwithout:\n%v", got, want)
	}
	wantStatuses(t, got, "accepted", "accepted", "accepted", "accepted", "accepted", "accepted", "invalid", "accepted", "duplicate", "invalid", "accepted")
	wantEvents := plain.pub.events()
	if len(rec.events) != len(wantEvents) {
		t.Fatalf("%d events published with encodings, %d without", len(rec.events), len(wantEvents))
	}
	for i, e := range rec.events {
		if !proto.Equal(e, wantEvents[i]) {
			t.Errorf("event %d published as\n%v\nwant\n%v", i, e, wantEvents[i])
		}
		dec := &eventv1.Event{}
		if err := proto.Unmarshal(rec.values[i], dec); err != nil {
			t.Fatalf("value %d: %v", i, err)
		}
		if !proto.Equal(dec, e) {
			t.Errorf("value %d decodes to\n%v\nwant\n%v", i, dec, e)
		}
	}
	if id := rec.events[5].GetEventId(); id != "0193e2c4-7b7a-7c3e-8a55-00000000000a" {
		t.Errorf("upper-case id published as %q", id)
	}
	if u := rec.events[len(rec.events)-1].ProtoReflect().GetUnknown(); len(u) == 0 {
		t.Error("the unknown field was lost")
	}
}

// TestPipelineEncodedSize checks the size rule on what would be written:
// the encoding as received plus the stamped fields.
func TestPipelineEncodedSize(t *testing.T) {
	e := eventN(1)
	e.AppId = "" // stamped: the key's app is appended
	frame := batchFrame(t, e)
	var size int
	for _, tt := range []struct {
		name  string
		limit func() int
		want  string
	}{
		{"measure", func() int { return 1 << 20 }, "accepted"},
		{"at the limit", func() int { return size }, "accepted"},
		{"one byte over", func() int { return size - 1 }, "invalid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tp := newTestPipeline(t, 0)
			rec := &encodedRecorder{}
			tp.pipeline.pub = rec
			tp.limits.MaxEventBytes = tt.limit()
			f, err := decodeClientFrame(frame)
			if err != nil {
				t.Fatal(err)
			}
			a := tp.ingestEncoded(t.Context(), TransportTCP, "app-a", f.GetBatch(), eventEncodings(frame))
			wantStatuses(t, a, tt.want)
			if tt.want == "invalid" && a.GetResults()[0].GetReason() != ingestv1.InvalidReason_INVALID_REASON_EVENT_TOO_LARGE {
				t.Fatalf("reason %v, want EVENT_TOO_LARGE", a.GetResults()[0].GetReason())
			}
			if size == 0 {
				size = len(rec.values[0])
				if raw := eventEncodings(frame); size <= len(raw[0]) {
					t.Fatalf("value of %d bytes, received %d: the stamped fields are missing", size, len(raw[0]))
				}
			}
		})
	}
}

// checkDecodeFrame decodes b with decodeFrame and with proto.Unmarshal
// (decodeClientFrame): frames, errors and event encodings must agree. It
// reports whether decodeFrame took its fast path.
func checkDecodeFrame(t *testing.T, b []byte) bool {
	t.Helper()
	want, werr := decodeClientFrame(b)
	got, raw, err := decodeFrame(b)
	switch {
	case (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()):
		t.Fatalf("decodeFrame(%x) error %v, decodeClientFrame %v", b, err, werr)
	case err == nil && !proto.Equal(got, want):
		t.Fatalf("decodeFrame(%x) =\n%v\nwant\n%v", b, got, want)
	}
	if raw != nil {
		events := got.GetBatch().GetEvents()
		if len(raw) != len(events) {
			t.Fatalf("%d encodings of %d events", len(raw), len(events))
		}
		for i, r := range raw {
			e := &eventv1.Event{}
			if err := proto.Unmarshal(r, e); err != nil || !proto.Equal(e, events[i]) {
				t.Fatalf("encoding %d decodes to %v (%v), want %v", i, e, err, events[i])
			}
		}
	}
	_, _, fast := decodeBatchFrame(b)
	return fast
}

func TestDecodeFrame(t *testing.T) {
	full := eventN(2)
	full.DeviceContext = &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_ANDROID, OsVersion: "14", ScreenWidth: 1080}
	full.Properties = map[string]string{"a": "1", "b": "2"}
	plain := mustMarshal(t, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{
		Seq: 7, SentAtMs: testNow, DroppedEvents: 3, Events: []*eventv1.Event{eventN(1), full, {}},
	}}})
	withUnknown := append(append([]byte(nil), plain...), protowire.AppendString(protowire.AppendTag(nil, 9, protowire.BytesType), "x")...)
	tests := []struct {
		name  string
		frame []byte
		fast  bool
	}{
		{"plain batch", plain, true},
		{"empty batch", batchFrame(t), true},
		{"unknown frame field", withUnknown, false},
		{"two batch fields", appendField(t, appendField(t, nil, 2, &ingestv1.Batch{Seq: 1, Events: []*eventv1.Event{eventN(1)}}), 2, &ingestv1.Batch{Events: []*eventv1.Event{eventN(2)}}), false},
		{"hello", mustMarshal(t, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Hello{Hello: &ingestv1.Hello{ApiKey: "k"}}}), false},
		{"ping", mustMarshal(t, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{ClientTimeMs: 5}}}), false},
		{"no frame", []byte{}, false},
		{"an event with invalid UTF-8", appendField(t, nil, 2, &ingestv1.Batch{}), false},
	}
	// The last case: an event whose user_id is not UTF-8.
	bad := protowire.AppendString(protowire.AppendTag(mustMarshal(t, eventN(1)), 6, protowire.BytesType), "\xff")
	batch := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), bad)
	tests[len(tests)-1].frame = protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), batch)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if fast := checkDecodeFrame(t, tt.frame); fast != tt.fast {
				t.Errorf("fast path %v, want %v", fast, tt.fast)
			}
		})
	}
	// Every prefix and every one-byte change of the plain frame.
	for i := range plain {
		checkDecodeFrame(t, plain[:i])
		b := append([]byte(nil), plain...)
		b[i] ^= 0x5a
		checkDecodeFrame(t, b)
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Add(mustMarshalQuiet(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: 1, Events: []*eventv1.Event{eventN(1), eventN(2)}}}}))
	f.Add(mustMarshalQuiet(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Hello{Hello: &ingestv1.Hello{ApiKey: "k"}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecodeFrame(t, b)
	})
}

func mustMarshalQuiet(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
