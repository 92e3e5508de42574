package warehouse_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/sink"
	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/warehousetest"
)

// dataset is a small fleet whose every query result can be worked out by
// hand (see the expectations in TestQueries):
//
//	shop d1  ios 2.0.0/200 jailbroken, install i1, plan=pro
//	         day -8 session s1: view home, view product, add_to_cart 15 EUR, purchase 15 EUR card
//	         day -7 session s2: view home
//	         day -1 session s3: view home, app_crash
//	         sequences 1,2,3,5,6,7,8 (one lost)
//	shop d2  android 2.1.0/210 emulator, clock 1 h behind, install i2, plan=free
//	         day -8 session s4: view home, add_to_cart 5 USD
//	shop d3  android 2.1.0/210 Pixel 8, no sequence numbers
//	         day -7 session s5: view search, view home, purchase 25 USD paypal
//	blog b1  web 1.0.0/100, ten minutes ago, session bs1: four views of article,
//	         three in one minute and one in the next
type dataset struct {
	events  []*eventv1.Event
	d1      []*eventv1.Event
	blogMin time.Time // the minute of the first three blog events
}

func newDataset(now time.Time) dataset {
	var ds dataset
	day := func(n int) time.Time {
		y, m, d := now.UTC().Date()
		return time.Date(y, m, d-n, 12, 0, 0, 0, time.UTC)
	}
	type dev struct {
		app, id, install, platform, version, build, model string
		emulator, jailbroken                              bool
		offset                                            time.Duration // server clock - device clock
		plan                                              string
	}
	add := func(d dev, session string, at time.Time, seq uint64, p any) *eventv1.Event {
		ts := at.UnixMilli()
		e := &eventv1.Event{
			EventId: uuid.Must(uuid.NewV7()).String(), AppId: d.app, DeviceId: d.id, InstallId: d.install,
			SessionId: session, TimestampMs: ts, SentAtMs: ts + 1000, ReceivedAtMs: ts + 1000 + 200 + d.offset.Milliseconds(),
			Sequence: seq,
			DeviceContext: &eventv1.DeviceContext{
				Platform:   eventv1.Platform(eventv1.Platform_value["PLATFORM_"+strings.ToUpper(d.platform)]),
				AppVersion: d.version, BuildNumber: d.build, DeviceModel: d.model,
				IsEmulator: d.emulator, IsJailbroken: d.jailbroken,
			},
		}
		if d.plan != "" {
			e.Properties = map[string]string{"plan": d.plan}
		}
		switch p := p.(type) {
		case *eventv1.ScreenView:
			e.Payload = &eventv1.Event_ScreenView{ScreenView: p}
		case *eventv1.AddToCart:
			e.Payload = &eventv1.Event_AddToCart{AddToCart: p}
		case *eventv1.PurchaseComplete:
			e.Payload = &eventv1.Event_PurchaseComplete{PurchaseComplete: p}
		case *eventv1.AppCrash:
			e.Payload = &eventv1.Event_AppCrash{AppCrash: p}
		}
		ds.events = append(ds.events, e)
		return e
	}
	view := func(s string) *eventv1.ScreenView { return &eventv1.ScreenView{ScreenName: s} }
	sec := func(t time.Time, s int) time.Time { return t.Add(time.Duration(s) * time.Second) }

	d1 := dev{app: "shop", id: "d1", install: "i1", platform: "ios", version: "2.0.0", build: "200", model: "iPhone15,2", jailbroken: true, plan: "pro"}
	ds.d1 = append(ds.d1,
		add(d1, "s1", day(8), 1, view("home")),
		add(d1, "s1", sec(day(8), 10), 2, view("product")),
		add(d1, "s1", sec(day(8), 20), 3, &eventv1.AddToCart{ProductId: "sku1", PriceCents: 1500, Currency: "EUR", Quantity: 1}),
		add(d1, "s1", sec(day(8), 30), 5, &eventv1.PurchaseComplete{OrderId: "o1", TotalCents: 1500, Currency: "EUR", PaymentMethod: "card"}),
		add(d1, "s2", day(7), 6, view("home")),
		add(d1, "s3", day(1), 7, view("home")),
		add(d1, "s3", sec(day(1), 5), 8, &eventv1.AppCrash{CrashType: "SIGSEGV"}),
	)
	d2 := dev{app: "shop", id: "d2", install: "i2", platform: "android", version: "2.1.0", build: "210", model: "sdk_gphone64", emulator: true, offset: time.Hour, plan: "free"}
	add(d2, "s4", day(8), 1, view("home"))
	add(d2, "s4", sec(day(8), 10), 2, &eventv1.AddToCart{ProductId: "sku2", PriceCents: 500, Currency: "USD", Quantity: 1})
	d3 := dev{app: "shop", id: "d3", install: "i3", platform: "android", version: "2.1.0", build: "210", model: "Pixel 8"}
	add(d3, "s5", day(7), 0, view("search"))
	add(d3, "s5", sec(day(7), 10), 0, view("home"))
	add(d3, "s5", sec(day(7), 20), 0, &eventv1.PurchaseComplete{OrderId: "o2", TotalCents: 2500, Currency: "USD", PaymentMethod: "paypal"})
	b1 := dev{app: "blog", id: "b1", install: "ib1", platform: "web", version: "1.0.0", build: "100", model: "Chrome"}
	ds.blogMin = now.Add(-10 * time.Minute).UTC().Truncate(time.Minute)
	for i, s := range []int{5, 15, 25, 65} {
		add(b1, "bs1", sec(ds.blogMin, s), uint64(i+1), view("article"))
	}
	return ds
}

