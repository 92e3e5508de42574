// Package admin serves the operator port of every service: /metrics from the
// injected registry, /healthz (the process is alive), /readyz (each named
// check passes, e.g. Kafka reachable; never before the service added its
// checks, nor once it is stopping) and /debug/pprof. Its config also holds
// -shutdown-timeout, which main enforces (ShutdownLimit).
package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures the admin port, and how long the service may take to
// stop.
type Config struct {
	Addr string
	// ShutdownTimeout bounds the stop of the process after SIGTERM; 0 = no
	// bound. Enforced by the caller through ShutdownLimit.
	ShutdownTimeout time.Duration
}

// RegisterFlags registers -admin.addr and -shutdown-timeout.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "admin.addr", ":9100", "listen address of /metrics, /healthz, /readyz and /debug/pprof")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 25*time.Second, "after SIGTERM or Ctrl-C, how long the service may take to drain, flush and checkpoint before it exits anyway, with an error (0 = no limit); keep it below the platform's kill timeout")
}

// Validate checks the config.
func (c *Config) Validate() error {
	if c.ShutdownTimeout < 0 {
		return fmt.Errorf("-shutdown-timeout must not be negative, got %s", c.ShutdownTimeout)
	}
	return nil
}

// ShutdownLimit carries -shutdown-timeout from a service's admin config to
// the caller that enforces it: the caller runs the service with a context
// from WithShutdownLimit, and Serve records the timeout there.
type ShutdownLimit struct {
	mu  sync.Mutex
	d   time.Duration
	set chan struct{} // closed once recorded
}

type limitKey struct{}

// WithShutdownLimit returns ctx carrying l.
func WithShutdownLimit(ctx context.Context, l *ShutdownLimit) context.Context {
	return context.WithValue(ctx, limitKey{}, l)
}

func (l *ShutdownLimit) record(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d = d
	if l.set == nil {
		l.set = make(chan struct{})
	}
	select {
	case <-l.set:
	default:
		close(l.set)
	}
}

// Recorded is closed once a service has recorded its timeout; commands
// without an admin port never do.
func (l *ShutdownLimit) Recorded() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.set == nil {
		l.set = make(chan struct{})
	}
	return l.set
}

// Timeout is the recorded -shutdown-timeout (0: no bound).
func (l *ShutdownLimit) Timeout() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.d
}

// Check reports whether a dependency is usable.
type Check func(ctx context.Context) error

// Server is the admin port.
type Server struct {
	cfg      Config
	gather   prometheus.Gatherer
	mu       sync.Mutex
	checks   map[string]Check
	ln       net.Listener
	stopping atomic.Bool
}

// NewRegistry returns a registry with the Go and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// New returns an admin server exposing gather.
func New(cfg Config, gather prometheus.Gatherer) *Server {
	return &Server{cfg: cfg, gather: gather, checks: map[string]Check{}}
}

// AddCheck adds a readiness check.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	s.checks[name] = c
	s.mu.Unlock()
}

// Listen checks the config and binds the port, so a busy port fails at
// start.
func (s *Server) Listen() error {
	if err := s.cfg.Validate(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen admin %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (after Listen).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handler is the admin mux.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", s.ready)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	s.mu.Unlock()
	sort.Strings(names)
	var b strings.Builder
	ok := true
	switch {
	case s.stopping.Load():
		ok = false
		b.WriteString("stopping\n")
	case len(names) == 0:
		ok = false
		b.WriteString("starting: no readiness checks yet\n")
	}
	for _, n := range names {
		s.mu.Lock()
		c := s.checks[n]
		s.mu.Unlock()
		if err := c(ctx); err != nil {
			ok = false
			fmt.Fprintf(&b, "%s: %v\n", n, err)
		} else {
			fmt.Fprintf(&b, "%s: ok\n", n)
		}
	}
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprint(w, b.String())
}

// Serve serves until ctx ends; from then on /readyz fails. It records
// -shutdown-timeout in the ShutdownLimit of ctx, if any.
func (s *Server) Serve(ctx context.Context) error {
	if l, ok := ctx.Value(limitKey{}).(*ShutdownLimit); ok {
		l.record(s.cfg.ShutdownTimeout)
	}
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		s.stopping.Store(true)
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	if err := hs.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve admin: %w", err)
	}
	return nil
}
