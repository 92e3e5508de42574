// Package console is the web console served by the collector under
// /console/: static pages embedded in the binary (web/), and a small API
// under /console/api/ behind the admin token. In flow the live tails of the
// events, anomalies and rule-firings topics (read from the end of every
// partition, no consumer group) and the detector's baselines (its gRPC
// GetBaseline); out flow server-sent events and JSON. Rules, apps and keys
// are not handled here: the pages call the AdminService's HTTP JSON
// endpoints directly with the same token.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	"causality.dev/services/internal/kafka"
)

// Default topics of the other tails (the events topic is -kafka.topic).
const (
	AnomaliesTopic = "causality.anomalies.v1"
	FiringsTopic   = "causality.rules.firings.v1"
)

//go:embed web
var web embed.FS

// Config configures the console.
type Config struct {
	DetectorAddr      string
	DetectorTokenFile string
	AnomaliesTopic    string
	FiringsTopic      string
	// MaxRate bounds the items per second one stream sends to a browser;
	// the rest are counted as dropped.
	MaxRate float64
	// MaxStreams bounds the live streams open at once (each reads every
	// partition of its topic).
	MaxStreams int
	// MaxScan bounds the messages one cohort scan reads.
	MaxScan int
}

// RegisterFlags registers the -console.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DetectorAddr, "console.detector-addr", "", "gRPC address of the detector whose baselines the console shows (empty = no baselines page)")
	fs.StringVar(&c.DetectorTokenFile, "console.detector-token-file", "", "file holding a detector bearer token (first non-comment line)")
	fs.StringVar(&c.AnomaliesTopic, "console.anomalies-topic", AnomaliesTopic, "topic of the detector's anomalies, tailed by the console")
	fs.StringVar(&c.FiringsTopic, "console.firings-topic", FiringsTopic, "topic of rule firings, tailed by the console")
	fs.Float64Var(&c.MaxRate, "console.max-rate", 50, "items per second one live stream sends to a browser; more are sampled out")
	fs.IntVar(&c.MaxStreams, "console.max-streams", 32, "live streams open at once")
	fs.IntVar(&c.MaxScan, "console.max-scan", 200000, "events one cohort scan (current window of the baselines page) reads at most")
}

// Validate reports the first invalid setting.
func (c *Config) Validate() error {
	switch {
	case c.AnomaliesTopic == "" || c.FiringsTopic == "":
		return errors.New("-console.anomalies-topic and -console.firings-topic must not be empty")
	case c.MaxRate <= 0:
		return errors.New("-console.max-rate must be positive")
	case c.MaxStreams < 1:
		return errors.New("-console.max-streams must be at least 1")
	case c.MaxScan < 1:
		return errors.New("-console.max-scan must be at least 1")
	case c.DetectorTokenFile != "" && c.DetectorAddr == "":
		return errors.New("-console.detector-token-file needs -console.detector-addr")
	case c.DetectorAddr != "" && c.DetectorTokenFile == "":
		return errors.New("-console.detector-addr needs -console.detector-token-file (the detector wants a token)")
	}
	return nil
}

// Authorizer says whether a request carries an admin token
// (adminapi.Tokens implements it).
type Authorizer interface {
	Authorized(r *http.Request) bool
}

// Source reads a topic as tc says: it positions itself, calls ready, then
// calls fn with each message until ctx ends (or, with tc.ToEnd, the end is
// reached). A missing topic is an error wrapping kafka.ErrNoTopic.
type Source func(ctx context.Context, tc kafka.TailConfig, ready func(partitions int), fn func(kafka.Message) error) error

// KafkaSource is a Source on the brokers of cfg.
func KafkaSource(cfg kafka.Config) Source {
	return func(ctx context.Context, tc kafka.TailConfig, ready func(int), fn func(kafka.Message) error) error {
		t, err := kafka.NewTail(ctx, cfg, tc)
		if err != nil {
			return err
		}
		ready(t.Partitions())
		return t.Run(ctx, fn)
	}
}

// Baseliner answers the detector's GetBaseline.
type Baseliner interface {
	GetBaseline(ctx context.Context, req *detectv1.GetBaselineRequest) (*detectv1.GetBaselineResponse, error)
}