type recordingDLQ struct{ letters []kafka.DeadLetter }

func (r *recordingDLQ) Write(_ context.Context, l []kafka.DeadLetter) error {
	r.letters = append(r.letters, l...)
	return nil
}

func messages(t testing.TB, events []*eventv1.Event) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	for i, e := range events {
		b, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, kafka.Message{Topic: "events", Partition: 0, Offset: int64(i), Key: []byte(e.DeviceId), Value: b})
	}
	return out
}

// load sends the dataset through the sink's handler into a fresh database:
// everything once, d1's events again (dropped by the recent-id cache), a
// garbage message (dead-lettered), then d1's first events through a second
// handler with an empty cache (a restarted sink), so copies reach the table.
func load(t *testing.T, ds dataset) (*warehouse.Client, *recordingDLQ) {
	t.Helper()
	_, c := warehousetest.Migrated(t)
	w, err := warehouse.NewWriter(c, discard(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	dlq := &recordingDLQ{}
	reg := prometheus.NewRegistry()
	h, err := sink.NewHandler(w, dlq, 1000, discard(), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	batch := append(messages(t, ds.events), kafka.Message{Topic: "events", Offset: 99, Value: []byte("\xff\xffnot a protobuf")})
	if err := h.Handle(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(ctx, messages(t, ds.d1)); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, reg, "causality_sink_duplicates_dropped_total"); got != float64(len(ds.d1)) {
		t.Errorf("duplicates dropped = %v, want %d", got, len(ds.d1))
	}
	h2, err := sink.NewHandler(w, dlq, 1000, discard(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.Handle(ctx, messages(t, ds.d1[:4])); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, `INSERT INTO anomalies (id, kind, app_id, cohort, device_id, window_start, window_end, score, threshold, baseline, evidence, detected_at)
		SELECT 'an1', 'crash_rate', 'shop', 'app_version=2.0.0,platform=ios', '',
		toDateTime('2026-01-01 00:00:00'), toDateTime('2026-01-01 01:00:00'), 4.5, 3, '{"mean":0.01}', '{"crashes":1}', toDateTime('2026-01-01 01:05:00')`); err != nil {
		t.Fatal(err)
	}
	return c, dlq
}

// namedQueries splits docs/queries.sql into name -> statement, in order.
func namedQueries(t testing.TB) ([]string, map[string]string) {
	t.Helper()
	b, err := os.ReadFile("../../../docs/queries.sql")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]string{}
	for _, part := range strings.Split(string(b), "-- name: ")[1:] {
		name, _, _ := strings.Cut(part, "\n")
		stmts := warehouse.SplitStatements("-- name: " + part)
		if len(stmts) != 1 {
			t.Fatalf("query %s: %d statements, want 1", name, len(stmts))
		}
		names = append(names, strings.TrimSpace(name))
		byName[strings.TrimSpace(name)] = stmts[0]
	}
	return names, byName
}

func TestQueries(t *testing.T) {
	now := time.Now()
	ds := newDataset(now)
	c, dlq := load(t, ds)
	if len(dlq.letters) != 1 || dlq.letters[0].Reason != sink.ReasonUndecodable || dlq.letters[0].Source != "sink" {
		t.Errorf("dead letters = %+v, want the garbage message as undecodable from sink", dlq.letters)
	}
	if n := warehousetest.Int(t, c, "SELECT count() FROM events FINAL"); n != int64(len(ds.events)) {
		t.Fatalf("events FINAL = %d, want %d", n, len(ds.events))
	}
	if n := warehousetest.Int(t, c, "SELECT uniqExact(event_id) FROM events"); n != int64(len(ds.events)) {
		t.Fatalf("distinct event ids = %d, want %d", n, len(ds.events))
	}

	day := func(n int) string {
		y, m, d := now.UTC().Date()
		return time.Date(y, m, d-n, 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
	}
	blogDay := ds.blogMin.Format(time.DateOnly)
	m0 := ds.blogMin.Format(time.DateTime)
	m1 := ds.blogMin.Add(time.Minute).Format(time.DateTime)
	want := map[string][]string{
		"event_mix_per_app_version": {
			"blog 1.0.0 screen_view 4",
			"shop 2.0.0 screen_view 4", "shop 2.0.0 add_to_cart 1", "shop 2.0.0 app_crash 1", "shop 2.0.0 purchase_complete 1",
			"shop 2.1.0 screen_view 3", "shop 2.1.0 add_to_cart 1", "shop 2.1.0 purchase_complete 1",
		},
		// d1 completes the funnel, d2 stops at the cart, d3 buys without a cart.
		"funnel_view_cart_purchase": {"blog 1 0 0", "shop 3 2 1"},
		// d1 and d2 first seen on day -8, d1 back on day -7 and day -1; d3 first on day -7.
		"day_n_retention": {"blog " + blogDay + " 1 0 0", "shop " + day(8) + " 2 1 1", "shop " + day(7) + " 1 0 0"},
		// d1: sessions of 30 s, 0 s and 5 s.
		"sessions_per_device":       {"blog b1 1 60 4", "shop d1 3 11.7 4", "shop d2 1 10 1", "shop d3 1 20 2"},
		"session_length_by_version": {"blog 1.0.0 web 1 60000 4", "shop 2.0.0 ios 3 30000 2.33", "shop 2.1.0 android 2 20000 2.5"},
		"top_screens":               {"blog article 4 1", "shop home 5 3", "shop product 1 1", "shop search 1 1"},
		"devices_per_cohort":        {"blog 1.0.0 web 1 4", "shop 2.0.0 ios 1 7", "shop 2.1.0 android 2 5"},
		"events_per_minute":         {m0 + " blog 3", m1 + " blog 1"},
		"events_per_minute_exact":   {m0 + " blog 3", m1 + " blog 1"},
		"emulator_share_per_build":  {"shop 2.1.0 210 2 1 0 0.5", "blog 1.0.0 100 1 0 0 0", "shop 2.0.0 200 1 0 1 0"},
		"sequence_gaps":             {"shop i1 7 8 1"},
		// Everyone's clock is 0.2 s behind plus network, d2's an hour more.
		"clock_offset_by_model": {"android sdk_gphone64 2 3600.2 3600.2", "android Pixel 8 3 0.2 0.2", "ios iPhone15,2 7 0.2 0.2", "web Chrome 4 0.2 0.2"},
		"revenue_per_day":       {"shop " + day(8) + " EUR 1 15", "shop " + day(7) + " USD 1 25"},
		"payment_methods":       {"shop card 1", "shop paypal 1"},
		"property_breakdown":    {"shop free 1 2", "shop pro 1 7"},
		"crashes_per_version":   {"shop 2.0.0 3 1 0.333", "blog 1.0.0 1 0 0", "shop 2.1.0 2 0 0"},
		"recent_anomalies":      {"2026-01-01 01:05:00 shop crash_rate app_version=2.0.0,platform=ios  2026-01-01 00:00:00 2026-01-01 01:00:00 4.5 3"},
	}
	names, queries := namedQueries(t)
	if len(names) < 10 {
		t.Fatalf("docs/queries.sql has %d queries, want at least 10", len(names))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expected result for query %s: add one", name)
			}
			var got []string
			for _, r := range warehousetest.Query(t, c, queries[name]) {
				got = append(got, strings.Join(r, " "))
			}
			if strings.Join(got, "\n") != strings.Join(w, "\n") {
				t.Errorf("got\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(w, "\n  "))
			}
		})
	}
	t.Run("same results on current ClickHouse (chDB)", func(t *testing.T) {
		compareWithChDB(t, c, names, queries)
	})
}

// compareWithChDB loads the tables of c into chDB (a current ClickHouse,
// in-process) with testdata/chdb_check.py, runs the same schema and
// queries there, and compares every result with ClickHouse 18.16's, both
// printed as TSV by the servers themselves.
func compareWithChDB(t *testing.T, c *warehouse.Client, names []string, queries map[string]string) {
	if err := exec.Command("python3", "-c", "import chdb").Run(); err != nil {
		t.Skip("chDB is not installed (python3 -m pip install chdb): DDL and queries not checked on current ClickHouse")
	}
	client, err := exec.LookPath("clickhouse-client")
	if err != nil {
		t.Skip("clickhouse-client not found: needed to export the test data")
	}
	host, port, _ := net.SplitHostPort(os.Getenv("CAUSALITY_TEST_CLICKHOUSE"))
	chClient := func(query string) string {
		t.Helper()
		out, err := exec.Command(client, "--host", host, "--port", port, "--database", c.Database(), "-q", query).Output()
		if err != nil {
			t.Fatalf("clickhouse-client %q: %v %s", query, err, exitStderr(err))
		}
		return string(out)
	}
	dir := t.TempDir()
	for _, table := range []string{"events", "anomalies"} {
		data := chClient("SELECT * FROM " + table + " FORMAT TSVWithNames")
		if err := os.WriteFile(filepath.Join(dir, table+".tsv"), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	schemaFile := writeSchema(t, dir)
	cmd := exec.Command("python3", "testdata/chdb_check.py", schemaFile, "../../../docs/queries.sql", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Log(strings.TrimSpace(stderr.String()))
	if err != nil {
		t.Fatalf("chdb_check.py: %v\n%s", err, stderr.String())
	}
	chdb := map[string]string{}
	for _, part := range strings.Split(string(out), "### ")[1:] {
		name, rows, _ := strings.Cut(part, "\n")
		chdb[name] = rows
	}
	for _, name := range names {
		old := chClient(queries[name] + "\nFORMAT TabSeparated")
		if chdb[name] != old {
			t.Errorf("query %s differs:\nClickHouse 18.16:\n%s\nchDB:\n%s", name, old, chdb[name])
		}
	}
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}
