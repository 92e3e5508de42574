package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	detectv1 "causality.dev/api/gen/causality/detect/v1"
	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/detect"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/rules"
	"causality.dev/services/internal/sink"
	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/webhook"
)

func init() {
	commands["detector"] = command{"learn behavioural baselines from the events, serve anomalies over gRPC, Kafka, webhooks and ClickHouse", runDetector}
}

// Topics the detector writes.
const (
	AnomaliesTopic       = "causality.anomalies.v1"
	WebhookDeadLetterTop = "causality.webhooks.dlq.v1"
)

type detectorConfig struct {
	Kafka   kafka.Config
	Admin   admin.Config
	Log     logFlags
	Detect  detect.Config
	Engine  detect.EngineConfig
	Server  detect.ServerConfig
	Webhook webhook.Config
	// Warehouse is where anomalies are stored; off when Addr is empty.
	Warehouse warehouse.Config
	// Rules are evaluated on the events and the anomalies; off when File
	// is empty.
	Rules rules.Config

	Group          string
	AnomaliesTopic string
	WebhookDLQ     string
}

func (c *detectorConfig) register(fs *flag.FlagSet) {
	c.Kafka.RegisterFlags(fs)
	c.Admin.RegisterFlags(fs)
	c.Log.register(fs)
	c.Detect.RegisterFlags(fs)
	c.Engine.RegisterFlags(fs)
	c.Server.RegisterFlags(fs)
	c.Webhook.RegisterFlags(fs, "detect.webhook")
	c.Warehouse.RegisterFlags(fs)
	c.Rules.RegisterFlags(fs)
	setDefault(fs, "clickhouse.addr", "")
	fs.Lookup("clickhouse.addr").Usage = "ClickHouse native address host:port to store anomalies (the anomalies table, created by the sink), e.g. 127.0.0.1:9000; empty = anomalies are not stored in ClickHouse"
	fs.StringVar(&c.Group, "detect.group", "causality-detector", "Kafka consumer group of the detectors (instances of one group share the partitions)")
	fs.StringVar(&c.AnomaliesTopic, "detect.anomalies-topic", AnomaliesTopic, "topic the anomalies are written to (key = app id, value = causality.detect.v1.Anomaly)")
	fs.StringVar(&c.WebhookDLQ, "detect.webhook.dlq-topic", WebhookDeadLetterTop, "topic of webhook bodies (anomalies and rule firings) not delivered after the last try")
}

func (c *detectorConfig) validate() error {
	for _, v := range []interface{ Validate() error }{&c.Kafka, &c.Detect, &c.Engine, &c.Webhook, &c.Rules} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	switch {
	case c.Group == "":
		return errors.New("-detect.group must not be empty")
	case c.AnomaliesTopic == "" || c.AnomaliesTopic == c.Kafka.Topic:
		return errors.New("-detect.anomalies-topic must be set and differ from -kafka.topic")
	case (len(c.Webhook.URLs) > 0 || c.Rules.Enabled()) && c.WebhookDLQ == "":
		return errors.New("-detect.webhook.dlq-topic must be set when webhooks or rules are")
	case c.Rules.Enabled() && (c.Rules.FiringsTopic == c.Kafka.Topic || c.Rules.FiringsTopic == c.AnomaliesTopic):
		return errors.New("-rules.firings-topic must differ from -kafka.topic and -detect.anomalies-topic")
	}
	if c.Warehouse.Addr != "" {
		if err := c.Warehouse.Validate(); err != nil {
			return err
		}
	}
	_, err := c.Server.Tokens()
	return err
}

func runDetector(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg detectorConfig
	if err := parseFlags("detector", args, stderr, cfg.register, cfg.validate); err != nil {
		return err
	}
	logger, err := cfg.Log.logger(stderr)
	if err != nil {
		return err
	}
	return withAdminPort(ctx, cfg.Admin, logger, func(ctx context.Context, reg prometheus.Registerer, adm *admin.Server) error {
		return serveDetector(ctx, cfg, logger, reg, adm)
	})
}

