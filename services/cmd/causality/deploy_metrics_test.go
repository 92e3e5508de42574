package main

// Every metric that the alert rules (deploy/prometheus/rules) and the
// Grafana dashboards (deploy/grafana/dashboards) query is one the services
// export: the collector, the sink and the detector run in this process on
// the real Kafka and ClickHouse, take a few events, and their /metrics is
// scraped; metrics that have no sample yet (an error counter by reason that
// never fired) are known from what the services registered.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
	"gopkg.in/yaml.v3"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/services/internal/admin"
	"causality.dev/services/internal/ingest"
	"causality.dev/services/internal/kafkatest"
	"causality.dev/services/internal/warehousetest"
)

// recordingRegistry is a registry that remembers the name and kind of every
// metric registered on it, samples or not.
type recordingRegistry struct {
	*prometheus.Registry
	mu    sync.Mutex
	kinds map[string]string // name -> counter, gauge, histogram, summary or "" (unknown: wrapped)
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recordingRegistry) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	kind := ""
	switch c.(type) {
	case *prometheus.SummaryVec:
		kind = "summary"
	case prometheus.Observer, *prometheus.HistogramVec:
		// A Histogram, or a Summary (the same methods): no service
		// registers a lone Summary.
		kind = "histogram"
	case prometheus.Gauge, *prometheus.GaugeVec: // before Counter: a Gauge has a Counter's methods too
		kind = "gauge"
	case prometheus.Counter, *prometheus.CounterVec:
		kind = "counter"
	}
	descs := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(descs); close(descs) }()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d := range descs {
		if m := fqNameRE.FindStringSubmatch(d.String()); m != nil {
			r.kinds[m[1]] = kind
		}
	}
	return nil
}

func (r *recordingRegistry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// scrape reads a text exposition: the kind of every family (# TYPE) and
// the value of every sample line.
func scrape(t testing.TB, url string) (kinds map[string]string, samples map[string]float64) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	kinds, samples = map[string]string{}, map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, kind, ok := strings.Cut(rest, " "); ok {
				kinds[name] = kind
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			samples[line[:i]] = v
		}
	}
	return kinds, samples
}

// sum adds the samples of a metric name (every label set).
func sum(samples map[string]float64, name string) float64 {
	total := 0.0
	for k, v := range samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			total += v
		}
	}
	return total
}

// queryNames returns the metric names a PromQL expression selects: what is
// left once strings, label matchers, ranges, grouping label lists,
// functions, keywords and numbers are taken out.
func queryNames(expr string) []string {
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`"(\\.|[^"\\])*"|'(\\.|[^'\\])*'|` + "`[^`]*`"),
		regexp.MustCompile(`\{[^}]*\}`),
		regexp.MustCompile(`\[[^\]]*\]`),
		regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`),
		regexp.MustCompile(`\$\w+`),
	} {
		expr = re.ReplaceAllString(expr, " ")
	}
	keywords := map[string]bool{"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true,
		"ignoring": true, "group_left": true, "group_right": true, "offset": true, "bool": true, "inf": true, "nan": true}
	tok := regexp.MustCompile(`\d+(\.\d+)?([eE][+-]?\d+)?(ms|[smhdwy])?|[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	seen := map[string]bool{}
	for _, m := range tok.FindAllString(expr, -1) {
		if m[0] >= '0' && m[0] <= '9' || strings.HasSuffix(m, "(") || keywords[strings.ToLower(m)] {
			continue
		}
		seen[m] = true
	}
	return slices.Sorted(maps.Keys(seen))
}

