// Package ingest holds the collector's front doors: raw TCP frames (tcp.go),
// the gRPC IngestService (grpc.go), the HTTP JSON/protobuf API and the
// WebSocket stream (http.go, ws.go). Every door ends in the same pipeline:
// stamp, validate, drop duplicates, rate-limit, Publisher.Publish, then one
// result per event back to the client.
package ingest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
)

// Config configures the front doors.
type Config struct {
	TCPAddr        string
	GRPCAddr       string
	HTTPAddr       string
	KeysFile       string
	MaxFrameBytes  int
	Credits        int
	Heartbeat      time.Duration
	MaxBatchEvents int
	HelloTimeout   time.Duration
	DrainTimeout   time.Duration
	PublishTimeout time.Duration
	DedupSize      int
	RateLimit      float64
	MaxConnections int
	Limits         Limits

	// AllowAnonymousHTTP lets HTTP requests without a key through, taking
	// the app from each event. Only `causality dev` sets it; it has no flag.
	AllowAnonymousHTTP bool
}

// RegisterFlags registers the -ingest.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.TCPAddr, "ingest.tcp-addr", ":7070", "raw TCP frames listen address")
	fs.StringVar(&c.GRPCAddr, "ingest.grpc-addr", ":7071", "gRPC IngestService listen address")
	fs.StringVar(&c.HTTPAddr, "ingest.http-addr", ":8080", "HTTP API and WebSocket (/v1/stream) listen address")
	fs.StringVar(&c.KeysFile, "ingest.keys-file", "", "JSON file of hashed ingest keys (see `causality keys`); re-read when it changes")
	fs.IntVar(&c.MaxFrameBytes, "ingest.max-frame-bytes", DefaultMaxFrameBytes, "largest frame accepted, advertised in Welcome")
	fs.IntVar(&c.Credits, "ingest.credits", 8, "unacknowledged batches a client may have in flight")
	fs.DurationVar(&c.Heartbeat, "ingest.heartbeat", 15*time.Second, "heartbeat interval advertised in Welcome; silent streams close after 3")
	fs.IntVar(&c.MaxBatchEvents, "ingest.max-batch-events", 1000, "most events one batch may carry")
	fs.DurationVar(&c.HelloTimeout, "ingest.hello-timeout", 10*time.Second, "time a new stream has to send Hello")
	fs.DurationVar(&c.DrainTimeout, "ingest.drain-timeout", 5*time.Second, "on shutdown, how long streams get to collect their acks after Drain")
	fs.DurationVar(&c.PublishTimeout, "ingest.publish-timeout", 10*time.Second, "how long one batch may wait for Kafka before its events are answered retry")
	fs.IntVar(&c.DedupSize, "ingest.dedup-size", 262144, "recently accepted event ids remembered to answer duplicates (0 disables)")
	fs.Float64Var(&c.RateLimit, "ingest.rate-limit", 0, "events per second per app before events are answered rate_limited (0 = unlimited)")
	fs.IntVar(&c.MaxConnections, "ingest.max-connections", 10000, "open streams per collector; memory is bounded by this x credits x max frame")
	c.Limits = DefaultLimits
	fs.DurationVar(&c.Limits.MaxFuture, "ingest.max-future", DefaultLimits.MaxFuture, "events further ahead of the server clock (after skew correction) are invalid")
	fs.DurationVar(&c.Limits.MaxPast, "ingest.max-past", DefaultLimits.MaxPast, "events older than this are invalid")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.MaxFrameBytes < 1024 || c.MaxFrameBytes > 64<<20:
		return fmt.Errorf("-ingest.max-frame-bytes: %d is outside 1 KiB..64 MiB", c.MaxFrameBytes)
	case c.Credits < 1 || c.Credits > 1024:
		return fmt.Errorf("-ingest.credits: %d is outside 1..1024", c.Credits)
	case c.Heartbeat < 100*time.Millisecond:
		return fmt.Errorf("-ingest.heartbeat: %s is below 100ms", c.Heartbeat)
	case c.MaxBatchEvents < 1:
		return errors.New("-ingest.max-batch-events must be at least 1")
	case c.HelloTimeout <= 0 || c.DrainTimeout <= 0 || c.PublishTimeout <= 0:
		return errors.New("-ingest.hello-timeout, -ingest.drain-timeout and -ingest.publish-timeout must be positive")
	case c.RateLimit < 0:
		return errors.New("-ingest.rate-limit must not be negative")
	case c.MaxConnections < 1:
		return errors.New("-ingest.max-connections must be at least 1")
	case c.Limits.MaxEventBytes == 0:
		return errors.New("ingest limits are not set (use RegisterFlags or DefaultLimits)")
	}
	return nil
}

