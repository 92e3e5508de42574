package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// recorder is a recording publisher: it keeps every batch it is given and
// fails while failNext > 0.
type recorder struct {
	mu       sync.Mutex
	batches  [][]*eventv1.Event
	failNext int
}

func (r *recorder) publish(_ context.Context, events []*eventv1.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failNext > 0 {
		r.failNext--
		return errors.New("kafka: not enough in-sync replicas")
	}
	cp := make([]*eventv1.Event, len(events))
	for i, e := range events {
		cp[i] = proto.Clone(e).(*eventv1.Event)
	}
	r.batches = append(r.batches, cp)
	return nil
}

// ids returns the event ids of every published event, in order.
func (r *recorder) ids() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ids []string
	for _, b := range r.batches {
		for _, e := range b {
			ids = append(ids, e.GetEventId())
		}
	}
	return ids
}

func (r *recorder) events() []*eventv1.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*eventv1.Event
	for _, b := range r.batches {
		out = append(out, b...)
	}
	return out
}

// letter is one dead letter.
type letter struct {
	key, value             []byte
	source, reason, detail string
}

// deadLetters is a recording DeadLetterer.
type deadLetters struct {
	mu      sync.Mutex
	letters []letter
}

func (d *deadLetters) DeadLetter(key, value []byte, source, reason, detail string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.letters = append(d.letters, letter{key, value, source, reason, detail})
}

// testPipeline is a pipeline with fakes and a clock the test moves.
type testPipeline struct {
	*pipeline
	pub   *recorder
	dlq   *deadLetters
	reg   *prometheus.Registry
	clock time.Time
}

func newTestPipeline(tb testing.TB, rate float64) *testPipeline {
	tb.Helper()
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	tp := &testPipeline{pub: &recorder{}, dlq: &deadLetters{}, reg: reg, clock: time.UnixMilli(testNow)}
	tp.pipeline = &pipeline{
		pub: PublishFunc(tp.pub.publish), dlq: tp.dlq, limits: DefaultLimits, timeout: 5 * time.Second,
		seen: newRecentIDs(1000), limiter: newAppLimiter(rate), metrics: m, logger: discardLogger(),
		now: func() time.Time { return tp.clock },
	}
	return tp
}

// eventN returns a valid event of app-a whose id ends in n.
func eventN(n int) *eventv1.Event {
	e := newEvent()
	e.EventId = fmt.Sprintf("0193e2c4-7b7a-7c3e-8a55-%012d", n)
	e.ReceivedAtMs = 0
	return e
}

func batchOf(seq uint64, events ...*eventv1.Event) *ingestv1.Batch {
	return &ingestv1.Batch{Seq: seq, SentAtMs: testNow - 100, Events: events}
}

// statuses lists the results' statuses as labels, e.g. "accepted".
func statuses(a *ingestv1.Ack) []string {
	out := make([]string, len(a.GetResults()))
	for i, r := range a.GetResults() {
		out[i] = statusLabel(r.GetStatus())
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func wantStatuses(tb testing.TB, a *ingestv1.Ack, want ...string) {
	tb.Helper()
	if got := statuses(a); !equalStrings(got, want) {
		tb.Fatalf("statuses %v, want %v (ack %v)", got, want, a)
	}
}

func wantPublished(tb testing.TB, r *recorder, want ...string) {
	tb.Helper()
	if got := r.ids(); !equalStrings(got, want) {
		tb.Fatalf("published %v, want %v", got, want)
	}
}

func eventsMetric(tp *testPipeline, result, reason string) float64 {
	return testutil.ToFloat64(tp.metrics.events.WithLabelValues(TransportTCP, result, reason))
}

func TestPipelineInvalidNeverBlocksValid(t *testing.T) {
	tp := newTestPipeline(t, 0)
	noDevice := eventN(2)
	noDevice.DeviceId = ""
	otherApp := eventN(4)
	otherApp.AppId = "app-b"
	otherApp.DeviceId = "device-4"
	a := tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(9, eventN(1), noDevice, eventN(3), otherApp))

	if a.GetSeq() != 9 {
		t.Errorf("ack seq %d, want 9", a.GetSeq())
	}
	wantStatuses(t, a, "accepted", "invalid", "accepted", "invalid")
	for i, r := range a.GetResults() {
		if want := eventN(i + 1).GetEventId(); r.GetEventId() != want {
			t.Errorf("result %d: event id %q, want %q", i, r.GetEventId(), want)
		}
	}
	if r := a.GetResults()[1]; r.GetReason() != ingestv1.InvalidReason_INVALID_REASON_MISSING_DEVICE_ID || r.GetDetail() == "" {
		t.Errorf("result 1: reason %v detail %q", r.GetReason(), r.GetDetail())
	}
	if r := a.GetResults()[3]; r.GetReason() != ingestv1.InvalidReason_INVALID_REASON_APP_MISMATCH {
		t.Errorf("result 3: reason %v", r.GetReason())
	}
	wantPublished(t, tp.pub, eventN(1).GetEventId(), eventN(3).GetEventId())

	// Both invalid events are dead-lettered with their reason.
	if len(tp.dlq.letters) != 2 {
		t.Fatalf("%d dead letters, want 2", len(tp.dlq.letters))
	}
	for i, want := range []struct{ reason, key, id string }{
		{"missing_device_id", "", eventN(2).GetEventId()},
		{"app_mismatch", "device-4", eventN(4).GetEventId()},
	} {
		l := tp.dlq.letters[i]
		if l.reason != want.reason || string(l.key) != want.key || l.source != "collector_tcp" || l.detail == "" {
			t.Errorf("dead letter %d: reason %q key %q source %q detail %q; want %s, %q", i, l.reason, l.key, l.source, l.detail, want.reason, want.key)
		}
		e := &eventv1.Event{}
		if err := proto.Unmarshal(l.value, e); err != nil {
			t.Fatalf("dead letter %d value: %v", i, err)
		}
		if e.GetEventId() != want.id || e.GetReceivedAtMs() != testNow {
			t.Errorf("dead letter %d: id %s received %d; want the stamped event %s", i, e.GetEventId(), e.GetReceivedAtMs(), want.id)
		}
	}

	if got := eventsMetric(tp, "accepted", ""); got != 2 {
		t.Errorf("accepted metric %v, want 2", got)
	}
	if got := eventsMetric(tp, "invalid", "missing_device_id"); got != 1 {
		t.Errorf("invalid/missing_device_id metric %v, want 1", got)
	}
}

func TestPipelineAllInvalidPublishesNothing(t *testing.T) {
	tp := newTestPipeline(t, 0)
	e := eventN(1)
	e.Payload = nil
	a := tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(1, e))
	wantStatuses(t, a, "invalid")
	if n := len(tp.pub.batches); n != 0 {
		t.Fatalf("publisher called %d times for a batch without valid events", n)
	}
}

