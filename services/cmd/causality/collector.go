package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/adminapi"
	"causality.dev/services/internal/console"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/rules"
)

func init() {
	commands["collector"] = command{"serve TCP frames, gRPC, HTTP and WebSocket, and write events to Kafka", runCollector}
}

type collectorConfig struct {
	Ingest ingest.Config
	Kafka  kafka.Config
	Admin  admin.Config
	// AdminAPI serves the AdminService (and the console) when its tokens
	// file is set.
	AdminAPI adminapi.Config
	// Console is served with the admin API (never without it).
	Console console.Config
	Log     logFlags
}

func (c *collectorConfig) register(fs *flag.FlagSet) {
	c.Ingest.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	c.Admin.RegisterFlags(fs)
	c.AdminAPI.RegisterFlags(fs)
	c.Console.RegisterFlags(fs)
	c.Log.register(fs)
}

// validateAdminAPI checks the -adminapi.* flags against -ingest.keys-file,
// the file the admin API edits.
func (c *collectorConfig) validateAdminAPI() error {
	c.AdminAPI.KeysFile = c.Ingest.KeysFile
	return c.AdminAPI.Validate()
}

// adminRules is what the admin API uses of package rules.
var adminRules = adminapi.Rules{Validate: rules.Validate, Explain: rules.Explain, ValidateSet: rules.ValidateSet}

// mountAdminAPI serves the AdminService on the collector's gRPC and HTTP
// ports, when -adminapi.tokens-file is set; otherwise nothing is mounted
// (404).
func mountAdminAPI(cfg *collectorConfig, srv *ingest.Server, logger *slog.Logger) error {
	if err := cfg.validateAdminAPI(); err != nil || !cfg.AdminAPI.Enabled() {
		return err
	}
	api, err := adminapi.New(cfg.AdminAPI, adminRules, logger.With("component", "adminapi"))
	if err != nil {
		return err
	}
	srv.RegisterGRPC(api.RegisterGRPC, api.GRPCOption())
	srv.Handle(adminapi.HTTPPrefix, api.Handler())
	logger.Info("admin API enabled", "rules_file", cfg.AdminAPI.RulesFile, "apps_file", cfg.AdminAPI.AppsFile, "keys_file", cfg.AdminAPI.KeysFile)
	return nil
}

func runCollector(ctx context.Context, args []string, _, stderr io.Writer) error {
	var cfg collectorConfig
	if err := parseFlags("collector", args, stderr, cfg.register, cfg.validate); err != nil {
		return err
	}
	logger, err := cfg.Log.logger(stderr)
	if err != nil {
		return err
	}
	keys, err := ingest.LoadKeyring(cfg.Ingest.KeysFile)
	if err != nil {
		return err
	}
	return withAdminPort(ctx, cfg.Admin, logger, func(ctx context.Context, reg prometheus.Registerer, adm *admin.Server) error {
		return serveCollector(ctx, cfg, keys, logger, reg, adm)
	})
}

// validate checks the settings of `causality collector` (dev mode has its
// own: no keys file there).
func (c *collectorConfig) validate() error {
	if c.Ingest.KeysFile == "" {
		return fmt.Errorf("-ingest.keys-file is required (create one with `causality keys -app APP -file FILE`)")
	}
	for _, v := range []interface{ Validate() error }{&c.Kafka, &c.Ingest} {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	return c.validateAdminAPI()
}

// serveCollector runs the collector until ctx ends: front doors drain first,
// then the producer flushes and closes. It registers its metrics on reg and
// its readiness checks on adm, which the caller serves (one admin port per
// process, also in `causality dev`).
func serveCollector(ctx context.Context, cfg collectorConfig, keys *ingest.Keyring, logger *slog.Logger, reg prometheus.Registerer, adm *admin.Server) error {
	// Not ready until the front doors listen, and again not while draining.
	var serving atomic.Bool
	adm.AddCheck("collector", func(context.Context) error {
		if !serving.Load() {
			return errors.New("front doors not serving (starting or draining)")
		}
		return nil
	})
	adm.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, cfg.Kafka) })
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err := kafka.EnsureTopics(tctx, cfg.Kafka)
	cancel()
	if err != nil {
		return fmt.Errorf("kafka at %s: %w", cfg.Kafka.Brokers, err)
	}
	producer, err := kafka.NewProducer(cfg.Kafka, logger, reg)
	if err != nil {
		return fmt.Errorf("kafka producer: %w", err)
	}
	defer producer.Close() // after the front doors have drained
	srv, err := ingest.NewServer(cfg.Ingest, keys, producer, producer, logger, reg)
	if err != nil {
		return err
	}
	if err := mountAdminAPI(&cfg, srv, logger); err != nil {
		return err
	}
	closeConsole, err := mountConsole(ctx, &cfg, srv, logger, reg)
	if err != nil {
		return err
	}
	defer closeConsole()
	if err := srv.Listen(); err != nil {
		return err
	}
	serving.Store(true)
	context.AfterFunc(ctx, func() { serving.Store(false) })
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx) })
	if cfg.Ingest.KeysFile != "" {
		g.Go(func() error { ingest.WatchKeys(gctx, cfg.Ingest.KeysFile, keys, logger); return nil })
	}
	return g.Wait()
}

// mountConsole serves the web console under /console/ on the collector's
// HTTP port, behind the admin tokens, when the admin API is on; otherwise
// nothing is mounted (404). Its streams end with ctx. The returned close
// drops the connection to the detector.
func mountConsole(ctx context.Context, cfg *collectorConfig, srv *ingest.Server, logger *slog.Logger, reg prometheus.Registerer) (func() error, error) {
	if !cfg.AdminAPI.Enabled() {
		return func() error { return nil }, nil
	}
	tokens, err := adminapi.LoadTokens(cfg.AdminAPI.TokensFile)
	if err != nil {
		return nil, err
	}
	baselines, closeDetector, err := console.DialDetector(cfg.Console)
	if err != nil {
		return nil, err
	}
	logger = logger.With("component", "console")
	c, err := console.New(cfg.Console, cfg.Kafka.Topic, tokens, console.KafkaSource(cfg.Kafka), baselines, logger, reg)
	if err != nil {
		closeDetector()
		return nil, err
	}
	h := c.Handler(ctx)
	srv.Handle("/console/", h)
	srv.Handle("/console", h)
	logger.Info("console enabled", "path", "/console/", "detector", cfg.Console.DetectorAddr)
	return closeDetector, nil
}
