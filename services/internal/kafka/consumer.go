package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
)

// Message is one record read from a topic.
type Message struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Time      time.Time
	AppID     string // from the app_id header, "" when absent
	Headers   map[string]string
}

// Handler takes a batch of messages. Offsets are committed only after it
// returns nil; an error makes the consumer retry the same batch with backoff.
type Handler func(ctx context.Context, msgs []Message) error

// ConsumerConfig tunes a consumer group.
type ConsumerConfig struct {
	Group    string
	Topic    string
	MaxBatch int           // messages per handler call
	MaxWait  time.Duration // age of the oldest message before the batch is handed over
	// StartLatest makes a group without committed offsets start at the end of
	// the topic instead of the beginning.
	StartLatest bool
}

// Consumer reads one topic as a member of a consumer group.
type Consumer struct {
	reader *kafka.Reader
	cfg    ConsumerConfig
	logger *slog.Logger
}

// NewConsumer joins the group lazily on the first fetch.
func NewConsumer(cfg Config, cc ConsumerConfig, logger *slog.Logger) (*Consumer, error) {
	if cc.Group == "" {
		return nil, errors.New("kafka consumer: group is required")
	}
	if cc.Topic == "" {
		cc.Topic = cfg.Topic
	}
	if cc.MaxBatch <= 0 {
		cc.MaxBatch = 10000
	}
	if cc.MaxWait <= 0 {
		cc.MaxWait = time.Second
	}
	start := kafka.FirstOffset
	if cc.StartLatest {
		start = kafka.LastOffset
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           cfg.BrokerList(),
		GroupID:           cc.Group,
		Topic:             cc.Topic,
		MinBytes:          1,
		MaxBytes:          1 << 20, // larger values livelock on timeouts (shared/notes)
		MaxWait:           500 * time.Millisecond,
		StartOffset:       start,
		CommitInterval:    0, // synchronous commits, after the handler
		HeartbeatInterval: 1 * time.Second,
		QueueCapacity:     min(cc.MaxBatch, 10000), // fetch ahead while the handler runs
		SessionTimeout:    10 * time.Second,
		RebalanceTimeout:  10 * time.Second,
		JoinGroupBackoff:  500 * time.Millisecond,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    500 * time.Millisecond,
		Dialer:            &kafka.Dialer{Timeout: 5 * time.Second},
	})
	return &Consumer{reader: r, cfg: cc, logger: logger}, nil
}

// Run fetches batches and hands them to handle until ctx ends. A failed
// handler is retried with exponential backoff (never skipped); offsets are
// committed after it succeeds. The next batch is fetched while handle
// runs. Run returns nil when ctx ends.
func (c *Consumer) Run(ctx context.Context, handle Handler) error {
	return c.RunStaged(ctx, func(_ context.Context, msgs []Message) func(context.Context) error {
		return func(ctx context.Context) error { return handle(ctx, msgs) }
	})
}

// Stage is a handler in two steps. It does the work of a batch that needs
// no outside system (decoding, building rows) and returns store, which
// writes the result out. store may be called again after it failed; msgs
// stay valid until it has succeeded.
type Stage func(ctx context.Context, msgs []Message) (store func(ctx context.Context) error)

// RunStaged is Run for a handler in two steps: batch N+1 is fetched and
// prepared while batch N is stored. Batches are stored in order, each
// store is retried until it succeeds, and a batch's offsets are committed
// only after its store succeeded and the batches before it were
// committed. At most two batches are held: the one being stored and the
// one waiting for it. RunStaged returns nil when ctx ends.
func (c *Consumer) RunStaged(ctx context.Context, prepare Stage) error {
	type ready struct {
		buf   *fetched
		store func(context.Context) error
	}
	free := make(chan *fetched, 2)
	for range 2 {
		free <- &fetched{batch: make([]kafka.Message, 0, c.cfg.MaxBatch), msgs: make([]Message, 0, c.cfg.MaxBatch)}
	}
	out := make(chan ready)
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	defer func() {
		cancel()
		<-done
		c.reader.Close()
	}()
	go func() {
		defer close(done)
		for {
			var buf *fetched
			select {
			case buf = <-free:
			case <-fctx.Done():
				return
			}
			if !c.fetch(fctx, buf) {
				return
			}
			store := prepare(fctx, buf.msgs)
			select {
			case out <- ready{buf, store}:
			case <-fctx.Done():
				return
			}
		}
	}()
	for {
		var r ready
		select {
		case r = <-out:
		case <-ctx.Done():
			return nil
		}
		if err := c.store(ctx, r.store, len(r.buf.msgs)); err != nil {
			return nil // ctx ended while retrying; offsets stay uncommitted
		}
		if err := c.commit(ctx, r.buf.batch); err != nil && ctx.Err() != nil {
			return nil
		}
		free <- r.buf
	}
}

