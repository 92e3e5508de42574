package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/sim"
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
// ClickHouse: the prototype's keyless curl examples and the simulator's
// events reach ClickHouse; `causality collector` on the same keys refuses
// the keyless request; Ctrl-C stops it cleanly.
func TestDevStack(t *testing.T) {
	wcfg := warehousetest.Config(t) // skips without a ClickHouse
	dir := t.TempDir()
	tcp, grpcAddr, httpAddr, adminAddr := pipeFreeAddr(t), pipeFreeAddr(t), pipeFreeAddr(t), pipeFreeAddr(t)
	_, kport, _ := net.SplitHostPort(pipeFreeAddr(t))
	stdout, stderr, stop := startRun(t, "dev", "-dev.dir", dir, "-dev.kafka-port", kport,
		"-clickhouse.addr", wcfg.Addr, "-clickhouse.database", wcfg.Database,
		"-ingest.tcp-addr", tcp, "-ingest.grpc-addr", grpcAddr, "-ingest.http-addr", httpAddr, "-admin.addr", adminAddr,
		"-sink.batch-age", "200ms")
	waitReadyz(t, adminAddr, stderr)

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
