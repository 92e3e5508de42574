package main

// End-to-end test of `causality detector` on the real Kafka: events in
// through the events topic, the anomaly out through gRPC Subscribe, the
// anomalies topic and a signed webhook; then a restart from the checkpoint.

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
	"causality.dev/services/internal/webhook"
)

const detToken = "detector-test-token-0123456789"

func TestDetectorConfigErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no token", nil, "-detect.tokens-file or -detect.token"},
		{"windows not multiples", []string{"-detect.token=" + detToken, "-detect.windows=1m,90s"}, "multiple of"},
		{"bad rule", []string{"-detect.token=" + detToken, "-detect.rule=3/2"}, "-detect.rule"},
		{"webhook without secret", []string{"-detect.token=" + detToken, "-detect.webhook.url=https://hooks.example.com/a"}, "secret-file is required"},
		{"webhook not http", []string{"-detect.token=" + detToken, "-detect.webhook.url=mailto:x"}, "not an http(s) URL"},
		{"missing tokens file", []string{"-detect.tokens-file=" + filepath.Join(dir, "none")}, "-detect.tokens-file"},
		{"anomalies topic is the events topic", []string{"-detect.token=" + detToken, "-detect.anomalies-topic=causality.events.v1"}, "-detect.anomalies-topic"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"detector", "-admin.addr=127.0.0.1:0", "-detect.grpc-addr=127.0.0.1:0"}, tt.args...)
			err := run(context.Background(), args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%v) = %v, want an error mentioning %q", tt.args, err, tt.want)
			}
		})
	}
}

// hookReceiver verifies each webhook and records the anomaly ids.
type hookReceiver struct {
	mu     sync.Mutex
	ids    []string
	bodies [][]byte
	bad    int
	secret []byte
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := webhook.Verify(h.secret, r.Header.Get(webhook.HeaderSignature), body, time.Now(), 5*time.Minute); err != nil {
		h.bad++
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	h.ids = append(h.ids, r.Header.Get(webhook.HeaderID))
	h.bodies = append(h.bodies, body)
}

func (h *hookReceiver) received() ([]string, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.ids...), h.bad
}

func detLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func detFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startDetector runs serveDetector with args until the returned stop is
// called; stop waits for it to return.
func startDetector(t *testing.T, args []string) (stop func()) {
	stop, _ = startDetectorWithRegistry(t, args)
	return stop
}

