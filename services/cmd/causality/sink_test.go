package main

// End-to-end tests of `causality sink` on the real Kafka and ClickHouse:
// exactly once for analysts through duplicates and redelivery, the dead-
// letter path, kill -9 of the process, and ClickHouse stopped mid-run.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
	"causality.dev/services/internal/warehousetest"
)

// TestSinkStoresEachEventOnce produces events, some twice (a collector
// retry), then reads the whole topic again with a second group (a
// redelivery past the first sink's recent-id cache): every event is shown
// once, and its columns round-trip.
func TestSinkStoresEachEventOnce(t *testing.T) {
	kcfg := kafkatest.Config(t)
	wcfg := warehousetest.Config(t)
	events := sinkEvents(3000)
	produce(t, kcfg, events)
	produce(t, kcfg, events[:400]) // retried by a collector: copies in Kafka

	cfg := testSinkConfig(kcfg, wcfg)
	s := startSink(t, cfg)
	eventually(t, "all events stored", func() (bool, string) {
		n := distinct(wcfg)
		return n == int64(len(events)), strconv.FormatInt(n, 10)
	})
	eventually(t, "copies dropped by the sink's cache", func() (bool, string) {
		d := s.metric(t, "causality_sink_duplicates_dropped_total")
		return d == 400, strconv.FormatFloat(d, 'f', -1, 64)
	})
	if code, body := s.ready(t); code != 200 {
		t.Errorf("/readyz = %d %s, want 200", code, body)
	}
	if n := s.metric(t, "causality_warehouse_rows_written_total"); n != float64(len(events)) {
		t.Errorf("rows written = %v, want %d (copies never reach ClickHouse)", n, len(events))
	}
	eventually(t, "lag back to zero", func() (bool, string) {
		lag := s.metric(t, "causality_sink_consumer_lag")
		parts := s.metric(t, "causality_sink_consumer_lag", "partition", "2")
		return lag == 0 && parts == 0 && len(gaugeLabels(t, s, "causality_sink_consumer_lag")) == 3, strconv.FormatFloat(lag, 'f', -1, 64)
	})
	s.stop(t)

	again := testSinkConfig(kcfg, wcfg) // a new group re-reads everything
	s2 := startSink(t, again)
	eventually(t, "the second group caught up", func() (bool, string) {
		n := s2.metric(t, "causality_warehouse_rows_written_total")
		return n == float64(len(events)), strconv.FormatFloat(n, 'f', -1, 64)
	})
	checkExactlyOnce(t, wcfg, events)

	c := warehousetest.Open(t, wcfg)
	e := events[1234]
	got := warehousetest.Query(t, c, `SELECT device_id, install_id, session_id, user_id, sequence, platform, os_version,
		app_version, build_number, device_model, manufacturer, screen_width, screen_height, locale, timezone,
		network_type, carrier, is_jailbroken, is_emulator, sdk_version, event_type, screen_name, payload,
		props.key, props.value, timestamp_ms, event_time_ms, received_at_ms
		FROM events FINAL WHERE event_id = '`+e.EventId+`'`)
	want := []string{"dev-14", "inst-14", "sess-14", "u", "62", "ios", "17.4",
		"3.1.0", "310", "iPhone15,2", "Apple", "1179", "2556", "en-US", "America/New_York",
		"wifi", "AT&T", "0", "0", "0.2.0", "screen_view", "screen-4", `{"screen_name":"screen-4","previous_screen":"Home"}`,
		"['n','plan']", "['1234','free']",
		strconv.FormatInt(e.TimestampMs, 10), strconv.FormatInt(e.TimestampMs+3000, 10), strconv.FormatInt(e.ReceivedAtMs, 10)}
	if len(got) != 1 {
		t.Fatalf("event %s: %d rows", e.EventId, len(got))
	}
	for i := range want {
		if got[0][i] != want[i] {
			t.Errorf("column %d = %q, want %q", i, got[0][i], want[i])
		}
	}
}

func gaugeLabels(t *testing.T, s *inProcessSink, name string) []string {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	return out
}

