package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/adminapi"
	"causality.dev/services/internal/devstack"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/kafka"
)

func init() {
	commands["dev"] = command{"run the whole pipeline on this machine: collector, sink, detector, embedded Kafka, local ClickHouse", runDev}
}

// devDir holds the dev stack's state: keys, the detector's token and
// checkpoint, Kafka and ClickHouse data.
const devDir = ".causality/dev"

type devConfig struct {
	collector collectorConfig
	sink      sinkConfig
	detector  detectorConfig

	dir                 string
	app                 string
	kafkaPort           int
	chPort, chHTTPPort  int
	chBin               string
	kafkaGiven, chGiven bool
	keysGiven           bool
	ckptGiven           bool
	tokenGiven          bool
	adminTokensGiven    bool
	adminToken          string // generated for dev, unless adminTokensGiven
	detToken            string // generated for dev, unless tokenGiven
	chStartTimeout      time.Duration
}

func (c *devConfig) register(fs *flag.FlagSet) {
	c.collector.register(fs) // -ingest.*, -kafka.*, -admin.addr, -log.*
	c.sink.Warehouse.RegisterFlags(fs)
	// The sink's own -sink.* flags (its -kafka.* and others are shared above).
	tmp := flag.NewFlagSet("sink", flag.ContinueOnError)
	c.sink.register(tmp)
	tmp.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "sink.") {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
	// The detector's -detect.* and -rules.* flags likewise; it stores
	// anomalies in the sink's ClickHouse.
	tmp = flag.NewFlagSet("detector", flag.ContinueOnError)
	c.detector.register(tmp)
	tmp.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "detect.") || strings.HasPrefix(f.Name, "rules.") {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
	fs.StringVar(&c.dir, "dev.dir", devDir, "state of the dev stack: the dev key, keys.json, the detector's token and checkpoint, Kafka and ClickHouse data")
	fs.StringVar(&c.app, "dev.app", "my-app", "app of the dev key (the prototype's curl examples use my-app)")
	fs.IntVar(&c.kafkaPort, "dev.kafka-port", 9092, "port of the embedded Kafka broker on 127.0.0.1 (unless -kafka.brokers is given)")
	fs.IntVar(&c.chPort, "dev.clickhouse-port", 9000, "native port of the local ClickHouse on 127.0.0.1 (unless -clickhouse.addr is given)")
	fs.IntVar(&c.chHTTPPort, "dev.clickhouse-http-port", 8123, "HTTP port of the local ClickHouse")
	fs.StringVar(&c.chBin, "dev.clickhouse-bin", "clickhouse-server", "ClickHouse server binary")
	fs.DurationVar(&c.chStartTimeout, "dev.clickhouse-start-timeout", 30*time.Second, "how long the local ClickHouse may take to start")
	// Local only: dev mode accepts keyless HTTP, so it listens on loopback.
	setDefault(fs, "ingest.tcp-addr", "127.0.0.1:7070")
	setDefault(fs, "ingest.grpc-addr", "127.0.0.1:7071")
	setDefault(fs, "ingest.http-addr", "127.0.0.1:8080")
	setDefault(fs, "admin.addr", "127.0.0.1:9100")
	setDefault(fs, "detect.grpc-addr", "127.0.0.1:7075")
	setDefault(fs, "log.format", "text")
}