func TestPipelineDuplicates(t *testing.T) {
	tp := newTestPipeline(t, 0)
	a := tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(1, eventN(1), eventN(2), eventN(1)))
	wantStatuses(t, a, "accepted", "accepted", "duplicate")
	wantPublished(t, tp.pub, eventN(1).GetEventId(), eventN(2).GetEventId())

	a = tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(2, eventN(2), eventN(3)))
	wantStatuses(t, a, "duplicate", "accepted")
	wantPublished(t, tp.pub, eventN(1).GetEventId(), eventN(2).GetEventId(), eventN(3).GetEventId())
	if r := a.GetResults()[0]; r.GetEventId() != eventN(2).GetEventId() {
		t.Errorf("duplicate result names %q", r.GetEventId())
	}
	if got := eventsMetric(tp, "duplicate", ""); got != 2 {
		t.Errorf("duplicate metric %v, want 2", got)
	}
}

func TestPipelineDedupDisabled(t *testing.T) {
	tp := newTestPipeline(t, 0)
	tp.seen = newRecentIDs(0)
	tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(1, eventN(1)))
	a := tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(2, eventN(1), eventN(1)))
	// Across batches nothing is remembered; within one batch copies still collapse.
	wantStatuses(t, a, "accepted", "duplicate")
}

func TestPipelineFailedPublishIsRetryable(t *testing.T) {
	tp := newTestPipeline(t, 0)
	tp.pub.failNext = 1
	invalid := eventN(3)
	invalid.DeviceId = ""
	a := tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(1, eventN(1), eventN(2), invalid, eventN(1)))
	// A copy of an event that was not stored must not be called duplicate:
	// a client that forgets it could lose the event.
	wantStatuses(t, a, "retry", "retry", "invalid", "retry")
	for _, i := range []int{0, 1, 3} {
		if r := a.GetResults()[i]; r.GetRetryAfterMs() == 0 {
			t.Errorf("result %d: retry without retry_after_ms", i)
		}
	}
	wantPublished(t, tp.pub)
	if got := eventsMetric(tp, "retry", ""); got != 3 {
		t.Errorf("retry metric %v, want 3", got)
	}

	// The same events resent are accepted: the failure did not poison dedup.
	a = tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(2, eventN(1), eventN(2)))
	wantStatuses(t, a, "accepted", "accepted")
	wantPublished(t, tp.pub, eventN(1).GetEventId(), eventN(2).GetEventId())
}

func TestPipelinePublishTimeout(t *testing.T) {
	tp := newTestPipeline(t, 0)
	tp.timeout = 10 * time.Millisecond
	tp.pipeline.pub = PublishFunc(func(ctx context.Context, _ []*eventv1.Event) error {
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("publish context has no deadline")
		}
		<-ctx.Done() // a Kafka that never answers
		return ctx.Err()
	})
	a := tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(1, eventN(1)))
	wantStatuses(t, a, "retry")
}

