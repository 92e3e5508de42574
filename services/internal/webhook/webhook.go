// Package webhook delivers JSON bodies to HTTP endpoints. A body flows in
// through Sender.Deliver with an id; out of it flows one POST per endpoint,
// signed Stripe-style so the receiver can check the sender and reject
// replays, retried with exponential backoff, and after the last try handed
// to a DeadLetters. Each (endpoint, id) is delivered at most once by this
// sender: retries of Deliver with the same id are dropped.
//
// Headers of every POST:
//
//	Content-Type: application/json
//	Causality-Webhook-Id: <id>                        (receivers dedup on it)
//	Causality-Signature: t=<unix seconds>,v1=<hex>    (HMAC-SHA256 of "<t>.<body>")
//
// Receivers call Verify with the shared secret and a tolerance (e.g. 5
// minutes): a captured request replayed later fails the timestamp check, and
// the timestamp cannot be changed without the secret.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Header names.
const (
	HeaderID        = "Causality-Webhook-Id"
	HeaderSignature = "Causality-Signature"
)

// Config says where to deliver and how hard to try.
type Config struct {
	URLs        []string
	SecretFile  string
	Timeout     time.Duration // per attempt
	MaxAttempts int
	Backoff     time.Duration // before the second attempt; doubled after each
	MaxBackoff  time.Duration
	DedupSize   int // (endpoint, id) pairs remembered as delivered

	secret []byte
}

// RegisterFlags registers the flags under prefix, e.g. "detect.webhook"
// gives -detect.webhook.url.
func (c *Config) RegisterFlags(fs *flag.FlagSet, prefix string) {
	fs.Func(prefix+".url", "endpoint to POST each finding to as JSON (repeatable; comma-separated also works)", func(s string) error {
		for _, u := range strings.Split(s, ",") {
			if u = strings.TrimSpace(u); u != "" {
				c.URLs = append(c.URLs, u)
			}
		}
		return nil
	})
	fs.StringVar(&c.SecretFile, prefix+".secret-file", "", "file holding the HMAC secret shared with the endpoints (required with a URL)")
	fs.DurationVar(&c.Timeout, prefix+".timeout", 10*time.Second, "time one POST may take")
	fs.IntVar(&c.MaxAttempts, prefix+".max-attempts", 6, "POSTs per endpoint before the body is dead-lettered")
	fs.DurationVar(&c.Backoff, prefix+".backoff", time.Second, "wait before the second attempt, doubled after each")
	fs.DurationVar(&c.MaxBackoff, prefix+".max-backoff", time.Minute, "longest wait between attempts")
	fs.IntVar(&c.DedupSize, prefix+".dedup-size", 100_000, "delivered ids remembered per endpoint to deliver each once")
}

// Validate checks the settings and reads the secret.
func (c *Config) Validate() error {
	for _, u := range c.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return fmt.Errorf("webhook url %q is not an http(s) URL", u)
		}
	}
	switch {
	case c.MaxAttempts < 1:
		return errors.New("webhook max-attempts must be at least 1")
	case c.Timeout <= 0 || c.Backoff <= 0 || c.MaxBackoff < c.Backoff:
		return errors.New("webhook timeout and backoff must be positive, max-backoff at least backoff")
	case c.DedupSize < 1:
		return errors.New("webhook dedup-size must be at least 1")
	}
	if len(c.URLs) == 0 {
		return nil
	}
	if c.SecretFile == "" {
		if c.secret != nil {
			return nil
		}
		return errors.New("webhook secret-file is required to sign deliveries")
	}
	b, err := os.ReadFile(c.SecretFile)
	if err != nil {
		return fmt.Errorf("webhook secret: %w", err)
	}
	if c.secret = bytes.TrimSpace(b); len(c.secret) < 16 {
		return fmt.Errorf("webhook secret in %s: at least 16 bytes are required", c.SecretFile)
	}
	return nil
}

// WithSecret sets the secret directly (tests, embedding).
func (c *Config) WithSecret(secret []byte) { c.secret = secret }