// runDev runs the collector, the sink and the detector in one process with
// one admin port, on an embedded Kafka and a local ClickHouse unless real
// ones are given. Ctrl-C stops it in order: the collector drains; the sink
// flushes and the detector writes its outputs and checkpoint; then
// ClickHouse and Kafka stop.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg devConfig
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "kafka.brokers":
			cfg.kafkaGiven = true
		case "clickhouse.addr":
			cfg.chGiven = true
		case "ingest.keys-file":
			cfg.keysGiven = true
		case "detect.checkpoint":
			cfg.ckptGiven = true
		case "detect.token", "detect.tokens-file":
			cfg.tokenGiven = true
		case "adminapi.tokens-file":
			cfg.adminTokensGiven = true
		}
	})
	cc := &cfg.collector
	if !cfg.keysGiven {
		cc.Ingest.KeysFile = filepath.Join(cfg.dir, "keys.json")
	}
	cc.Ingest.AllowAnonymousHTTP = true // dev mode only: the prototype's keyless curl examples
	// The admin API is on in dev, with a generated token; its files live
	// in the dev dir (the dev detector reads the same rules file).
	if !cfg.adminTokensGiven {
		t, err := ensureSecretFile(cfg.dir, "admin-token", "cat_")
		if err != nil {
			return err
		}
		cfg.adminToken = t
		cc.AdminAPI.TokensFile = filepath.Join(cfg.dir, "admin-token")
	}
	if cc.AdminAPI.RulesFile == "" {
		cc.AdminAPI.RulesFile = filepath.Join(cfg.dir, "rules.json")
	}
	if cc.AdminAPI.AppsFile == "" {
		cc.AdminAPI.AppsFile = filepath.Join(cfg.dir, "apps.json")
	}
	if err := cc.validateAdminAPI(); err != nil {
		return err
	}
	sc := &cfg.sink
	sc.Kafka, sc.Admin, sc.Log = cc.Kafka, cc.Admin, cc.Log
	if err := cc.Ingest.Validate(); err != nil {
		return err
	}
	if err := sc.validate(); err != nil {
		return err
	}
	dc := &cfg.detector
	dc.Kafka, dc.Admin, dc.Log = cc.Kafka, cc.Admin, cc.Log
	if dc.Rules.File == "" { // the rules the dev admin API writes
		dc.Rules.File = filepath.Join(cfg.dir, "rules.json")
		if cc.AdminAPI.RulesFile != "" {
			dc.Rules.File = cc.AdminAPI.RulesFile
		}
	}
	if !cfg.ckptGiven {
		dc.Engine.Checkpoint = filepath.Join(cfg.dir, "detector.ckpt")
	}
	if !cfg.tokenGiven {
		t, err := ensureDevToken(cfg.dir)
		if err != nil {
			return err
		}
		cfg.detToken, dc.Server.Token = t, t
	}
	devConsole(fs, &cfg)
	dc.Warehouse = sc.Warehouse // anomalies to the dev ClickHouse
	if err := dc.validate(); err != nil {
		return err
	}
	logger, err := cc.Log.logger(stderr)
	if err != nil {
		return err
	}
	key, err := ensureDevKey(cfg.dir, cc.Ingest.KeysFile, cfg.app)
	if err != nil {
		return err
	}
	if cc.AdminAPI.Enabled() { // the dev key's app is listed with the others
		if err := adminapi.NewStore(cc.AdminAPI.AppsFile, cc.AdminAPI.KeysFile, cc.AdminAPI.RulesFile).EnsureApp(cfg.app, "dev app"); err != nil {
			return err
		}
	}
	keys, err := ingest.LoadKeyring(cc.Ingest.KeysFile)
	if err != nil {
		return err
	}
	reg := admin.NewRegistry()
	adm := admin.New(cc.Admin, reg)
	if err := adm.Listen(); err != nil {
		return fmt.Errorf("%w (is another `causality dev` running?)", err)
	}

	kafkaNote := "given"
	if !cfg.kafkaGiven {
		k, err := devstack.StartKafka(filepath.Join(cfg.dir, "kafka"), cfg.kafkaPort, logger)
		if err != nil {
			return err
		}
		defer k.Close() // last: after the sink committed its offsets
		cc.Kafka.Brokers, sc.Kafka.Brokers, dc.Kafka.Brokers = k.Addr(), k.Addr(), k.Addr()
		kafkaNote = "embedded, data in " + filepath.Join(cfg.dir, "kafka")
	}
	chNote := "given"
	if !cfg.chGiven {
		ch, err := devstack.StartClickHouse(ctx, devstack.ClickHouseConfig{
			Bin: cfg.chBin, Dir: filepath.Join(cfg.dir, "clickhouse"), Port: cfg.chPort, HTTPPort: cfg.chHTTPPort,
			StartTimeout: cfg.chStartTimeout,
		}, logger)
		if err != nil {
			return err
		}
		defer ch.Stop() // after the sink flushed
		sc.Warehouse.Addr = ch.Addr()
		chNote = "local clickhouse-server, data in " + filepath.Join(cfg.dir, "clickhouse")
	}
	dc.Warehouse.Addr = sc.Warehouse.Addr
	logger.Info("dev stack starting", "app", cfg.app, "key", key, "kafka", cc.Kafka.Brokers, "clickhouse", sc.Warehouse.Addr)

	g, gctx := errgroup.WithContext(ctx)
	// Shutdown order: the collector drains first; then the sink and the
	// detector get a few seconds to read what the collector wrote last; the
	// sink flushes, the detector drains its outputs and checkpoints.
	collectorDone := make(chan struct{})
	sinkCtx, stopSink := context.WithCancel(context.WithoutCancel(gctx))
	defer stopSink()
	detCtx, stopDetector := context.WithCancel(context.WithoutCancel(gctx))
	defer stopDetector()
	go func() {
		<-collectorDone
		if ctx.Err() != nil { // a clean stop, not a failure
			waitCaughtUp(sc.Kafka, []string{sc.Group, dc.Group}, 5*time.Second, logger)
		}
		stopSink()
		stopDetector()
	}()
	g.Go(func() error { return adm.Serve(gctx) })
	g.Go(func() error {
		defer close(collectorDone)
		return serveCollector(gctx, *cc, keys, logger.With("component", "collector"), reg, adm)
	})
	g.Go(func() error { return serveSink(sinkCtx, *sc, logger, reg, adm) })
	g.Go(func() error { return serveDetector(detCtx, *dc, logger, reg, adm) })
	g.Go(func() error {
		if waitReady(gctx, "http://"+adm.Addr()+"/readyz", logger) {
			printDevBanner(stdout, &cfg, key, adm.Addr(), kafkaNote, chNote)
		}
		return nil
	})
	err = g.Wait()
	logger.Info("dev stack stopped")
	return err
}

