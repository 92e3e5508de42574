// Package warehousetest gives tests a ClickHouse database of their own on
// the server named by CAUSALITY_TEST_CLICKHOUSE (make test starts one with
// deploy/local/clickhouse.sh). Without it tests are skipped, or fail when
// CAUSALITY_REQUIRE_REAL_SERVERS is set. Every database is unique to its
// test and dropped in t.Cleanup.
package warehousetest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"causality.dev/services/internal/warehouse"
)

var seq atomic.Int64

// Addr returns the native address of the test server, skipping the test
// when there is none.
func Addr(t testing.TB) string {
	t.Helper()
	if addr := os.Getenv("CAUSALITY_TEST_CLICKHOUSE"); addr != "" {
		return addr
	}
	if os.Getenv("CAUSALITY_REQUIRE_REAL_SERVERS") != "" {
		t.Fatal("CAUSALITY_TEST_CLICKHOUSE is not set: start the server with deploy/local/clickhouse.sh (make test does)")
	}
	t.Skip("CAUSALITY_TEST_CLICKHOUSE is not set: no ClickHouse to test against (deploy/local/servers.sh up, then eval \"$(deploy/local/servers.sh env)\")")
	return ""
}

// Config returns a warehouse.Config for a database unique to this test on
// the test server. The database is not created (Migrate or the sink does
// that) but is dropped when the test ends.
func Config(t testing.TB) warehouse.Config {
	t.Helper()
	return ConfigOn(t, Addr(t))
}

var unsafe = regexp.MustCompile(`[^A-Za-z0-9_]+`)

// ConfigOn is Config on the server at addr.
func ConfigOn(t testing.TB, addr string) warehouse.Config {
	t.Helper()
	name := unsafe.ReplaceAllString(t.Name(), "_")
	if len(name) > 32 {
		name = name[:32]
	}
	cfg := warehouse.Config{
		Addr:        addr,
		Database:    fmt.Sprintf("test_%s_%s_%d", name, strconv.FormatInt(time.Now().UnixNano()%1e10, 36), seq.Add(1)),
		Username:    "default",
		DialTimeout: 5 * time.Second,
		ReadTimeout: 30 * time.Second,
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin := cfg
		admin.Database = "default"
		c, err := warehouse.Open(ctx, admin)
		if err != nil {
			t.Logf("drop database %s: %v", cfg.Database, err)
			return
		}
		defer c.Close()
		if err := c.Exec(ctx, "DROP DATABASE IF EXISTS `"+cfg.Database+"`"); err != nil {
			t.Logf("drop database %s: %v", cfg.Database, err)
		}
	})
	return cfg
}

// Migrated returns Config(t) with the migrations applied, and a client on
// it closed in t.Cleanup.
func Migrated(t testing.TB) (warehouse.Config, *warehouse.Client) {
	t.Helper()
	cfg := Config(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := warehouse.Migrate(ctx, cfg); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return cfg, Open(t, cfg)
}

// Open connects to cfg's database and closes the client in t.Cleanup.
func Open(t testing.TB, cfg warehouse.Config) *warehouse.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := warehouse.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open %s: %v", cfg.Database, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Query runs query and returns its rows as text.
func Query(t testing.TB, c *warehouse.Client, query string) [][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.Query(ctx, query, 0)
	if err != nil {
		t.Fatalf("query %q: %v", query, err)
	}
	return res.Rows
}

// Int runs a query returning one integer.
func Int(t testing.TB, c *warehouse.Client, query string) int64 {
	t.Helper()
	rows := Query(t, c, query)
	if len(rows) != 1 || len(rows[0]) != 1 {
		t.Fatalf("query %q: want one value, got %v", query, rows)
	}
	n, err := strconv.ParseInt(rows[0][0], 10, 64)
	if err != nil {
		t.Fatalf("query %q: %v", query, err)
	}
	return n
}
