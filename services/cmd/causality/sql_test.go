package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/warehousetest"
)

func TestSQL(t *testing.T) {
	cfg, c := warehousetest.Migrated(t)
	w, err := warehouse.NewWriter(c, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	events := sinkEvents(7)
	if err := w.Write(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	flags := []string{"-clickhouse.addr=" + cfg.Addr, "-clickhouse.database=" + cfg.Database}
	sql := func(stdin string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := sqlMain(context.Background(), append(append([]string{}, flags...), args...), strings.NewReader(stdin), &out, &errOut)
		return out.String(), err
	}

	t.Run("one query, events without a database prefix", func(t *testing.T) {
		out, err := sql("", "-q", "SELECT device_id, count() AS n FROM events WHERE device_id IN ('dev-1', 'dev-2') GROUP BY device_id ORDER BY device_id")
		if err != nil {
			t.Fatal(err)
		}
		want := "device_id  n\n---------  -\ndev-1      1\ndev-2      1\n(2 rows)\n"
		if out != want {
			t.Errorf("output\n%s\nwant\n%s", out, want)
		}
	})
	t.Run("prompt reads statements ending with a semicolon", func(t *testing.T) {
		out, err := sql("SELECT count()\nFROM events;\nSELEC oops;\nSELECT uniqExact(device_id) AS devices FROM events;\n")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"count()\n-------\n      7\n(1 row)", "error: code: 62", "devices\n-------\n      7\n(1 row)"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("bad SQL with -q", func(t *testing.T) {
		_, err := sql("", "-q", "SELECT nope FROM events")
		if err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("err = %v, want ClickHouse's error naming the column", err)
		}
	})
	t.Run("insert values refused with a reason", func(t *testing.T) {
		_, err := sql("", "-q", "INSERT INTO events (event_id) VALUES ('x')")
		if err == nil || !strings.Contains(err.Error(), "INSERT ... VALUES") {
			t.Fatalf("err = %v, want the INSERT ... VALUES explanation", err)
		}
	})
	t.Run("bad address", func(t *testing.T) {
		var out bytes.Buffer
		err := sqlMain(context.Background(), []string{"-clickhouse.addr=127.0.0.1:1", "-clickhouse.dial-timeout=2s", "-q", "SELECT 1"}, strings.NewReader(""), &out, &out)
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Fatalf("err = %v, want one naming the address", err)
		}
	})
	t.Run("missing database", func(t *testing.T) {
		var out bytes.Buffer
		err := sqlMain(context.Background(), []string{"-clickhouse.addr=" + cfg.Addr, "-clickhouse.database=no_such_db_here", "-q", "SELECT 1"}, strings.NewReader(""), &out, &out)
		if !errors.Is(err, warehouse.ErrNoDatabase) {
			t.Fatalf("err = %v, want ErrNoDatabase", err)
		}
	})
	t.Run("bad flag value", func(t *testing.T) {
		var out bytes.Buffer
		err := run(context.Background(), []string{"sql", "-clickhouse.addr=nohost", "-q", "SELECT 1"}, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "-clickhouse.addr") {
			t.Fatalf("err = %v, want a -clickhouse.addr error", err)
		}
	})
}
