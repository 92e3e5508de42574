package webhook

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var secret = []byte("0123456789abcdef-secret")

// endpoint is an httptest receiver that verifies signatures and answers
// the statuses it is given, then 200.
type endpoint struct {
	mu       sync.Mutex
	statuses []int
	got      []string // ids accepted
	attempts int
	bad      int // requests whose signature did not verify
	srv      *httptest.Server
}

func newEndpoint(t *testing.T, statuses ...int) *endpoint {
	t.Helper()
	e := &endpoint{statuses: statuses}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e.mu.Lock()
		defer e.mu.Unlock()
		e.attempts++
		if err := Verify(secret, r.Header.Get(HeaderSignature), body, time.Now(), 5*time.Minute); err != nil || r.Header.Get("Content-Type") != "application/json" {
			e.bad++
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if len(e.statuses) > 0 {
			s := e.statuses[0]
			e.statuses = e.statuses[1:]
			w.WriteHeader(s)
			return
		}
		e.got = append(e.got, r.Header.Get(HeaderID))
	}))
	t.Cleanup(e.srv.Close)
	return e
}

type letters struct {
	mu  sync.Mutex
	got []Letter
}

func (l *letters) DeadLetter(_ context.Context, x Letter) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, x)
	return nil
}

func newSender(t *testing.T, dlq DeadLetters, urls ...string) *Sender {
	t.Helper()
	cfg := Config{URLs: urls, Timeout: 5 * time.Second, MaxAttempts: 3, Backoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond, DedupSize: 100}
	cfg.WithSecret(secret)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, dlq, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDeliverRetriesAndDeadLetters(t *testing.T) {
	tests := []struct {
		name         string
		statuses     []int
		wantAttempts int
		delivered    bool
		letterStatus int
	}{
		{"first try", nil, 1, true, 0},
		{"two server errors then ok", []int{500, 503}, 3, true, 0},
		{"rate limited then ok", []int{429}, 2, true, 0},
		{"always failing: dead-lettered after the last try", []int{500, 502, 504}, 3, false, 504},
		{"client error: dead-lettered at once", []int{400}, 1, false, 400},
		{"redirect: never followed", []int{302}, 1, false, 302},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep := newEndpoint(t, tt.statuses...)
			dlq := &letters{}
			s := newSender(t, dlq, ep.srv.URL)
			if err := s.Deliver(context.Background(), "an-1", []byte(`{"id":"an-1"}`)); err != nil {
				t.Fatal(err)
			}
			if ep.attempts != tt.wantAttempts || ep.bad != 0 {
				t.Errorf("%d attempts (%d badly signed), want %d", ep.attempts, ep.bad, tt.wantAttempts)
			}
			if got := len(ep.got) == 1; got != tt.delivered {
				t.Errorf("delivered %v, want %v", ep.got, tt.delivered)
			}
			if tt.delivered && len(dlq.got) != 0 {
				t.Errorf("dead letters for a delivered body: %+v", dlq.got)
			}
			if !tt.delivered {
				if len(dlq.got) != 1 || dlq.got[0].ID != "an-1" || dlq.got[0].Status != tt.letterStatus || dlq.got[0].Attempts != tt.wantAttempts || string(dlq.got[0].Body) != `{"id":"an-1"}` {
					t.Errorf("dead letters %+v, want one for an-1 with status %d after %d attempts", dlq.got, tt.letterStatus, tt.wantAttempts)
				}
			}
		})
	}
}

