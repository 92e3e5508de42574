package warehouse_test

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/warehousetest"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestConfigValidate(t *testing.T) {
	valid := func() warehouse.Config {
		var c warehouse.Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.RegisterFlags(fs)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := func() *warehouse.Config { c := valid(); return &c }().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(*warehouse.Config)
		want   string
	}{
		{"empty addr", func(c *warehouse.Config) { c.Addr = "" }, "-clickhouse.addr is required"},
		{"addr without port", func(c *warehouse.Config) { c.Addr = "localhost" }, "not host:port"},
		{"database with a dot", func(c *warehouse.Config) { c.Database = "a.b" }, "-clickhouse.database"},
		{"database with a quote", func(c *warehouse.Config) { c.Database = "x`; DROP" }, "-clickhouse.database"},
		{"empty database", func(c *warehouse.Config) { c.Database = "" }, "-clickhouse.database"},
		{"zero timeout", func(c *warehouse.Config) { c.ReadTimeout = 0 }, "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("nothing listening", func(t *testing.T) {
		cfg := warehouse.Config{Addr: "127.0.0.1:1", Database: "causality", DialTimeout: 2 * time.Second}
		_, err := warehouse.Open(ctx, cfg)
		if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Fatalf("Open = %v, want an error naming the address", err)
		}
	})
	t.Run("missing database", func(t *testing.T) {
		cfg := warehousetest.Config(t)
		_, err := warehouse.Open(ctx, cfg)
		if !errors.Is(err, warehouse.ErrNoDatabase) || !strings.Contains(err.Error(), cfg.Database) {
			t.Fatalf("Open = %v, want ErrNoDatabase naming %s", err, cfg.Database)
		}
	})
	t.Run("bad sql", func(t *testing.T) {
		_, c := warehousetest.Migrated(t)
		_, err := c.Query(ctx, "SELEC 1", 0)
		if err == nil || !strings.Contains(err.Error(), "Syntax error") {
			t.Fatalf("Query = %v, want a syntax error", err)
		}
	})
}

