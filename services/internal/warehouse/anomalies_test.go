package warehouse_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/warehousetest"
)

// testAnomalies are a per-device finding with evidence and a cohort-wide
// one naming its devices.
func testAnomalies(windowStart time.Time) []*detectv1.Anomaly {
	ws := windowStart.UnixMilli()
	cohort := &detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_ANDROID}
	return []*detectv1.Anomaly{
		{
			Id: "0123456789abcdef0123456789abcdef", Offset: 7, Kind: detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS,
			AppId: "shop", Cohort: cohort, DeviceId: "cheater", WindowStartMs: ws, WindowEndMs: ws + 60_000,
			Score: 2, Threshold: 1,
			Baseline: &detectv1.BaselineSummary{Source: "inherited from 2.4.0 (2400)", Windows: 12, Expected: 0.25, Spread: 0.5, Observed: 2, Hour: -1},
			Evidence: []*detectv1.Evidence{
				{Key: "type:app_start>purchase_complete", Observed: 2, Expected: 0, Contribution: 0.75},
				{Key: "purchase_complete", Observed: 0.5, Expected: 0.01, Contribution: math.Inf(1)},
			},
			WatermarkMs: ws + 90_000, DetectedAtMs: ws + 95_500,
			Summary: "purchase_complete without checkout_start", Rule: "every window",
		},
		{
			Id: "fedcba9876543210fedcba9876543210", Offset: 8, Kind: detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS,
			AppId: "shop", Cohort: cohort, WindowStartMs: ws, WindowEndMs: ws + 600_000,
			Score: 7.5, Threshold: 5, DetectedAtMs: ws + 700_000,
			Baseline:    &detectv1.BaselineSummary{Source: "cohort", Windows: 30, Expected: 0.002, Spread: 0.001, Observed: 0.2, Hour: 0},
			Devices:     []string{"emu-1", "emu-2", "emu-'3"},
			Summary:     "emulator share 20% (expected 0.2%)",
			Rule:        "2 of the last 3 windows",
			WatermarkMs: ws + 660_000,
		},
	}
}

func TestAnomalyWriterRoundTrip(t *testing.T) {
	cfg, c := warehousetest.Migrated(t)
	w, err := warehouse.NewAnomalyWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	start := time.Date(2026, 3, 4, 5, 6, 0, 0, time.UTC)
	as := testAnomalies(start)
	if err := w.Write(context.Background(), as); err != nil {
		t.Fatal(err)
	}

	rows := warehousetest.Query(t, c, `SELECT id, kind, app_id, cohort, device_id, window_start, window_end, score, threshold,
		detected_at, devices, summary, rule, visitParamExtractString(baseline, 'source'), visitParamExtractFloat(baseline, 'expected'),
		visitParamExtractInt(baseline, 'hour'), baseline, evidence FROM anomalies ORDER BY id`)
	want := [][]string{
		{"0123456789abcdef0123456789abcdef", "funnel_bypass", "shop", "app_version=2.4.1,build_number=2410,platform=android", "cheater",
			"2026-03-04 05:06:00", "2026-03-04 05:07:00", "2", "1", "2026-03-04 05:07:35", "[]",
			"purchase_complete without checkout_start", "every window", "inherited from 2.4.0 (2400)", "0.25", "-1"},
		{"fedcba9876543210fedcba9876543210", "device_signals", "shop", "app_version=2.4.1,build_number=2410,platform=android", "",
			"2026-03-04 05:06:00", "2026-03-04 05:16:00", "7.5", "5", "2026-03-04 05:17:40", `['emu-1','emu-2','emu-\'3']`,
			"emulator share 20% (expected 0.2%)", "2 of the last 3 windows", "cohort", "0.002", "0"},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows, want %d: %v", len(rows), len(want), rows)
	}
	for i, r := range rows {
		if got := r[:len(want[i])]; !reflect.DeepEqual(got, want[i]) {
			t.Errorf("row %d:\n got %q\nwant %q", i, got, want[i])
		}
		// The JSON columns decode to what was written.
		var b struct {
			Source                     string
			Windows                    int64
			Expected, Spread, Observed float64
			Hour                       int32
		}
		if err := json.Unmarshal([]byte(r[len(r)-2]), &b); err != nil {
			t.Fatalf("baseline %s: %v", r[len(r)-2], err)
		}
		wb := as[i].GetBaseline()
		if b.Source != wb.GetSource() || b.Windows != wb.GetWindows() || b.Expected != wb.GetExpected() ||
			b.Spread != wb.GetSpread() || b.Observed != wb.GetObserved() || b.Hour != wb.GetHour() {
			t.Errorf("baseline %s, want %v", r[len(r)-2], wb)
		}
		var ev []struct {
			Key                string
			Observed, Expected float64
			Contribution       *float64
		}
		if err := json.Unmarshal([]byte(r[len(r)-1]), &ev); err != nil {
			t.Fatalf("evidence %s: %v", r[len(r)-1], err)
		}
		if len(ev) != len(as[i].GetEvidence()) {
			t.Fatalf("evidence %s, want %d items", r[len(r)-1], len(as[i].GetEvidence()))
		}
		for j, e := range as[i].GetEvidence() {
			finite := !math.IsInf(e.GetContribution(), 0)
			if ev[j].Key != e.GetKey() || ev[j].Observed != e.GetObserved() || ev[j].Expected != e.GetExpected() ||
				(ev[j].Contribution != nil) != finite || (finite && *ev[j].Contribution != e.GetContribution()) {
				t.Errorf("evidence %d: %s, want %v (an infinite contribution as null)", j, r[len(r)-1], e)
			}
		}
	}
}

