package main

// The web console end to end, in headless Chromium (Debian's chromium
// driven by playwright-core, as wasm_browser_test.go does): a collector
// with the admin API and the console, and a detector with the rules
// engine, both on the real broker. The browser signs in (a wrong token is
// refused), sees an event sent by a raw HTTP client in the live tail, an
// anomaly of a tampered device in the anomaly stream, a cohort's baseline
// against its current window, and creates a rule that then fires. With
// CAUSALITY_SCREENSHOTS=DIR the main pages are saved as DIR/console-*.png
// (DIR relative to the repository root: CAUSALITY_SCREENSHOTS=docs).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "causality.dev/api/gen/causality/admin/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/services/internal/kafka"
	"causality.dev/services/internal/kafkatest"
)

const consoleAdminToken = "console-e2e-admin-token-0123456789"

// consoleDriver walks through the console in headless Chromium. CONTROL
// is the test's own server, asked to send events at the right moments.
const consoleDriver = `
const path = require("path");
const { chromium } = require(path.join(process.env.PW_DIR, "node_modules", "playwright-core"));
const env = process.env;
const steps = [];
async function control(what) {
  const res = await fetch(env.CONTROL_URL + "/" + what, { method: "POST" });
  const body = await res.text();
  if (!res.ok) throw new Error("control " + what + ": " + res.status + " " + body);
  return JSON.parse(body);
}
(async () => {
  const ctx = await chromium.launchPersistentContext(env.PROFILE_DIR, {
    executablePath: env.CHROMIUM, headless: true, viewport: { width: 1280, height: 860 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const logs = [];
  const page = await ctx.newPage();
  page.setDefaultTimeout(90000);
  page.on("console", (m) => logs.push(m.type() + ": " + m.text()));
  page.on("pageerror", (e) => logs.push("pageerror: " + e));
  const shot = async (name) => {
    if (env.SHOTS_DIR) await page.screenshot({ path: path.join(env.SHOTS_DIR, "console-" + name + ".png") });
  };
  const step = async (name, fn) => { await fn(); steps.push(name); };
  const result = { steps, logs };
  try {
    await step("login page", async () => {
      await page.goto(env.CONSOLE_URL);
      await page.waitForSelector("#login-form");
    });
    await step("wrong token refused", async () => {
      await page.fill("#login-token", "not-the-admin-token");
      await page.click("#login-submit");
      await page.waitForFunction(() => document.querySelector("#login-error").textContent.includes("refused"));
      if (await page.isVisible("#tabs")) throw new Error("tabs visible after a wrong token");
      await shot("login");
      result.storedAfterWrong = await page.evaluate(() => sessionStorage.getItem("causality.adminToken"));
    });
    await step("sign in", async () => {
      await page.fill("#login-token", env.ADMIN_TOKEN);
      await page.click("#login-submit");
      await page.waitForSelector("#tabs", { state: "visible" });
      await page.waitForFunction(() => document.querySelector("#anom-status").textContent.startsWith("live"));
    });
    await step("anomaly appears", async () => {
      await page.click("#tab-anomalies");
      await control("anomaly");
      const card = await page.waitForSelector('article.anomaly[data-kind="ANOMALY_KIND_FUNNEL_BYPASS"]');
      result.anomalyText = await card.innerText();
      await shot("anomalies");
    });
    await step("event appears in the tail", async () => {
      await page.click("#tab-tail");
      const sent = await control("tail");
      for (const id of sent.ids) await page.waitForSelector('tr.event[data-id="' + id + '"]');
      await page.click('tr.event[data-id="' + sent.ids[sent.ids.length - 1] + '"]'); // shows its JSON
      result.tailRows = await page.locator("tr.event").count();
      await shot("tail");
    });
    await step("baseline against the current window", async () => {
      await page.click("#tab-baselines");
      await page.fill("#base-app", "shop");
      await page.selectOption("#base-window", "3600000");
      await page.click("#base-form button[type=submit]");
      await page.waitForFunction(() => [...document.querySelectorAll("#base-detail h3")].some((h) => h.textContent === "Baseline"));
      result.baselineText = await page.innerText("#base-detail");
      await shot("baselines");
    });
    await step("create, test and fire a rule", async () => {
      await page.click("#tab-rules");
      await page.waitForSelector("#rules-empty", { state: "visible" });
      await page.fill("#rule-name", "big purchase");
      await page.fill("#rule-app", "shop");
      await page.fill("#rule-types", "purchase_complete");
      await page.click("#rule-add-pred");
      await page.fill("#rule-preds .pred-path", "purchase_complete.total_cents");
      await page.selectOption("#rule-preds .pred-op", "OPERATOR_GT");
      await page.fill("#rule-preds .pred-value", "10000");
      await page.fill("#rule-topic", env.REACTION_TOPIC);
      await page.fill("#test-event", env.SAMPLE_EVENT);
      await page.click("#test-run");
      await page.waitForSelector("#test-verdict");
      result.testVerdict = await page.innerText("#test-result");
      await page.click("#rule-save");
      await page.waitForSelector('#rules-rows tr[data-name="big purchase"]');
      result.ruleRow = await page.innerText('#rules-rows tr[data-name="big purchase"]');
      const sent = await control("rule");
      await page.waitForSelector('tr.firing[data-rule="' + (await page.getAttribute('#rules-rows tr[data-name="big purchase"]', "data-id")) + '"]');
      result.firingText = await page.innerText("#fire-rows");
      result.firedFor = sent.id;
      // Open the rule again (edit) and test it, for the screenshot.
      await page.click('#rules-rows tr[data-name="big purchase"] button.link');
      await page.waitForFunction(() => document.querySelector("#rule-name").value === "big purchase");
      await page.click("#test-run");
      await page.waitForSelector("#test-verdict");
      await page.evaluate(() => window.scrollTo(0, 0));
      if (env.SHOTS_DIR) await page.screenshot({ path: path.join(env.SHOTS_DIR, "console-rules.png"), fullPage: true });
    });
    await step("disable the rule", async () => {
      await page.uncheck('#rules-rows tr[data-name="big purchase"] input.rule-enabled');
      await page.waitForFunction(() => {
        const box = document.querySelector('#rules-rows tr[data-name="big purchase"] input.rule-enabled');
        return box && !box.checked && !box.hasAttribute("checked");
      });
    });
    await step("create from JSON, then delete", async () => {
      await page.click("#rule-cancel");
      await page.click("#rule-mode-json");
      await page.fill("#rule-json", JSON.stringify({ name: "bypass alert", app_id: "shop",
        anomaly: { kinds: ["ANOMALY_KIND_FUNNEL_BYPASS"], min_score: 1 }, actions: [{ kafka_topic: env.REACTION_TOPIC }] }));
      await page.click("#rule-save");
      await page.waitForSelector('#rules-rows tr[data-name="bypass alert"]');
      result.jsonRuleRow = await page.innerText('#rules-rows tr[data-name="bypass alert"]');
      page.once("dialog", (d) => d.accept());
      await page.click('#rules-rows tr[data-name="bypass alert"] button.danger');
      await page.waitForSelector('#rules-rows tr[data-name="bypass alert"]', { state: "detached" });
    });
    process.stdout.write(JSON.stringify(result));
  } catch (e) {
    result.error = String((e && e.stack) || e);
    try { await page.screenshot({ path: path.join(env.PROFILE_DIR, "..", "failure.png") }); } catch {}
    result.pageErrors = await page.evaluate(() => [...document.querySelectorAll(".error, .status")].map((e) => e.id + ": " + e.textContent)).catch(() => []);
    process.stdout.write(JSON.stringify(result));
  } finally {
    await ctx.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
`