// Console serves the pages and the API.
type Console struct {
	cfg         Config
	eventsTopic string
	auth        Authorizer
	source      Source
	baselines   Baseliner // nil: no detector configured
	logger      *slog.Logger
	metrics     *metrics
	streams     atomic.Int64
}

type metrics struct {
	streams *prometheus.GaugeVec
	items   *prometheus.CounterVec
	denied  prometheus.Counter
}

// New returns a console reading eventsTopic and the topics of cfg through
// source. baselines may be nil (no detector).
func New(cfg Config, eventsTopic string, auth Authorizer, source Source, baselines Baseliner, logger *slog.Logger, reg prometheus.Registerer) (*Console, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if auth == nil || source == nil || eventsTopic == "" {
		return nil, errors.New("console: an authorizer, a source and the events topic are required")
	}
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "causality_console_streams",
			Help: "Live console streams open, by stream.",
		}, []string{"stream"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_console_items_total",
			Help: "Messages read by console streams, by stream and result (sent, filtered, dropped by the rate limit, undecodable).",
		}, []string{"stream", "result"}),
		denied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "causality_console_unauthorized_total",
			Help: "Console API requests refused for a missing or wrong admin token.",
		}),
	}
	for _, c := range []prometheus.Collector{m.streams, m.items, m.denied} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return &Console{cfg: cfg, eventsTopic: eventsTopic, auth: auth, source: source, baselines: baselines, logger: logger, metrics: m}, nil
}

// Handler serves /console/ (pages, no token needed: they hold no data) and
// /console/api/ (admin token required). Streams end when ctx ends, so
// that a draining HTTP server is not held open by them.
func (c *Console) Handler(ctx context.Context) http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(web, "web")
	files := http.StripPrefix("/console/", http.FileServer(http.FS(static)))
	mux.Handle("/console/", securityHeaders(files))
	mux.Handle("/console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	api := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, c.authorized(h)) }
	api("GET /console/api/info", c.handleInfo)
	api("GET /console/api/events", func(w http.ResponseWriter, r *http.Request) { c.serveStream(ctx, w, r, eventsStream) })
	api("GET /console/api/anomalies", func(w http.ResponseWriter, r *http.Request) { c.serveStream(ctx, w, r, anomaliesStream) })
	api("GET /console/api/firings", func(w http.ResponseWriter, r *http.Request) { c.serveStream(ctx, w, r, firingsStream) })
	api("GET /console/api/cohorts", c.handleCohorts)
	api("GET /console/api/baseline", c.handleBaseline)
	mux.Handle("/console/api/", c.authorized(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "no such console endpoint")
	}))
	return mux
}

// authorized serves h only to requests with an admin token.
func (c *Console) authorized(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if !c.auth.Authorized(r) {
			c.metrics.denied.Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="causality-admin"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "missing or wrong admin token (Authorization: Bearer TOKEN)")
			return
		}
		h(w, r)
	})
}

// securityHeaders keeps the pages to their own origin: no inline script,
// no framing, no referrer with tokens in it.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "INVALID_ARGUMENT", "use GET")
			return
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}

func (c *Console) handleInfo(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"events_topic":    c.eventsTopic,
		"anomalies_topic": c.cfg.AnomaliesTopic,
		"firings_topic":   c.cfg.FiringsTopic,
		"detector":        c.baselines != nil,
		"max_rate":        c.cfg.MaxRate,
		"max_backfill":    maxBackfill,
		"event_types":     eventTypes,
		"anomaly_kinds":   anomalyKinds,
	})
}

// eventTypes and anomalyKinds fill the pages' pickers.
var eventTypes, anomalyKinds = func() ([]string, []string) {
	var types []string
	for _, name := range payloadFields {
		types = append(types, name)
	}
	slices.Sort(types)
	var kinds []string
	for i := 1; ; i++ {
		name, ok := detectv1.AnomalyKind_name[int32(i)]
		if !ok {
			return types, kinds
		}
		kinds = append(kinds, name)
	}
}()

// writeError answers with the admin API's error shape.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"code": code, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