// serveDetector runs the detector until ctx ends: it consumes the events
// topic in its own group, serves DetectorService, writes anomalies to the
// anomalies topic, the webhooks and ClickHouse, and checkpoints its state (periodically
// and, last, once the consumer has stopped). It registers its metrics on
// reg and its readiness checks on adm, which the caller serves.
func serveDetector(ctx context.Context, cfg detectorConfig, logger *slog.Logger, reg prometheus.Registerer, adm *admin.Server) error {
	logger = logger.With("component", "detector")
	// Not ready until the checkpoint is restored and the gRPC port listens,
	// and again not once stopping.
	var serving atomic.Bool
	adm.AddCheck("detector", func(context.Context) error {
		if !serving.Load() {
			return errors.New("detector not serving (restoring its checkpoint, starting or stopping)")
		}
		return nil
	})
	tokens, err := cfg.Server.Tokens()
	if err != nil {
		return err
	}
	topics := []string{cfg.AnomaliesTopic}
	if len(cfg.Webhook.URLs) > 0 || cfg.Rules.Enabled() {
		topics = append(topics, cfg.WebhookDLQ)
	}
	if cfg.Rules.Enabled() {
		topics = append(topics, cfg.Rules.FiringsTopic)
	}
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = kafka.EnsureTopics(tctx, cfg.Kafka, topics...)
	cancel()
	if err != nil {
		return fmt.Errorf("kafka at %s: %w", cfg.Kafka.Brokers, err)
	}
	adm.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, cfg.Kafka) })

	det, err := detect.New(cfg.Detect)
	if err != nil {
		return err
	}
	anomalies, err := kafka.NewWriter(cfg.Kafka, cfg.AnomaliesTopic)
	if err != nil {
		return err
	}
	defer anomalies.Close()
	outputs := []detect.Output{{Name: "kafka", Write: func(ctx context.Context, as []*detectv1.Anomaly) error {
		return anomalies.Write(ctx, anomalyRecords(as))
	}}}
	// ClickHouse: the anomalies table is the sink's, which applies the
	// migrations; until a sink has, writes fail and the engine retries them.
	if cfg.Warehouse.Addr != "" {
		ch, err := warehouse.NewAnomalyWriter(cfg.Warehouse)
		if err != nil {
			return err
		}
		defer ch.Close()
		outputs = append(outputs, detect.Output{Name: "clickhouse", Write: ch.Write})
	}
	var dlq *kafka.Writer
	if len(cfg.Webhook.URLs) > 0 || cfg.Rules.Enabled() {
		if dlq, err = kafka.NewWriter(cfg.Kafka, cfg.WebhookDLQ); err != nil {
			return err
		}
		defer dlq.Close()
	}
	if len(cfg.Webhook.URLs) > 0 {
		sender, err := webhook.New(cfg.Webhook, webhookDeadLetters(dlq), logger,
			prometheus.WrapRegistererWith(prometheus.Labels{"webhook": "anomalies"}, reg))
		if err != nil {
			return err
		}
		outputs = append(outputs, detect.Output{
			Name: "webhook",
			Write: func(ctx context.Context, as []*detectv1.Anomaly) error {
				for _, a := range as {
					body, err := webhookBody(a)
					if err != nil {
						return err
					}
					if err := sender.Deliver(ctx, a.GetId(), body); err != nil {
						return err
					}
				}
				return nil
			},
			Save: sender.Save, Restore: sender.Restore,
		})
	}
	// Rules: evaluated on each batch of events and, as an output, on the
	// anomalies.
	var ruleEngine *rules.Engine
	if cfg.Rules.Enabled() {
		var closeRules func()
		if ruleEngine, closeRules, err = newRuleEngine(cfg, dlq, logger, reg); err != nil {
			return err
		}
		defer closeRules() // after the consumer and the outputs stopped
		outputs = append(outputs, detect.Output{Name: "rules", Write: ruleEngine.HandleAnomalies, Save: ruleEngine.Save, Restore: ruleEngine.Restore})
	}
	engine, err := detect.NewEngine(cfg.Engine, det, outputs, logger, reg, time.Now)
	if err != nil {
		return err
	}
	handle := engine.Handle
	if ruleEngine != nil {
		handle = detectAndEvaluate(engine, ruleEngine)
	}
	srv, err := detect.NewServer(cfg.Server, engine.Ring(), engine, tokens, logger, reg)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	consumer, err := kafka.NewConsumer(cfg.Kafka, kafka.ConsumerConfig{Group: cfg.Group}, logger)
	if err != nil {
		return err
	}
	logger.Info("detector serving", "grpc", srv.Addr(), "group", cfg.Group, "topic", cfg.Kafka.Topic, "windows", cfg.Detect.Windows, "checkpoint", cfg.Engine.Checkpoint, "clickhouse", cfg.Warehouse.Addr, "rules", cfg.Rules.File)
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "causality_detect_consumer_lag",
		Help: "Messages of the events topic not yet committed by the detector's group, per partition.",
	}, []string{"partition"})
	if err := reg.Register(lag); err != nil {
		return fmt.Errorf("register detector metrics: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	serving.Store(true)
	defer serving.Store(false)
	context.AfterFunc(gctx, func() { serving.Store(false) })
	g.Go(func() error { return consumer.Run(gctx, handle) })
	g.Go(func() error {
		sink.WatchLag(gctx, func(ctx context.Context) (map[int]int64, error) {
			return kafka.GroupLag(ctx, cfg.Kafka, cfg.Group, cfg.Kafka.Topic)
		}, 10*time.Second, lag, logger)
		return nil
	})
	if ruleEngine != nil {
		g.Go(func() error { return ruleEngine.Run(gctx) })
	}
	g.Go(func() error { return engine.Run(gctx) })
	g.Go(func() error { return srv.Serve(gctx) })
	err = g.Wait()
	// Last, with the consumer stopped: what it committed is in the state.
	if cerr := engine.Checkpoint(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	return err
}

// newRuleEngine builds the rules engine of the detector and loads the
// rules file (a file that does not load is logged and counted; the engine
// starts without rules and picks up the next good version). Firings go to
// the firings topic, Kafka actions to their topics (created when missing),
// webhooks through one signed, retried sender per webhook of the rule set,
// with the -detect.webhook.* retry settings and dead letters.
func newRuleEngine(cfg detectorConfig, dlq *kafka.Writer, logger *slog.Logger, reg prometheus.Registerer) (_ *rules.Engine, closeRules func(), _ error) {
	firings, err := kafka.NewWriter(cfg.Kafka, cfg.Rules.FiringsTopic)
	if err != nil {
		return nil, nil, err
	}
	hookReg := prometheus.WrapRegistererWith(prometheus.Labels{"webhook": "rules"}, reg)
	out := rules.Outputs{
		Firings: firings,
		Topic: func(ctx context.Context, topic string) (rules.RecordWriter, error) {
			tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := kafka.EnsureTopics(tctx, cfg.Kafka, topic); err != nil {
				return nil, err
			}
			return kafka.NewWriter(cfg.Kafka, topic)
		},
		Webhook: func(w *adminv1.Webhook) (rules.Deliverer, error) {
			wc := cfg.Webhook
			wc.URLs, wc.SecretFile = []string{w.GetUrl()}, ""
			wc.WithSecret([]byte(w.GetSecret()))
			if err := wc.Validate(); err != nil {
				return nil, err
			}
			return webhook.New(wc, webhookDeadLetters(dlq), logger, hookReg)
		},
	}
	e, err := rules.New(cfg.Rules, out, logger.With("component", "rules"), reg)
	if err != nil {
		firings.Close()
		return nil, nil, err
	}
	_ = e.Reload() // logged and counted
	return e, func() {
		e.Close(5 * time.Second)
		firings.Close()
	}, nil
}

// detectAndEvaluate is the events handler with rules: each batch is
// decoded once, scored by the detector and evaluated by the rules. A
// failed rule action fails the batch, which the consumer retries: the
// detector and the rules skip the events they have already taken.
func detectAndEvaluate(engine *detect.Engine, ruleEngine *rules.Engine) kafka.Handler {
	return func(ctx context.Context, msgs []kafka.Message) error {
		events := engine.Decode(msgs)
		engine.Feed(events)
		return ruleEngine.HandleEvents(ctx, events)
	}
}

// anomalyRecords are the messages of the anomalies topic: key = app id
// (one app's anomalies stay in order), value = the Anomaly protobuf.
func anomalyRecords(as []*detectv1.Anomaly) []kafka.Record {
	out := make([]kafka.Record, 0, len(as))
	for _, a := range as {
		b, err := proto.Marshal(a)
		if err != nil {
			continue // cannot happen for a valid message
		}
		out = append(out, kafka.Record{Key: []byte(a.GetAppId()), Value: b, Headers: map[string]string{
			kafka.HeaderAppID: a.GetAppId(), "kind": detect.KindLabel(a.GetKind()), "anomaly_id": a.GetId(),
		}})
	}
	return out
}

// webhookBody is the JSON POSTed for an anomaly: its type and the Anomaly
// in protobuf JSON with the proto field names.
func webhookBody(a *detectv1.Anomaly) ([]byte, error) {
	data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("anomaly %s as JSON: %w", a.GetId(), err)
	}
	return fmt.Appendf(nil, `{"type":"causality.detect.v1.Anomaly","id":%q,"data":%s}`, a.GetId(), data), nil
}

// webhookDeadLetters writes undeliverable bodies to a topic, with where
// and why in headers.
func webhookDeadLetters(w *kafka.Writer) webhook.DeadLetters {
	return webhook.DeadLetterFunc(func(ctx context.Context, l webhook.Letter) error {
		return w.Write(ctx, []kafka.Record{{Key: []byte(l.ID), Value: l.Body, Headers: map[string]string{
			"webhook_url": l.URL, "webhook_id": l.ID, "attempts": strconv.Itoa(l.Attempts),
			"status": strconv.Itoa(l.Status), "error": l.Error,
		}}})
	})
}