// Server is the collector's front doors.
type Server struct {
	cfg     Config
	keys    *Keyring
	pipe    *pipeline
	metrics *metrics
	logger  *slog.Logger
	slots   chan struct{}
	wsWG    sync.WaitGroup

	// Set before Serve by RegisterGRPC and Handle: other services on the
	// collector's ports (the admin API, the console).
	grpcOpts     []grpc.ServerOption
	grpcRegister []func(*grpc.Server)
	routes       []route

	tcp, grpcLn, http net.Listener
}

// NewServer wires the pipeline. dlq may be nil.
func NewServer(cfg Config, keys *Keyring, pub Publisher, dlq DeadLetterer, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("register ingest metrics: %w", err)
	}
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "causality_ingest_keys_reload_errors_total",
		Help: "Reloads of the ingest keys file that failed (the previous keys stayed in use).",
	}, func() float64 { return float64(keys.ReloadErrors()) })); err != nil {
		return nil, fmt.Errorf("register ingest metrics: %w", err)
	}
	return &Server{
		cfg:     cfg,
		keys:    keys,
		metrics: m,
		logger:  logger,
		slots:   make(chan struct{}, cfg.MaxConnections),
		pipe: &pipeline{
			pub: pub, dlq: dlq, limits: cfg.Limits, timeout: cfg.PublishTimeout,
			seen: newRecentIDs(cfg.DedupSize), limiter: newAppLimiter(cfg.RateLimit),
			metrics: m, logger: logger, now: time.Now,
		},
	}, nil
}

// Listen opens the three listeners, so that a busy port fails at start.
func (s *Server) Listen() error {
	var err error
	if s.tcp, err = net.Listen("tcp", s.cfg.TCPAddr); err != nil {
		return fmt.Errorf("listen tcp %s: %w", s.cfg.TCPAddr, err)
	}
	if s.grpcLn, err = net.Listen("tcp", s.cfg.GRPCAddr); err != nil {
		return fmt.Errorf("listen grpc %s: %w", s.cfg.GRPCAddr, err)
	}
	if s.http, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("listen http %s: %w", s.cfg.HTTPAddr, err)
	}
	return nil
}

// Addrs returns the bound TCP, gRPC and HTTP addresses (after Listen).
func (s *Server) Addrs() (tcp, grpc, http string) {
	return s.tcp.Addr().String(), s.grpcLn.Addr().String(), s.http.Addr().String()
}

// Serve serves all front doors until ctx ends, then drains them: streams get
// Drain and their outstanding acks, HTTP requests finish. It returns nil after
// a clean drain.
func (s *Server) Serve(ctx context.Context) error {
	if s.tcp == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.serveTCP(gctx, s.tcp) })
	gs := s.newGRPCServer(gctx)
	g.Go(func() error {
		if err := gs.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serve grpc: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(s.cfg.DrainTimeout + s.cfg.PublishTimeout):
			gs.Stop()
		}
		return nil
	})
	hs := &http.Server{Handler: s.Handler(gctx), ReadHeaderTimeout: 10 * time.Second}
	g.Go(func() error {
		if err := hs.Serve(s.http); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout+s.cfg.PublishTimeout)
		defer cancel()
		err := hs.Shutdown(sctx)
		s.wsWG.Wait() // hijacked WebSocket streams drain through gctx
		return err
	})
	s.logger.Info("collector listening", "tcp", s.tcp.Addr().String(), "grpc", s.grpcLn.Addr().String(), "http", s.http.Addr().String())
	return g.Wait()
}

type route struct {
	pattern string
	h       http.Handler
}

// RegisterGRPC has register add services to the collector's gRPC server,
// built with opts too (interceptors must only act on their own services).
// Call it before Serve.
func (s *Server) RegisterGRPC(register func(*grpc.Server), opts ...grpc.ServerOption) {
	s.grpcRegister = append(s.grpcRegister, register)
	s.grpcOpts = append(s.grpcOpts, opts...)
}

// Handle adds a route to the collector's HTTP port (http.ServeMux
// patterns). Call it before Serve.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.routes = append(s.routes, route{pattern, h})
}

// acquire takes a connection slot; false when the collector is full.
func (s *Server) acquire() bool {
	select {
	case s.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (s *Server) release() { <-s.slots }

func (s *Server) newSession(st stream, transport, remote string) *session {
	return &session{srv: s, st: st, transport: transport, remote: remote, logger: s.logger.With("transport", transport, "remote", remote)}
}

func (s *Server) count(transport string, why disconnect) {
	s.metrics.disconnects.WithLabelValues(transport, string(why)).Inc()
}
