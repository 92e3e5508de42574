package main

// The web SDK (sdk/wasm) in a real browser: the js/wasm build and the
// TypeScript wrapper's compiled index.js are served to headless Chromium,
// driven by playwright-core from Node; the page tracks events over the
// WebSocket transport to a collector run in-process, and the test reads
// them back from Kafka.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// playwrightVersion is the playwright-core the test installs (only its
// CDP driver is used: the browser is Debian's chromium).
const playwrightVersion = "1.65.1"

// needTool skips the test when a tool is missing, or fails it when
// CAUSALITY_REQUIRE_REAL_SERVERS is set (make test, CI).
func needTool(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CAUSALITY_REQUIRE_REAL_SERVERS") != "" {
		t.Fatal(msg + " (required: CAUSALITY_REQUIRE_REAL_SERVERS is set)")
	}
	t.Skip(msg)
}

// chromiumPath returns $CAUSALITY_CHROMIUM or chromium in PATH.
func chromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CAUSALITY_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err != nil {
			needTool(t, "CAUSALITY_CHROMIUM: %v", err)
		}
		return p
	}
	p, err := exec.LookPath("chromium")
	if err != nil {
		needTool(t, "no chromium in PATH: apt-get install -y chromium (or set CAUSALITY_CHROMIUM)")
	}
	return p
}

// playwrightDir returns a dir with node_modules/playwright-core: from
// $CAUSALITY_PLAYWRIGHT_DIR, or the user cache dir, installing it there with
// npm on first use.
func playwrightDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("CAUSALITY_PLAYWRIGHT_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			needTool(t, "no user cache dir for playwright-core (%v): set CAUSALITY_PLAYWRIGHT_DIR", err)
		}
		dir = filepath.Join(cache, "causality", "playwright-core@"+playwrightVersion)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err == nil {
		return dir
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		needTool(t, "playwright-core is not in %s and there is no npm to install it", dir)
	}
	// Install next to dir and rename, so parallel runs never see half of it.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "playwright-install-")
	if err != nil {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if tmp, err = os.MkdirTemp(filepath.Dir(dir), "playwright-install-"); err != nil {
			t.Fatal(err)
		}
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", tmp, "playwright-core@"+playwrightVersion).CombinedOutput()
	if err != nil {
		needTool(t, "npm install playwright-core@%s: %v\n%s", playwrightVersion, err, out)
	}
	if err := os.Rename(tmp, dir); err != nil && !os.IsExist(err) {
		if _, statErr := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); statErr != nil {
			t.Fatalf("install playwright-core into %s: %v", dir, err)
		}
	}
	return dir
}

// buildWasm builds sdk/wasm for js/wasm into dir, as make wasm does.
func buildWasm(t testing.TB, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "causality.wasm")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "causality.dev/sdk/wasm")
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the wasm SDK: %v\n%s", err, b)
	}
	return out
}

// wasmExecJS returns the wasm_exec.js of the Go that builds the module.
func wasmExecJS(t testing.TB) string {
	t.Helper()
	b, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	root := strings.TrimSpace(string(b))
	for _, p := range []string{"lib/wasm/wasm_exec.js", "misc/wasm/wasm_exec.js"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			return filepath.Join(root, p)
		}
	}
	t.Fatalf("no wasm_exec.js under %s", root)
	return ""
}

// wasmPage tracks n events through the wrapper, one bad JSON event, then
// flushes and closes; window.__result settles with what happened.
const wasmPage = `<!doctype html>
<meta charset="utf-8"><title>causality wasm test</title>
<script src="/wasm_exec.js"></script>
<script type="module">
import { init } from "/index.js";
const q = new URLSearchParams(location.search);
window.__result = (async () => {
  const c = await init({ addr: q.get("addr"), key: q.get("key"), wasmUrl: "/causality.wasm",
    appVersion: "9.9.9", flushEvents: 7, maxBackoffMs: 1000 });
  const ids = [];
  const n = Number(q.get("n"));
  for (let i = 0; i < n; i++) {
    if (i % 3 === 0) ids.push(c.screenView("screen-" + i, "prev"));
    else if (i % 3 === 1) ids.push(c.buttonTap("b" + i, "Buy", "Home"));
    else ids.push(c.custom("level_up", { level: i, hard: true, ratio: 0.5, name: "x" }));
  }
  let badJSON = "";
  try { c.track("{not json"); } catch (e) { badJSON = String(e.message); }
  await c.flush(30000);
  const stats = c.stats();
  await c.close(5000);
  return { ids, badJSON, stats };
})().catch((e) => ({ error: String((e && e.stack) || e) }));
</script>
`