// fetched is one batch: kafka-go's messages, for the commit, and ours.
type fetched struct {
	batch []kafka.Message
	msgs  []Message
}

// fetch fills buf with the next batch: up to MaxBatch messages, ending
// MaxWait after the first. It returns false when ctx ends.
func (c *Consumer) fetch(ctx context.Context, buf *fetched) bool {
	buf.batch, buf.msgs = buf.batch[:0], buf.msgs[:0]
	fctx := ctx // until the first message; then bounded by the batch's age
	for len(buf.batch) < c.cfg.MaxBatch {
		m, err := c.reader.FetchMessage(fctx)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			if errors.Is(err, context.DeadlineExceeded) {
				if len(buf.batch) > 0 {
					return true // the batch is old enough
				}
				continue
			}
			c.logger.Warn("kafka fetch", "topic", c.cfg.Topic, "err", err)
			if !sleep(ctx, time.Second) {
				return false
			}
			continue
		}
		if len(buf.batch) == 0 {
			var cancel context.CancelFunc
			fctx, cancel = context.WithDeadline(ctx, time.Now().Add(c.cfg.MaxWait))
			defer cancel()
		}
		buf.batch = append(buf.batch, m)
		buf.msgs = append(buf.msgs, Message{
			Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
			Key: m.Key, Value: m.Value, Time: m.Time, AppID: header(m.Headers, HeaderAppID), Headers: headers(m.Headers),
		})
	}
	return true
}

// store calls store until it succeeds or ctx ends.
func (c *Consumer) store(ctx context.Context, store func(context.Context) error, n int) error {
	backoff := 100 * time.Millisecond
	for {
		err := store(ctx)
		if err == nil {
			return nil
		}
		c.logger.Warn("handler failed, retrying the same batch", "topic", c.cfg.Topic, "messages", n, "backoff", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (c *Consumer) commit(ctx context.Context, batch []kafka.Message) error {
	backoff := 100 * time.Millisecond
	for {
		err := c.reader.CommitMessages(ctx, batch...)
		if err == nil {
			return nil
		}
		// After a rebalance the partition may belong to another member, which
		// will re-read from the last commit: duplicates, collapsed by event id.
		c.logger.Warn("kafka commit", "topic", c.cfg.Topic, "err", err)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
		if backoff >= 5*time.Second {
			return fmt.Errorf("commit offsets: %w", err)
		}
	}
}

// Close leaves the group.
func (c *Consumer) Close() error { return c.reader.Close() }

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ReadAll reads every partition of topic from its first offset, without a
// group, until it has read n messages or ctx ends. It is for tests and tools.
func ReadAll(ctx context.Context, cfg Config, topic string, n int) ([]Message, error) {
	conn, err := kafka.DialContext(ctx, "tcp", cfg.BrokerList()[0])
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", cfg.BrokerList()[0], err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	out := make(chan Message)
	errc := make(chan error, len(parts))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, p := range parts {
		go func() {
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers: cfg.BrokerList(), Topic: topic, Partition: p.ID,
				MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 200 * time.Millisecond,
			})
			defer r.Close()
			for {
				m, err := r.ReadMessage(rctx)
				if err != nil {
					errc <- err
					return
				}
				select {
				case out <- Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value, Time: m.Time, AppID: header(m.Headers, HeaderAppID), Headers: headers(m.Headers)}:
				case <-rctx.Done():
					return
				}
			}
		}()
	}
	var msgs []Message
	for len(msgs) < n {
		select {
		case m := <-out:
			msgs = append(msgs, m)
		case <-ctx.Done():
			return msgs, ctx.Err()
		}
	}
	return msgs, nil
}