func TestQueryNames(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (result) (rate(causality_ingest_events_total{result="retry", x=~"a|b"}[5m])) / sum(rate(causality_ingest_events_total[5m])) > 0.01`: "causality_ingest_events_total",
		`histogram_quantile(0.99, sum by (le) (rate(causality_ingest_ack_seconds_bucket[$__rate_interval])))`:                                       "causality_ingest_ack_seconds_bucket",
		`(sum by (app) (increase(a_total[6h])) > 0) unless on (app) (sum by (app) (increase(b_total[30m] offset 1d)) > 1e6)`:                        "a_total b_total",
		`(sum(rate(x_total[15m])) or vector(0)) + ignoring (reason) group_left (app) y == bool 0`:                                                   "x_total y",
		`up{job=~"causality-.*"} == 0 and sum(deriv(g[30m:1m])) > 2.5e-3`:                                                                           "g up",
		`topk(10, sum by (app) (rate(causality_ingest_app_events_total[5m])))`:                                                                      "causality_ingest_app_events_total",
	} {
		if got := strings.Join(queryNames(expr), " "); got != want {
			t.Errorf("queryNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

// deployQueries lists every PromQL expression of the alert rules and the
// dashboards, with where it is.
func deployQueries(t testing.TB) map[string]string {
	t.Helper()
	queries := map[string]string{} // where -> expr
	rules, _ := filepath.Glob(filepath.Join(deployDir, "prometheus/rules/*.yml"))
	for _, f := range rules {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf struct {
			Groups []struct {
				Rules []struct {
					Alert  string `yaml:"alert"`
					Record string `yaml:"record"`
					Expr   string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := yaml.Unmarshal(b, &rf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range rf.Groups {
			for _, r := range g.Rules {
				queries[fmt.Sprintf("%s rule %s%s", filepath.Base(f), r.Alert, r.Record)] = r.Expr
			}
		}
	}
	dashboards, _ := filepath.Glob(filepath.Join(deployDir, "grafana/dashboards/*.json"))
	for _, f := range dashboards {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		type panel struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
			Panels []json.RawMessage `json:"panels"` // rows
		}
		var d struct {
			Panels []panel `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var walk func([]panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				for i, tg := range p.Targets {
					queries[fmt.Sprintf("%s panel %q query %d", filepath.Base(f), p.Title, i)] = tg.Expr
				}
				var inner []panel
				for _, raw := range p.Panels {
					var q panel
					if json.Unmarshal(raw, &q) == nil {
						inner = append(inner, q)
					}
				}
				walk(inner)
			}
		}
		walk(d.Panels)
	}
	if len(rules) == 0 || len(dashboards) < 4 {
		t.Fatalf("found %d rule files and %d dashboards under %s", len(rules), len(dashboards), deployDir)
	}
	return queries
}