// ensureDevKey returns the dev app's key from dir/key when keysFile still
// binds it to app, or creates a new key: its hash goes into keysFile (other
// entries are kept) and the key itself into dir/key, readable by the owner
// only.
func ensureDevKey(dir, keysFile, app string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("dev dir: %w", err)
	}
	kf, err := readKeysFile(keysFile)
	if err != nil {
		return "", err
	}
	keyFile := filepath.Join(dir, "key")
	if b, err := os.ReadFile(keyFile); err == nil {
		key := strings.TrimSpace(string(b))
		for _, e := range kf.Keys {
			if e.SHA256 == ingest.HashKey(key) && e.AppID == app && !e.Revoked {
				return key, os.Chmod(keyFile, 0o600)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read dev key: %w", err)
	}
	key := ingest.NewKey()
	kf.Keys = append(kf.Keys, ingest.KeyEntry{AppID: app, Name: "dev", SHA256: ingest.HashKey(key)})
	if err := writeKeysFile(keysFile, kf); err != nil {
		return "", fmt.Errorf("write %s: %w", keysFile, err)
	}
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write dev key: %w", err)
	}
	return key, os.Chmod(keyFile, 0o600)
}

// waitCaughtUp waits up to limit until each group has committed every
// message of the events topic.
func waitCaughtUp(kcfg kafka.Config, groups []string, limit time.Duration, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		total := int64(0)
		var err error
		for _, g := range groups {
			lag, lerr := kafka.GroupLag(ctx, kcfg, g, kcfg.Topic)
			err = errors.Join(err, lerr)
			for _, n := range lag {
				total += n
			}
		}
		if err == nil && total == 0 {
			return
		}
		select {
		case <-ctx.Done():
			logger.Warn("sink and detector stopping before they caught up; they read the rest at the next start", "lag", total, "err", err)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ensureSecretFile returns the token kept in dir/name, or makes one (prefix
// and random text) and keeps it there, readable by the owner only.
func ensureSecretFile(dir, name, prefix string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("dev dir: %w", err)
	}
	file := filepath.Join(dir, name)
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	if t := strings.TrimSpace(string(b)); len(t) >= 16 && !strings.ContainsAny(t, " \t\n") {
		return t, os.Chmod(file, 0o600)
	}
	t := prefix + rand.Text()
	if err := os.WriteFile(file, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", file, err)
	}
	return t, os.Chmod(file, 0o600)
}

// ensureDevToken returns the detector token kept in dir/detector-token, or
// makes one and keeps it there, readable by the owner only.
func ensureDevToken(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("dev dir: %w", err)
	}
	file := filepath.Join(dir, "detector-token")
	b, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read detector token: %w", err)
	}
	if t := strings.TrimSpace(string(b)); len(t) >= 16 && !strings.ContainsAny(t, " \t") {
		return t, os.Chmod(file, 0o600)
	}
	t := "cdt_" + rand.Text()
	if err := os.WriteFile(file, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write detector token: %w", err)
	}
	return t, os.Chmod(file, 0o600)
}