func headers(hs []kafka.Header) map[string]string {
	if len(hs) == 0 {
		return nil
	}
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		m[h.Key] = string(h.Value)
	}
	return m
}

// DeadLetter is one message for the dead-letter topic, with why it was
// refused.
type DeadLetter struct {
	Key, Value             []byte
	Source, Reason, Detail string
}

// DeadLetters writes letters to the DLQ topic of cfg synchronously (acks
// from all in-sync replicas), so a consumer can commit the offsets of the
// refused messages only once they are kept elsewhere.
type DeadLetters struct {
	w *kafka.Writer
}

// NewDeadLetters connects lazily to cfg's brokers.
func NewDeadLetters(cfg Config) (*DeadLetters, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	codec, _ := cfg.codec()
	return &DeadLetters{w: &kafka.Writer{
		Addr:         kafka.TCP(cfg.BrokerList()...),
		Topic:        cfg.DLQTopic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		WriteTimeout: cfg.WriteTimeout,
		MaxAttempts:  3,
		Compression:  codec,
		Transport:    &kafka.Transport{DialTimeout: 5 * time.Second},
	}}, nil
}

// Write returns once every letter is acknowledged.
func (d *DeadLetters) Write(ctx context.Context, letters []DeadLetter) error {
	msgs := make([]kafka.Message, len(letters))
	for i, l := range letters {
		msgs[i] = kafka.Message{Key: l.Key, Value: l.Value, Headers: []kafka.Header{
			{Key: HeaderSource, Value: []byte(l.Source)},
			{Key: HeaderReason, Value: []byte(l.Reason)},
			{Key: HeaderDetail, Value: []byte(l.Detail)},
		}}
	}
	if err := d.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("write %d dead letters to %s: %w", len(letters), d.w.Topic, err)
	}
	return nil
}

// Close closes the connections.
func (d *DeadLetters) Close() error { return d.w.Close() }

// GroupLag returns, per partition of topic, how many messages the group
// has not committed yet: the high watermark minus the committed offset (or
// minus the first offset when the group has committed nothing there).
func GroupLag(ctx context.Context, cfg Config, group, topic string) (map[int]int64, error) {
	client := &kafka.Client{Addr: kafka.TCP(cfg.BrokerList()...), Timeout: 5 * time.Second, Transport: &kafka.Transport{}}
	defer closeIdle(client.Transport)
	meta, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", topic, err)
	}
	var parts []int
	for _, t := range meta.Topics {
		if t.Name == topic {
			if t.Error != nil {
				return nil, fmt.Errorf("metadata of %s: %w", topic, t.Error)
			}
			for _, p := range t.Partitions {
				parts = append(parts, p.ID)
			}
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	// One request per partition leader: kafka-go's Client.ListOffsets files
	// answers by the timestamp the broker returns, which is -1 for both the
	// first and the last offset, so it cannot ask for both at once.
	type bounds struct{ first, last int64 }
	offs := make(map[int]bounds, len(parts))
	for _, p := range parts {
		conn, err := (&kafka.Dialer{Timeout: 5 * time.Second}).DialLeader(ctx, "tcp", cfg.BrokerList()[0], topic, p)
		if err != nil {
			return nil, fmt.Errorf("leader of %s/%d: %w", topic, p, err)
		}
		first, last, err := conn.ReadOffsets()
		conn.Close()
		if err != nil {
			return nil, fmt.Errorf("offsets of %s/%d: %w", topic, p, err)
		}
		offs[p] = bounds{first, last}
	}
	committed, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, err)
	}
	if committed.Error != nil {
		return nil, fmt.Errorf("committed offsets of group %s: %w", group, committed.Error)
	}
	done := map[int]int64{}
	for _, p := range committed.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("committed offset of %s/%d: %w", topic, p.Partition, p.Error)
		}
		done[p.Partition] = p.CommittedOffset
	}
	lag := make(map[int]int64, len(parts))
	for p, b := range offs {
		from, ok := done[p]
		if !ok || from < b.first {
			from = b.first
		}
		lag[p] = max(b.last-from, 0)
	}
	return lag, nil
}
