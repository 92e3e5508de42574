package devstack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var quiet = slog.New(slog.DiscardHandler)

func TestKafkaKeepsDataAcrossRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kafka")
	port := freePort(t)
	k, err := StartKafka(dir, port, quiet)
	if err != nil {
		t.Fatal(err)
	}
	cfg := kafka.Config{Brokers: k.Addr(), Topic: "events", DLQTopic: "dlq", Partitions: 2, Replication: 1,
		BatchTimeout: time.Millisecond, WriteTimeout: 10 * time.Second, Compression: "lz4"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafka.EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p, err := kafka.NewProducer(cfg, quiet, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ev := &eventv1.Event{EventId: "0190c5a0-0000-7000-8000-000000000001", AppId: "a", DeviceId: "d"}
	if err := p.Publish(ctx, []*eventv1.Event{ev}); err != nil {
		t.Fatal(err)
	}
	p.Close()
	k.Close()

	k, err = StartKafka(dir, port, quiet)
	if err != nil {
		t.Fatalf("restart on the same dir and port: %v", err)
	}
	defer k.Close()
	msgs, err := kafka.ReadAll(ctx, cfg, "events", 1)
	if err != nil || len(msgs) != 1 || string(msgs[0].Key) != "d" {
		t.Fatalf("after a restart read %d messages (%v); want the one written before", len(msgs), err)
	}

	if _, err := StartKafka(filepath.Join(t.TempDir(), "other"), port, quiet); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("a second broker on a busy port: err = %v, want an 'in use' error", err)
	}
}

func TestClickHouseMissingBinary(t *testing.T) {
	_, err := StartClickHouse(context.Background(), ClickHouseConfig{Bin: "no-such-clickhouse-server", Dir: t.TempDir(), Port: 1, HTTPPort: 2}, quiet)
	if !errors.Is(err, ErrNoClickHouse) || !strings.Contains(err.Error(), "deploy/local/clickhouse.sh install") {
		t.Fatalf("err = %v; want ErrNoClickHouse with the install command", err)
	}
}

func TestClickHouseStartsAndStops(t *testing.T) {
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		if os.Getenv("CAUSALITY_REQUIRE_REAL_SERVERS") != "" {
			t.Fatal("clickhouse-server is not installed (deploy/local/clickhouse.sh install)")
		}
		t.Skip("clickhouse-server is not installed")
	}
	dir := t.TempDir()
	cfg := ClickHouseConfig{Dir: dir, Port: freePort(t), HTTPPort: freePort(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ch, err := StartClickHouse(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ch.Stop)
	if got := query(t, ch.HTTPAddr(), "SELECT 41 + 1"); got != "42" {
		t.Fatalf("SELECT 41 + 1 = %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); err != nil {
		t.Errorf("data is not under the dir: %v", err)
	}

	// A second server on the same ports fails with a clear message.
	_, err = StartClickHouse(ctx, ClickHouseConfig{Dir: t.TempDir(), Port: cfg.Port, HTTPPort: freePort(t)}, quiet)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second server on a busy port: err = %v", err)
	}

	ch.Stop()
	if err := ch.Ping(ctx); err == nil {
		t.Fatal("server still answers after Stop")
	}
	if _, err := os.Stat(filepath.Join(dir, "clickhouse.pid")); !os.IsNotExist(err) {
		t.Errorf("pid file left after Stop: %v", err)
	}
}

func query(t *testing.T, httpAddr, q string) string {
	t.Helper()
	res, err := http.Get("http://" + httpAddr + "/?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return strings.TrimSpace(string(b))
}
