package kafka

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// ErrNoTopic is returned by NewTail for a topic the brokers do not have
// (yet). Tails never create topics.
var ErrNoTopic = errors.New("no such topic")

// TailConfig says where a Tail starts in each partition and whether it
// stops.
type TailConfig struct {
	Topic string
	// Backfill starts each partition this many messages before its end
	// (0 = only messages written after NewTail returns).
	Backfill int
	// Since, when set, starts each partition at its first message written
	// at or after this time (broker timestamp) instead.
	Since time.Time
	// ToEnd stops the tail once it has read every partition up to the end
	// it had when NewTail returned, instead of following new messages.
	ToEnd bool
}

// Tail reads every partition of a topic from its end (or a little before
// it), without a consumer group: nothing is committed, and any number of
// tails can read the same topic. It is what live views use.
type Tail struct {
	cfg   Config
	tc    TailConfig
	parts []tailPartition
}

type tailPartition struct {
	id         int
	start, end int64 // start reading at start; end = the high watermark at NewTail
}

// NewTail finds the partitions of tc.Topic and where to start in each. A
// message written after NewTail returns is read by Run (unless ToEnd). It
// returns an error wrapping ErrNoTopic when the topic does not exist.
func NewTail(ctx context.Context, cfg Config, tc TailConfig) (*Tail, error) {
	if tc.Topic == "" {
		return nil, errors.New("tail: topic is required")
	}
	if len(cfg.BrokerList()) == 0 {
		return nil, errors.New("tail: no brokers")
	}
	// kafka.Client's metadata request does not create missing topics (the
	// Conn's does, on brokers that auto-create).
	client := &kafka.Client{Addr: kafka.TCP(cfg.BrokerList()...), Timeout: 5 * time.Second, Transport: &kafka.Transport{}}
	defer closeIdle(client.Transport)
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{tc.Topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", tc.Topic, err)
	}
	var ids []int
	for _, t := range meta.Topics {
		if t.Name != tc.Topic {
			continue
		}
		if t.Error != nil {
			if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
				return nil, fmt.Errorf("tail %s: %w", tc.Topic, ErrNoTopic)
			}
			return nil, fmt.Errorf("metadata of %s: %w", tc.Topic, t.Error)
		}
		for _, p := range t.Partitions {
			ids = append(ids, p.ID)
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("tail %s: %w", tc.Topic, ErrNoTopic)
	}
	sort.Ints(ids)
	t := &Tail{cfg: cfg, tc: tc}
	dialer := &kafka.Dialer{Timeout: 5 * time.Second}
	for _, id := range ids {
		conn, err := dialer.DialLeader(ctx, "tcp", cfg.BrokerList()[0], tc.Topic, id)
		if err != nil {
			return nil, fmt.Errorf("leader of %s/%d: %w", tc.Topic, id, err)
		}
		p, err := position(conn, tc)
		conn.Close()
		if err != nil {
			return nil, fmt.Errorf("offsets of %s/%d: %w", tc.Topic, id, err)
		}
		p.id = id
		t.parts = append(t.parts, p)
	}
	return t, nil
}

// position reads a partition's offsets and picks where to start.
func position(conn *kafka.Conn, tc TailConfig) (tailPartition, error) {
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return tailPartition{}, err
	}
	p := tailPartition{start: last, end: last}
	switch {
	case !tc.Since.IsZero():
		off, err := conn.ReadOffset(tc.Since)
		if err != nil {
			return tailPartition{}, err
		}
		if off >= first && off < last { // -1 or last: nothing written since
			p.start = off
		}
	case tc.Backfill > 0:
		p.start = max(first, last-int64(tc.Backfill))
	}
	return p, nil
}

// Partitions returns how many partitions the tail reads.
func (t *Tail) Partitions() int { return len(t.parts) }

// Run reads the partitions and calls fn with each message, from one
// goroutine, in order within a partition. It returns nil when ctx ends or,
// with ToEnd, once every partition is read up to its end; the first error
// of fn ends it too and is returned.
func (t *Tail) Run(ctx context.Context, fn func(Message) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make(chan Message)
	var wg sync.WaitGroup
	for _, p := range t.parts {
		if t.tc.ToEnd && p.start >= p.end {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.readPartition(ctx, p, out)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case m := <-out:
			if err := fn(m); err != nil {
				return err
			}
		case <-done:
			return nil
		case <-ctx.Done():
			<-done
			return nil
		}
	}
}

// readPartition sends the messages of p to out until ctx ends or, with
// ToEnd, p's end is reached. Fetch errors are retried: a live view waits
// for the broker to come back.
func (t *Tail) readPartition(ctx context.Context, p tailPartition, out chan<- Message) {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        t.cfg.BrokerList(),
		Topic:          t.tc.Topic,
		Partition:      p.id,
		MinBytes:       1,
		MaxBytes:       256 << 10, // many tails may be open; a larger message still comes whole
		MaxWait:        500 * time.Millisecond,
		ReadBackoffMin: 50 * time.Millisecond,
		ReadBackoffMax: 500 * time.Millisecond,
		Dialer:         &kafka.Dialer{Timeout: 5 * time.Second},
	})
	defer r.Close()
	if err := r.SetOffset(p.start); err != nil {
		return
	}
	for {
		if t.tc.ToEnd && r.Offset() >= p.end {
			return
		}
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil || !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		select {
		case out <- Message{
			Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
			Key: m.Key, Value: m.Value, Time: m.Time, AppID: header(m.Headers, HeaderAppID), Headers: headers(m.Headers),
		}:
		case <-ctx.Done():
			return
		}
	}
}
