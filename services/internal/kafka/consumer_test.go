package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
)

// produceN writes n events whose event ids are "event-<i>".
func produceN(t *testing.T, cfg kafka.Config, n int) {
	t.Helper()
	p, err := kafka.NewProducer(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	events := make([]*eventv1.Event, n)
	for i := range events {
		events[i] = &eventv1.Event{EventId: fmt.Sprintf("event-%d", i), AppId: "app", DeviceId: fmt.Sprintf("device-%d", i%7)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Publish(ctx, events); err != nil {
		t.Fatal(err)
	}
}

// stages records a RunStaged run: what was prepared and stored, in order.
type stages struct {
	mu       sync.Mutex
	prepared []int // messages per prepared batch
	stored   []int // index of each batch stored, in order
	attempts map[int]int
	offsets  map[string]int // "partition/offset" -> times stored
	next     chan struct{}  // receives when a batch is prepared
}

func newStages() *stages {
	return &stages{attempts: map[int]int{}, offsets: map[string]int{}, next: make(chan struct{}, 100)}
}

// stage returns a Stage whose store of batch k calls store(k).
func (s *stages) stage(store func(ctx context.Context, k int) error) kafka.Stage {
	return func(_ context.Context, msgs []kafka.Message) func(context.Context) error {
		s.mu.Lock()
		k := len(s.prepared)
		s.prepared = append(s.prepared, len(msgs))
		s.mu.Unlock()
		s.next <- struct{}{}
		return func(ctx context.Context) error {
			s.mu.Lock()
			s.attempts[k]++
			s.mu.Unlock()
			if err := store(ctx, k); err != nil {
				return err
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			s.stored = append(s.stored, k)
			for _, m := range msgs {
				s.offsets[fmt.Sprintf("%d/%d", m.Partition, m.Offset)]++
			}
			return nil
		}
	}
}

func (s *stages) counts() (prepared, stored, messages int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.prepared {
		messages += n
	}
	return len(s.prepared), len(s.stored), messages
}

func newConsumer(t *testing.T, cfg kafka.Config, group string) *kafka.Consumer {
	t.Helper()
	c, err := kafka.NewConsumer(cfg, kafka.ConsumerConfig{Group: group, MaxBatch: 100, MaxWait: 200 * time.Millisecond}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func lag(t *testing.T, cfg kafka.Config, group string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := kafka.GroupLag(ctx, cfg, group, cfg.Topic)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, n := range l {
		sum += n
	}
	return sum
}

// TestRunStagedPipelines: the next batch is prepared while one is stored
// (each store waits for it), batches are stored in order, a failed store
// is retried without preparing again, every message is stored once, and
// everything is committed.
func TestRunStagedPipelines(t *testing.T) {
	const n = 1000
	cfg := kafkatest.Config(t)
	produceN(t, cfg, n)
	group := "staged-" + cfg.Topic
	s := newStages()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var overlapped, ahead int
	c := newConsumer(t, cfg, group)
	go func() {
		done <- c.RunStaged(ctx, s.stage(func(ctx context.Context, k int) error {
			s.mu.Lock()
			attempt := s.attempts[k]
			s.mu.Unlock()
			if k == 2 && attempt < 3 {
				return errors.New("the warehouse is down")
			}
			// Wait until the next batch is prepared, unless this is the last.
			deadline := time.After(10 * time.Second)
			for {
				prepared, _, messages := s.counts()
				if prepared > k+1 {
					overlapped++
					ahead = max(ahead, prepared-k-1)
					return nil
				}
				if messages == n {
					return nil
				}
				select {
				case <-s.next:
				case <-deadline:
					return nil // counted as not overlapped
				case <-ctx.Done():
					return ctx.Err()
				}
			}
		}))
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, _, messages := s.counts(); messages == n && lag(t, cfg, group) == 0 {
			break
		}
		if time.Now().After(deadline) {
			p, st, m := s.counts()
			t.Fatalf("after 60 s: %d batches prepared (%d messages), %d stored, lag %d", p, m, st, lag(t, cfg, group))
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunStaged: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, k := range s.stored {
		if k != i {
			t.Fatalf("batches stored in order %v", s.stored)
		}
	}
	if len(s.offsets) != n {
		t.Errorf("%d distinct messages stored, want %d", len(s.offsets), n)
	}
	for o, times := range s.offsets {
		if times != 1 {
			t.Errorf("message %s stored %d times", o, times)
		}
	}
	if s.attempts[2] != 3 {
		t.Errorf("batch 2 stored after %d attempts, want 3", s.attempts[2])
	}
	if len(s.stored) < 3 || overlapped != len(s.stored)-1 {
		t.Errorf("%d of %d stores saw the next batch prepared, want all but the last", overlapped, len(s.stored))
	}
	if ahead != 1 {
		t.Errorf("up to %d batches prepared ahead of the one stored, want 1", ahead)
	}
}

// TestRunStagedCommitsOnlyStored: when a store keeps failing, the batch
// prepared after it is held, nothing more is fetched, and only the batches
// stored before it are committed.
func TestRunStagedCommitsOnlyStored(t *testing.T) {
	const n = 1000
	cfg := kafkatest.Config(t)
	produceN(t, cfg, n)
	group := "staged-" + cfg.Topic
	s := newStages()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	c := newConsumer(t, cfg, group)
	go func() {
		done <- c.RunStaged(ctx, s.stage(func(ctx context.Context, k int) error {
			if k >= 3 {
				return errors.New("the warehouse is down")
			}
			return nil
		}))
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s.mu.Lock()
		attempts := s.attempts[3]
		s.mu.Unlock()
		if prepared, _, _ := s.counts(); attempts >= 3 && prepared >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("batch 3 was not retried, or batch 4 not prepared, within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	prepared, stored, _ := s.counts()
	if prepared != 5 || stored != 3 {
		t.Fatalf("%d batches prepared and %d stored while batch 3 fails, want 5 and 3", prepared, stored)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunStaged: %v", err)
	}
	s.mu.Lock()
	committed := int64(len(s.offsets))
	s.mu.Unlock()
	if got := lag(t, cfg, group); got != n-committed {
		t.Errorf("lag %d, want %d: only the %d messages stored may be committed", got, n-committed, committed)
	}
}