// TestSinkDeadLettersPoison puts garbage between events of one partition:
// it goes to the DLQ with its reason, and the events after it are stored.
func TestSinkDeadLettersPoison(t *testing.T) {
	kcfg := kafkatest.Config(t)
	kcfg.Partitions = 1
	one := kcfg
	one.Topic += ".one"
	if err := kafka.EnsureTopics(context.Background(), one); err != nil {
		t.Fatal(err)
	}
	wcfg := warehousetest.Config(t)
	before, after := sinkEvents(50), sinkEvents(50)
	produce(t, one, before)
	poison := []byte("\x0a\xff\xff\xff garbage, not an Event")
	raw := one // a dead-letter writer aimed at the events topic writes raw bytes
	raw.Topic, raw.DLQTopic = one.DLQTopic, one.Topic
	w, err := kafka.NewDeadLetters(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(context.Background(), []kafka.DeadLetter{{Key: []byte("dev-1"), Value: poison}}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	produce(t, one, after)

	s := startSink(t, testSinkConfig(one, wcfg))
	eventually(t, "events on both sides of the poison stored", func() (bool, string) {
		n := distinct(wcfg)
		return n == 100, strconv.FormatInt(n, 10)
	})
	letters := kafkatest.ReadN(t, one, one.DLQTopic, 1, sinkWait)
	if len(letters) != 1 {
		t.Fatalf("DLQ has %d messages, want 1", len(letters))
	}
	l := letters[0]
	if !bytes.Equal(l.Value, poison) || l.Headers[kafka.HeaderSource] != "sink" || l.Headers[kafka.HeaderReason] != "undecodable" ||
		!strings.Contains(l.Headers[kafka.HeaderDetail], one.Topic+"/0@50") {
		t.Errorf("dead letter = %q headers %v, want the poison bytes from sink, undecodable, at offset 50", l.Value, l.Headers)
	}
	if n := s.metric(t, "causality_sink_dead_letters_total", "reason", "undecodable"); n != 1 {
		t.Errorf("dead letters metric = %v, want 1", n)
	}
	checkExactlyOnce(t, wcfg, append(before, after...))
}

// TestSinkKill9 kills the sink process mid-run while events keep coming,
// restarts it, and checks each event is stored exactly once.
func TestSinkKill9(t *testing.T) {
	kcfg := kafkatest.Config(t)
	wcfg := warehousetest.Config(t)
	bin := sinkBinary(t)
	cfg := testSinkConfig(kcfg, wcfg)
	cfg.BatchSize = 300
	events := sinkEvents(12000)

	start := func(name string) (*exec.Cmd, chan struct{}) {
		var logs bytes.Buffer
		cmd := exec.Command(bin, append([]string{"sink"}, sinkArgs(cfg)...)...)
		cmd.Stderr = &lockedBuffer{b: &logs}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			<-done
			if t.Failed() {
				t.Logf("%s logs:\n%s", name, cmd.Stderr.(*lockedBuffer).String())
			}
		})
		return cmd, done
	}
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < len(events); i += 1000 {
			produce(t, kcfg, events[i:i+1000])
			time.Sleep(100 * time.Millisecond)
		}
	}()
	first, exited := start("first sink")
	eventually(t, "the first sink stored a few batches", func() (bool, string) {
		n := distinct(wcfg)
		return n >= 1500, strconv.FormatInt(n, 10)
	})
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	stored := distinct(wcfg)
	t.Logf("killed the first sink with %d of %d events stored", stored, len(events))
	<-produced
	if stored >= int64(len(events)) {
		t.Fatalf("the kill came after everything was stored (%d): the test proves nothing", stored)
	}
	start("second sink")
	eventually(t, "all events stored after the restart", func() (bool, string) {
		n := distinct(wcfg)
		return n == int64(len(events)), strconv.FormatInt(n, 10)
	})
	checkExactlyOnce(t, wcfg, events)
	rows := warehousetest.Int(t, warehousetest.Open(t, wcfg), "SELECT count() FROM events")
	t.Logf("%d rows stored for %d events (rows beyond the events are copies inserted again after the kill, collapsed by FINAL)", rows, len(events))
}

// TestSinkRebalance adds a second sink to the group mid-run and then stops
// the first one, so partitions move twice while batches are in flight:
// each event is still stored exactly once.
func TestSinkRebalance(t *testing.T) {
	kcfg := kafkatest.Config(t)
	wcfg := warehousetest.Config(t)
	cfg := testSinkConfig(kcfg, wcfg)
	cfg.BatchSize = 200
	events := sinkEvents(9000)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < len(events); i += 1000 {
			produce(t, kcfg, events[i:i+1000])
			time.Sleep(200 * time.Millisecond)
		}
	}()
	a := startSink(t, cfg)
	eventually(t, "the first sink stored some events", func() (bool, string) {
		n := distinct(wcfg)
		return n >= 1000, strconv.FormatInt(n, 10)
	})
	b := startSink(t, cfg)
	eventually(t, "the second sink got partitions", func() (bool, string) {
		n := b.metric(t, "causality_warehouse_rows_written_total")
		return n > 0, strconv.FormatFloat(n, 'f', -1, 64)
	})
	a.stop(t)
	<-produced
	eventually(t, "all events stored", func() (bool, string) {
		n := distinct(wcfg)
		return n == int64(len(events)), strconv.FormatInt(n, 10)
	})
	checkExactlyOnce(t, wcfg, events)
}

