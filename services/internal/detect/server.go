package detect

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	"causality.dev/services/internal/bearer"
)

// ServerConfig configures the gRPC DetectorService.
type ServerConfig struct {
	Addr       string
	Token      string // one bearer token (-detect.token)
	TokensFile string // or a file of tokens, one per line (-detect.tokens-file)
}

// RegisterFlags registers -detect.grpc-addr, -detect.token and -detect.tokens-file.
func (c *ServerConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "detect.grpc-addr", ":7075", "gRPC DetectorService listen address")
	fs.StringVar(&c.Token, "detect.token", "", "bearer token subscribers must present (prefer -detect.tokens-file: flags show in ps)")
	fs.StringVar(&c.TokensFile, "detect.tokens-file", "", "file of bearer tokens, one per line ('#' starts a comment); read at start")
}

// Tokens returns the accepted tokens: -detect.token and the lines of
// -detect.tokens-file. At least one is required.
func (c *ServerConfig) Tokens() ([]string, error) {
	var tokens []string
	if c.Token != "" {
		tokens = append(tokens, c.Token)
	}
	if c.TokensFile != "" {
		b, err := os.ReadFile(c.TokensFile)
		if err != nil {
			return nil, fmt.Errorf("-detect.tokens-file: %w", err)
		}
		fromFile, err := bearer.Parse(b)
		if err != nil {
			return nil, fmt.Errorf("-detect.tokens-file %s: %w", c.TokensFile, err)
		}
		for _, t := range fromFile {
			if len(t) < 16 {
				return nil, fmt.Errorf("-detect.tokens-file %s: a token is one word of at least 16 characters", c.TokensFile)
			}
		}
		tokens = append(tokens, fromFile...)
	}
	if len(tokens) == 0 {
		return nil, errors.New("subscribers need a token: set -detect.tokens-file or -detect.token")
	}
	return tokens, nil
}

// Baseliner answers GetBaseline.
type Baseliner interface {
	Baseline(c *detectv1.Cohort, windowMs int64) (*detectv1.Baseline, bool)
}

// Server serves causality.detect.v1.DetectorService from a Ring.
type Server struct {
	detectv1.UnimplementedDetectorServiceServer
	cfg       ServerConfig
	ring      *Ring
	baselines Baseliner
	tokens    *bearer.Tokens
	logger    *slog.Logger
	ln        net.Listener
	done      chan struct{} // closed when Serve's ctx ends: streams return

	subscribers prometheus.Gauge
	sent        prometheus.Counter
	refused     *prometheus.CounterVec
}

// NewServer returns a server for the ring, accepting the tokens.
func NewServer(cfg ServerConfig, ring *Ring, baselines Baseliner, tokens []string, logger *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if len(tokens) == 0 {
		return nil, errors.New("detector server: at least one token is required")
	}
	s := &Server{
		cfg: cfg, ring: ring, baselines: baselines, tokens: bearer.New(tokens), logger: logger, done: make(chan struct{}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "causality_detect_subscribers", Help: "Open Subscribe streams."}),
		sent:        prometheus.NewCounter(prometheus.CounterOpts{Name: "causality_detect_subscribe_sent_total", Help: "Anomalies sent on Subscribe streams."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_detect_grpc_refused_total", Help: "DetectorService calls refused, by reason: unauthenticated, out_of_range, invalid.",
		}, []string{"reason"}),
	}
	for _, c := range []prometheus.Collector{s.subscribers, s.sent, s.refused} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register detector server metrics: %w", err)
		}
	}
	return s, nil
}

// Listen binds the address, so a busy port fails at start.
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen detector grpc %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (after Listen).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends, then ends the streams and stops.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(s.unaryAuth), grpc.ChainStreamInterceptor(s.streamAuth))
	detectv1.RegisterDetectorServiceServer(gs, s)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(detectv1.DetectorService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve detector grpc: %w", err)
	case <-ctx.Done():
	}
	hs.Shutdown()
	close(s.done)
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		gs.Stop()
	}
	return nil
}

