package ingest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPipelineCountsAcceptedPerApp: causality_ingest_app_events_total counts
// only what Kafka took, per app: not the invalid, duplicate or failed events.
func TestPipelineCountsAcceptedPerApp(t *testing.T) {
	tp := newTestPipeline(t, 0)
	appEvents := func(app string) float64 { return testutil.ToFloat64(tp.metrics.appEvents.WithLabelValues(app)) }

	invalid := eventN(3)
	invalid.DeviceId = ""
	wantStatuses(t, tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(1, eventN(1), eventN(2), invalid)), "accepted", "accepted", "invalid")
	wantStatuses(t, tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(2, eventN(1))), "duplicate")
	tp.pub.failNext = 1
	wantStatuses(t, tp.ingest(t.Context(), TransportTCP, "app-a", batchOf(3, eventN(4))), "retry")
	b := eventN(10)
	b.AppId = "app-b"
	wantStatuses(t, tp.ingest(t.Context(), TransportTCP, "app-b", batchOf(4, b)), "accepted")

	if got := appEvents("app-a"); got != 2 {
		t.Errorf("app-a: %v accepted events counted, want 2", got)
	}
	if got := appEvents("app-b"); got != 1 {
		t.Errorf("app-b: %v accepted events counted, want 1", got)
	}
	if n := testutil.CollectAndCount(tp.metrics.appEvents); n != 2 {
		t.Errorf("%d series, want one per app (2)", n)
	}
}