// startDetectorWithRegistry also returns the detector's metrics registry.
func startDetectorWithRegistry(t *testing.T, args []string) (stop func(), reg *prometheus.Registry) {
	t.Helper()
	var cfg detectorConfig
	fs := flag.NewFlagSet("detector", flag.ContinueOnError)
	cfg.register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	reg = prometheus.NewRegistry()
	adm := admin.New(admin.Config{Addr: "127.0.0.1:0"}, reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveDetector(ctx, cfg, detLogger(), reg, adm) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serveDetector: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop, reg
}

func TestDetectorEndToEnd(t *testing.T) {
	kcfg := kafkatest.Config(t)
	dir := t.TempDir()
	secret := []byte("webhook-secret-0123456789")
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	hooks := &hookReceiver{secret: secret}
	hookSrv := httptest.NewServer(hooks)
	t.Cleanup(hookSrv.Close)
	anomaliesTopic, dlqTopic := kcfg.Topic+".anomalies", kcfg.Topic+".webhooks-dlq"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = kafka.DeleteTopics(ctx, kcfg, anomaliesTopic, dlqTopic)
	})
	grpcAddr := detFreeAddr(t)
	args := []string{
		"-kafka.brokers=" + kcfg.Brokers, "-kafka.topic=" + kcfg.Topic, "-kafka.dlq-topic=" + kcfg.DLQTopic,
		"-kafka.partitions=3",
		"-detect.group=" + kcfg.Topic + ".detector", "-detect.anomalies-topic=" + anomaliesTopic,
		"-detect.windows=1m", "-detect.lateness=1s", "-detect.idle-after=0",
		"-detect.grpc-addr=" + grpcAddr, "-detect.token=" + detToken,
		"-detect.checkpoint=" + filepath.Join(dir, "detector.ckpt"),
		"-detect.webhook.url=" + hookSrv.URL, "-detect.webhook.secret-file=" + secretFile,
		"-detect.webhook.dlq-topic=" + dlqTopic, "-detect.webhook.backoff=10ms",
	}
	stop, reg := startDetectorWithRegistry(t, args)

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := detectv1.NewDetectorServiceClient(conn)
	ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+detToken), 2*time.Minute)
	defer cancel()
	sub, err := client.Subscribe(ctx, &detectv1.SubscribeRequest{FromOldest: true,
		Filter: &detectv1.Filter{Kinds: []detectv1.AnomalyKind{detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS}}}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}

	// A device that launches and buys without a checkout; another device
	// ten minutes later moves event time on, so the window closes.
	base := time.Now().Add(-30 * time.Minute).Truncate(time.Minute).UnixMilli()
	ctxAndroid := &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_ANDROID, AppVersion: "2.4.1", BuildNumber: "2410", DeviceModel: "Pixel 8", Manufacturer: "Google"}
	ev := func(id, device string, seq uint64, at int64, set func(*eventv1.Event)) *eventv1.Event {
		e := &eventv1.Event{EventId: id, AppId: "shop", DeviceId: device, InstallId: device + "-i", SessionId: device + "-s", TimestampMs: at, Sequence: seq, DeviceContext: ctxAndroid}
		set(e)
		return e
	}
	events := []*eventv1.Event{
		ev("e1", "cheater", 1, base+1000, func(e *eventv1.Event) { e.Payload = &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{}} }),
		ev("e2", "cheater", 2, base+2000, func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Paywall"}}
		}),
		ev("e3", "cheater", 3, base+3000, func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{OrderId: "o1"}}
		}),
		ev("e4", "clock", 1, base+10*60_000, func(e *eventv1.Event) { e.Payload = &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{}} }),
	}
	producer, err := kafka.NewProducer(kcfg, detLogger(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := producer.Publish(ctx, events[:3]); err != nil {
		t.Fatal(err)
	}
	if err := producer.Publish(ctx, events[:3]); err != nil { // a collector retry: duplicates
		t.Fatal(err)
	}
	// Partitions are fetched in no fixed order: only once the first three
	// events are scored may the event that closes their window be sent, or
	// it could move event time on first and make them late.
	for deadline := time.Now().Add(time.Minute); scoredEvents(t, reg) < 3; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the detector scored %v of the first 3 events", scoredEvents(t, reg))
		}
	}
	if err := producer.Publish(ctx, events[3:]); err != nil {
		t.Fatal(err)
	}

	r, err := sub.Recv()
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	a := r.GetAnomaly()
	if a.GetDeviceId() != "cheater" || a.GetAppId() != "shop" || a.GetWindowStartMs() != base || a.GetWindowEndMs() != base+60_000 || a.GetDetectedAtMs() == 0 {
		t.Errorf("anomaly %v: want a funnel bypass by cheater in the first window", a)
	}
	if a.GetScore() != 1 {
		t.Errorf("score %v: the duplicates must have been ignored (one bypass)", a.GetScore())
	}

	// The same anomaly on the anomalies topic...
	msgs, err := kafka.ReadAll(ctx, kcfg, anomaliesTopic, 1)
	if err != nil {
		t.Fatalf("read %s: %v", anomaliesTopic, err)
	}
	var fromTopic detectv1.Anomaly
	if err := proto.Unmarshal(msgs[0].Value, &fromTopic); err != nil || fromTopic.GetId() != a.GetId() || string(msgs[0].Key) != "shop" {
		t.Errorf("anomalies topic: key %q, %v (%v); want the anomaly %s keyed by app", msgs[0].Key, fromTopic.GetId(), err, a.GetId())
	}
	// ... and at the webhook, signed.
	for {
		ids, bad := hooks.received()
		if bad > 0 {
			t.Fatalf("%d webhook deliveries with a bad signature", bad)
		}
		if len(ids) > 0 {
			if len(ids) != 1 || ids[0] != a.GetId() {
				t.Errorf("webhook ids %v, want [%s]", ids, a.GetId())
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no webhook delivery")
		}
		time.Sleep(10 * time.Millisecond)
	}
	hooks.mu.Lock()
	body := hooks.bodies[0]
	hooks.mu.Unlock()
	if !bytes.Contains(body, []byte(`"kind":"ANOMALY_KIND_FUNNEL_BYPASS"`)) || !bytes.Contains(body, []byte(`"device_id":"cheater"`)) {
		t.Errorf("webhook body %s", body)
	}
	stop()

	// Restart: the baseline and the anomaly are back from the checkpoint,
	// and the webhook is not delivered twice.
	startDetector(t, args)
	cohort := &detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_ANDROID}
	b, err := client.GetBaseline(ctx, &detectv1.GetBaselineRequest{Cohort: cohort}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("GetBaseline after restart: %v", err)
	}
	if b.GetBaseline().GetWindows() < 1 || b.GetBaseline().GetEventMix()["purchase_complete"] == 0 {
		t.Errorf("baseline after restart: %v", b.GetBaseline())
	}
	list, err := client.ListAnomalies(ctx, &detectv1.ListAnomaliesRequest{})
	if err != nil || len(list.GetAnomalies()) != 1 || list.GetAnomalies()[0].GetId() != a.GetId() {
		t.Errorf("ListAnomalies after restart: %v, %v", list.GetAnomalies(), err)
	}
	// Resuming from the last token works across the restart: nothing new
	// comes (the wait ends with the deadline), and no OUT_OF_RANGE.
	rctx, rcancel := context.WithTimeout(ctx, time.Second)
	defer rcancel()
	sub2, err := client.Subscribe(rctx, &detectv1.SubscribeRequest{ResumeToken: r.GetResumeToken()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub2.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("resuming after the restart: %v, want to wait for new anomalies", err)
	}
	if ids, _ := hooks.received(); len(ids) != 1 {
		t.Errorf("after restart the webhook got %v, want the one delivery", ids)
	}
}

// scoredEvents reads causality_detect_events_total{result="scored"}.
func scoredEvents(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "causality_detect_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "scored" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
