package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/sim"
	"causality.dev/services/internal/warehouse"
	"causality.dev/services/internal/warehousetest"
)

// The prototype's README examples, verbatim (keyless).
const (
	protoCurlIngest = `{
    "event": {
      "appId": "my-app",
      "deviceId": "device-001",
      "screenView": {"screenName": "HomeScreen"}
    }
  }`
	protoCurlBatch = `{
    "events": [
      {"appId": "my-app", "deviceId": "d1", "screenView": {"screenName": "Home"}},
      {"appId": "my-app", "deviceId": "d1", "buttonTap": {"buttonId": "login", "screenName": "Home"}}
    ]
  }`
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRun runs `causality ARGS...` in this process until the test ends or
// the returned stop is called; stop returns run's error.
func startRun(t *testing.T, args ...string) (stdout, stderr *syncBuffer, stop func() error) {
	t.Helper()
	stdout, stderr = &syncBuffer{}, &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, stdout, stderr) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("%s: %v", args[0], err)
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", args[0], stderr.String())
		}
	})
	return stdout, stderr, stop
}

// waitReadyz waits for the admin port to answer 200 on /readyz.
func waitReadyz(t *testing.T, adminAddr string, stderr *syncBuffer) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := http.Get("http://" + adminAddr + "/readyz")
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("not ready after 60 s: %s\n%s", b, stderr.String())
			}
		} else if time.Now().After(deadline) {
			t.Fatalf("admin port never answered: %v\n%s", err, stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func postJSON(t *testing.T, url, key, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// TestDevStack runs `causality dev` with its embedded Kafka and the test
// ClickHouse: the detector answers with its generated token only and
// stores what it finds in ClickHouse; the prototype's keyless curl examples
// and the simulator's events reach ClickHouse; `causality collector` on the
// same keys refuses the keyless request; Ctrl-C stops it cleanly.
func TestDevStack(t *testing.T) {
	wcfg := warehousetest.Config(t) // skips without a ClickHouse
	dir := t.TempDir()
	tcp, grpcAddr, httpAddr, adminAddr, detAddr := pipeFreeAddr(t), pipeFreeAddr(t), pipeFreeAddr(t), pipeFreeAddr(t), pipeFreeAddr(t)
	_, kport, _ := net.SplitHostPort(pipeFreeAddr(t))
	stdout, stderr, stop := startRun(t, "dev", "-dev.dir", dir, "-dev.kafka-port", kport,
		"-clickhouse.addr", wcfg.Addr, "-clickhouse.database", wcfg.Database,
		"-ingest.tcp-addr", tcp, "-ingest.grpc-addr", grpcAddr, "-ingest.http-addr", httpAddr, "-admin.addr", adminAddr,
		"-detect.grpc-addr", detAddr, "-detect.windows", "1m", "-detect.lateness", "1s", "-detect.idle-after", "0",
		"-sink.batch-age", "200ms")
	waitReadyz(t, adminAddr, stderr)
	// First, while event time is still where these events put it.
	detToken := checkDevDetector(t, dir, detAddr, httpAddr, adminAddr, wcfg)

	// The dev key: clear in dir/key (owner only), hashed in dir/keys.json.
	keyFile := filepath.Join(dir, "key")
	b, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(b))
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", keyFile, fi.Mode().Perm())
	}
	keysJSON, _ := os.ReadFile(filepath.Join(dir, "keys.json"))
	if !strings.HasPrefix(key, ingest.KeyPrefix) || bytes.Contains(keysJSON, []byte(key)) || !bytes.Contains(keysJSON, []byte(ingest.HashKey(key))) {
		t.Fatalf("key %q, keys.json %s: want the key hashed there, never in clear", key, keysJSON)
	}

	// The prototype's keyless curl examples.
	var ids []string
	code, body := postJSON(t, "http://"+httpAddr+"/v1/events/ingest", "", protoCurlIngest)
	var one struct {
		EventID string `json:"eventId"`
		Status  string `json:"status"`
	}
	if err := json.Unmarshal(body, &one); err != nil || code != http.StatusOK || one.Status != "accepted" {
		t.Fatalf("keyless ingest: %d %s", code, body)
	}
	ids = append(ids, one.EventID)
	code, body = postJSON(t, "http://"+httpAddr+"/v1/events/batch", "", protoCurlBatch)
	var batch struct {
		AcceptedCount int `json:"acceptedCount"`
		Results       []struct {
			EventID string `json:"eventId"`
		} `json:"results"`
	}
	if err := json.Unmarshal(body, &batch); err != nil || code != http.StatusOK || batch.AcceptedCount != 2 || len(batch.Results) != 2 {
		t.Fatalf("keyless batch: %d %s", code, body)
	}
	for _, r := range batch.Results {
		ids = append(ids, r.EventID)
	}

	// The simulator with the dev key, over raw TCP.
	var scfg sim.Config
	scfg.RegisterFlags(flag.NewFlagSet("sim", flag.ContinueOnError))
	scfg.Addr, scfg.Key, scfg.KeepIDs = tcp, key, true
	scfg.Devices, scfg.Events, scfg.Rate, scfg.Duration = 50, 2000, 0, 0
	sum, err := sim.Run(context.Background(), scfg, pipeLogger(t), nil)
	if err != nil || sum.Acked() != 2000 || sum.App != "my-app" {
		t.Fatalf("sim against dev: %v, %+v", err, sum)
	}
	ids = append(ids, sum.AckedIDs...)

	// `causality collector` on the same Kafka and keys requires the key.
	cadmin, chttp := pipeFreeAddr(t), pipeFreeAddr(t)
	_, cerr, stopCollector := startRun(t, "collector", "-kafka.brokers", "127.0.0.1:"+kport,
		"-ingest.keys-file", filepath.Join(dir, "keys.json"), "-ingest.tcp-addr", "127.0.0.1:0",
		"-ingest.grpc-addr", "127.0.0.1:0", "-ingest.http-addr", chttp, "-admin.addr", cadmin)
	waitReadyz(t, cadmin, cerr)
	pipeWaitListening(t, chttp) // its readiness comes before its front doors listen
	if code, body := postJSON(t, "http://"+chttp+"/v1/events/ingest", "", protoCurlIngest); code != http.StatusUnauthorized {
		t.Errorf("keyless request to `causality collector`: %d %s; want 401", code, body)
	}
	code, body = postJSON(t, "http://"+chttp+"/v1/events/ingest", key, protoCurlIngest)
	if err := json.Unmarshal(body, &one); err != nil || code != http.StatusOK {
		t.Errorf("keyed request to `causality collector`: %d %s; want 200", code, body)
	}
	ids = append(ids, one.EventID)
	if err := stopCollector(); err != nil {
		t.Errorf("collector: %v", err)
	}
	checkDevAdmin(t, dir, tcp, grpcAddr, stdout.String())
	checkDevConsole(t, dir, httpAddr, stdout.String())

	// Ctrl-C right after the last event: the collector drains, the sink
	// stores what is left and flushes, and dev returns without an error.
	if err := stop(); err != nil {
		t.Fatalf("dev: %v", err)
	}
	ch := pipeWaitOpen(t, wcfg)
	in := "'" + strings.Join(ids, "','") + "'"
	if n := warehousetest.Int(t, ch, "SELECT count() FROM `"+wcfg.Database+"`.events FINAL WHERE event_id IN ("+in+")"); n != int64(len(ids)) {
		t.Fatalf("after the stop %d of %d acknowledged events are in ClickHouse", n, len(ids))
	}
	if got := warehousetest.Int(t, ch, "SELECT count() FROM `"+wcfg.Database+"`.events WHERE event_id = '"+ids[0]+"' AND screen_name = 'HomeScreen' AND app_id = 'my-app'"); got != 1 {
		t.Errorf("the curl event is stored %d times with its screen and app", got)
	}
	out := stdout.String()
	simLine := "causality sim -sim.duration 20s -sim.addr " + tcp + " -sim.key-file " + filepath.Join(dir, "key")
	if !strings.Contains(out, "Causality dev stack is ready") || !strings.Contains(out, key) || !strings.Contains(out, httpAddr) || !strings.Contains(out, simLine) {
		t.Errorf("banner lacks the ready line, key, HTTP address or %q:\n%s", simLine, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "kafka")); err != nil {
		t.Errorf("embedded Kafka kept no data under the dev dir: %v", err)
	}
	if !strings.Contains(out, detAddr) || !strings.Contains(out, "Bearer "+detToken) || !strings.Contains(out, "DetectorService/Subscribe") {
		t.Errorf("banner lacks the detector address %s or a Subscribe example with its token:\n%s", detAddr, out)
	}
	// The detector's last checkpoint, written on the way out, in the dev dir.
	if fi, err := os.Stat(filepath.Join(dir, "detector.ckpt")); err != nil || fi.Size() == 0 {
		t.Errorf("no detector checkpoint in the dev dir after the stop: %v", err)
	}
}

// checkDevDetector checks the dev stack's detector: its token, generated
// in dir/detector-token (owner only), is required by DetectorService but
// not by health checks; a purchase without checkout sent to the collector
// comes back from ListAnomalies and is stored in ClickHouse. It returns the
// token.
func checkDevDetector(t *testing.T, dir, detAddr, httpAddr, adminAddr string, wcfg warehouse.Config) string {
	t.Helper()
	tokenFile := filepath.Join(dir, "detector-token")
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	if fi, _ := os.Stat(tokenFile); len(token) < 16 || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: token %q, mode %v; want one of 16 characters or more, mode 0600", tokenFile, token, fi.Mode().Perm())
	}
	conn, err := grpc.NewClient(detAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: detectv1.DetectorService_ServiceDesc.ServiceName}, grpc.WaitForReady(true))
	if err != nil || health.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("detector health without a token: %v, %v; want SERVING", health, err)
	}
	client := detectv1.NewDetectorServiceClient(conn)
	bearer := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	for name, c := range map[string]context.Context{"no token": ctx, "another token": bearer("not-the-dev-token-0123456789")} {
		if _, err := client.ListAnomalies(c, &detectv1.ListAnomaliesRequest{}); status.Code(err) != codes.Unauthenticated {
			t.Errorf("ListAnomalies with %s: %v, want Unauthenticated", name, err)
		}
	}
	if _, err := client.ListAnomalies(bearer(token), &detectv1.ListAnomaliesRequest{}); err != nil {
		t.Fatalf("ListAnomalies with the dev token: %v", err)
	}

	// A device that starts and buys without a checkout half an hour ago;
	// once the detector has scored that, another device ten minutes later
	// closes the window.
	base := time.Now().Add(-30 * time.Minute).Truncate(time.Minute).UnixMilli()
	ev := func(device string, seq int, at int64, payload string) string {
		return fmt.Sprintf(`{"appId": "my-app", "deviceId": %q, "installId": "%[1]s-i", "sessionId": "%[1]s-s", "timestampMs": "%d", "sequence": "%d",
			"deviceContext": {"platform": "PLATFORM_ANDROID", "appVersion": "2.4.1", "buildNumber": "2410", "deviceModel": "Pixel 8", "manufacturer": "Google"}, %s}`,
			device, at, seq, payload)
	}
	cheat := `{"events": [` + ev("cheater", 1, base+1000, `"appStart": {}`) + "," +
		ev("cheater", 2, base+2000, `"screenView": {"screenName": "Paywall"}`) + "," +
		ev("cheater", 3, base+3000, `"purchaseComplete": {"orderId": "o1"}`) + "]}"
	if code, body := postJSON(t, "http://"+httpAddr+"/v1/events/batch", "", cheat); code != http.StatusOK {
		t.Fatalf("batch for the detector: %d %s", code, body)
	}
	for scored := 0.0; scored < 3; scored = devMetric(t, adminAddr, `causality_detect_events_total{result="scored"}`) {
		if ctx.Err() != nil {
			t.Fatalf("the detector scored %v of 3 events", scored)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := postJSON(t, "http://"+httpAddr+"/v1/events/ingest", "", `{"event": `+ev("clock", 1, base+10*60_000, `"appStart": {}`)+"}"); code != http.StatusOK {
		t.Fatalf("ingest for the detector: %d %s", code, body)
	}
	var found *detectv1.Anomaly
	for found == nil {
		list, err := client.ListAnomalies(bearer(token), &detectv1.ListAnomaliesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range list.GetAnomalies() {
			if a.GetKind() == detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS && a.GetDeviceId() == "cheater" {
				found = a
			}
		}
		if found == nil && ctx.Err() != nil {
			t.Fatalf("no funnel bypass listed: %v", list.GetAnomalies())
		}
		time.Sleep(50 * time.Millisecond)
	}
	ch := pipeWaitOpen(t, wcfg)
	q := "SELECT count() FROM anomalies WHERE id = '" + found.GetId() + "' AND kind = 'funnel_bypass' AND device_id = 'cheater' AND app_id = 'my-app'" +
		" AND cohort = 'app_version=2.4.1,build_number=2410,platform=android' AND toUnixTimestamp(window_start) = " + fmt.Sprint(base/1000)
	for warehousetest.Int(t, ch, q) != 1 {
		if ctx.Err() != nil {
			t.Fatalf("anomaly %s never stored in ClickHouse (want one row)", found.GetId())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return token
}

// devMetric reads one sample of the admin port's /metrics (0 when absent).
func devMetric(t *testing.T, adminAddr, sample string) float64 {
	t.Helper()
	res, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

func TestEnsureDevKey(t *testing.T) {
	dir := t.TempDir()
	keysFile := filepath.Join(dir, "keys.json")
	other := ingest.KeyEntry{AppID: "other", Name: "ci", SHA256: ingest.HashKey(ingest.NewKey())}
	if err := writeKeysFile(keysFile, ingest.KeysFile{Keys: []ingest.KeyEntry{other}}); err != nil {
		t.Fatal(err)
	}
	first, err := ensureDevKey(dir, keysFile, "my-app")
	if err != nil {
		t.Fatal(err)
	}
	again, err := ensureDevKey(dir, keysFile, "my-app")
	if err != nil || again != first {
		t.Fatalf("second start: key %q (%v), want the first one %q", again, err, first)
	}
	kr, err := ingest.LoadKeyring(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	if app, err := kr.Lookup(first); err != nil || app != "my-app" {
		t.Fatalf("dev key looks up as %q (%v)", app, err)
	}
	kf, _ := readKeysFile(keysFile)
	if len(kf.Keys) != 2 || kf.Keys[0] != other {
		t.Fatalf("keys file %+v: want the other app's entry kept and one dev entry", kf.Keys)
	}

	// A revoked dev key, or a key of another app, is replaced.
	kf.Keys[1].Revoked = true
	if err := writeKeysFile(keysFile, kf); err != nil {
		t.Fatal(err)
	}
	fresh, err := ensureDevKey(dir, keysFile, "my-app")
	if err != nil || fresh == first {
		t.Fatalf("after revoking: key %q (%v), want a new one", fresh, err)
	}
	moved, err := ensureDevKey(dir, keysFile, "shop")
	if err != nil || moved == fresh {
		t.Fatalf("for another app: key %q (%v), want a new one", moved, err)
	}
}
