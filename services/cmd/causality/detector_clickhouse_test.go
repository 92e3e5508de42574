package main

import (
	"context"
	"flag"
	"io"
	"strings"
	"testing"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/detect"
	"causality.dev/services/internal/warehouse"
)

// The warehouse names kinds and cohorts in its columns as the detector
// names them in logs and metrics (docs/detector.md).
func TestDetectorClickHouseLabels(t *testing.T) {
	for k := range detectv1.AnomalyKind_name {
		kind := detectv1.AnomalyKind(k)
		if got, want := warehouse.AnomalyKind(kind), detect.KindLabel(kind); got != want {
			t.Errorf("kind %v: warehouse %q, detect %q", kind, got, want)
		}
	}
	for p := range eventv1.Platform_name {
		c := &detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform(p)}
		if got, want := warehouse.CohortLabel(c), detect.CohortLabel(c); got != want {
			t.Errorf("cohort %v: warehouse %q, detect %q", c, got, want)
		}
	}
	if got, want := warehouse.CohortLabel(nil), detect.CohortLabel(nil); got != want {
		t.Errorf("no cohort: warehouse %q, detect %q", got, want)
	}
}

func TestDetectorClickHouseFlags(t *testing.T) {
	args := []string{"detector", "-admin.addr=127.0.0.1:0", "-detect.grpc-addr=127.0.0.1:0", "-detect.token=" + detToken, "-clickhouse.addr=nohost"}
	if err := run(context.Background(), args, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "-clickhouse.addr") {
		t.Errorf("run(%v) = %v, want an error naming -clickhouse.addr", args, err)
	}
	var cfg detectorConfig
	fs := flag.NewFlagSet("detector", flag.ContinueOnError)
	cfg.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if cfg.Warehouse.Addr != "" {
		t.Errorf("-clickhouse.addr defaults to %q, want empty (no ClickHouse output)", cfg.Warehouse.Addr)
	}
}
