package main

// End-to-end tests of the collector when things go wrong: malformed and
// unauthorised input next to a healthy connection, graceful shutdown, and
// kill -9 of the process while clients stream.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
)

// goodStream keeps one healthy connection busy (batch, ack, repeat) until
// stopped, so tests can show other connections' failures do not touch it.
type goodStream struct {
	rounds atomic.Int64
	note   chan struct{} // a round finished
	stop   chan struct{}
	done   chan struct{}
	sent   []*eventv1.Event // read after done
	err    error
}

func startGoodStream(t *testing.T, f *frameConn, app string) *goodStream {
	t.Helper()
	g := &goodStream{note: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		for seq := uint64(1); ; seq++ {
			select {
			case <-g.stop:
				return
			default:
			}
			events := newEvents(app, 5)
			g.sent = append(g.sent, events...)
			if g.err = f.send(batchFrame(seq, events)); g.err != nil {
				return
			}
			m, err := f.recv()
			if err != nil {
				g.err = fmt.Errorf("good connection, batch %d: %w", seq, err)
				return
			}
			if a := m.GetAck(); a.GetSeq() != seq || len(a.GetResults()) != len(events) ||
				slices.ContainsFunc(a.GetResults(), func(r *ingestv1.EventResult) bool {
					return r.GetStatus() != ingestv1.EventStatus_EVENT_STATUS_ACCEPTED
				}) {
				g.err = fmt.Errorf("good connection, batch %d answered %v", seq, m)
				return
			}
			g.rounds.Add(1)
			select {
			case g.note <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(g.finish)
	return g
}

// waitFresh waits until the good connection completed a whole round that
// started after the call.
func (g *goodStream) waitFresh(t *testing.T) {
	t.Helper()
	target := g.rounds.Load() + 2
	deadline := time.After(waitLimit)
	for g.rounds.Load() < target {
		select {
		case <-g.note:
		case <-g.done:
			t.Fatalf("the good connection stopped: %v", g.err)
		case <-deadline:
			t.Fatal("the good connection made no progress")
		}
	}
}

func (g *goodStream) finish() {
	select {
	case <-g.stop:
	default:
		close(g.stop)
	}
	<-g.done
}

func TestCollectorBadInput(t *testing.T) {
	t.Parallel()
	const appA, appB = "app-a", "app-b"
	const maxFrame, maxEvents = 65536, 50
	c := startCollector(t, []string{appA, appB}, fmt.Sprintf("-ingest.max-frame-bytes=%d", maxFrame), fmt.Sprintf("-ingest.max-batch-events=%d", maxEvents))
	keyA, keyB := c.keys.key[appA], c.keys.key[appB]

	gf := dialFrames(t, c.TCP)
	gf.hello(t, keyA)
	good := startGoodStream(t, gf, appA)

	cases := []struct {
		name  string
		hello bool // open the session first
		send  func(f *frameConn) error
		code  ingestv1.ErrorCode
	}{
		{"oversized frame", true, func(f *frameConn) error {
			return f.writeRaw(binary.BigEndian.AppendUint32(nil, maxFrame+1))
		}, ingestv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE},
		{"zero-length frame", true, func(f *frameConn) error {
			return f.writeRaw([]byte{0, 0, 0, 0})
		}, ingestv1.ErrorCode_ERROR_CODE_EMPTY_FRAME},
		{"truncated frame", true, func(f *frameConn) error {
			if err := f.writeRaw(append(binary.BigEndian.AppendUint32(nil, 100), make([]byte, 10)...)); err != nil {
				return err
			}
			return f.conn.(*net.TCPConn).CloseWrite() // the stream ends inside the frame
		}, ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{"garbage frame", true, func(f *frameConn) error {
			return f.writeRaw(prefixed([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}))
		}, ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{"frame of no known type", true, func(f *frameConn) error {
			return f.writeRaw(prefixed(protowire.AppendBytes(protowire.AppendTag(nil, 15, protowire.BytesType), nil)))
		}, ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME},
		{"garbage bytes instead of Hello", false, func(f *frameConn) error {
			return f.writeRaw([]byte("GET / HTTP/1.1\r\n\r\n")) // "GET " reads as a 1.2 GB length
		}, ingestv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE},
		{"batch before Hello", false, func(f *frameConn) error {
			return f.send(batchFrame(1, newEvents(appA, 3)))
		}, ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED},
		{"Hello twice", true, func(f *frameConn) error {
			return f.send(helloFrame(keyA))
		}, ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED},
		{"wrong key", false, func(f *frameConn) error {
			return f.send(helloFrame(ingest.NewKey())) // well-formed, in no keys file
		}, ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
		{"no key", false, func(f *frameConn) error {
			return f.send(helloFrame(""))
		}, ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
		{"revoked key", false, func(f *frameConn) error {
			return f.send(helloFrame(c.keys.revoked))
		}, ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED},
		{"batch over the event limit", true, func(f *frameConn) error {
			return f.send(batchFrame(1, newEvents(appA, maxEvents+1)))
		}, ingestv1.ErrorCode_ERROR_CODE_BATCH_TOO_LARGE},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := dialFrames(t, c.TCP)
			if tc.hello {
				f.hello(t, keyA)
			}
			if err := tc.send(f); err != nil {
				t.Fatal(err)
			}
			f.expectError(t, tc.code)
			good.waitFresh(t)
		})
	}

	wantEvents := []*eventv1.Event{}
	wantDLQ := map[string]string{} // event id -> dlq_reason

	t.Run("key of another app", func(t *testing.T) {
		f := dialFrames(t, c.TCP)
		if w := f.hello(t, keyB); w.GetAppId() != appB {
			t.Fatalf("Welcome for app %q, want %q", w.GetAppId(), appB)
		}
		foreign := newEvents(appA, 4)
		if err := f.send(batchFrame(1, foreign)); err != nil {
			t.Fatal(err)
		}
		m, err := f.recv()
		if err != nil {
			t.Fatal(err)
		}
		checkAck(t, m.GetAck(), 1, foreign, ingestv1.EventStatus_EVENT_STATUS_INVALID)
		for i, r := range m.GetAck().GetResults() {
			if r.GetReason() != ingestv1.InvalidReason_INVALID_REASON_APP_MISMATCH || r.GetDetail() == "" {
				t.Errorf("result %d: %v, want reason APP_MISMATCH with a detail", i, r)
			}
			wantDLQ[r.GetEventId()] = "app_mismatch"
		}
		// The stream stays open: its own app's events still go through.
		own := newEvents(appB, 4)
		if err := f.send(batchFrame(2, own)); err != nil {
			t.Fatal(err)
		}
		if m, err = f.recv(); err != nil {
			t.Fatal(err)
		}
		checkAck(t, m.GetAck(), 2, own, ingestv1.EventStatus_EVENT_STATUS_ACCEPTED)
		wantEvents = append(wantEvents, own...)
		if err := f.send(goodbyeFrame); err != nil {
			t.Fatal(err)
		}
		if m, err := f.recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after Goodbye: %v, %v; want a close", m, err)
		}
		good.waitFresh(t)
	})

	t.Run("invalid events among valid ones", func(t *testing.T) {
		now := time.Now()
		type row struct {
			e      *eventv1.Event
			reason ingestv1.InvalidReason // 0: valid
			label  string                 // dlq_reason header
		}
		mod := func(f func(e *eventv1.Event)) *eventv1.Event {
			e := newEvent(appA, "device-x")
			f(e)
			return e
		}
		rows := []row{
			{e: newEvent(appA, "device-1")},
			{mod(func(e *eventv1.Event) { e.DeviceId = "" }), ingestv1.InvalidReason_INVALID_REASON_MISSING_DEVICE_ID, "missing_device_id"},
			{mod(func(e *eventv1.Event) { e.EventId = "not-a-uuid" }), ingestv1.InvalidReason_INVALID_REASON_BAD_EVENT_ID, "bad_event_id"},
			{mod(func(e *eventv1.Event) { e.Payload = nil }), ingestv1.InvalidReason_INVALID_REASON_MISSING_PAYLOAD, "missing_payload"},
			{mod(func(e *eventv1.Event) {
				e.Payload = nil // a payload from a newer SDK: field 199 unknown here
				e.ProtoReflect().SetUnknown(protoreflect.RawFields(protowire.AppendBytes(protowire.AppendTag(nil, 199, protowire.BytesType), []byte{0x0a, 0})))
			}), ingestv1.InvalidReason_INVALID_REASON_UNKNOWN_PAYLOAD, "unknown_payload"},
			{mod(func(e *eventv1.Event) {
				e.Payload = &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ScreenName: "Home"}}
			}), ingestv1.InvalidReason_INVALID_REASON_MISSING_REQUIRED_FIELD, "missing_required_field"},
			{mod(func(e *eventv1.Event) { e.Properties["note"] = strings.Repeat("x", 2000) }), ingestv1.InvalidReason_INVALID_REASON_FIELD_TOO_LONG, "field_too_long"},
			{mod(func(e *eventv1.Event) {
				for i := range 65 {
					e.Properties[fmt.Sprint("k", i)] = "v"
				}
			}), ingestv1.InvalidReason_INVALID_REASON_TOO_MANY_PROPERTIES, "too_many_properties"},
			{mod(func(e *eventv1.Event) { e.TimestampMs = now.Add(time.Hour).UnixMilli() }), ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_IN_FUTURE, "timestamp_in_future"},
			{mod(func(e *eventv1.Event) { e.TimestampMs = now.Add(-40 * 24 * time.Hour).UnixMilli() }), ingestv1.InvalidReason_INVALID_REASON_TIMESTAMP_TOO_OLD, "timestamp_too_old"},
			{e: newEvent(appA, "device-2")},
		}
		events := make([]*eventv1.Event, len(rows))
		for i, r := range rows {
			events[i] = r.e
		}
		f := dialFrames(t, c.TCP)
		f.hello(t, keyA)
		if err := f.send(batchFrame(7, events)); err != nil {
			t.Fatal(err)
		}
		m, err := f.recv()
		if err != nil {
			t.Fatal(err)
		}
		res := m.GetAck().GetResults()
		if m.GetAck().GetSeq() != 7 || len(res) != len(rows) {
			t.Fatalf("got %v, want the ack of batch 7 with %d results", m, len(rows))
		}
		for i, r := range rows {
			want := ingestv1.EventStatus_EVENT_STATUS_ACCEPTED
			if r.reason != 0 {
				want = ingestv1.EventStatus_EVENT_STATUS_INVALID
				wantDLQ[r.e.GetEventId()] = r.label
			} else {
				wantEvents = append(wantEvents, r.e)
			}
			if res[i].GetStatus() != want || res[i].GetReason() != r.reason || res[i].GetEventId() != r.e.GetEventId() {
				t.Errorf("result %d: %v; want %s %s for %s", i, res[i], want, r.reason, r.e.GetEventId())
			}
		}
		good.waitFresh(t)
	})

	good.finish()
	if good.err != nil {
		t.Fatalf("the good connection failed: %v", good.err)
	}
	if len(good.sent) == 0 {
		t.Fatal("the good connection sent nothing")
	}
	wantEvents = append(wantEvents, good.sent...)
	readTopic(t, c.kafka, c.kafka.Topic, ids(wantEvents))
	dlq := readTopic(t, c.kafka, c.kafka.DLQTopic, slices.Collect(maps.Keys(wantDLQ)))
	for id, reason := range wantDLQ {
		if h := dlq[id].Headers; h[kafka.HeaderReason] != reason || h[kafka.HeaderSource] != "collector_tcp" || h[kafka.HeaderDetail] == "" {
			t.Errorf("dead letter %s has headers %v, want %s=%s from collector_tcp with a detail", id, h, kafka.HeaderReason, reason)
		}
	}
}

func TestCollectorDrain(t *testing.T) {
	t.Parallel()
	const app = "drain-app"
	c := startCollector(t, []string{app}, "-ingest.credits=4")
	f := dialFrames(t, c.TCP)
	credits := int(f.hello(t, c.keys.key[app]).GetCredits())
	type recvd struct {
		m   *ingestv1.ServerFrame
		err error
	}
	frames := make(chan recvd, 64)
	go func() {
		for {
			m, err := f.recv()
			frames <- recvd{m, err}
			if err != nil {
				return
			}
		}
	}()
	next := func(t *testing.T) recvd {
		t.Helper()
		select {
		case r := <-frames:
			return r
		case <-time.After(waitLimit):
			t.Fatal("nothing from the collector")
			return recvd{}
		}
	}

	// Stream through the credit window; after five acks, shut the collector
	// down (cancel its context) while batches are in flight.
	inflight := map[uint64][]*eventv1.Event{}
	var acked []*eventv1.Event
	stopped := make(chan error, 1)
	seq, acks, drained := uint64(0), 0, false
	for !drained || len(inflight) > 0 {
		for !drained && len(inflight) < credits {
			seq++
			inflight[seq] = newEvents(app, 20)
			if err := f.send(batchFrame(seq, inflight[seq])); err != nil {
				t.Fatalf("send batch %d: %v", seq, err)
			}
		}
		r := next(t)
		switch {
		case r.err != nil:
			t.Fatalf("stream ended with %d batches unacknowledged: %v", len(inflight), r.err)
		case r.m.GetAck() != nil:
			a := r.m.GetAck()
			checkAck(t, a, a.GetSeq(), inflight[a.GetSeq()], ingestv1.EventStatus_EVENT_STATUS_ACCEPTED)
			acked = append(acked, inflight[a.GetSeq()]...)
			delete(inflight, a.GetSeq())
			if acks++; acks == 5 {
				go func() { stopped <- c.stop() }()
			}
		case r.m.GetDrain() != nil:
			if drained || acks < 5 {
				t.Fatalf("unexpected %v after %d acks", r.m, acks)
			}
			drained = true
		default:
			t.Fatalf("got %v, want Ack or Drain", r.m)
		}
	}
	if err := f.send(goodbyeFrame); err != nil {
		t.Fatal(err)
	}
	if r := next(t); !errors.Is(r.err, io.EOF) {
		t.Fatalf("after Goodbye: %v, %v; want a close", r.m, r.err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("collector run returned %v after a drain, want nil", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("collector did not stop")
	}
	if conn, err := net.Dial("tcp", c.TCP); err == nil {
		conn.Close()
		t.Error("the stopped collector still accepts connections")
	}
	t.Logf("%d batches acked in all; the shutdown began at the 5th ack", seq)
	got := readTopic(t, c.kafka, c.kafka.Topic, ids(acked))
	checkStored(t, got, acked)
}

// ledger is what one streaming client sent and which events were acked as
// accepted.
type ledger struct {
	mu       sync.Mutex
	sent     []*eventv1.Event
	accepted map[string]bool
}

// streamUntilClosed sends batches through the credit window until the
// connection fails, recording everything in l. onAck runs after each ack.
func streamUntilClosed(f *frameConn, app string, credits int, l *ledger, onAck func()) error {
	frames := make(chan *ingestv1.ServerFrame)
	errc := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			m, err := f.recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case frames <- m:
			case <-done:
				return
			}
		}
	}()
	inflight := map[uint64][]*eventv1.Event{}
	for seq := uint64(1); ; {
		for len(inflight) < credits {
			events := newEvents(app, 25)
			l.mu.Lock()
			l.sent = append(l.sent, events...)
			l.mu.Unlock()
			inflight[seq] = events
			if err := f.send(batchFrame(seq, events)); err != nil {
				return err
			}
			seq++
		}
		select {
		case err := <-errc:
			return err
		case m := <-frames:
			a := m.GetAck()
			events, ok := inflight[a.GetSeq()]
			if !ok || len(a.GetResults()) != len(events) {
				return fmt.Errorf("unexpected %v", m)
			}
			delete(inflight, a.GetSeq())
			l.mu.Lock()
			for i, r := range a.GetResults() {
				if r.GetEventId() != events[i].GetEventId() {
					l.mu.Unlock()
					return fmt.Errorf("ack %d result %d is for %s, want %s", a.GetSeq(), i, r.GetEventId(), events[i].GetEventId())
				}
				if r.GetStatus() == ingestv1.EventStatus_EVENT_STATUS_ACCEPTED {
					l.accepted[r.GetEventId()] = true
				}
			}
			l.mu.Unlock()
			onAck()
		}
	}
}

func TestCollectorKill9(t *testing.T) {
	t.Parallel()
	const app = "kill-app"
	const clients, killAfter = 4, 40 // batches acked in all before the kill
	bin := collectorBinary(t)
	cfg := kafkatest.Config(t)
	keys := writeKeys(t, app)
	first := startChild(t, bin, cfg, keys, "first collector")

	var ackedBatches atomic.Int64
	enough := make(chan struct{})
	var once sync.Once
	ledgers := make([]*ledger, clients)
	errs := make(chan error, clients)
	for i := range ledgers {
		f := dialFrames(t, first.TCP)
		credits := int(f.hello(t, keys.key[app]).GetCredits())
		ledgers[i] = &ledger{accepted: map[string]bool{}}
		go func() {
			errs <- streamUntilClosed(f, app, credits, ledgers[i], func() {
				if ackedBatches.Add(1) >= killAfter {
					once.Do(func() { close(enough) })
				}
			})
		}()
	}
	select {
	case <-enough:
	case err := <-errs:
		t.Fatalf("a client stopped before the kill: %v", err)
	case <-time.After(waitLimit):
		t.Fatalf("only %d batches acked", ackedBatches.Load())
	}
	first.kill9(t)
	for range clients {
		select {
		case <-errs: // each ends with the connection's failure
		case <-time.After(waitLimit):
			t.Fatal("a client did not notice the kill")
		}
	}

	var sent []*eventv1.Event
	var acked []string
	sentIDs := map[string]bool{}
	for _, l := range ledgers {
		sent = append(sent, l.sent...)
		acked = append(acked, slices.Collect(maps.Keys(l.accepted))...)
	}
	for _, e := range sent {
		sentIDs[e.GetEventId()] = true
	}
	t.Logf("before the kill: %d events sent, %d acked as accepted", len(sent), len(acked))
	noForeign := func(got map[string]kafka.Message) {
		t.Helper()
		for id := range got {
			if !sentIDs[id] {
				t.Fatalf("Kafka holds event %s that no client sent", id)
			}
		}
	}
	noForeign(readAtLeast(t, cfg, cfg.Topic, acked))

	// A new collector takes the events that were never acknowledged.
	second := startChild(t, bin, cfg, keys, "second collector")
	f := dialFrames(t, second.TCP)
	f.hello(t, keys.key[app])
	var resend []*eventv1.Event
	for _, l := range ledgers {
		for _, e := range l.sent {
			if !l.accepted[e.GetEventId()] {
				resend = append(resend, e)
			}
		}
	}
	for seq := uint64(1); len(resend) > 0; seq++ {
		batch := resend[:min(len(resend), 200)]
		resend = resend[len(batch):]
		if err := f.send(batchFrame(seq, batch)); err != nil {
			t.Fatal(err)
		}
		m, err := f.recv()
		if err != nil {
			t.Fatal(err)
		}
		checkAck(t, m.GetAck(), seq, batch, ingestv1.EventStatus_EVENT_STATUS_ACCEPTED)
	}
	noForeign(readAtLeast(t, cfg, cfg.Topic, slices.Collect(maps.Keys(sentIDs))))
}