// consoleControl sends events through the collector's HTTP API when the
// browser driver asks; it waits on the detector's metrics where the
// order of events matters.
type consoleControl struct {
	httpAddr, key string
	det           *prometheus.Registry
	base          int64 // start of the anomaly's window, Unix ms
}

var shopContext = &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_ANDROID, AppVersion: "2.4.1", BuildNumber: "2410",
	DeviceModel: "Pixel 8", Manufacturer: "Google", OsVersion: "14", Locale: "en_US", SdkVersion: "0.1.0"}

func shopEvent(device string, seq uint64, at int64, payload func(*eventv1.Event)) *eventv1.Event {
	e := &eventv1.Event{EventId: uuid.Must(uuid.NewV7()).String(), AppId: "shop", DeviceId: device, InstallId: device + "-i",
		SessionId: device + "-s", TimestampMs: at, Sequence: seq, DeviceContext: shopContext}
	payload(e)
	return e
}

var (
	appStart = func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_AppStart{AppStart: &eventv1.AppStart{IsColdStart: true}}
	}
	screen = func(name string) func(*eventv1.Event) {
		return func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: name}}
		}
	}
	productV = func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_ProductView{ProductView: &eventv1.ProductView{ProductId: "p1", PriceCents: 2599}}
	}
	addToCart = func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_AddToCart{AddToCart: &eventv1.AddToCart{ProductId: "p1", Quantity: 1}}
	}
	checkout = func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_CheckoutStart{CheckoutStart: &eventv1.CheckoutStart{ItemCount: 1}}
	}
	purchaseOf = func(cents int64) func(*eventv1.Event) {
		return func(e *eventv1.Event) {
			e.Payload = &eventv1.Event_PurchaseComplete{PurchaseComplete: &eventv1.PurchaseComplete{OrderId: "o-" + e.GetEventId()[:8], TotalCents: cents, Currency: "EUR"}}
		}
	}
)

