package detect

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

const testToken = "s3cret-token-for-tests"

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type noBaselines struct{}

func (noBaselines) Baseline(*detectv1.Cohort, int64) (*detectv1.Baseline, bool) { return nil, false }

// startServer serves ring on 127.0.0.1:0 and returns a client.
func startServer(t *testing.T, ring *Ring, b Baseliner) (detectv1.DetectorServiceClient, *Server) {
	t.Helper()
	srv, err := NewServer(ServerConfig{Addr: "127.0.0.1:0"}, ring, b, []string{testToken}, discard(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return detectv1.NewDetectorServiceClient(conn), srv
}

func authed(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken)
}

func anomaly(app string, kind detectv1.AnomalyKind, score float64) *detectv1.Anomaly {
	return &detectv1.Anomaly{Id: app + kind.String(), AppId: app, Kind: kind, Score: score}
}

func TestServerAuth(t *testing.T) {
	client, _ := startServer(t, NewRing(10, 1), noBaselines{})
	tests := []struct {
		name string
		md   []string
		code codes.Code
	}{
		{"no token", nil, codes.Unauthenticated},
		{"wrong token", []string{"authorization", "Bearer nope-nope-nope-nope"}, codes.Unauthenticated},
		{"not a bearer", []string{"authorization", testToken}, codes.Unauthenticated},
		{"right token", []string{"authorization", "Bearer " + testToken}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.AppendToOutgoingContext(context.Background(), tt.md...)
			_, err := client.ListAnomalies(ctx, &detectv1.ListAnomaliesRequest{})
			if status.Code(err) != tt.code {
				t.Errorf("ListAnomalies: %v, want %s", err, tt.code)
			}
			st, err := client.Subscribe(ctx, &detectv1.SubscribeRequest{})
			if err == nil && tt.code != codes.OK {
				_, err = st.Recv()
			}
			if tt.code != codes.OK && status.Code(err) != tt.code {
				t.Errorf("Subscribe: %v, want %s", err, tt.code)
			}
		})
	}
}