func TestAnomalyWriterIdempotent(t *testing.T) {
	cfg, c := warehousetest.Migrated(t)
	as := testAnomalies(time.Now().Truncate(time.Minute))
	ctx := context.Background()
	w, err := warehouse.NewAnomalyWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	// A retried write, a batch holding one anomaly twice, and a restarted
	// detector (a new writer) finding the same anomaly again.
	if err := w.Write(ctx, as); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, as); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, []*detectv1.Anomaly{as[1], as[1]}); err != nil {
		t.Fatal(err)
	}
	w2, err := warehouse.NewAnomalyWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w2.Close() })
	again := testAnomalies(time.Now().Truncate(time.Minute))
	again[0].Offset, again[0].DetectedAtMs = 1000, again[0].DetectedAtMs+5000
	fresh := &detectv1.Anomaly{Id: "11111111111111111111111111111111", Kind: detectv1.AnomalyKind_ANOMALY_KIND_REPLAY, AppId: "blog",
		WindowStartMs: again[0].WindowStartMs, WindowEndMs: again[0].WindowEndMs}
	if err := w2.Write(ctx, []*detectv1.Anomaly{again[0], fresh}); err != nil {
		t.Fatal(err)
	}
	// Without FINAL: each id is stored once, not merely collapsed later.
	got := warehousetest.Query(t, c, "SELECT id, count() FROM anomalies GROUP BY id ORDER BY id")
	want := [][]string{{"0123456789abcdef0123456789abcdef", "1"}, {"11111111111111111111111111111111", "1"}, {"fedcba9876543210fedcba9876543210", "1"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rows per id %v, want %v", got, want)
	}
	// The analysts' query reads them.
	_, queries := namedQueries(t)
	if n := len(warehousetest.Query(t, c, queries["recent_anomalies"])); n != 3 {
		t.Errorf("recent_anomalies returns %d rows, want 3", n)
	}
}

// A detector may start before the sink created the database: its writes
// fail with a clear error until then, and succeed after.
func TestAnomalyWriterBeforeSchema(t *testing.T) {
	cfg := warehousetest.Config(t)
	w, err := warehouse.NewAnomalyWriter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	ctx := context.Background()
	as := testAnomalies(time.Now())
	if err := w.Write(ctx, as); !errors.Is(err, warehouse.ErrNoDatabase) || !strings.Contains(err.Error(), "causality sink") {
		t.Fatalf("write before the schema: %v, want ErrNoDatabase saying to run the sink", err)
	}
	if err := warehouse.Migrate(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, as); err != nil {
		t.Fatalf("write after the schema: %v", err)
	}
	c := warehousetest.Open(t, cfg)
	if n := warehousetest.Int(t, c, "SELECT count() FROM anomalies"); n != int64(len(as)) {
		t.Errorf("%d rows, want %d", n, len(as))
	}
}

func TestAnomalyWriterConfig(t *testing.T) {
	if _, err := warehouse.NewAnomalyWriter(warehouse.Config{Addr: "nohost", Database: "causality"}); err == nil || !strings.Contains(err.Error(), "-clickhouse.addr") {
		t.Errorf("NewAnomalyWriter with a bad address: %v, want an error naming -clickhouse.addr", err)
	}
}

// Migrate applying 004 to a table that has its columns (another process
// was first, or its record was lost) succeeds: 18.16 cannot say ADD COLUMN
// IF NOT EXISTS.
func TestMigrateColumnsThere(t *testing.T) {
	cfg, c := warehousetest.Migrated(t)
	ctx := context.Background()
	if err := c.Exec(ctx, "DROP TABLE schema_migrations"); err != nil {
		t.Fatal(err)
	}
	if err := warehouse.Migrate(ctx, cfg); err != nil {
		t.Fatalf("migrations again over applied ones: %v", err)
	}
	if n := warehousetest.Int(t, c, "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'anomalies' AND name IN ('devices', 'summary', 'rule')"); n != 3 {
		t.Errorf("anomalies has %d of the columns of 004, want 3", n)
	}
}
