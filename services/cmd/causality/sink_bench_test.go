package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"causality.dev/services/internal/kafkatest"
	"causality.dev/services/internal/warehousetest"
)

// BenchmarkSinkIntoClickHouse measures the whole sink (Kafka fetch, decode,
// dedup, row building, native batch insert, commit) against
// clickhouse-client loading the same rows, exported in Native format, into
// the same table. Each iteration moves benchRows events; the sink starts
// every iteration with a new consumer group on an emptied table.
func BenchmarkSinkIntoClickHouse(b *testing.B) {
	const benchRows = 200_000
	kcfg := kafkatest.Config(b)
	wcfg, c := warehousetest.Migrated(b)
	client, err := exec.LookPath("clickhouse-client")
	if err != nil {
		b.Skip("clickhouse-client not found")
	}
	host, port, _ := net.SplitHostPort(wcfg.Addr)
	chClient := func(query string, stdin []byte) []byte {
		b.Helper()
		cmd := exec.Command(client, "--host", host, "--port", port, "--database", wcfg.Database, "-q", query)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("clickhouse-client %q: %v %s", query, err, exitOutput(err))
		}
		return out
	}
	events := sinkEvents(benchRows)
	produce(b, kcfg, events)

	var sinkRate, clientRate float64
	b.Run("sink", func(b *testing.B) {
		var rows int
		var elapsed time.Duration
		for b.Loop() {
			chClient("TRUNCATE TABLE events", nil)
			cfg := testSinkConfig(kcfg, wcfg)
			cfg.BatchSize, cfg.BatchAge = 50000, time.Second // the defaults
			start := time.Now()
			s := startSink(b, cfg)
			eventually(b, "all rows written", func() (bool, string) {
				n := s.metric(b, "causality_warehouse_rows_written_total")
				return n == benchRows, strconv.FormatFloat(n, 'f', -1, 64)
			})
			elapsed += time.Since(start)
			rows += benchRows
			b.Logf("iteration: %s, of which inserting %.2f s in %.0f batches", time.Since(start).Round(time.Millisecond), histogramSum(b, s, "causality_warehouse_insert_seconds"), s.metric(b, "causality_warehouse_insert_seconds"))
			s.stop(b)
		}
		sinkRate = float64(rows) / elapsed.Seconds()
		b.ReportMetric(sinkRate, "rows/s")
	})
	if n := warehousetest.Int(b, c, "SELECT count() FROM events"); n != benchRows {
		b.Fatalf("events has %d rows after the sink, want %d", n, benchRows)
	}
	native := filepath.Join(b.TempDir(), "events.native")
	if err := os.WriteFile(native, chClient("SELECT * FROM events FORMAT Native", nil), 0o600); err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(native)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("clickhouse-client", func(b *testing.B) {
		var rows int
		var elapsed time.Duration
		for b.Loop() {
			chClient("TRUNCATE TABLE events", nil)
			start := time.Now()
			chClient("INSERT INTO events FORMAT Native", data)
			elapsed += time.Since(start)
			rows += benchRows
		}
		clientRate = float64(rows) / elapsed.Seconds()
		b.ReportMetric(clientRate, "rows/s")
		if sinkRate > 0 {
			b.ReportMetric(sinkRate/clientRate, "sink/client")
		}
	})
	if n := warehousetest.Int(b, c, "SELECT count() FROM events"); n != benchRows {
		b.Fatalf("events has %d rows after clickhouse-client, want %d", n, benchRows)
	}
	if sinkRate > 0 && clientRate > 0 {
		b.Logf("%d rows: sink %.0f rows/s, clickhouse-client %.0f rows/s, ratio sink/client %.2f (Native file %.1f MB)",
			benchRows, sinkRate, clientRate, sinkRate/clientRate, float64(len(data))/1e6)
	}
}

func exitOutput(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

func histogramSum(t testing.TB, s *inProcessSink, name string) float64 {
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	return 0
}