func TestServerTokensFile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string
		cfg     ServerConfig
		want    int
		wantErr bool
	}{
		{"file with comments", "# subscribers\nalpha-0123456789abcdef\n\n  beta-0123456789abcdef  \n", ServerConfig{}, 2, false},
		{"flag and file", "alpha-0123456789abcdef\n", ServerConfig{Token: "flag-token-0123456789"}, 2, false},
		{"short token", "short\n", ServerConfig{}, 0, true},
		{"empty file", "# nothing\n", ServerConfig{}, 0, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.TokensFile = filepath.Join(dir, string(rune('a'+i)))
			if err := os.WriteFile(cfg.TokensFile, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := cfg.Tokens()
			if (err != nil) != tt.wantErr || len(got) != tt.want {
				t.Errorf("Tokens() = %v, %v; want %d tokens, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	if _, err := (&ServerConfig{TokensFile: filepath.Join(dir, "missing")}).Tokens(); err == nil {
		t.Error("a missing tokens file is not an error")
	}
}

// recv reads n responses or fails.
func recv(t *testing.T, st grpc.ServerStreamingClient[detectv1.SubscribeResponse], n int) []*detectv1.SubscribeResponse {
	t.Helper()
	var out []*detectv1.SubscribeResponse
	for range n {
		r, err := st.Recv()
		if err != nil {
			t.Fatalf("Recv after %d of %d: %v", len(out), n, err)
		}
		out = append(out, r)
	}
	return out
}

func TestSubscribeFiltersAndResume(t *testing.T) {
	ring := NewRing(100, 1)
	client, srv := startServer(t, ring, noBaselines{})
	now := time.UnixMilli(t0)
	mix, replay := detectv1.AnomalyKind_ANOMALY_KIND_MIX_SHIFT, detectv1.AnomalyKind_ANOMALY_KIND_REPLAY
	filter := &detectv1.Filter{AppIds: []string{"shop"}, Kinds: []detectv1.AnomalyKind{mix}, MinScore: 5}

	ring.Append(now, anomaly("shop", mix, 50)) // before the subscription: not sent
	ctx, cancel := context.WithCancel(authed(context.Background()))
	st, err := client.Subscribe(ctx, &detectv1.SubscribeRequest{Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, srv, 1)
	ring.Append(now,
		anomaly("shop", mix, 9),  // match
		anomaly("other", mix, 9), // other app
		anomaly("shop", replay, 9),
		anomaly("shop", mix, 1), // score too low
		anomaly("shop", mix, 6), // match
	)
	got := recv(t, st, 2)
	if got[0].GetAnomaly().GetScore() != 9 || got[1].GetAnomaly().GetScore() != 6 {
		t.Errorf("filtered stream sent scores %v, %v; want 9 and 6", got[0].GetAnomaly().GetScore(), got[1].GetAnomaly().GetScore())
	}
	token := got[1].GetResumeToken()
	cancel() // disconnect
	waitSubscribers(t, srv, 0)

	// While disconnected, more is found.
	ring.Append(now, anomaly("shop", mix, 7), anomaly("shop", replay, 9), anomaly("shop", mix, 8))
	st2, err := client.Subscribe(authed(context.Background()), &detectv1.SubscribeRequest{Filter: filter, ResumeToken: token})
	if err != nil {
		t.Fatal(err)
	}
	missed := recv(t, st2, 2)
	if missed[0].GetAnomaly().GetScore() != 7 || missed[1].GetAnomaly().GetScore() != 8 {
		t.Errorf("after resume got scores %v and %v, want the 7 and the 8 found while away", missed[0].GetAnomaly().GetScore(), missed[1].GetAnomaly().GetScore())
	}
	// Offsets increase by one per anomaly found, matching or not.
	if a, b := missed[0].GetAnomaly().GetOffset(), missed[1].GetAnomaly().GetOffset(); b != a+2 {
		t.Errorf("offsets %d then %d, want two apart (one non-matching between)", a, b)
	}
	// And live again.
	ring.Append(now, anomaly("shop", mix, 10))
	if live := recv(t, st2, 1); live[0].GetAnomaly().GetScore() != 10 {
		t.Errorf("live after resume: %v", live[0].GetAnomaly())
	}
}

func TestSubscribeOutOfRange(t *testing.T) {
	ring := NewRing(3, 1)
	client, _ := startServer(t, ring, noBaselines{})
	now := time.UnixMilli(t0)
	for range 5 { // offsets 1..5; 1 and 2 evicted
		ring.Append(now, anomaly("shop", detectv1.AnomalyKind_ANOMALY_KIND_REPLAY, 3))
	}
	tests := []struct {
		name  string
		req   *detectv1.SubscribeRequest
		code  codes.Code
		first uint64
	}{
		{"token before what is retained", &detectv1.SubscribeRequest{ResumeToken: "1"}, codes.OutOfRange, 0},
		{"token of the last evicted is fine", &detectv1.SubscribeRequest{ResumeToken: "2"}, codes.OK, 3},
		{"token ahead of the detector", &detectv1.SubscribeRequest{ResumeToken: "99"}, codes.OutOfRange, 0},
		{"garbage token", &detectv1.SubscribeRequest{ResumeToken: "x"}, codes.InvalidArgument, 0},
		{"from the oldest", &detectv1.SubscribeRequest{FromOldest: true}, codes.OK, 3},
		{"unknown kind", &detectv1.SubscribeRequest{Filter: &detectv1.Filter{Kinds: []detectv1.AnomalyKind{99}}}, codes.InvalidArgument, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(authed(context.Background()))
			defer cancel()
			st, err := client.Subscribe(ctx, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			r, err := st.Recv()
			if status.Code(err) != tt.code {
				t.Fatalf("Recv: %v, want %s", err, tt.code)
			}
			if tt.code == codes.OK && r.GetAnomaly().GetOffset() != tt.first {
				t.Errorf("first offset %d, want %d", r.GetAnomaly().GetOffset(), tt.first)
			}
		})
	}
}

func TestListAnomalies(t *testing.T) {
	ring := NewRing(100, 1)
	client, _ := startServer(t, ring, noBaselines{})
	for i := range 7 {
		kind := detectv1.AnomalyKind_ANOMALY_KIND_REPLAY
		if i%2 == 1 {
			kind = detectv1.AnomalyKind_ANOMALY_KIND_MIX_SHIFT
		}
		ring.Append(time.UnixMilli(t0), anomaly("shop", kind, float64(i)))
	}
	var scores []float64
	token := ""
	for page := 0; ; page++ {
		resp, err := client.ListAnomalies(authed(context.Background()), &detectv1.ListAnomaliesRequest{
			Filter: &detectv1.Filter{Kinds: []detectv1.AnomalyKind{detectv1.AnomalyKind_ANOMALY_KIND_REPLAY}}, PageSize: 2, PageToken: token,
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range resp.GetAnomalies() {
			scores = append(scores, a.GetScore())
		}
		token = resp.GetNextPageToken()
		if len(resp.GetAnomalies()) < 2 || page > 10 {
			break
		}
	}
	if want := []float64{0, 2, 4, 6}; !slices.Equal(scores, want) {
		t.Errorf("paged scores %v, want %v", scores, want)
	}
	ring.Append(time.UnixMilli(t0), anomaly("shop", detectv1.AnomalyKind_ANOMALY_KIND_REPLAY, 8))
	resp, err := client.ListAnomalies(authed(context.Background()), &detectv1.ListAnomaliesRequest{PageToken: token})
	if err != nil || len(resp.GetAnomalies()) != 1 || resp.GetAnomalies()[0].GetScore() != 8 {
		t.Errorf("continuing later from the last token: %v, %v; want the one new anomaly", resp.GetAnomalies(), err)
	}
	if _, err := client.ListAnomalies(authed(context.Background()), &detectv1.ListAnomaliesRequest{PageSize: -1}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("negative page size: %v", err)
	}
}

func TestGetBaseline(t *testing.T) {
	d := newDetector(t, testConfig())
	for i := range 100 {
		d.Observe(&eventv1.Event{EventId: string(rune('a' + i)), AppId: "shop", DeviceId: "d", TimestampMs: t0 + int64(i)*1000, DeviceContext: androidCtx(),
			Payload: &eventv1.Event_ScrollEvent{ScrollEvent: &eventv1.ScrollEvent{}}})
	}
	d.Flush()
	e, err := NewEngine(EngineConfig{RingSize: 10}, d, nil, discard(), prometheus.NewRegistry(), func() time.Time { return time.UnixMilli(t0) })
	if err != nil {
		t.Fatal(err)
	}
	client, _ := startServer(t, e.Ring(), e)
	known := &detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_ANDROID}
	resp, err := client.GetBaseline(authed(context.Background()), &detectv1.GetBaselineRequest{Cohort: known})
	if err != nil {
		t.Fatal(err)
	}
	if b := resp.GetBaseline(); b.GetWindows() != 2 || b.GetEventMix()["scroll_event"] != 1 || b.GetWindowMs() != minute {
		t.Errorf("baseline: %d windows, mix %v, window %d ms", b.GetWindows(), b.GetEventMix(), b.GetWindowMs())
	}
	tests := []struct {
		name string
		req  *detectv1.GetBaselineRequest
		code codes.Code
	}{
		{"unknown cohort", &detectv1.GetBaselineRequest{Cohort: &detectv1.Cohort{AppId: "shop", AppVersion: "9"}}, codes.NotFound},
		{"window size not configured", &detectv1.GetBaselineRequest{Cohort: known, WindowMs: 12345}, codes.NotFound},
		{"no app", &detectv1.GetBaselineRequest{}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := client.GetBaseline(authed(context.Background()), tt.req); status.Code(err) != tt.code {
				t.Errorf("GetBaseline: %v, want %s", err, tt.code)
			}
		})
	}
}

func waitSubscribers(t *testing.T, srv *Server, n float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(srv.subscribers) != n {
		if time.Now().After(deadline) {
			t.Fatalf("subscribers stayed %v, want %v", testutil.ToFloat64(srv.subscribers), n)
		}
		time.Sleep(time.Millisecond)
	}
}