func TestUnreachable(t *testing.T) {
	ctx := context.Background()
	err := warehouse.Migrate(ctx, warehouse.Config{Addr: "127.0.0.1:1", Database: "x"})
	if err == nil || !warehouse.Unreachable(err) {
		t.Errorf("Migrate on a closed port = %v, want an unreachable error", err)
	}
	cfg := warehousetest.Config(t)
	cfg.Username = "no_such_user"
	err = warehouse.Migrate(ctx, cfg)
	if err == nil || warehouse.Unreachable(err) {
		t.Errorf("Migrate as an unknown user = %v, want a server error (not worth retrying)", err)
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	cfg, c := warehousetest.Migrated(t)
	ms, err := warehouse.Migrations(cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	if err := warehouse.Migrate(context.Background(), cfg); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	rows := warehousetest.Query(t, c, "SELECT version, count() FROM schema_migrations GROUP BY version ORDER BY version")
	if len(rows) != len(ms) {
		t.Fatalf("schema_migrations has %d versions, want %d: %v", len(rows), len(ms), rows)
	}
	for i, r := range rows {
		if want := []string{strconv.Itoa(ms[i].Version), "1"}; r[0] != want[0] || r[1] != want[1] {
			t.Errorf("schema_migrations row %d = %v, want version %s recorded once", i, r, want[0])
		}
	}
	tables := warehousetest.Query(t, c, "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
	var names []string
	for _, r := range tables {
		names = append(names, r[0])
	}
	want := "anomalies events events_per_minute events_per_minute_mv schema_migrations session_parts session_parts_mv sessions"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("tables = %s, want %s", got, want)
	}
}

func TestSplitStatements(t *testing.T) {
	got := warehouse.SplitStatements("-- comment\nCREATE TABLE a (x String);\n\n  -- another\nSELECT 1\nFROM b;\nSELECT 2")
	want := []string{"CREATE TABLE a (x String)", "SELECT 1\nFROM b", "SELECT 2"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("SplitStatements = %q, want %q", got, want)
	}
}

// fullEvent sets every envelope and device field.
func fullEvent() *eventv1.Event {
	return &eventv1.Event{
		EventId: uuid.Must(uuid.NewV7()).String(), AppId: "shop", DeviceId: "dev-1", InstallId: "inst-1",
		SessionId: "sess-1", UserId: "user-1",
		TimestampMs: 1_790_000_000_123, SentAtMs: 1_790_000_005_000, ReceivedAtMs: 1_790_000_065_500,
		Sequence: 42, CorrelationId: "corr-1", IdempotencyKey: "idem-1",
		DeviceContext: &eventv1.DeviceContext{
			Platform: eventv1.Platform_PLATFORM_ANDROID, OsVersion: "14", AppVersion: "2.3.0", BuildNumber: "230",
			DeviceModel: "Pixel 8", Manufacturer: "Google", ScreenWidth: 1080, ScreenHeight: 2400,
			Locale: "fr-FR", Timezone: "Europe/Paris", NetworkType: eventv1.NetworkType_NETWORK_TYPE_CELLULAR_5G,
			Carrier: "Orange", IsJailbroken: true, IsEmulator: true, SdkVersion: "0.1.0",
		},
		Properties: map[string]string{"plan": "pro", "ab": "b"},
		Payload: &eventv1.Event_AddToCart{AddToCart: &eventv1.AddToCart{
			ProductId: "sku-9", ProductName: "Mug", Quantity: 2, PriceCents: 1999, Currency: "EUR", CartId: "cart-1",
		}},
	}
}

func TestWriterRoundTrip(t *testing.T) {
	_, c := warehousetest.Migrated(t)
	reg := prometheus.NewRegistry()
	w, err := warehouse.NewWriter(c, discard(), reg)
	if err != nil {
		t.Fatal(err)
	}
	e := fullEvent()
	future := fullEvent() // a device clock in 2200: clamped, not refused
	future.TimestampMs, future.SentAtMs, future.ReceivedAtMs = 7_258_118_400_000, 7_258_118_400_000, 1_790_000_000_000
	future.Payload = &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "home", Params: map[string]string{"tab": "new"}}}
	ctx := context.Background()
	if err := w.Write(ctx, []*eventv1.Event{e, future}); err != nil {
		t.Fatalf("Write: %v", err)
	}
	if err := w.Write(ctx, []*eventv1.Event{e}); err != nil { // a redelivered copy
		t.Fatalf("Write again: %v", err)
	}
	if got := metric(t, reg, "causality_warehouse_rows_written_total"); got != 3 {
		t.Errorf("rows written metric = %v, want 3", got)
	}

	rows := warehousetest.Query(t, c, `SELECT event_id, app_id, device_id, install_id, session_id, user_id,
		timestamp_ms, sent_at_ms, received_at_ms, event_time_ms, event_date, timestamp, event_time, received_at,
		sequence, correlation_id, idempotency_key, platform, os_version, app_version, build_number, device_model,
		manufacturer, screen_width, screen_height, locale, timezone, network_type, carrier, is_jailbroken,
		is_emulator, sdk_version, event_type, screen_name, product_id, amount_cents, currency, custom_name,
		payload, props.key, props.value
		FROM events FINAL WHERE event_id = '`+e.EventId+`'`)
	if len(rows) != 1 {
		t.Fatalf("FINAL returned %d rows for one event, want 1", len(rows))
	}
	want := []string{e.EventId, "shop", "dev-1", "inst-1", "sess-1", "user-1",
		"1790000000123", "1790000005000", "1790000065500",
		"1790000060623", // timestamp + (received - sent)
		"2026-09-21", "2026-09-21 14:13:20", "2026-09-21 14:14:20", "2026-09-21 14:14:25",
		"42", "corr-1", "idem-1", "android", "14", "2.3.0", "230", "Pixel 8",
		"Google", "1080", "2400", "fr-FR", "Europe/Paris", "cellular_5g", "Orange", "1",
		"1", "0.1.0", "add_to_cart", "", "sku-9", "1999", "EUR", "",
		`{"product_id":"sku-9","product_name":"Mug","quantity":2,"price_cents":"1999","currency":"EUR","cart_id":"cart-1"}`,
		"['ab','plan']", "['b','pro']"}
	for i := range want {
		if rows[0][i] != want[i] {
			t.Errorf("column %d = %q, want %q", i, rows[0][i], want[i])
		}
	}
	if n := warehousetest.Int(t, c, "SELECT count() FROM events FINAL"); n != 2 {
		t.Errorf("events FINAL = %d rows, want 2", n)
	}
	if n := warehousetest.Int(t, c, "SELECT uniqExact(event_id) FROM events"); n != 2 {
		t.Errorf("distinct event ids = %d, want 2", n)
	}
	got := warehousetest.Query(t, c, "SELECT event_date, timestamp, screen_name, payload FROM events WHERE event_id = '"+future.EventId+"' LIMIT 1")
	if want := []string{"2105-12-31", "2105-12-31 23:59:59", "home", `{"screen_name":"home","params":{"tab":"new"}}`}; strings.Join(got[0], "|") != strings.Join(want, "|") {
		t.Errorf("clamped event = %v, want %v", got[0], want)
	}
}

// metric returns the value of the unlabelled counter or gauge name.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