// waitReady polls url until it answers 200 (true) or ctx ends (false),
// logging what is not ready every 30 s.
func waitReady(ctx context.Context, url string, logger *slog.Logger) bool {
	last := time.Now()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return true
			}
			if time.Since(last) > 30*time.Second {
				last = time.Now()
				logger.Warn("dev stack not ready yet", "readyz", strings.TrimSpace(string(b)))
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func printDevBanner(w io.Writer, cfg *devConfig, key, adminAddr, kafkaNote, chNote string) {
	in := cfg.collector.Ingest
	wh := cfg.sink.Warehouse
	det := cfg.detector.Server
	detToken, bearer := "from -detect.token or -detect.tokens-file", "TOKEN"
	if cfg.detToken != "" {
		detToken = cfg.detToken + ", saved in " + filepath.Join(cfg.dir, "detector-token")
		bearer = cfg.detToken
	}
	// Only the flags that differ from the defaults of sim and sql.
	var simArgs, sqlArgs string
	if in.TCPAddr != "127.0.0.1:7070" {
		simArgs += " -sim.addr " + in.TCPAddr
	}
	if cfg.dir != devDir {
		simArgs += " -sim.key-file " + filepath.Join(cfg.dir, "key")
	}
	if wh.Addr != "127.0.0.1:9000" {
		sqlArgs += " -clickhouse.addr " + wh.Addr
	}
	if wh.Database != "causality" {
		sqlArgs += " -clickhouse.database " + wh.Database
	}
	fmt.Fprintf(w, `
Causality dev stack is ready (app %q).
  raw TCP      %s
  gRPC         %s   (grpcurl -plaintext %s list)
  HTTP         http://%s
  metrics      http://%s/metrics   (readiness: /readyz)
  Kafka        %s   (%s)
  ClickHouse   %s, database %s   (%s)
  ingest key   %s   (saved in %s)
  detector     %s   (gRPC DetectorService, token %s)
  admin API    %s   (AdminService on the gRPC and HTTP ports, %s)
  console      %s

Try:
  curl -X POST http://%s/v1/events/ingest -H "Content-Type: application/json" \
    -d '{"event": {"appId": "%s", "deviceId": "device-001", "screenView": {"screenName": "HomeScreen"}}}'
  causality sim -sim.duration 20s%s
  causality sql%s
  grpcurl -plaintext -H "authorization: Bearer %s" -d '{"from_oldest": true}' \
    %s causality.detect.v1.DetectorService/Subscribe

Ctrl-C stops everything (the collector drains, the sink and the detector flush first).
`, cfg.app, in.TCPAddr, in.GRPCAddr, in.GRPCAddr, in.HTTPAddr, adminAddr,
		cfg.collector.Kafka.Brokers, kafkaNote, wh.Addr, wh.Database, chNote,
		key, filepath.Join(cfg.dir, "key"), det.Addr, detToken, adminNote(cfg), adminHint(cfg), consoleNote(cfg), in.HTTPAddr, cfg.app, simArgs, sqlArgs, bearer, det.Addr)
}

// adminNote and adminHint describe the dev admin API for the banner.
func adminNote(cfg *devConfig) string {
	a := cfg.collector.AdminAPI
	switch {
	case !a.Enabled():
		return "off"
	case cfg.adminToken != "":
		return "token " + cfg.adminToken + ", saved in " + a.TokensFile
	}
	return "tokens in " + a.TokensFile
}

func adminHint(cfg *devConfig) string {
	if !cfg.collector.AdminAPI.Enabled() {
		return "-adminapi.tokens-file enables it"
	}
	if in := cfg.collector.Ingest; in.GRPCAddr != "127.0.0.1:7071" {
		return "causality admin -addr " + in.GRPCAddr + " apps list"
	}
	return "causality admin apps list"
}

// devConsole points the console at the dev detector (its address and the
// token file dev keeps) and at the topics it writes, unless -console.*
// flags say otherwise.
func devConsole(fs *flag.FlagSet, cfg *devConfig) {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	con, det := &cfg.collector.Console, &cfg.detector
	if !given["console.detector-addr"] && !given["console.detector-token-file"] && cfg.detToken != "" {
		addr := det.Server.Addr
		if host, port, err := net.SplitHostPort(addr); err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		con.DetectorAddr, con.DetectorTokenFile = addr, filepath.Join(cfg.dir, "detector-token")
	}
	if !given["console.anomalies-topic"] {
		con.AnomaliesTopic = det.AnomaliesTopic
	}
	if !given["console.firings-topic"] && det.Rules.Enabled() {
		con.FiringsTopic = det.Rules.FiringsTopic
	}
}

// consoleNote says where the console is, for the banner.
func consoleNote(cfg *devConfig) string {
	if !cfg.collector.AdminAPI.Enabled() {
		return "off (it needs the admin API)"
	}
	return "http://" + cfg.collector.Ingest.HTTPAddr + "/console/   (sign in with the admin token)"
}
