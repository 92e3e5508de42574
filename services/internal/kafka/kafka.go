// Package kafka is the only importer of kafka-go. Events flow in through
// Producer.Publish (collector → Kafka) and out through Consumer.Run
// (Kafka → sink, detector). Topics are created with CreateTopics.
package kafka

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Default topic names.
const (
	EventsTopic     = "causality.events.v1"
	DeadLetterTopic = "causality.events.dlq.v1"
)

// Config says where the brokers are and what the topics are called.
type Config struct {
	Brokers      string
	Topic        string
	DLQTopic     string
	Partitions   int
	Replication  int
	BatchTimeout time.Duration
	WriteTimeout time.Duration
	Compression  string
}

// RegisterFlags registers the -kafka.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Brokers, "kafka.brokers", "127.0.0.1:9092", "comma-separated Kafka bootstrap brokers")
	fs.StringVar(&c.Topic, "kafka.topic", EventsTopic, "topic of accepted events")
	fs.StringVar(&c.DLQTopic, "kafka.dlq-topic", DeadLetterTopic, "topic of invalid events and undecodable messages, with the reason in headers")
	fs.IntVar(&c.Partitions, "kafka.partitions", 6, "partitions of topics this process creates when they are missing")
	fs.IntVar(&c.Replication, "kafka.replication-factor", 1, "replication factor of topics this process creates")
	fs.DurationVar(&c.BatchTimeout, "kafka.batch-timeout", 2*time.Millisecond, "how long the producer waits to fill a batch before sending it")
	fs.DurationVar(&c.WriteTimeout, "kafka.write-timeout", 10*time.Second, "how long one produce may take before it fails")
	fs.StringVar(&c.Compression, "kafka.compression", "lz4", "producer compression: none, gzip, snappy, lz4 or zstd")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	if len(c.BrokerList()) == 0 {
		return errors.New("-kafka.brokers: at least one broker is required")
	}
	for _, b := range c.BrokerList() {
		if _, _, err := net.SplitHostPort(b); err != nil {
			return fmt.Errorf("-kafka.brokers: %q is not host:port: %w", b, err)
		}
	}
	if c.Topic == "" || c.DLQTopic == "" {
		return errors.New("-kafka.topic and -kafka.dlq-topic must not be empty")
	}
	if c.Topic == c.DLQTopic {
		return errors.New("-kafka.topic and -kafka.dlq-topic must differ")
	}
	if c.Partitions < 1 || c.Replication < 1 {
		return errors.New("-kafka.partitions and -kafka.replication-factor must be at least 1")
	}
	if c.BatchTimeout <= 0 || c.WriteTimeout <= 0 {
		return errors.New("-kafka.batch-timeout and -kafka.write-timeout must be positive")
	}
	if _, err := c.codec(); err != nil {
		return err
	}
	return nil
}

// BrokerList splits Brokers.
func (c *Config) BrokerList() []string {
	var out []string
	for _, b := range strings.Split(c.Brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

func (c *Config) codec() (kafka.Compression, error) {
	switch c.Compression {
	case "none", "":
		return 0, nil
	case "gzip":
		return kafka.Gzip, nil
	case "snappy":
		return kafka.Snappy, nil
	case "lz4":
		return kafka.Lz4, nil
	case "zstd":
		return kafka.Zstd, nil
	}
	return 0, fmt.Errorf("-kafka.compression: unknown codec %q", c.Compression)
}

// EnsureTopics creates the events and DLQ topics when they are missing. A
// broker that is briefly unavailable is retried until ctx ends.
func EnsureTopics(ctx context.Context, cfg Config, extra ...string) error {
	topics := append([]string{cfg.Topic, cfg.DLQTopic}, extra...)
	client := &kafka.Client{Addr: kafka.TCP(cfg.BrokerList()...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	defer closeIdle(client.Transport)
	req := &kafka.CreateTopicsRequest{}
	for _, t := range topics {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: t, NumPartitions: cfg.Partitions, ReplicationFactor: cfg.Replication})
	}
	backoff := 100 * time.Millisecond
	for {
		err := createTopics(ctx, client, req)
		if err == nil || !retriable(err) {
			return err
		}
		if !sleep(ctx, backoff) {
			return err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func createTopics(ctx context.Context, client *kafka.Client, req *kafka.CreateTopicsRequest) error {
	resp, err := client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("create topics on %s: %w", client.Addr, err)
	}
	for topic, terr := range resp.Errors {
		if terr != nil && !errors.Is(terr, kafka.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", topic, terr)
		}
	}
	return nil
}

// retriable reports whether a failed admin request may succeed later.
func retriable(err error) bool {
	var kerr kafka.Error
	if errors.As(err, &kerr) {
		return kerr.Temporary()
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// DeleteTopics deletes topics; used by tests to clean up after themselves.
func DeleteTopics(ctx context.Context, cfg Config, topics ...string) error {
	client := &kafka.Client{Addr: kafka.TCP(cfg.BrokerList()...), Timeout: 10 * time.Second, Transport: &kafka.Transport{}}
	defer closeIdle(client.Transport)
	resp, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("delete topics: %w", err)
	}
	for topic, terr := range resp.Errors {
		if terr != nil && !errors.Is(terr, kafka.UnknownTopicOrPartition) {
			return fmt.Errorf("delete topic %s: %w", topic, terr)
		}
	}
	return nil
}

// Ping checks that a broker answers a metadata request for the events topic.
func Ping(ctx context.Context, cfg Config) error {
	client := &kafka.Client{Addr: kafka.TCP(cfg.BrokerList()...), Timeout: 5 * time.Second, Transport: &kafka.Transport{}}
	defer closeIdle(client.Transport)
	_, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{cfg.Topic}})
	return err
}

func closeIdle(rt kafka.RoundTripper) {
	if t, ok := rt.(*kafka.Transport); ok {
		t.CloseIdleConnections()
	}
}

// Header returns the value of the header key, or "".
func header(hs []kafka.Header, key string) string {
	for _, h := range hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