// TestSinkSurvivesClickHouseStop stops a private ClickHouse server while
// the sink runs: /readyz fails and the lag grows meanwhile, nothing is lost
// once the server is back, and the lag returns to zero.
func TestSinkSurvivesClickHouseStop(t *testing.T) {
	warehousetest.Addr(t) // skip without real servers, like the others
	if _, err := exec.LookPath("clickhouse-server"); err != nil {
		t.Skip("clickhouse-server is not installed (deploy/local/clickhouse.sh install)")
	}
	script := "../../../deploy/local/clickhouse.sh"
	env := append(os.Environ(),
		"CAUSALITY_STATE="+t.TempDir(),
		"CAUSALITY_CLICKHOUSE_PORT="+strconv.Itoa(freePort(t)),
		"CAUSALITY_CLICKHOUSE_HTTP_PORT="+strconv.Itoa(freePort(t)),
	)
	ch := func(verb string) {
		t.Helper()
		cmd := exec.Command(script, verb)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("clickhouse.sh %s: %v\n%s", verb, err, out)
		}
	}
	ch("start")
	t.Cleanup(func() { ch("stop") })
	var port string
	for _, kv := range env {
		if p, ok := strings.CutPrefix(kv, "CAUSALITY_CLICKHOUSE_PORT="); ok {
			port = p
		}
	}
	wcfg := warehousetest.ConfigOn(t, "127.0.0.1:"+port)
	kcfg := kafkatest.Config(t)
	events := sinkEvents(4000)
	first, second := events[:2000], events[2000:]

	s := startSink(t, testSinkConfig(kcfg, wcfg))
	produce(t, kcfg, first)
	eventually(t, "the first half stored", func() (bool, string) {
		n := distinct(wcfg)
		return n == int64(len(first)), strconv.FormatInt(n, 10)
	})
	if code, body := s.ready(t); code != 200 {
		t.Fatalf("/readyz = %d %s before the stop, want 200", code, body)
	}

	ch("stop")
	produce(t, kcfg, second)
	eventually(t, "/readyz failing while ClickHouse is down", func() (bool, string) {
		code, body := s.ready(t)
		return code == 503 && strings.Contains(body, "clickhouse:"), body
	})
	eventually(t, "lag reported while ClickHouse is down", func() (bool, string) {
		lag := s.metric(t, "causality_sink_consumer_lag")
		return lag > 0, strconv.FormatFloat(lag, 'f', -1, 64)
	})
	eventually(t, "failed inserts counted", func() (bool, string) {
		n := s.metric(t, "causality_warehouse_insert_errors_total")
		return n > 0, strconv.FormatFloat(n, 'f', -1, 64)
	})

	ch("start")
	eventually(t, "every event stored after the restart", func() (bool, string) {
		n := distinct(wcfg)
		return n == int64(len(events)), strconv.FormatInt(n, 10)
	})
	eventually(t, "lag recovered", func() (bool, string) {
		lag := s.metric(t, "causality_sink_consumer_lag")
		return lag == 0, strconv.FormatFloat(lag, 'f', -1, 64)
	})
	eventually(t, "/readyz ok again", func() (bool, string) {
		code, body := s.ready(t)
		return code == 200, body
	})
	checkExactlyOnce(t, wcfg, events)
}

func TestSinkConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"zero batch", []string{"-sink.batch-size=0"}, "-sink.batch-size"},
		{"negative age", []string{"-sink.batch-age=-1s"}, "-sink.batch-age"},
		{"empty group", []string{"-sink.group="}, "-sink.group"},
		{"bad database", []string{"-clickhouse.database=a-b"}, "-clickhouse.database"},
		{"bad clickhouse addr", []string{"-clickhouse.addr=nohost"}, "-clickhouse.addr"},
		{"bad kafka addr", []string{"-kafka.brokers=nohost"}, "-kafka.brokers"},
		{"unknown flag", []string{"-sink.nope=1"}, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), append([]string{"sink", "-admin.addr=127.0.0.1:0"}, tc.args...), &bytes.Buffer{}, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tc.want) {
				t.Fatalf("sink %v = %v (stderr %q), want an error about %s", tc.args, err, stderr.String(), tc.want)
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer safe for a child's stderr and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  *bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