func TestDeliverOncePerID(t *testing.T) {
	a, b := newEndpoint(t), newEndpoint(t, 500) // b fails once: each endpoint is on its own
	s := newSender(t, &letters{}, a.srv.URL, b.srv.URL)
	for range 3 {
		if err := s.Deliver(context.Background(), "an-1", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Deliver(context.Background(), "an-2", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	for name, ep := range map[string]*endpoint{"a": a, "b": b} {
		if len(ep.got) != 2 || ep.got[0] != "an-1" || ep.got[1] != "an-2" {
			t.Errorf("endpoint %s got %v, want an-1 and an-2 once each", name, ep.got)
		}
	}
	// A restarted sender remembers what was delivered.
	s2 := newSender(t, &letters{}, a.srv.URL, b.srv.URL)
	if err := s2.Restore(s.Save()); err != nil {
		t.Fatal(err)
	}
	if err := s2.Deliver(context.Background(), "an-1", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if len(a.got) != 2 {
		t.Errorf("after a restart an-1 was delivered again: %v", a.got)
	}
	if err := s2.Restore([]byte("garbage")); err == nil {
		t.Error("Restore accepted garbage")
	}
}

func TestDeliverStopsWithContext(t *testing.T) {
	ep := newEndpoint(t, 500, 500, 500)
	dlq := &letters{}
	cfg := Config{URLs: []string{ep.srv.URL}, Timeout: time.Second, MaxAttempts: 3, Backoff: time.Hour, MaxBackoff: time.Hour, DedupSize: 10}
	cfg.WithSecret(secret)
	s, err := New(cfg, dlq, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Deliver(ctx, "an-1", []byte(`{}`)) }()
	for {
		ep.mu.Lock()
		n := ep.attempts
		ep.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Deliver after cancel: %v, want context.Canceled", err)
	}
	if len(dlq.got) != 0 {
		t.Error("a cancelled delivery was dead-lettered: it must be retried by the caller instead")
	}
	if s.isDone(ep.srv.URL + "\x00an-1") {
		t.Error("a cancelled delivery was marked done: a later Deliver would drop it")
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_767_571_200, 0)
	body := []byte(`{"id":"an-1","score":7}`)
	good := SignatureHeader(secret, now.Unix(), body)
	tests := []struct {
		name   string
		header string
		body   []byte
		at     time.Time
		want   error
	}{
		{"valid", good, body, now.Add(30 * time.Second), nil},
		{"body changed", good, []byte(`{"id":"an-1","score":9}`), now, ErrBadSignature},
		{"other secret", SignatureHeader([]byte("another-secret-0123"), now.Unix(), body), body, now, ErrBadSignature},
		{"replayed an hour later", good, body, now.Add(time.Hour), ErrStale},
		{"timestamp moved forward without the secret", "t=" + "1767574800" + good[len("t=1767571200"):], body, now.Add(time.Hour), ErrBadSignature},
		{"no header", "", body, now, ErrNoSignature},
		{"two signatures, one right (rotation)", good + ",v1=00ff", body, now, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Verify(secret, tt.header, tt.body, tt.at, 5*time.Minute); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	os.WriteFile(good, []byte("  0123456789abcdef-secret\n"), 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc"), 0o600)
	base := func() Config {
		return Config{URLs: []string{"https://hooks.example.com/x"}, SecretFile: good, Timeout: time.Second, MaxAttempts: 3, Backoff: time.Second, MaxBackoff: time.Minute, DedupSize: 10}
	}
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"valid", func(*Config) {}, true},
		{"no endpoints needs no secret", func(c *Config) { c.URLs, c.SecretFile = nil, "" }, true},
		{"not http", func(c *Config) { c.URLs = []string{"ftp://x"} }, false},
		{"no secret", func(c *Config) { c.SecretFile = "" }, false},
		{"missing secret file", func(c *Config) { c.SecretFile = filepath.Join(dir, "none") }, false},
		{"short secret", func(c *Config) { c.SecretFile = short }, false},
		{"no attempts", func(c *Config) { c.MaxAttempts = 0 }, false},
		{"max backoff below backoff", func(c *Config) { c.MaxBackoff = time.Millisecond }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.change(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate = %v, want ok %v", err, tt.ok)
			}
		})
	}
	c := base()
	c.Validate()
	if string(c.secret) != "0123456789abcdef-secret" {
		t.Errorf("secret %q: surrounding space must be trimmed", c.secret)
	}
}

func TestSendersShareMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	var senders []*Sender
	for _, ep := range []*endpoint{newEndpoint(t), newEndpoint(t)} {
		cfg := Config{URLs: []string{ep.srv.URL}, Timeout: 5 * time.Second, MaxAttempts: 1, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, DedupSize: 10}
		cfg.WithSecret(secret)
		s, err := New(cfg, &letters{}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.WrapRegistererWith(prometheus.Labels{"webhook": "rules"}, reg))
		if err != nil {
			t.Fatalf("a second sender on one registerer: %v", err)
		}
		senders = append(senders, s)
	}
	for i, s := range senders {
		if err := s.Deliver(context.Background(), "id-"+string(rune('a'+i)), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var delivered float64
	for _, mf := range mfs {
		if mf.GetName() == "causality_webhook_deliveries_total" {
			for _, m := range mf.GetMetric() {
				delivered += m.GetCounter().GetValue()
			}
		}
	}
	if delivered != 2 {
		t.Errorf("causality_webhook_deliveries_total = %v, want the 2 deliveries of both senders", delivered)
	}
	// A collector of another shape under the same name is still an error.
	if err := reg.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "causality_webhook_attempt_seconds", Help: "x"})); err == nil {
		t.Error("registering a clashing collector succeeded")
	}
	if _, err := New(Config{Timeout: time.Second, MaxAttempts: 1, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, DedupSize: 1}, &letters{}, slog.New(slog.NewTextHandler(io.Discard, nil)),
		prometheus.WrapRegistererWith(prometheus.Labels{"other": "x"}, reg)); err == nil {
		t.Error("a sender whose metrics clash with the registered ones was accepted")
	}
}