// send posts events to the collector's HTTP API with the app's ingest key
// and checks that every one was accepted.
func (c *consoleControl) send(ctx context.Context, events []*eventv1.Event) error {
	body, err := proto.Marshal(&ingestv1.BatchIngestRequest{Events: events})
	if err != nil {
		return err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.httpAddr+"/v1/events/batch", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-API-Key", c.key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var resp ingestv1.BatchIngestResponse
	if err := proto.Unmarshal(b, &resp); err != nil || res.StatusCode != http.StatusOK || int(resp.GetAcceptedCount()) != len(events) {
		return fmt.Errorf("ingest %d events: %d %v (%v)", len(events), res.StatusCode, &resp, err)
	}
	return nil
}

// waitMetric waits until the sum of metric name on the detector's
// registry reaches at least want.
func (c *consoleControl) waitMetric(ctx context.Context, name string, labelValue string, want float64) error {
	for {
		got, err := gatherSum(c.det, name, labelValue)
		if err != nil {
			return err
		}
		if got >= want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s{%s} is %v, want %v: %w", name, labelValue, got, want, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// gatherSum adds up the series of a metric, only those with a label of
// value labelValue when it is not empty.
func gatherSum(reg *prometheus.Registry, name, labelValue string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := labelValue == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == labelValue
			}
			if match {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum, nil
}

// anomaly sends, in one window half an hour ago, four shoppers with the
// whole checkout flow and one device that buys without it (a funnel
// bypass); once the detector scored them, an event ten minutes later
// closes the window.
func (c *consoleControl) anomaly(ctx context.Context) (any, error) {
	base := c.base
	var events []*eventv1.Event
	for i := range 4 {
		d := fmt.Sprintf("shopper-%d", i)
		at := base + int64(i)*1000
		for j, p := range []func(*eventv1.Event){appStart, screen("Home"), productV, addToCart, screen("Cart"), checkout, purchaseOf(2599)} {
			events = append(events, shopEvent(d, uint64(j+1), at+int64(j)*3000, p))
		}
	}
	events = append(events,
		shopEvent("cheater", 1, base+1000, appStart),
		shopEvent("cheater", 2, base+2000, screen("Paywall")),
		shopEvent("cheater", 3, base+3000, purchaseOf(99999)))
	before, err := gatherSum(c.det, "causality_detect_events_total", "scored")
	if err != nil {
		return nil, err
	}
	if err := c.send(ctx, events); err != nil {
		return nil, err
	}
	// Partitions are fetched in no fixed order: the closing event must not
	// overtake the others, or they would be late.
	if err := c.waitMetric(ctx, "causality_detect_events_total", "scored", before+float64(len(events))); err != nil {
		return nil, err
	}
	return map[string]bool{"ok": true}, c.send(ctx, []*eventv1.Event{shopEvent("clock", 1, base+10*60_000, appStart)})
}

// tail sends a few events of now and returns their ids.
func (c *consoleControl) tail(ctx context.Context) (any, error) {
	now := time.Now().UnixMilli()
	var events []*eventv1.Event
	for i, p := range []func(*eventv1.Event){appStart, screen("Home"), productV, screen("Search"), addToCart, screen("Cart")} {
		events = append(events, shopEvent(fmt.Sprintf("phone-%d", i%3), uint64(i+1), now+int64(i), p))
	}
	return map[string][]string{"ids": ids(events)}, c.send(ctx, events)
}

// rule waits until the detector has loaded the rule the browser created,
// then sends a purchase above its threshold and one below.
func (c *consoleControl) rule(ctx context.Context) (any, error) {
	if err := c.waitMetric(ctx, "causality_rules_loaded", "", 1); err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	big := shopEvent("phone-9", 1, now, purchaseOf(25000))
	small := shopEvent("phone-9", 2, now+1, purchaseOf(500))
	return map[string]string{"id": big.GetEventId(), "other": small.GetEventId()}, c.send(ctx, []*eventv1.Event{big, small})
}

func (c *consoleControl) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 90*time.Second)
	defer cancel()
	var out any
	var err error
	switch r.URL.Path {
	case "/anomaly":
		out, err = c.anomaly(ctx)
	case "/tail":
		out, err = c.tail(ctx)
	case "/rule":
		out, err = c.rule(ctx)
	default:
		err = errors.New("no such step")
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	_ = json.NewEncoder(w).Encode(out)
}

// screenshotsDir returns $CAUSALITY_SCREENSHOTS, relative to the
// repository root, or "" when screenshots are not wanted.
func screenshotsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CAUSALITY_SCREENSHOTS")
	if dir == "" {
		return ""
	}
	if !filepath.IsAbs(dir) {
		root, err := filepath.Abs(filepath.Join("..", "..", ".."))
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestConsoleBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a collector, a detector and a browser")
	}
	chromium := chromiumPath(t)
	node, err := exec.LookPath("node")
	if err != nil {
		needTool(t, "no node in PATH")
	}
	pw := playwrightDir(t)

	kcfg := kafkatest.Config(t)
	anomaliesTopic, firingsTopic, reactionTopic := kcfg.Topic+".anomalies", kcfg.Topic+".firings", kcfg.Topic+".reactions"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = kafka.DeleteTopics(ctx, kcfg, anomaliesTopic, firingsTopic, reactionTopic)
	})
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	adminTokens := write("admin-tokens", "# console e2e\n"+consoleAdminToken+"\n")
	detTokenFile := write("detector-token", detToken+"\n")
	rulesFile, appsFile := filepath.Join(dir, "rules.json"), filepath.Join(dir, "apps.json")

	detAddr := detFreeAddr(t)
	_, detReg := startDetectorWithRegistry(t, []string{
		"-kafka.brokers=" + kcfg.Brokers, "-kafka.topic=" + kcfg.Topic, "-kafka.dlq-topic=" + kcfg.DLQTopic,
		"-kafka.partitions=3",
		"-detect.group=" + kcfg.Topic + ".detector", "-detect.anomalies-topic=" + anomaliesTopic,
		"-detect.windows=1m", "-detect.lateness=1s", "-detect.idle-after=0",
		"-detect.grpc-addr=" + detAddr, "-detect.token=" + detToken,
		"-detect.checkpoint=" + filepath.Join(dir, "detector.ckpt"),
		"-rules.file=" + rulesFile, "-rules.firings-topic=" + firingsTopic, "-rules.reload-interval=100ms",
	})
	keys := writeKeys(t, "shop")
	col := startCollectorOn(t, kcfg, keys,
		"-adminapi.tokens-file="+adminTokens, "-adminapi.rules-file="+rulesFile, "-adminapi.apps-file="+appsFile,
		"-console.detector-addr="+detAddr, "-console.detector-token-file="+detTokenFile,
		"-console.anomalies-topic="+anomaliesTopic, "-console.firings-topic="+firingsTopic)

	// Without a token the console's API refuses; the page itself loads.
	res, err := http.Get("http://" + col.HTTP + "/console/api/info")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("console API without a token: %d, want 401", res.StatusCode)
	}

	// The app exists (rules need it), as `causality admin apps create` makes it.
	req, _ := http.NewRequest(http.MethodPost, "http://"+col.HTTP+"/causality.admin.v1.AdminService/CreateApp", strings.NewReader(`{"app": {"id": "shop", "name": "Shop"}}`))
	req.Header.Set("Authorization", "Bearer "+consoleAdminToken)
	req.Header.Set("Content-Type", "application/json")
	if res, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("CreateApp: %d %s", res.StatusCode, b)
	}

	ctl := &consoleControl{httpAddr: col.HTTP, key: keys.key["shop"], det: detReg,
		base: time.Now().Add(-30 * time.Minute).Truncate(time.Minute).UnixMilli()}
	control := httptest.NewServer(ctl)
	t.Cleanup(control.Close)
	sample, err := protojson.MarshalOptions{UseProtoNames: true, Multiline: true}.Marshal(shopEvent("sample-device", 1, time.Now().UnixMilli(), purchaseOf(12999)))
	if err != nil {
		t.Fatal(err)
	}

	shots := screenshotsDir(t)
	script := filepath.Join(dir, "driver.cjs")
	if err := os.WriteFile(script, []byte(consoleDriver), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(), "PW_DIR="+pw, "PROFILE_DIR="+filepath.Join(dir, "profile"), "CHROMIUM="+chromium,
		"CONSOLE_URL=http://"+col.HTTP+"/console/", "CONTROL_URL="+control.URL, "ADMIN_TOKEN="+consoleAdminToken,
		"SAMPLE_EVENT="+string(sample), "REACTION_TOPIC="+reactionTopic, "SHOTS_DIR="+shots)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("browser driver: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var out struct {
		Steps            []string `json:"steps"`
		Logs             []string `json:"logs"`
		Error            string   `json:"error"`
		PageErrors       []string `json:"pageErrors"`
		StoredAfterWrong *string  `json:"storedAfterWrong"`
		AnomalyText      string   `json:"anomalyText"`
		TailRows         int      `json:"tailRows"`
		BaselineText     string   `json:"baselineText"`
		TestVerdict      string   `json:"testVerdict"`
		RuleRow          string   `json:"ruleRow"`
		JSONRuleRow      string   `json:"jsonRuleRow"`
		FiringText       string   `json:"firingText"`
		FiredFor         string   `json:"firedFor"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("driver output %q: %v\nstderr: %s", stdout.String(), err, stderr.String())
	}
	t.Logf("steps done: %q", out.Steps)
	if out.Error != "" {
		rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
		msgs, err := kafka.ReadAll(rctx, kcfg, firingsTopic, 100)
		rcancel()
		t.Logf("firings topic: %d messages (%v)", len(msgs), err)
		for _, m := range msgs {
			var f adminv1.RuleFiring
			_ = proto.Unmarshal(m.Value, &f)
			t.Logf("  firing %v", &f)
		}
		t.Fatalf("browser: %s\npage console: %q\nerrors and statuses on the page: %q", out.Error, out.Logs, out.PageErrors)
	}
	if out.StoredAfterWrong != nil {
		t.Errorf("a refused token stayed in session storage: %q", *out.StoredAfterWrong)
	}
	for _, want := range []string{"funnel bypass", "cheater", "purchase_complete"} {
		if !strings.Contains(strings.ToLower(out.AnomalyText), want) { // the kind is shown in capitals
			t.Errorf("anomaly card without %q:\n%s", want, out.AnomalyText)
		}
	}
	if !strings.Contains(out.BaselineText, "Event-type mix") || !strings.Contains(out.BaselineText, "windows learned") {
		t.Errorf("baselines page:\n%s", out.BaselineText)
	}
	if !strings.Contains(out.TestVerdict, "Matched.") {
		t.Errorf("TestRule in the page: %s", out.TestVerdict)
	}
	if !strings.Contains(out.JSONRuleRow, "funnel bypass") {
		t.Errorf("rule created from JSON: %q", out.JSONRuleRow)
	}
	if !strings.Contains(out.FiringText, "big purchase") {
		t.Errorf("firings list: %s", out.FiringText)
	}

	// What the page showed is what is in Kafka and in the rules file: one
	// firing, for the big purchase only; the rule is now disabled, the one
	// made from JSON deleted.
	msgs, err := kafka.ReadAll(ctx, kcfg, firingsTopic, 1)
	if err != nil {
		t.Fatalf("read %s: %v", firingsTopic, err)
	}
	var f adminv1.RuleFiring
	if err := proto.Unmarshal(msgs[0].Value, &f); err != nil || f.GetRuleName() != "big purchase" || f.GetEvent().GetEventId() != out.FiredFor {
		t.Errorf("firing %v (%v), want big purchase for %s", &f, err, out.FiredFor)
	}
	b, err = os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var set adminv1.RuleSet
	if err := protojson.Unmarshal(b, &set); err != nil || len(set.GetRules()) != 1 || !set.GetRules()[0].GetDisabled() {
		t.Errorf("rules file after disabling one rule and deleting the other in the page: %s (%v)", b, err)
	}
}

// checkDevConsole checks the console of `causality dev` (TestDevStack): on
// the HTTP port behind the generated admin token, its URL in the banner,
// and baselines proxied to the dev detector with the dev detector token
// (the detector answers, be it NOT_FOUND for a cohort it has not seen).
func checkDevConsole(t *testing.T, dir, httpAddr, banner string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	if url := "http://" + httpAddr + "/console/"; !strings.Contains(banner, url) {
		t.Errorf("banner lacks the console URL %s:\n%s", url, banner)
	}
	get := func(path, tok string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(body)
	}
	if code, body := get("/console/", ""); code != http.StatusOK || !strings.Contains(body, "Causality console") {
		t.Errorf("dev console page: %d", code)
	}
	if code, _ := get("/console/api/info", ""); code != http.StatusUnauthorized {
		t.Errorf("dev console API without a token: %d, want 401", code)
	}
	if code, body := get("/console/api/info", tok); code != http.StatusOK || !strings.Contains(body, `"detector":true`) {
		t.Errorf("dev console info: %d %s, want the dev detector configured", code, body)
	}
	code, body := get("/console/api/baseline?app_id=my-app&app_version=0.0.0-none&platform=android", tok)
	if code != http.StatusOK && !(code == http.StatusNotFound && strings.Contains(body, "NOT_FOUND")) {
		t.Errorf("dev console baseline: %d %s, want the dev detector's answer", code, body)
	}
}

// TestConsoleWiring: without the admin API the collector serves no
// console at all; with it, console flags that cannot work stop the
// collector at start.
func TestConsoleWiring(t *testing.T) {
	col := startCollector(t, []string{"shop"})
	for _, path := range []string{"/console/", "/console", "/console/api/info", "/console/app.js"} {
		res, err := http.Get("http://" + col.HTTP + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s without the admin API: %d, want 404", path, res.StatusCode)
		}
	}

	dir := t.TempDir()
	tokens := filepath.Join(dir, "admin-tokens")
	if err := os.WriteFile(tokens, []byte(consoleAdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := writeKeys(t, "shop")
	admin := []string{"-adminapi.tokens-file=" + tokens, "-adminapi.rules-file=" + filepath.Join(dir, "rules.json"), "-adminapi.apps-file=" + filepath.Join(dir, "apps.json")}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"detector without token", []string{"-console.detector-addr=127.0.0.1:7075"}, "-console.detector-token-file"},
		{"missing token file", []string{"-console.detector-addr=127.0.0.1:7075", "-console.detector-token-file=" + filepath.Join(dir, "none")}, "-console.detector-token-file"},
		{"zero rate", []string{"-console.max-rate=0"}, "-console.max-rate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"collector"}, collectorArgs(col.kafka, keys.file, append(admin, tt.args...)...)...)
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			if err := run(ctx, args, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("collector %v: %v, want an error about %s", tt.args, err, tt.want)
			}
		})
	}
}