// TestDeployMetricsExported runs the three services on the real servers,
// sends events through, and checks every query of deploy/ against what
// they export.
func TestDeployMetricsExported(t *testing.T) {
	kcfg := kafkatest.Config(t)
	wcfg := warehousetest.Config(t)
	dir := t.TempDir()
	keys := writeKeys(t, "metrics-app")
	secretFile := filepath.Join(dir, "webhook-secret")
	if err := os.WriteFile(secretFile, []byte("webhook-secret-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	hooks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(hooks.Close)

	var cc collectorConfig
	fs := flag.NewFlagSet("collector", flag.ContinueOnError)
	cc.register(fs)
	if err := fs.Parse(collectorArgs(kcfg, keys.file)); err != nil {
		t.Fatal(err)
	}
	keyring, err := ingest.LoadKeyring(keys.file)
	if err != nil {
		t.Fatal(err)
	}
	sc := testSinkConfig(kcfg, wcfg)
	var dc detectorConfig
	fs = flag.NewFlagSet("detector", flag.ContinueOnError)
	dc.register(fs)
	if err := fs.Parse([]string{
		"-kafka.brokers=" + kcfg.Brokers, "-kafka.topic=" + kcfg.Topic, "-kafka.dlq-topic=" + kcfg.DLQTopic, "-kafka.partitions=3",
		"-detect.group=" + kcfg.Topic + ".detector", "-detect.anomalies-topic=" + kcfg.Topic + ".anomalies",
		"-detect.webhook.dlq-topic=" + kcfg.Topic + ".webhooks-dlq",
		"-detect.grpc-addr=127.0.0.1:0", "-detect.token=" + detToken, "-detect.checkpoint=" + filepath.Join(dir, "detector.ckpt"),
		"-detect.webhook.url=" + hooks.URL, "-detect.webhook.secret-file=" + secretFile,
		"-clickhouse.addr=" + wcfg.Addr, "-clickhouse.database=" + wcfg.Database,
	}); err != nil {
		t.Fatal(err)
	}
	if err := dc.validate(); err != nil {
		t.Fatal(err)
	}

	reg := &recordingRegistry{Registry: admin.NewRegistry(), kinds: map[string]string{}}
	adm := admin.New(admin.Config{Addr: "127.0.0.1:0"}, reg)
	if err := adm.Listen(); err != nil {
		t.Fatal(err)
	}
	logs := newLogWatch() // the collector logs its addresses
	logs.dumpOnFailure(t, "services")
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return adm.Serve(gctx) })
	g.Go(func() error { return serveCollector(gctx, cc, keyring, logger, reg, adm) })
	g.Go(func() error { return serveSink(gctx, sc, logger, reg, adm) })
	g.Go(func() error { return serveDetector(gctx, dc, logger, reg, adm) })
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := g.Wait(); err != nil {
				t.Errorf("services: %v", err)
			}
		}
	}
	t.Cleanup(stop)

	var a addrs
	select {
	case a = <-logs.addrs:
	case <-time.After(waitLimit):
		t.Fatal("the collector did not listen")
	}
	f := dialFrames(t, a.TCP)
	f.hello(t, keys.key["metrics-app"])
	events := newEvents("metrics-app", 20)
	if err := f.send(batchFrame(1, events)); err != nil {
		t.Fatal(err)
	}
	m, err := f.recv()
	if err != nil {
		t.Fatal(err)
	}
	checkAck(t, m.GetAck(), 1, events, ingestv1.EventStatus_EVENT_STATUS_ACCEPTED)

	metricsURL := "http://" + adm.Addr() + "/metrics"
	var kinds map[string]string
	eventually(t, "rows in ClickHouse and events scored by the detector", func() (bool, string) {
		var samples map[string]float64
		kinds, samples = scrape(t, metricsURL)
		rows, scored := sum(samples, "causality_warehouse_rows_written_total"), sum(samples, "causality_detect_events_total")
		return rows >= 20 && scored >= 20, fmt.Sprintf("%v rows written, %v events taken by the detector", rows, scored)
	})
	stop()

	reg.mu.Lock()
	for name, kind := range reg.kinds {
		if _, ok := kinds[name]; !ok {
			kinds[name] = kind // registered, no sample yet
		}
	}
	reg.mu.Unlock()
	kinds["up"] = "gauge" // written by Prometheus for every target

	queries := deployQueries(t)
	for _, where := range slices.Sorted(maps.Keys(queries)) {
		expr := queries[where]
		names := queryNames(expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, name := range names {
			if err := exported(kinds, name); err != nil {
				t.Errorf("%s: %v", where, err)
			}
		}
	}
}

// exported says whether a query may select name: a counter or gauge by its
// name, a histogram through _bucket, _sum and _count.
func exported(kinds map[string]string, name string) error {
	if kind, ok := kinds[name]; ok {
		if kind == "histogram" || kind == "summary" {
			return fmt.Errorf("%s is a %s: query %s_bucket, _sum or _count", name, kind, name)
		}
		return nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch kinds[base] {
		case "histogram", "":
			if _, known := kinds[base]; known {
				return nil
			}
		case "summary":
			if suffix != "_bucket" {
				return nil
			}
		}
	}
	return fmt.Errorf("%s is exported by none of collector, sink, detector", name)
}

func TestExported(t *testing.T) {
	kinds := map[string]string{"c_total": "counter", "h_seconds": "histogram", "s": "summary", "w": ""}
	for name, ok := range map[string]bool{
		"c_total": true, "h_seconds_bucket": true, "h_seconds_sum": true, "h_seconds_count": true, "h_seconds": false,
		"s_sum": true, "s_bucket": false, "w": true, "w_bucket": true, "missing_total": false, "c_total_bucket": false,
	} {
		if err := exported(kinds, name); (err == nil) != ok {
			t.Errorf("exported(%s) = %v, want ok=%v", name, err, ok)
		}
	}
}
