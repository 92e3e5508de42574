package kafka

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
)

// Record is one message for a Writer.
type Record struct {
	Key, Value []byte
	Headers    map[string]string
}

// Writer writes records to one topic synchronously, with acks from all
// in-sync replicas: for topics other than the events topic (the detector's
// anomalies, webhook dead letters).
type Writer struct {
	w *kafka.Writer
}

// NewWriter connects lazily to cfg's brokers and writes to topic.
func NewWriter(cfg Config, topic string) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if topic == "" {
		return nil, fmt.Errorf("kafka writer: topic is required")
	}
	codec, _ := cfg.codec()
	return &Writer{w: &kafka.Writer{
		Addr:         kafka.TCP(cfg.BrokerList()...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		WriteTimeout: cfg.WriteTimeout,
		MaxAttempts:  3,
		Compression:  codec,
		Transport:    &kafka.Transport{DialTimeout: 5 * time.Second, MetadataTTL: 5 * time.Second},
	}}, nil
}

// Write returns once every record is acknowledged. On error some may have
// been written: callers retry and readers dedup by a key of the value.
func (w *Writer) Write(ctx context.Context, records []Record) error {
	if len(records) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, len(records))
	for i, r := range records {
		msgs[i] = kafka.Message{Key: r.Key, Value: r.Value}
		keys := make([]string, 0, len(r.Headers))
		for k := range r.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			msgs[i].Headers = append(msgs[i].Headers, kafka.Header{Key: k, Value: []byte(r.Headers[k])})
		}
	}
	if err := w.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("write %d records to %s: %w", len(records), w.w.Topic, err)
	}
	return nil
}

// Topic is the topic written to.
func (w *Writer) Topic() string { return w.w.Topic }

// Close closes the connections.
func (w *Writer) Close() error { return w.w.Close() }
