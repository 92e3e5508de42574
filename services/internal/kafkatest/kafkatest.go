// Package kafkatest gives tests a Kafka cluster and per-test topics: the real
// broker named by CAUSALITY_TEST_KAFKA (make test starts one with
// deploy/local/kafka.sh), or else an embedded kfake cluster. When
// CAUSALITY_REQUIRE_REAL_SERVERS is set, a missing real broker fails the test
// instead of falling back.
package kafkatest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"causality.dev/services/internal/kafka"
)

var seq atomic.Int64

// Brokers returns a bootstrap address and whether it is a real broker.
func Brokers(t testing.TB) (string, bool) {
	t.Helper()
	if addr := os.Getenv("CAUSALITY_TEST_KAFKA"); addr != "" {
		return addr, true
	}
	if os.Getenv("CAUSALITY_REQUIRE_REAL_SERVERS") != "" {
		t.Fatal("CAUSALITY_TEST_KAFKA is not set: start the broker with deploy/local/kafka.sh (make test does)")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3))
	if err != nil {
		t.Fatalf("start embedded kafka: %v", err)
	}
	t.Cleanup(c.Close)
	t.Log("using the embedded kfake cluster (set CAUSALITY_TEST_KAFKA for a real broker)")
	return strings.Join(c.ListenAddrs(), ","), false
}

// Config returns a kafka.Config on a test cluster with topics unique to this
// test, already created.
func Config(t testing.TB) kafka.Config {
	t.Helper()
	brokers, _ := Brokers(t)
	return ConfigOn(t, brokers)
}

// ConfigOn is Config on the given brokers.
func ConfigOn(t testing.TB, brokers string) kafka.Config {
	t.Helper()
	name := strings.NewReplacer("/", ".", " ", "_", "#", "_").Replace(t.Name())
	id := fmt.Sprintf("%s.%d.%d", name, time.Now().UnixNano()%1e9, seq.Add(1))
	cfg := kafka.Config{
		Brokers:      brokers,
		Topic:        "test." + id + ".events",
		DLQTopic:     "test." + id + ".dlq",
		Partitions:   3,
		Replication:  1,
		BatchTimeout: 2 * time.Millisecond,
		WriteTimeout: 10 * time.Second,
		Compression:  "lz4",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cfg); err != nil {
		t.Fatalf("create test topics: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := kafka.DeleteTopics(ctx, cfg, cfg.Topic, cfg.DLQTopic); err != nil {
			t.Logf("delete test topics: %v", err) // the broker is shared and disposable
		}
	})
	return cfg
}

// ReadN reads messages of topic from the beginning until it has n or the
// timeout passes, and returns what it read.
func ReadN(t testing.TB, cfg kafka.Config, topic string, n int, timeout time.Duration) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	msgs, err := kafka.ReadAll(ctx, cfg, topic, n)
	if err != nil && len(msgs) < n {
		t.Logf("read %s: %v (got %d of %d)", topic, err, len(msgs), n)
	}
	return msgs
}
