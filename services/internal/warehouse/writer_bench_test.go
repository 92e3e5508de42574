package warehouse_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/warehousetest"
)

// BenchmarkWriter measures Writer.Write alone: row building (the payload's
// JSON included) and one native batch insert of 50,000 events.
func BenchmarkWriter(b *testing.B) {
	_, c := warehousetest.Migrated(b)
	reg := prometheus.NewRegistry()
	w, err := warehouse.NewWriter(c, discard(), reg)
	if err != nil {
		b.Fatal(err)
	}
	events := make([]*eventv1.Event, 50000)
	for i := range events {
		e := fullEvent()
		e.EventId = uuid.Must(uuid.NewV7()).String()
		e.DeviceId = fmt.Sprintf("dev-%d", i%500)
		events[i] = e
	}
	ctx := context.Background()
	for b.Loop() {
		if err := w.Write(ctx, events); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(events))/b.Elapsed().Seconds(), "rows/s")
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "causality_warehouse_insert_seconds" {
			h := mf.GetMetric()[0].GetHistogram()
			b.ReportMetric(float64(h.GetSampleCount()*uint64(len(events)))/h.GetSampleSum(), "insert-rows/s")
		}
	}
}
