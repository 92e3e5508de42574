package ingest

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// Transports, the values of the transport label.
const (
	TransportTCP  = "tcp"
	TransportGRPC = "grpc"
	TransportWS   = "websocket"
	TransportHTTP = "http"
)

type metrics struct {
	conns       *prometheus.GaugeVec
	disconnects *prometheus.CounterVec
	frames      *prometheus.CounterVec
	events      *prometheus.CounterVec
	ackSeconds  *prometheus.HistogramVec
	batchEvents prometheus.Histogram
	dropped     prometheus.Counter
	appEvents   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "causality_ingest_connections",
			Help: "Open streams by transport.",
		}, []string{"transport"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_ingest_disconnects_total",
			Help: "Closed streams by transport and reason.",
		}, []string{"transport", "reason"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_ingest_frames_total",
			Help: "Client frames received, by transport and type.",
		}, []string{"transport", "type"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_ingest_events_total",
			Help: "Events answered, by transport, result and reason (reason only for invalid).",
		}, []string{"transport", "result", "reason"}),
		ackSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "causality_ingest_ack_seconds",
			Help:    "Time from a batch received to its ack ready, by transport.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"transport"}),
		batchEvents: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "causality_ingest_batch_events",
			Help:    "Events per received batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "causality_ingest_client_dropped_events_total",
			Help: "Events that SDK queues reported dropping because they were full.",
		}),
		// One series per app of the keys file: what "no events from an app"
		// alerts on.
		appEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_ingest_app_events_total",
			Help: "Events accepted (in Kafka), by app.",
		}, []string{"app"}),
	}
	for _, c := range []prometheus.Collector{m.conns, m.disconnects, m.frames, m.events, m.ackSeconds, m.batchEvents, m.dropped, m.appEvents} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// statusLabel turns EVENT_STATUS_ACCEPTED into "accepted".
func statusLabel(s ingestv1.EventStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "EVENT_STATUS_"))
}

// reasonLabel turns INVALID_REASON_MISSING_APP_ID into "missing_app_id".
func reasonLabel(r ingestv1.InvalidReason) string {
	if r == ingestv1.InvalidReason_INVALID_REASON_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(r.String(), "INVALID_REASON_"))
}