// wasmDriver opens the page in headless Chromium and prints window.__result
// as JSON, with the page's console output.
const wasmDriver = `
const path = require("path");
const { chromium } = require(path.join(process.env.PW_DIR, "node_modules", "playwright-core"));
(async () => {
  const ctx = await chromium.launchPersistentContext(process.env.PROFILE_DIR, {
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const logs = [];
  try {
    const page = await ctx.newPage();
    page.on("console", (m) => logs.push(m.type() + ": " + m.text()));
    page.on("pageerror", (e) => logs.push("pageerror: " + e));
    await page.goto(process.env.PAGE_URL);
    await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 60000 });
    const result = await page.evaluate(() => window.__result);
    result.console = logs;
    process.stdout.write(JSON.stringify(result));
  } finally {
    await ctx.close();
  }
})().catch((e) => { console.error(e, logs); process.exit(1); });
`

func TestWasmBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the wasm SDK and starts a browser")
	}
	chromium := chromiumPath(t)
	node, err := exec.LookPath("node")
	if err != nil {
		needTool(t, "no node in PATH")
	}
	pw := playwrightDir(t)

	dir := t.TempDir()
	wasm := buildWasm(t, dir)
	sdkWasm, err := filepath.Abs(filepath.Join("..", "..", "..", "sdk", "wasm"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, wasmPage)
	})
	mux.HandleFunc("/favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	serveFile := func(path, file, typ string) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", typ)
			http.ServeFile(w, r, file)
		})
	}
	serveFile("/wasm_exec.js", wasmExecJS(t), "text/javascript")
	serveFile("/index.js", filepath.Join(sdkWasm, "index.js"), "text/javascript")
	serveFile("/causality.wasm", wasm, "application/wasm")
	web := httptest.NewServer(mux)
	t.Cleanup(web.Close)

	col := startCollector(t, []string{"web-app"})
	const n = 25
	page := web.URL + "/?" + url.Values{
		"addr": {"ws://" + col.HTTP + "/v1/stream"},
		"key":  {col.keys.key["web-app"]},
		"n":    {fmt.Sprint(n)},
	}.Encode()

	profile := filepath.Join(dir, "profile") // a fresh --user-data-dir
	script := filepath.Join(dir, "driver.cjs")
	if err := os.WriteFile(script, []byte(wasmDriver), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(), "PW_DIR="+pw, "PROFILE_DIR="+profile, "CHROMIUM="+chromium, "PAGE_URL="+page)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("browser driver: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	var res struct {
		IDs     []string `json:"ids"`
		BadJSON string   `json:"badJSON"`
		Error   string   `json:"error"`
		Stats   struct {
			Tracked, Acked, Dropped, Invalid int
		} `json:"stats"`
		Console []string `json:"console"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("driver output %q: %v", stdout.String(), err)
	}
	t.Logf("page console: %q", res.Console)
	if res.Error != "" {
		t.Fatalf("page: %s", res.Error)
	}
	if len(res.IDs) != n {
		t.Fatalf("page tracked %d ids, want %d: %q", len(res.IDs), n, res.IDs)
	}
	if !strings.Contains(res.BadJSON, "event JSON") {
		t.Errorf("track of bad JSON threw %q, want an event JSON error", res.BadJSON)
	}
	if res.Stats.Tracked != n || res.Stats.Acked != n || res.Stats.Dropped != 0 || res.Stats.Invalid != 0 {
		t.Errorf("page stats %+v, want %d tracked and acked", res.Stats, n)
	}

	got := readTopic(t, col.kafka, col.kafka.Topic, res.IDs)
	var device string
	for i, id := range res.IDs {
		e := &eventv1.Event{}
		if err := proto.Unmarshal(got[id].Value, e); err != nil {
			t.Fatal(err)
		}
		if device == "" {
			device = e.GetDeviceId()
		}
		d := e.GetDeviceContext()
		if e.GetAppId() != "web-app" || e.GetDeviceId() != device || device == "" ||
			d.GetPlatform() != eventv1.Platform_PLATFORM_WEB || d.GetAppVersion() != "9.9.9" || d.GetScreenWidth() == 0 {
			t.Errorf("event %d: app %q device %q context %v", i, e.GetAppId(), e.GetDeviceId(), d)
		}
		switch i % 3 {
		case 0:
			if e.GetScreenView().GetScreenName() != fmt.Sprintf("screen-%d", i) {
				t.Errorf("event %d: %v, want screen view of screen-%d", i, e, i)
			}
		case 1:
			if e.GetButtonTap().GetButtonId() != fmt.Sprintf("b%d", i) {
				t.Errorf("event %d: %v, want tap of b%d", i, e, i)
			}
		case 2:
			ce := e.GetCustomEvent()
			if ce.GetIntParams()["level"] != int64(i) || !ce.GetBoolParams()["hard"] || ce.GetFloatParams()["ratio"] != 0.5 || ce.GetStringParams()["name"] != "x" {
				t.Errorf("event %d: %v, want level_up with typed params", i, e)
			}
		}
	}
}
