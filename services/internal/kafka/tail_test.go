package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
)

// publishIDs writes one event per id, spread over the partitions.
func publishIDs(t *testing.T, cfg kafka.Config, ids ...string) {
	t.Helper()
	p, err := kafka.NewProducer(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	events := make([]*eventv1.Event, len(ids))
	for i, id := range ids {
		events[i] = &eventv1.Event{EventId: id, AppId: "app", DeviceId: fmt.Sprintf("device-%d", i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, events); err != nil {
		t.Fatal(err)
	}
}

func eventID(t *testing.T, m kafka.Message) string {
	t.Helper()
	e := &eventv1.Event{}
	if err := proto.Unmarshal(m.Value, e); err != nil {
		t.Fatal(err)
	}
	return e.GetEventId()
}

// runTail runs tail in the background and sends the event id of every
// message it reads; cancel stops it.
func runTail(t *testing.T, tail *kafka.Tail) (<-chan string, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ids := make(chan string, 1000)
	done := make(chan error, 1)
	go func() {
		done <- tail.Run(ctx, func(m kafka.Message) error {
			if m.AppID != "app" {
				t.Errorf("message %d/%d: app_id header %q", m.Partition, m.Offset, m.AppID)
			}
			ids <- eventID(t, m)
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ids, cancel
}

// collect reads n ids from ids, failing after the bound.
func collect(t *testing.T, ids <-chan string, n int) []string {
	t.Helper()
	var got []string
	timeout := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case id := <-ids:
			got = append(got, id)
		case <-timeout:
			t.Fatalf("read %d of %d messages: %q", len(got), n, got)
		}
	}
	sort.Strings(got)
	return got
}

func tailOf(t *testing.T, cfg kafka.Config, tc kafka.TailConfig) *kafka.Tail {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tail, err := kafka.NewTail(ctx, cfg, tc)
	if err != nil {
		t.Fatal(err)
	}
	return tail
}

// TestTailFromEnd: a tail sees what is written after it started and
// nothing from before; two tails of one topic each see everything (no
// group shares the partitions out).
func TestTailFromEnd(t *testing.T) {
	cfg := kafkatest.Config(t)
	publishIDs(t, cfg, "old-1", "old-2", "old-3")
	a := tailOf(t, cfg, kafka.TailConfig{Topic: cfg.Topic})
	b := tailOf(t, cfg, kafka.TailConfig{Topic: cfg.Topic})
	if a.Partitions() != cfg.Partitions {
		t.Errorf("tail reads %d partitions, want %d", a.Partitions(), cfg.Partitions)
	}
	idsA, _ := runTail(t, a)
	idsB, _ := runTail(t, b)
	want := []string{"new-0", "new-1", "new-2", "new-3", "new-4", "new-5"}
	publishIDs(t, cfg, want...)
	for name, ids := range map[string]<-chan string{"a": idsA, "b": idsB} {
		if got := collect(t, ids, len(want)); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("tail %s read %q, want %q", name, got, want)
		}
	}
	// Nothing else comes: one more event is the next thing read.
	publishIDs(t, cfg, "last")
	if got := collect(t, idsA, 1); got[0] != "last" {
		t.Errorf("after the new events tail a read %q, want last", got)
	}
}

// TestTailBackfill: Backfill starts each partition that many messages
// before its end; Since starts at a time; ToEnd stops at the end.
func TestTailBackfill(t *testing.T) {
	cfg := kafkatest.Config(t)
	var all []string
	for i := range 30 {
		all = append(all, fmt.Sprintf("e-%02d", i))
	}
	publishIDs(t, cfg, all...)

	// Backfill larger than any partition: everything, then the end.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	perPartition := map[int]int{}
	err := tailOf(t, cfg, kafka.TailConfig{Topic: cfg.Topic, Backfill: 1000, ToEnd: true}).Run(ctx, func(m kafka.Message) error {
		got = append(got, eventID(t, m))
		perPartition[m.Partition]++
		return nil
	})
	sort.Strings(got)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(all) {
		t.Errorf("backfill 1000 to the end: %q, %v; want all %d", got, err, len(all))
	}
	if ctx.Err() != nil {
		t.Error("ToEnd did not stop at the end")
	}

	// Backfill 2: the last two of each partition.
	got = got[:0]
	err = tailOf(t, cfg, kafka.TailConfig{Topic: cfg.Topic, Backfill: 2, ToEnd: true}).Run(ctx, func(m kafka.Message) error {
		got = append(got, eventID(t, m))
		return nil
	})
	want := 0
	for _, n := range perPartition {
		want += min(n, 2)
	}
	if err != nil || len(got) != want {
		t.Errorf("backfill 2: %q, %v; want %d messages (partitions hold %v)", got, err, want, perPartition)
	}

	// Since after the last message: nothing before the end.
	got = got[:0]
	err = tailOf(t, cfg, kafka.TailConfig{Topic: cfg.Topic, Since: time.Now().Add(time.Hour), ToEnd: true}).Run(ctx, func(m kafka.Message) error {
		got = append(got, eventID(t, m))
		return nil
	})
	if err != nil || len(got) != 0 {
		t.Errorf("since an hour ahead: %q, %v; want nothing", got, err)
	}
	// Since an hour ago: everything.
	got = got[:0]
	err = tailOf(t, cfg, kafka.TailConfig{Topic: cfg.Topic, Since: time.Now().Add(-time.Hour), ToEnd: true}).Run(ctx, func(m kafka.Message) error {
		got = append(got, eventID(t, m))
		return nil
	})
	if err != nil || len(got) != len(all) {
		t.Errorf("since an hour ago: %d messages, %v; want %d", len(got), err, len(all))
	}

	// An error of fn ends Run with it.
	stop := errors.New("enough")
	n := 0
	err = tailOf(t, cfg, kafka.TailConfig{Topic: cfg.Topic, Backfill: 1000}).Run(ctx, func(kafka.Message) error {
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("fn failing: Run = %v after %d calls, want %v after 1", err, n, stop)
	}
}

// TestTailMissingTopic: a tail of a topic that does not exist fails with
// ErrNoTopic and does not create it, even on a broker that auto-creates.
func TestTailMissingTopic(t *testing.T) {
	cfg := kafkatest.Config(t)
	topic := cfg.Topic + ".missing"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 2 {
		if _, err := kafka.NewTail(ctx, cfg, kafka.TailConfig{Topic: topic}); !errors.Is(err, kafka.ErrNoTopic) {
			t.Fatalf("NewTail of a missing topic: %v, want ErrNoTopic", err)
		}
	}
	if _, err := kafka.NewTail(ctx, cfg, kafka.TailConfig{}); err == nil {
		t.Error("NewTail without a topic did not fail")
	}
}
