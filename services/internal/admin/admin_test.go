package admin

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// TestReadyz: not ready before any check is added, nor while a check fails,
// nor once the server is stopping; /healthz answers throughout.
func TestReadyz(t *testing.T) {
	s := New(Config{Addr: "127.0.0.1:0"}, prometheus.NewRegistry())
	h := s.Handler()
	steps := []struct {
		name     string
		do       func()
		code     int
		contains string
	}{
		{"no checks yet", func() {}, 503, "starting"},
		{"kafka ok", func() { s.AddCheck("kafka", func(context.Context) error { return nil }) }, 200, "kafka: ok"},
		{"clickhouse failing", func() {
			s.AddCheck("clickhouse", func(context.Context) error { return errors.New("last insert failed: connection refused") })
		}, 503, "clickhouse: last insert failed: connection refused"},
		{"clickhouse back", func() { s.AddCheck("clickhouse", func(context.Context) error { return nil }) }, 200, "clickhouse: ok\nkafka: ok"},
	}
	for _, st := range steps {
		st.do()
		if code, body := get(t, h, "/readyz"); code != st.code || !strings.Contains(body, st.contains) {
			t.Errorf("%s: /readyz = %d %q, want %d containing %q", st.name, code, body, st.code, st.contains)
		}
		if code, _ := get(t, h, "/healthz"); code != 200 {
			t.Errorf("%s: /healthz = %d", st.name, code)
		}
	}

	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var limit ShutdownLimit
	served := make(chan error, 1)
	go func() { served <- s.Serve(WithShutdownLimit(ctx, &limit)) }()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if code, body := get(t, h, "/readyz"); code != 503 || !strings.Contains(body, "stopping") {
		t.Errorf("after the stop: /readyz = %d %q, want 503 stopping", code, body)
	}
	select {
	case <-limit.Recorded():
	default:
		t.Error("Serve did not record the shutdown limit")
	}
	if got := limit.Timeout(); got != 0 {
		t.Errorf("recorded %s, want the config's 0", got)
	}
}

func TestShutdownTimeoutFlag(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    time.Duration
		wantErr string
	}{
		{nil, 25 * time.Second, ""},
		{[]string{"-shutdown-timeout=40s"}, 40 * time.Second, ""},
		{[]string{"-shutdown-timeout=0"}, 0, ""},
		{[]string{"-shutdown-timeout=-1s"}, 0, "-shutdown-timeout must not be negative"},
	} {
		var c Config
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		c.RegisterFlags(fs)
		if err := fs.Parse(append(tc.args, "-admin.addr=127.0.0.1:0")); err != nil {
			t.Fatal(err)
		}
		srv := New(c, prometheus.NewRegistry())
		err := srv.Listen()
		if err == nil {
			srv.ln.Close()
		}
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: Listen = %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || c.ShutdownTimeout != tc.want {
			t.Errorf("%v: %s, %v; want %s", tc.args, c.ShutdownTimeout, err, tc.want)
		}
	}
}