func TestPipelineRateLimit(t *testing.T) {
	tp := newTestPipeline(t, 2) // 2 events/s, burst 2
	a := tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(1, eventN(1), eventN(2), eventN(3), eventN(3)))
	wantStatuses(t, a, "accepted", "accepted", "rate_limited", "rate_limited")
	for _, r := range a.GetResults()[2:] {
		// The bucket is empty: the next token comes in 1/rate = 500 ms.
		if got := r.GetRetryAfterMs(); got < 500 || got > 501 {
			t.Errorf("retry_after_ms %d, want about 500", got)
		}
	}
	wantPublished(t, tp.pub, eventN(1).GetEventId(), eventN(2).GetEventId())
	if got := eventsMetric(tp, "rate_limited", ""); got != 2 {
		t.Errorf("rate_limited metric %v, want 2", got)
	}

	// Other apps have their own bucket.
	b := eventN(10)
	b.AppId = "app-b"
	wantStatuses(t, tp.ingest(t.Context(), TransportTCP, "app-b", batchOf(2, b)), "accepted")

	// Before the wait: still limited. After it: the resent event is accepted,
	// not a duplicate.
	tp.clock = tp.clock.Add(100 * time.Millisecond)
	wantStatuses(t, tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(3, eventN(3))), "rate_limited")
	tp.clock = tp.clock.Add(500 * time.Millisecond)
	wantStatuses(t, tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(4, eventN(3))), "accepted")
}

func TestPipelineStamps(t *testing.T) {
	tp := newTestPipeline(t, 0)
	const batchSent = testNow - 100

	plain := eventN(1) // no sent_at: takes the batch's
	ownSent := eventN(2)
	ownSent.SentAtMs = testNow - 50
	noTime := eventN(3) // the prototype's JSON: no timestamp
	noTime.TimestampMs = 0
	forged := eventN(4) // received_at is the server's to set
	forged.ReceivedAtMs = 12345
	noApp := eventN(5)
	noApp.AppId = ""

	a := tp.ingest(t.Context(), TransportTCP, "app-a", &ingestv1.Batch{Seq: 1, SentAtMs: batchSent, Events: []*eventv1.Event{plain, ownSent, noTime, forged, noApp}})
	wantStatuses(t, a, "accepted", "accepted", "accepted", "accepted", "accepted")
	got := tp.pub.events()
	if len(got) != 5 {
		t.Fatalf("%d events published", len(got))
	}
	tests := []struct {
		name                    string
		e                       *eventv1.Event
		timestamp, sent, recvAt int64
		app                     string
	}{
		{"sent_at from the batch", got[0], testNow - 1000, batchSent, testNow, "app-a"},
		{"own sent_at kept", got[1], testNow - 1000, testNow - 50, testNow, "app-a"},
		{"timestamp 0 is arrival time, without skew", got[2], testNow, 0, testNow, "app-a"},
		{"received_at overwritten", got[3], testNow - 1000, batchSent, testNow, "app-a"},
		{"empty app_id is the key's", got[4], testNow - 1000, batchSent, testNow, "app-a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.e
			if e.GetTimestampMs() != tt.timestamp || e.GetSentAtMs() != tt.sent || e.GetReceivedAtMs() != tt.recvAt || e.GetAppId() != tt.app {
				t.Fatalf("timestamp %d sent %d received %d app %q; want %d %d %d %q",
					e.GetTimestampMs(), e.GetSentAtMs(), e.GetReceivedAtMs(), e.GetAppId(), tt.timestamp, tt.sent, tt.recvAt, tt.app)
			}
		})
	}
}

func TestPipelineCountsClientDrops(t *testing.T) {
	tp := newTestPipeline(t, 0)
	b := batchOf(1, eventN(1))
	b.DroppedEvents = 7
	tp.ingest(t.Context(), TransportTCP, "app-a", b)
	tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(2, eventN(2)))
	if got := testutil.ToFloat64(tp.metrics.dropped); got != 7 {
		t.Fatalf("dropped metric %v, want 7", got)
	}
	if n := testutil.CollectAndCount(tp.metrics.ackSeconds); n != 1 {
		t.Errorf("ack latency series %d, want 1 (tcp)", n)
	}
}

func TestRecentIDsEvictsOldest(t *testing.T) {
	r := newRecentIDs(2)
	a, b, c := [16]byte{1}, [16]byte{2}, [16]byte{3}
	r.add(a, b)
	r.add(a) // already there: must not take a slot
	r.add(c) // evicts a
	for _, tt := range []struct {
		id   [16]byte
		want bool
	}{{a, false}, {b, true}, {c, true}} {
		if got := r.contains(tt.id); got != tt.want {
			t.Errorf("contains(%x) = %v, want %v", tt.id[0], got, tt.want)
		}
	}
	var off *recentIDs // dedup disabled
	off.add(a)
	if off.contains(a) {
		t.Error("a disabled set remembered an id")
	}
}
