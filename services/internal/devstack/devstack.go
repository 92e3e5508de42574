// Package devstack starts the outside systems of `causality dev` on one
// machine: an embedded Kafka broker (kfake) keeping its data in a directory,
// and a ClickHouse server run from the local clickhouse-server binary with a
// generated config and its data in a directory. In: directories and ports;
// out: the addresses to give the collector and the sink, and Close/Stop.
package devstack

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Kafka is an embedded single-broker Kafka cluster.
type Kafka struct {
	c *kfake.Cluster
}

// StartKafka starts a broker on 127.0.0.1:port (0 picks a free port) whose
// topics, messages and committed offsets persist in dir across restarts.
// kfake serves every request on one loop and does not replicate: it is for
// development, never for load figures.
func StartKafka(dir string, port int, logger *slog.Logger) (*Kafka, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kafka data dir: %w", err)
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(dir),
		kfake.WithLogger(kfakeLogger{logger}),
	)
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			return nil, fmt.Errorf("embedded kafka: 127.0.0.1:%d is in use (another broker?): stop it, pick another -dev.kafka-port, or use it with -kafka.brokers 127.0.0.1:%d", port, port)
		}
		return nil, fmt.Errorf("embedded kafka in %s: %w", dir, err)
	}
	return &Kafka{c: c}, nil
}

// Addr is the bootstrap address.
func (k *Kafka) Addr() string { return k.c.ListenAddrs()[0] }

// Close stops the broker and writes its state to disk.
func (k *Kafka) Close() { k.c.Close() }

// kfakeLogger forwards kfake's warnings and errors to slog.
type kfakeLogger struct{ l *slog.Logger }

func (k kfakeLogger) Logf(level kfake.LogLevel, msg string, args ...any) {
	switch level {
	case kfake.LogLevelError:
		k.l.Error("kafka: " + fmt.Sprintf(msg, args...))
	case kfake.LogLevelWarn:
		k.l.Warn("kafka: " + fmt.Sprintf(msg, args...))
	}
}