// authorize checks the bearer token of a DetectorService call, comparing
// its hash with every accepted token's in constant time.
func (s *Server) authorize(ctx context.Context, method string) error {
	if !strings.HasPrefix(method, "/"+detectv1.DetectorService_ServiceDesc.ServiceName+"/") {
		return nil // health and reflection are open
	}
	if !s.tokens.AuthorizedContext(ctx) {
		s.refused.WithLabelValues("unauthenticated").Inc()
		return status.Error(codes.Unauthenticated, `missing or unknown token: send "authorization: Bearer TOKEN" metadata`)
	}
	return nil
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

// filter is a validated Filter.
type filter struct {
	apps     []string
	kinds    []detectv1.AnomalyKind
	minScore float64
}

func newFilter(f *detectv1.Filter) (filter, error) {
	for _, k := range f.GetKinds() {
		if _, ok := detectv1.AnomalyKind_name[int32(k)]; !ok || k == detectv1.AnomalyKind_ANOMALY_KIND_UNSPECIFIED {
			return filter{}, status.Errorf(codes.InvalidArgument, "filter.kinds: %d is not an anomaly kind", k)
		}
	}
	return filter{apps: f.GetAppIds(), kinds: f.GetKinds(), minScore: f.GetMinScore()}, nil
}

func (f filter) match(a *detectv1.Anomaly) bool {
	return (len(f.apps) == 0 || slices.Contains(f.apps, a.GetAppId())) &&
		(len(f.kinds) == 0 || slices.Contains(f.kinds, a.GetKind())) &&
		a.GetScore() >= f.minScore
}

// Tokens of Subscribe and ListAnomalies are the decimal offset of the last
// anomaly returned.
func formatToken(offset uint64) string { return strconv.FormatUint(offset, 10) }

func parseToken(t string) (uint64, error) {
	o, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "token %q was not given by this service", t)
	}
	return o, nil
}

// Subscribe streams anomalies after the token (or from now, or from the
// oldest retained), then live until the client or the server goes away.
func (s *Server) Subscribe(req *detectv1.SubscribeRequest, st grpc.ServerStreamingServer[detectv1.SubscribeResponse]) error {
	f, err := newFilter(req.GetFilter())
	if err != nil {
		s.refused.WithLabelValues("invalid").Inc()
		return err
	}
	var cursor uint64
	switch {
	case req.GetResumeToken() != "":
		if cursor, err = parseToken(req.GetResumeToken()); err != nil {
			s.refused.WithLabelValues("invalid").Inc()
			return err
		}
		if cursor >= s.ring.Next() {
			s.refused.WithLabelValues("out_of_range").Inc()
			return status.Errorf(codes.OutOfRange, "resume token %d is ahead of this detector (next offset %d): subscribe without a token", cursor, s.ring.Next())
		}
	case req.GetFromOldest():
		cursor = s.ring.Oldest() - 1
	default:
		cursor = s.ring.Next() - 1
	}
	s.subscribers.Inc()
	defer s.subscribers.Dec()
	for {
		items, gap, wait := s.ring.Read(cursor, 256)
		if gap {
			s.refused.WithLabelValues("out_of_range").Inc()
			return status.Errorf(codes.OutOfRange, "anomalies after offset %d are no longer retained (oldest %d): read them from ListAnomalies' store or the anomalies topic, then subscribe without a token", cursor, s.ring.Oldest())
		}
		for _, a := range items {
			cursor = a.GetOffset()
			if !f.match(a) {
				continue
			}
			if err := st.Send(&detectv1.SubscribeResponse{Anomaly: a, ResumeToken: formatToken(a.GetOffset())}); err != nil {
				return err
			}
			s.sent.Inc()
		}
		if len(items) > 0 {
			continue
		}
		select {
		case <-wait:
		case <-st.Context().Done():
			return st.Context().Err()
		case <-s.done:
			return status.Error(codes.Unavailable, "detector shutting down: resume with your last token")
		}
	}
}

// ListAnomalies pages through the retained anomalies.
func (s *Server) ListAnomalies(_ context.Context, req *detectv1.ListAnomaliesRequest) (*detectv1.ListAnomaliesResponse, error) {
	f, err := newFilter(req.GetFilter())
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Errorf(codes.InvalidArgument, "page_size %d is negative", size)
	case size == 0:
		size = 100
	case size > 1000:
		size = 1000
	}
	cursor := s.ring.Oldest() - 1
	if req.GetPageToken() != "" {
		if cursor, err = parseToken(req.GetPageToken()); err != nil {
			return nil, err
		}
	}
	resp := &detectv1.ListAnomaliesResponse{NextPageToken: formatToken(cursor)}
	for len(resp.Anomalies) < size {
		items, _, _ := s.ring.Read(cursor, 1000)
		if len(items) == 0 {
			break
		}
		for _, a := range items {
			cursor = a.GetOffset()
			if f.match(a) {
				resp.Anomalies = append(resp.Anomalies, a)
				if len(resp.Anomalies) == size {
					break
				}
			}
		}
		resp.NextPageToken = formatToken(cursor)
	}
	return resp, nil
}

// GetBaseline describes what was learned about a cohort.
func (s *Server) GetBaseline(_ context.Context, req *detectv1.GetBaselineRequest) (*detectv1.GetBaselineResponse, error) {
	c := req.GetCohort()
	if c.GetAppId() == "" {
		return nil, status.Error(codes.InvalidArgument, "cohort.app_id is required")
	}
	b, ok := s.baselines.Baseline(c, req.GetWindowMs())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no baseline for %s, %s at window %d ms", c.GetAppId(), CohortLabel(c), req.GetWindowMs())
	}
	return &detectv1.GetBaselineResponse{Baseline: b}, nil
}
