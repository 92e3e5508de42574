package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/sink"
	"causality.dev/services/internal/warehouse"
)

func init() {
	commands["sink"] = command{"read events from Kafka and store each once in ClickHouse", runSink}
}

type sinkConfig struct {
	Kafka     kafka.Config
	Warehouse warehouse.Config
	Admin     admin.Config
	Log       logFlags

	Group       string
	BatchSize   int
	BatchAge    time.Duration
	CacheSize   int
	LagInterval time.Duration
}

func (c *sinkConfig) register(fs *flag.FlagSet) {
	c.Kafka.RegisterFlags(fs)
	c.Warehouse.RegisterFlags(fs)
	c.Admin.RegisterFlags(fs)
	c.Log.register(fs)
	fs.StringVar(&c.Group, "sink.group", "causality-sink", "Kafka consumer group of the sinks")
	fs.IntVar(&c.BatchSize, "sink.batch-size", 50000, "most events per ClickHouse insert")
	fs.DurationVar(&c.BatchAge, "sink.batch-age", time.Second, "how long the oldest event of a batch may wait before the insert")
	fs.IntVar(&c.CacheSize, "sink.dedup-cache", 1_000_000, "recently stored event ids remembered to drop duplicates before ClickHouse (about 50 bytes each)")
	fs.DurationVar(&c.LagInterval, "sink.lag-interval", 10*time.Second, "how often the consumer lag per partition is measured")
}

func (c *sinkConfig) validate() error {
	if err := c.Kafka.Validate(); err != nil {
		return err
	}
	if err := c.Warehouse.Validate(); err != nil {
		return err
	}
	switch {
	case c.Group == "":
		return errors.New("-sink.group must not be empty")
	case c.BatchSize < 1:
		return errors.New("-sink.batch-size must be at least 1")
	case c.BatchAge <= 0:
		return errors.New("-sink.batch-age must be positive")
	case c.CacheSize < 0:
		return errors.New("-sink.dedup-cache must not be negative")
	case c.LagInterval <= 0:
		return errors.New("-sink.lag-interval must be positive")
	}
	return nil
}

func runSink(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg sinkConfig
	if err := parseFlags("sink", args, stderr, cfg.register, cfg.validate); err != nil {
		return err
	}
	logger, err := cfg.Log.logger(stderr)
	if err != nil {
		return err
	}
	return withAdminPort(ctx, cfg.Admin, logger, func(ctx context.Context, reg prometheus.Registerer, adm *admin.Server) error {
		return serveSink(ctx, cfg, logger, reg, adm)
	})
}

// serveSink runs the sink until ctx ends: it applies the ClickHouse
// migrations, then consumes the events topic and inserts batches,
// committing offsets only after each insert succeeded. It registers its
// metrics on reg and its readiness checks on adm, which the caller serves.
func serveSink(ctx context.Context, cfg sinkConfig, logger *slog.Logger, reg prometheus.Registerer, adm *admin.Server) error {
	logger = logger.With("component", "sink")
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := kafka.EnsureTopics(tctx, cfg.Kafka)
	cancel()
	if err != nil {
		return fmt.Errorf("kafka at %s: %w", cfg.Kafka.Brokers, err)
	}
	adm.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, cfg.Kafka) })
	notYet := errors.New("schema not applied yet")
	adm.AddCheck("clickhouse", func(context.Context) error { return notYet })
	client, err := connectWarehouse(ctx, cfg.Warehouse, logger)
	if err != nil || ctx.Err() != nil {
		return err
	}
	defer client.Close()
	writer, err := warehouse.NewWriter(client, logger, reg)
	if err != nil {
		return err
	}
	adm.AddCheck("clickhouse", writer.Ready)

	dlq, err := kafka.NewDeadLetters(cfg.Kafka)
	if err != nil {
		return err
	}
	defer dlq.Close()
	handler, err := sink.NewHandler(writer, dlq, cfg.CacheSize, logger, reg)
	if err != nil {
		return err
	}
	consumer, err := kafka.NewConsumer(cfg.Kafka, kafka.ConsumerConfig{
		Group: cfg.Group, Topic: cfg.Kafka.Topic, MaxBatch: cfg.BatchSize, MaxWait: cfg.BatchAge,
	}, logger)
	if err != nil {
		return err
	}
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "causality_sink_consumer_lag",
		Help: "Messages of the events topic not yet committed by the sink's group, per partition.",
	}, []string{"partition"})
	if err := reg.Register(lag); err != nil {
		return fmt.Errorf("register sink metrics: %w", err)
	}
	logger.Info("sink started", "topic", cfg.Kafka.Topic, "group", cfg.Group, "clickhouse", cfg.Warehouse.Addr, "database", cfg.Warehouse.Database)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return consumer.RunStaged(gctx, handler.Prepare) })
	g.Go(func() error {
		sink.WatchLag(gctx, func(ctx context.Context) (map[int]int64, error) {
			return kafka.GroupLag(ctx, cfg.Kafka, cfg.Group, cfg.Kafka.Topic)
		}, cfg.LagInterval, lag, logger)
		return nil
	})
	return g.Wait()
}

// connectWarehouse applies the migrations and opens the database, retrying
// with backoff while the server cannot be reached (it may start after the
// sink). Other errors, such as a refused login, end the sink.
func connectWarehouse(ctx context.Context, cfg warehouse.Config, logger *slog.Logger) (*warehouse.Client, error) {
	backoff := 500 * time.Millisecond
	for {
		err := warehouse.Migrate(ctx, cfg)
		if err == nil {
			return warehouse.Open(ctx, cfg)
		}
		if !warehouse.Unreachable(err) {
			return nil, fmt.Errorf("clickhouse schema: %w", err)
		}
		logger.Warn("clickhouse unreachable, retrying", "addr", cfg.Addr, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}