// Letter is a body that could not be delivered.
type Letter struct {
	ID, URL  string
	Body     []byte
	Attempts int
	Status   int    // HTTP status of the last attempt, 0 when there was none
	Error    string // why the last attempt failed
}

// DeadLetters keeps what could not be delivered.
type DeadLetters interface {
	DeadLetter(ctx context.Context, l Letter) error
}

// DeadLetterFunc adapts a function.
type DeadLetterFunc func(ctx context.Context, l Letter) error

// DeadLetter calls f.
func (f DeadLetterFunc) DeadLetter(ctx context.Context, l Letter) error { return f(ctx, l) }

// Sender delivers to the configured endpoints.
type Sender struct {
	cfg    Config
	client *http.Client
	dlq    DeadLetters
	logger *slog.Logger
	now    func() time.Time

	mu    sync.Mutex
	done  map[string]bool // url + "\x00" + id
	order []string        // FIFO of done, for the bound

	deliveries *prometheus.CounterVec
	attempts   *prometheus.CounterVec
	latency    prometheus.Histogram
}

// New returns a sender; cfg must have passed Validate. A process with
// several kinds of senders gives each kind its own registerer, e.g.
// prometheus.WrapRegistererWith(prometheus.Labels{"webhook": "anomalies"}, reg);
// senders on the same registerer add up in the same metrics.
func New(cfg Config, dlq DeadLetters, logger *slog.Logger, reg prometheus.Registerer) (*Sender, error) {
	if len(cfg.URLs) > 0 && len(cfg.secret) == 0 {
		return nil, errors.New("webhook sender: no secret (call Config.Validate)")
	}
	if dlq == nil {
		return nil, errors.New("webhook sender: a dead-letter destination is required")
	}
	s := &Sender{
		cfg: cfg, dlq: dlq, logger: logger, now: time.Now, done: map[string]bool{},
		client: &http.Client{
			Timeout: cfg.Timeout,
			// A redirect is a misconfigured endpoint, never followed: the body
			// and its signature go only where they were configured to.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_webhook_deliveries_total",
			Help: "Bodies per endpoint by result: delivered, dead_lettered, duplicate (already delivered, dropped).",
		}, []string{"result"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "causality_webhook_attempts_total",
			Help: "POSTs by outcome: ok, client_error, server_error, redirect, network, timeout.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "causality_webhook_attempt_seconds", Help: "Time of one POST.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
	}
	// Senders on one registerer share its metrics (e.g. one sender per
	// webhook of the rules, all counted under webhook="rules").
	var err error
	if s.deliveries, err = register(reg, s.deliveries); err != nil {
		return nil, err
	}
	if s.attempts, err = register(reg, s.attempts); err != nil {
		return nil, err
	}
	if s.latency, err = register(reg, s.latency); err != nil {
		return nil, err
	}
	return s, nil
}

// register registers c, or returns the collector already registered in
// its place.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("register webhook metrics: %w", err)
	}
	return c, nil
}

