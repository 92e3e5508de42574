package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/warehousetest"
)

// TestForget runs `causality forget -wait` on the real ClickHouse for an
// install, a user and a device: their events, sessions and anomalies go
// (and the device leaves the device list of a cohort finding), everyone
// else's stay.
func TestForget(t *testing.T) {
	wcfg, client := warehousetest.Migrated(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w, err := warehouse.NewWriter(client, discardLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ev := func(device, install, session, user string) *eventv1.Event {
		e := newEvent("shop", device)
		e.InstallId, e.SessionId, e.UserId = install, session, user
		return e
	}
	events := []*eventv1.Event{
		ev("dev-a", "inst-a1", "s-a1", ""), ev("dev-a", "inst-a1", "s-a1", ""), // forgotten by install
		ev("dev-a", "inst-a2", "s-a2", ""),                                         // the same device's other install stays
		ev("dev-b", "inst-b", "s-b1", ""), ev("dev-b", "inst-b", "s-b1", "user-x"), // user-x's session goes whole, the event before the login too
		ev("dev-b", "inst-b", "s-b2", ""),                                                  // dev-b's other session stays
		ev("dev-c", "inst-c", "s-c", "user-y"), ev("dev-c", "inst-c", "s-c2", "o'brien\\"), // forgotten by device
		ev("dev-d", "inst-d", "s-d", "user-z"), // nobody forgets it
	}
	if err := w.Write(ctx, events); err != nil {
		t.Fatal(err)
	}
	aw, err := warehouse.NewAnomalyWriter(wcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { aw.Close() })
	now := time.Now().UnixMilli()
	anomaly := func(id, device string, devices ...string) *detectv1.Anomaly {
		return &detectv1.Anomaly{Id: id, Kind: detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS, AppId: "shop", DeviceId: device, Devices: devices,
			WindowStartMs: now - 60000, WindowEndMs: now, DetectedAtMs: now}
	}
	if err := aw.Write(ctx, []*detectv1.Anomaly{
		anomaly("an-a", "dev-a"), anomaly("an-c", "dev-c"), anomaly("an-d", "dev-d"),
		anomaly("an-cohort", "", "dev-a", "dev-b", "dev-c", "dev-d"),
	}); err != nil {
		t.Fatal(err)
	}

	db := "`" + wcfg.Database + "`"
	count := func(q string) int64 { return warehousetest.Int(t, client, q) }
	forget := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		args = append([]string{"forget", "-clickhouse.addr=" + wcfg.Addr, "-clickhouse.database=" + wcfg.Database, "-wait"}, args...)
		if err := run(ctx, args, &stdout, &stderr); err != nil {
			t.Fatalf("causality %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return stdout.String()
	}
	sessions := func() string {
		rows := warehousetest.Query(t, client, "SELECT session_id FROM "+db+".session_parts GROUP BY session_id ORDER BY session_id")
		var ids []string
		for _, r := range rows {
			ids = append(ids, r[0])
		}
		return strings.Join(ids, " ")
	}
	if got := sessions(); got != "s-a1 s-a2 s-b1 s-b2 s-c s-c2 s-d" {
		t.Fatalf("sessions before: %q", got)
	}

	out := forget("-install-id", "inst-a1")
	if !strings.Contains(out, "ALTER TABLE "+db+".events DELETE WHERE install_id = 'inst-a1'") || !strings.Contains(out, "mutations applied") {
		t.Errorf("forget -install-id printed:\n%s", out)
	}
	if n := count("SELECT count() FROM " + db + ".events WHERE install_id = 'inst-a1'"); n != 0 {
		t.Errorf("%d events of inst-a1 left", n)
	}
	if n := count("SELECT count() FROM " + db + ".events WHERE device_id = 'dev-a'"); n != 1 {
		t.Errorf("%d events of dev-a left, want its other install's 1", n)
	}

	forget("-user-id", "user-x")
	forget("-device-id", "dev-c")
	if n := count("SELECT count() FROM " + db + ".events"); n != 3 {
		t.Errorf("%d events left, want 3 (dev-a's other install, dev-b's other session, dev-d)", n)
	}
	if got := sessions(); got != "s-a2 s-b2 s-d" {
		t.Errorf("sessions left: %q, want s-a2 s-b2 s-d", got)
	}
	if got := warehousetest.Query(t, client, "SELECT id, arrayStringConcat(devices, ' ') FROM "+db+".anomalies ORDER BY id"); len(got) != 2 ||
		got[0][0] != "an-cohort" || got[0][1] != "dev-d" || got[1][0] != "an-d" {
		t.Errorf("anomalies left %v, want an-cohort listing dev-d only, and an-d", got)
	}

	// The id goes into the SQL as a string literal, whatever it holds.
	forget("-user-id", `o'brien\`)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "exactly one of"},
		{[]string{"-user-id=u", "-device-id=d"}, "exactly one of"},
		{[]string{"-user-id=u", "-clickhouse.database=a-b"}, "-clickhouse.database"},
	} {
		err := run(ctx, append([]string{"forget"}, tc.args...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("forget %v: %v, want an error about %s", tc.args, err, tc.want)
		}
	}
}
