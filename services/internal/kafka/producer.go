package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// Header keys set on every message.
const (
	HeaderAppID  = "app_id"
	HeaderReason = "dlq_reason"
	HeaderDetail = "dlq_detail"
	HeaderSource = "dlq_source"
)

// Producer writes accepted events to the events topic, synchronously and with
// acks from all in-sync replicas, and dead letters to the DLQ topic
// asynchronously.
type Producer struct {
	events  *kafka.Writer
	dlq     *kafka.Writer
	logger  *slog.Logger
	latency prometheus.Observer
	errs    *prometheus.CounterVec
	letters *prometheus.CounterVec
}

// NewProducer connects lazily: the first Publish dials the brokers.
func NewProducer(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Producer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	codec, _ := cfg.codec()
	transport := &kafka.Transport{DialTimeout: 5 * time.Second, MetadataTTL: 5 * time.Second}
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "causality_kafka_produce_seconds",
		Help:    "Time for Kafka to acknowledge one Publish (all in-sync replicas).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "causality_kafka_produce_errors_total",
		Help: "Failed produce calls by topic kind and reason.",
	}, []string{"topic", "reason"})
	letters := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "causality_kafka_dead_letters_total",
		Help: "Messages written to the dead-letter topic, by source and reason.",
	}, []string{"source", "reason"})
	for _, c := range []prometheus.Collector{latency, errs, letters} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register kafka metrics: %w", err)
		}
	}
	p := &Producer{logger: logger, latency: latency, errs: errs, letters: letters}
	p.events = &kafka.Writer{
		Addr:         kafka.TCP(cfg.BrokerList()...),
		Topic:        cfg.Topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: cfg.BatchTimeout,
		BatchSize:    1000,
		BatchBytes:   8 << 20,
		WriteTimeout: cfg.WriteTimeout,
		MaxAttempts:  3,
		Compression:  codec,
		Transport:    transport,
	}
	p.dlq = &kafka.Writer{
		Addr:         kafka.TCP(cfg.BrokerList()...),
		Topic:        cfg.DLQTopic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 50 * time.Millisecond,
		WriteTimeout: cfg.WriteTimeout,
		Compression:  codec,
		Transport:    transport,
		Async:        true,
		Completion: func(msgs []kafka.Message, err error) {
			if err != nil {
				errs.WithLabelValues("dlq", errorReason(err)).Add(float64(len(msgs)))
				logger.Error("dead letters lost", "count", len(msgs), "err", err)
			}
		},
	}
	return p, nil
}

// Publish writes the events (key = device id, value = the Event protobuf) and
// returns once every one is acknowledged by all in-sync replicas. On error
// some may have been written: callers retry the whole batch and rely on the
// event id to collapse duplicates.
func (p *Producer) Publish(ctx context.Context, events []*eventv1.Event) error {
	return p.PublishEncoded(ctx, events, nil)
}

// PublishEncoded is Publish with the events already encoded: values[i] is
// written as the value of events[i], which must decode to it; a nil
// values, or a nil values[i], has the event marshalled here.
func (p *Producer) PublishEncoded(ctx context.Context, events []*eventv1.Event, values [][]byte) error {
	if len(events) == 0 {
		return nil
	}
	if values != nil && len(values) != len(events) {
		return fmt.Errorf("produce %d events: %d values given", len(events), len(values))
	}
	msgs := make([]kafka.Message, len(events))
	var app string
	var appHeader []kafka.Header // shared by the messages of one app: kafka-go only reads it
	for i, e := range events {
		var b []byte
		if values != nil {
			b = values[i]
		}
		if b == nil {
			var err error
			if b, err = proto.Marshal(e); err != nil {
				return fmt.Errorf("marshal event %s: %w", e.GetEventId(), err)
			}
		}
		if appHeader == nil || e.GetAppId() != app {
			app = e.GetAppId()
			appHeader = []kafka.Header{{Key: HeaderAppID, Value: []byte(app)}}
		}
		msgs[i] = kafka.Message{Key: []byte(e.GetDeviceId()), Value: b, Headers: appHeader}
	}
	start := time.Now()
	err := p.events.WriteMessages(ctx, msgs...)
	p.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		p.errs.WithLabelValues("events", errorReason(err)).Inc()
		return fmt.Errorf("produce %d events: %w", len(events), err)
	}
	return nil
}

// DeadLetter queues one message for the DLQ topic with its reason in
// headers. It does not block on Kafka; failures are logged and counted.
func (p *Producer) DeadLetter(key, value []byte, source, reason, detail string) {
	p.letters.WithLabelValues(source, reason).Inc()
	err := p.dlq.WriteMessages(context.Background(), kafka.Message{
		Key:   key,
		Value: value,
		Headers: []kafka.Header{
			{Key: HeaderSource, Value: []byte(source)},
			{Key: HeaderReason, Value: []byte(reason)},
			{Key: HeaderDetail, Value: []byte(detail)},
		},
	})
	if err != nil {
		p.logger.Error("queue dead letter", "err", err)
	}
}

// Close flushes queued dead letters and closes connections.
func (p *Producer) Close() error {
	return errors.Join(p.events.Close(), p.dlq.Close())
}

// errorReason maps an error to a bounded label value.
func errorReason(err error) string {
	var kerr kafka.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &kerr):
		return "broker_error"
	default:
		var we kafka.WriteErrors
		if errors.As(err, &we) {
			return "partial"
		}
		return "network"
	}
}