// Deliver POSTs body to every endpoint (concurrently) and returns when each
// has it or its dead letter is written. It fails only when ctx ends first
// or a dead letter cannot be written; calling it again then is safe.
func (s *Sender) Deliver(ctx context.Context, id string, body []byte) error {
	errs := make([]error, len(s.cfg.URLs))
	var wg sync.WaitGroup
	for i, u := range s.cfg.URLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.deliverOne(ctx, u, id, body)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Sender) deliverOne(ctx context.Context, endpoint, id string, body []byte) error {
	key := endpoint + "\x00" + id
	if s.isDone(key) {
		s.deliveries.WithLabelValues("duplicate").Inc()
		return nil
	}
	backoff := s.cfg.Backoff
	for attempt := 1; ; attempt++ {
		status, retryAfter, err := s.post(ctx, endpoint, id, body)
		if err == nil {
			s.markDone(key)
			s.deliveries.WithLabelValues("delivered").Inc()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("deliver %s to %s: %w", id, endpoint, ctx.Err())
		}
		if permanent(status) || attempt >= s.cfg.MaxAttempts {
			l := Letter{ID: id, URL: endpoint, Body: body, Attempts: attempt, Status: status, Error: err.Error()}
			if err := s.dlq.DeadLetter(ctx, l); err != nil {
				return fmt.Errorf("dead-letter %s for %s: %w", id, endpoint, err)
			}
			s.markDone(key)
			s.deliveries.WithLabelValues("dead_lettered").Inc()
			s.logger.Warn("webhook dead-lettered", "id", id, "url", endpoint, "attempts", attempt, "status", status, "err", err)
			return nil
		}
		wait := min(max(backoff, retryAfter), s.cfg.MaxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("deliver %s to %s: %w", id, endpoint, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// permanent statuses are not retried: the request itself is wrong for the
// endpoint (redirects and 4xx other than timeout, too early, rate limit).
func permanent(status int) bool {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests:
		return false
	case status >= 300 && status < 500:
		return true
	}
	return false
}

// post makes one attempt; status is 0 when no response came.
func (s *Sender) post(ctx context.Context, endpoint, id string, body []byte) (status int, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "causality-webhook/1")
	req.Header.Set(HeaderID, id)
	req.Header.Set(HeaderSignature, SignatureHeader(s.cfg.secret, s.now().Unix(), body))
	start := time.Now()
	resp, err := s.client.Do(req)
	s.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		outcome := "network"
		if errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout") {
			outcome = "timeout"
		}
		s.attempts.WithLabelValues(outcome).Inc()
		return 0, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		s.attempts.WithLabelValues("ok").Inc()
		return resp.StatusCode, 0, nil
	case resp.StatusCode < 400:
		s.attempts.WithLabelValues("redirect").Inc()
	case resp.StatusCode < 500:
		s.attempts.WithLabelValues("client_error").Inc()
	default:
		s.attempts.WithLabelValues("server_error").Inc()
	}
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		retryAfter = time.Duration(secs) * time.Second
	}
	return resp.StatusCode, retryAfter, fmt.Errorf("%s answered %s", endpoint, resp.Status)
}

func (s *Sender) isDone(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done[key]
}

func (s *Sender) markDone(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[key] {
		return
	}
	s.done[key] = true
	s.order = append(s.order, key)
	if len(s.order) > s.cfg.DedupSize*max(len(s.cfg.URLs), 1) {
		delete(s.done, s.order[0])
		s.order = s.order[1:]
	}
}

// Save returns the delivered (endpoint, id) pairs, oldest first, so that a
// restarted sender does not deliver them again.
func (s *Sender) Save() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []byte(strings.Join(s.order, "\n"))
}

// Restore takes what Save returned.
func (s *Sender) Restore(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	for _, key := range strings.Split(string(b), "\n") {
		if !strings.Contains(key, "\x00") {
			return fmt.Errorf("webhook state: %q is not an endpoint and an id", key)
		}
		s.markDone(key)
	}
	return nil
}

// Sign is the hex HMAC-SHA256 of "<ts>.<body>" under secret.
func Sign(secret []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// SignatureHeader is the value of Causality-Signature.
func SignatureHeader(secret []byte, ts int64, body []byte) string {
	return "t=" + strconv.FormatInt(ts, 10) + ",v1=" + Sign(secret, ts, body)
}

// Errors of Verify.
var (
	ErrNoSignature  = errors.New("webhook: no valid Causality-Signature header")
	ErrBadSignature = errors.New("webhook: signature does not match")
	ErrStale        = errors.New("webhook: timestamp outside the tolerance (a replay?)")
)

// Verify checks a Causality-Signature header against the body: the HMAC
// must match (constant-time) and the timestamp be within tolerance of now.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	var ts int64
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			t, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return ErrNoSignature
			}
			ts = t
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if ts == 0 || len(sigs) == 0 {
		return ErrNoSignature
	}
	want := []byte(Sign(secret, ts, body))
	ok := false
	for _, s := range sigs {
		ok = hmac.Equal([]byte(s), want) || ok
	}
	if !ok {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	return nil
}
