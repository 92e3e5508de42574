package main

// Helpers of the end-to-end tests (collector_*_test.go): a collector run
// through the real wiring (run, or the built binary as a child process), a
// keys file, a raw TCP client written from the framing in docs/protocol.md
// (not the SDK, not ingest's frame helpers), and checks of what landed in
// Kafka.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
)

// waitLimit bounds every wait of these tests; nothing should come close.
const waitLimit = 30 * time.Second

// testKeys is a keys file with one key per app and one revoked key.
type testKeys struct {
	file    string
	key     map[string]string // app -> ingest key
	revoked string            // a revoked key of the first app
}

// writeKeys writes a keys file in t.TempDir() the way `causality keys` does:
// only the SHA-256 of each key is stored.
func writeKeys(t testing.TB, apps ...string) testKeys {
	t.Helper()
	k := testKeys{file: filepath.Join(t.TempDir(), "keys.json"), key: map[string]string{}, revoked: ingest.NewKey()}
	var kf ingest.KeysFile
	for _, app := range apps {
		k.key[app] = ingest.NewKey()
		kf.Keys = append(kf.Keys, ingest.KeyEntry{AppID: app, Name: "e2e", SHA256: ingest.HashKey(k.key[app])})
	}
	kf.Keys = append(kf.Keys, ingest.KeyEntry{AppID: apps[0], Name: "old", SHA256: ingest.HashKey(k.revoked), Revoked: true})
	b, err := json.Marshal(kf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// collectorArgs are the flags of a collector on free loopback ports writing
// to the topics of cfg.
func collectorArgs(cfg kafka.Config, keysFile string, extra ...string) []string {
	args := []string{
		"-ingest.tcp-addr=127.0.0.1:0",
		"-ingest.grpc-addr=127.0.0.1:0",
		"-ingest.http-addr=127.0.0.1:0",
		"-admin.addr=127.0.0.1:0",
		"-ingest.keys-file=" + keysFile,
		"-kafka.brokers=" + cfg.Brokers,
		"-kafka.topic=" + cfg.Topic,
		"-kafka.dlq-topic=" + cfg.DLQTopic,
		"-kafka.partitions=" + strconv.Itoa(cfg.Partitions),
		"-kafka.compression=" + cfg.Compression,
		"-log.level=info",
	}
	return append(args, extra...)
}

// logWatch collects a collector's JSON log and picks the bound addresses
// out of its "collector listening" line, so tests can bind port 0.
type logWatch struct {
	mu    sync.Mutex
	part  []byte
	lines []string
	addrs chan addrs
}

type addrs struct{ TCP, GRPC, HTTP string }

func newLogWatch() *logWatch { return &logWatch{addrs: make(chan addrs, 1)} }

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part = append(w.part, p...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.part[:i])
		w.part = w.part[i+1:]
		w.lines = append(w.lines, line)
		var l struct {
			Msg  string `json:"msg"`
			TCP  string `json:"tcp"`
			GRPC string `json:"grpc"`
			HTTP string `json:"http"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "collector listening" {
			select {
			case w.addrs <- addrs{l.TCP, l.GRPC, l.HTTP}:
			default:
			}
		}
	}
}

func (w *logWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.lines, "\n") + string(w.part)
}

// dumpOnFailure logs the collector's output at the end of a failed test.
func (w *logWatch) dumpOnFailure(t testing.TB, name string) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, w)
		}
	})
}

// collector is a running `causality collector`.
type collector struct {
	addrs
	kafka kafka.Config
	keys  testKeys
	stop  func() error // ends it gracefully and returns what run returned
}

// startCollector runs `causality collector` in-process through run(), with
// fresh topics from kafkatest and a fresh keys file for apps. It is stopped
// at cleanup.
func startCollector(t testing.TB, apps []string, extra ...string) *collector {
	t.Helper()
	cfg := kafkatest.Config(t)
	keys := writeKeys(t, apps...)
	return startCollectorOn(t, cfg, keys, extra...)
}

func startCollectorOn(t testing.TB, cfg kafka.Config, keys testKeys, extra ...string) *collector {
	t.Helper()
	logs := newLogWatch()
	logs.dumpOnFailure(t, "collector")
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan struct{})
	var runErr error // set before exited is closed
	args := append([]string{"collector"}, collectorArgs(cfg, keys.file, extra...)...)
	go func() {
		runErr = run(ctx, args, io.Discard, logs)
		close(exited)
	}()
	c := &collector{kafka: cfg, keys: keys}
	c.stop = func() error {
		cancel()
		select {
		case <-exited:
			return runErr
		case <-time.After(waitLimit):
			var stacks strings.Builder // where it hangs
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			return fmt.Errorf("collector did not stop within %s; goroutines:\n%s", waitLimit, stacks.String())
		}
	}
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Errorf("collector stopped with: %v", err)
		}
	})
	select {
	case c.addrs = <-logs.addrs:
	case <-exited:
		t.Fatalf("collector exited before listening: %v", runErr)
	case <-time.After(waitLimit):
		t.Fatal("collector did not log its addresses")
	}
	return c
}

// childCollector is `causality collector` as a separate process.
type childCollector struct {
	addrs
	cmd  *exec.Cmd
	logs *logWatch
}

// collectorBinary returns $CAUSALITY_BIN (make test sets it) or builds the
// binary into t.TempDir().
func collectorBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("CAUSALITY_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "causality")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startChild starts the binary as `causality collector` and waits until it
// listens. It is killed at cleanup if still running.
func startChild(t testing.TB, bin string, cfg kafka.Config, keys testKeys, name string) *childCollector {
	t.Helper()
	c := &childCollector{logs: newLogWatch()}
	c.logs.dumpOnFailure(t, name)
	c.cmd = exec.Command(bin, append([]string{"collector"}, collectorArgs(cfg, keys.file)...)...)
	c.cmd.Stderr = c.logs
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = c.cmd.Process.Kill()
		<-exited
	})
	select {
	case c.addrs = <-c.logs.addrs:
	case <-exited:
		t.Fatalf("%s exited before listening: %v", name, c.cmd.ProcessState)
	case <-time.After(waitLimit):
		t.Fatalf("%s did not log its addresses", name)
	}
	return c
}

// kill9 sends SIGKILL: no drain, no flush, no deferred close.
func (c *childCollector) kill9(t testing.TB) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// frameConn is a raw TCP client written from docs/protocol.md: every frame
// is a 4-byte big-endian length N, then N bytes of one serialized
// ClientFrame (to the server) or ServerFrame (from it).
type frameConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialFrames(t testing.TB, addr string) *frameConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(2 * waitLimit)) // bounds every read and write
	t.Cleanup(func() { c.Close() })
	return &frameConn{conn: c, r: bufio.NewReader(c)}
}

// writeRaw writes bytes as they are, for malformed input.
func (f *frameConn) writeRaw(b []byte) error {
	_, err := f.conn.Write(b)
	return err
}

// send writes one length-prefixed ClientFrame.
func (f *frameConn) send(m *ingestv1.ClientFrame) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	return f.writeRaw(prefixed(b))
}

// prefixed returns b behind its 4-byte big-endian length.
func prefixed(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(b)), uint32(len(b))), b...)
}

// recv reads one ServerFrame; io.EOF means the server closed cleanly.
func (f *frameConn) recv() (*ingestv1.ServerFrame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(f.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > 16<<20 {
		return nil, fmt.Errorf("server frame length %d", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(f.r, b); err != nil {
		return nil, fmt.Errorf("server frame body: %w", err)
	}
	m := &ingestv1.ServerFrame{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("decode server frame: %w", err)
	}
	return m, nil
}

// hello opens the session with key and returns the Welcome.
func (f *frameConn) hello(t testing.TB, key string) *ingestv1.Welcome {
	t.Helper()
	if err := f.send(helloFrame(key)); err != nil {
		t.Fatal(err)
	}
	m, err := f.recv()
	if err != nil {
		t.Fatalf("waiting for Welcome: %v", err)
	}
	if m.GetWelcome() == nil {
		t.Fatalf("got %v, want Welcome", m)
	}
	return m.GetWelcome()
}

// expectError reads until the Error frame and then the close.
func (f *frameConn) expectError(t testing.TB, code ingestv1.ErrorCode) {
	t.Helper()
	m, err := f.recv()
	if err != nil {
		t.Fatalf("waiting for Error %s: %v", code, err)
	}
	if m.GetError().GetCode() != code {
		t.Fatalf("got %v, want Error %s", m, code)
	}
	if m, err := f.recv(); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after Error: got %v, %v; want the connection closed", m, err)
	}
}

func helloFrame(key string) *ingestv1.ClientFrame {
	return &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Hello{Hello: &ingestv1.Hello{
		ApiKey: key, SdkName: "e2e-test", SdkVersion: "0", ClientTimeMs: time.Now().UnixMilli(),
	}}}
}

func batchFrame(seq uint64, events []*eventv1.Event) *ingestv1.ClientFrame {
	return &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{
		Seq: seq, Events: events, SentAtMs: time.Now().UnixMilli(),
	}}}
}

var goodbyeFrame = &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Goodbye{Goodbye: &ingestv1.Goodbye{Reason: "done"}}}

// newEvent returns a valid event the way an SDK would fill it.
func newEvent(app, device string) *eventv1.Event {
	return &eventv1.Event{
		EventId:     uuid.Must(uuid.NewV7()).String(),
		AppId:       app,
		DeviceId:    device,
		InstallId:   "install-" + device,
		SessionId:   "session-1",
		TimestampMs: time.Now().UnixMilli(),
		DeviceContext: &eventv1.DeviceContext{
			OsVersion: "17.4", AppVersion: "2.3.0", DeviceModel: "iPhone15,2", Locale: "en_US", SdkVersion: "0.1.0",
		},
		Properties: map[string]string{"plan": "free"},
		Payload:    &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home", PreviousScreen: "Splash"}},
	}
}

func newEvents(app string, n int) []*eventv1.Event {
	out := make([]*eventv1.Event, n)
	for i := range out {
		out[i] = newEvent(app, fmt.Sprintf("device-%d", i%7))
	}
	return out
}

// checkAck checks that ack answers seq with one result per event, in order,
// each with status want.
func checkAck(t testing.TB, ack *ingestv1.Ack, seq uint64, events []*eventv1.Event, want ingestv1.EventStatus) {
	t.Helper()
	if ack == nil {
		t.Fatalf("batch %d: no ack", seq)
	}
	if ack.GetSeq() != seq || len(ack.GetResults()) != len(events) {
		t.Fatalf("ack seq %d with %d results, want seq %d with %d", ack.GetSeq(), len(ack.GetResults()), seq, len(events))
	}
	for i, r := range ack.GetResults() {
		if r.GetEventId() != events[i].GetEventId() || r.GetStatus() != want {
			t.Fatalf("batch %d result %d: %v, want %s for %s", seq, i, r, want, events[i].GetEventId())
		}
	}
}

// readTopic returns the messages of topic by event id, and fails unless the
// set of ids is exactly want. Every acknowledged event is in Kafka before its
// ack, so once the reader has caught up an extra message would already be
// there: reading for one more than expected, for a bounded time, finds it.
func readTopic(t testing.TB, cfg kafka.Config, topic string, want []string) map[string]kafka.Message {
	t.Helper()
	var msgs []kafka.Message
	for _, d := range []time.Duration{3 * time.Second, waitLimit} {
		if msgs = readFor(t, cfg, topic, len(want)+1, d); len(msgs) >= len(want) {
			break
		}
	}
	got := map[string]kafka.Message{}
	for _, m := range msgs {
		id := messageID(t, topic, m)
		if _, dup := got[id]; dup {
			t.Logf("%s: event %s twice (allowed: at-least-once)", topic, id)
		}
		got[id] = m
	}
	checkIDs(t, topic, slices.Collect(maps.Keys(got)), want, true)
	return got
}

// readAtLeast reads topic until it holds every id of want (or the bound
// passes) and returns all ids it read; other ids may be there too.
func readAtLeast(t testing.TB, cfg kafka.Config, topic string, want []string) map[string]kafka.Message {
	t.Helper()
	got := map[string]kafka.Message{}
	for _, d := range []time.Duration{5 * time.Second, waitLimit} {
		// More than the topic can hold: read everything there is for d.
		for _, m := range readFor(t, cfg, topic, 1<<30, d) {
			got[messageID(t, topic, m)] = m
		}
		if missing(got, want) == 0 {
			break
		}
	}
	checkIDs(t, topic, slices.Collect(maps.Keys(got)), want, false)
	return got
}

// readFor reads topic from its start until it has n messages or d passes.
func readFor(t testing.TB, cfg kafka.Config, topic string, n int, d time.Duration) []kafka.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	msgs, err := kafka.ReadAll(ctx, cfg, topic, n)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) { // the deadline is the expected end
		t.Logf("read %s: %v", topic, err)
	}
	return msgs
}

func missing(got map[string]kafka.Message, want []string) int {
	n := 0
	for _, id := range want {
		if _, ok := got[id]; !ok {
			n++
		}
	}
	return n
}

// messageID decodes an Event message and returns its id.
func messageID(t testing.TB, topic string, m kafka.Message) string {
	t.Helper()
	e := &eventv1.Event{}
	if err := proto.Unmarshal(m.Value, e); err != nil {
		t.Fatalf("%s offset %d/%d: not an Event: %v", topic, m.Partition, m.Offset, err)
	}
	return e.GetEventId()
}

// checkIDs compares id sets; with exact, ids not in want are an error too.
func checkIDs(t testing.TB, topic string, got, want []string, exact bool) {
	t.Helper()
	gs := map[string]bool{}
	for _, id := range got {
		gs[id] = true
	}
	ws := map[string]bool{}
	var miss, extra []string
	for _, id := range want {
		ws[id] = true
		if !gs[id] {
			miss = append(miss, id)
		}
	}
	for id := range gs {
		if exact && !ws[id] {
			extra = append(extra, id)
		}
	}
	if len(miss) > 0 || len(extra) > 0 {
		t.Fatalf("%s: %d events missing %q, %d unexpected %q (want %d, read %d)", topic, len(miss), miss[:min(len(miss), 5)], len(extra), extra[:min(len(extra), 5)], len(want), len(got))
	}
}

// checkStored checks that each message holds its sent event: key = device
// id, value = the same Event plus received_at_ms set by the collector.
func checkStored(t testing.TB, got map[string]kafka.Message, sent []*eventv1.Event) {
	t.Helper()
	for _, want := range sent {
		m := got[want.GetEventId()]
		if string(m.Key) != want.GetDeviceId() {
			t.Errorf("event %s: key %q, want the device id %q", want.GetEventId(), m.Key, want.GetDeviceId())
		}
		if m.AppID != want.GetAppId() {
			t.Errorf("event %s: app_id header %q, want %q", want.GetEventId(), m.AppID, want.GetAppId())
		}
		e := &eventv1.Event{}
		if err := proto.Unmarshal(m.Value, e); err != nil {
			t.Fatal(err)
		}
		if e.GetReceivedAtMs() < want.GetTimestampMs()-time.Minute.Milliseconds() || e.GetReceivedAtMs() > time.Now().UnixMilli() {
			t.Errorf("event %s: received_at_ms %d is not a server time of this test", want.GetEventId(), e.GetReceivedAtMs())
		}
		w := proto.CloneOf(want)
		w.ReceivedAtMs = e.GetReceivedAtMs()
		if w.GetSentAtMs() == 0 {
			w.SentAtMs = e.GetSentAtMs() // copied from the batch's sent_at_ms
		}
		if !proto.Equal(e, w) {
			t.Errorf("event %s in Kafka differs from the one sent:\n got %v\nwant %v", want.GetEventId(), e, w)
		}
	}
}

func ids(events []*eventv1.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.GetEventId()
	}
	return out
}
