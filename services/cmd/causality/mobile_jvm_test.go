package main

// The mobile SDK as Android apps get it, on the host JVM: the gobind Java
// classes and the Java wrapper (sdk/android) over the Go SDK built for
// linux/amd64 as a JNI library, talking to a collector run in-process.
// sdk/mobile/bind.sh builds the library and classes; make mobile runs it and
// then this test with CAUSALITY_MOBILE_DIR set.

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

func TestMobileJVM(t *testing.T) {
	dir := os.Getenv("CAUSALITY_MOBILE_DIR")
	if dir == "" {
		t.Skip("CAUSALITY_MOBILE_DIR is not set: make mobile builds the JNI library and classes (sdk/mobile/bind.sh) and runs this test")
	}
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatal("no java in PATH, but CAUSALITY_MOBILE_DIR is set")
	}
	for _, p := range []string{"lib/libgojni.so", "classes/dev/causality/CausalityTest.class"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("CAUSALITY_MOBILE_DIR=%s: %v (run sdk/mobile/bind.sh)", dir, err)
		}
	}
	col := startCollector(t, []string{"android-app"})
	storage := filepath.Join(t.TempDir(), "causality") // what the app would pass: filesDir/causality

	runJava := func(phase string) []string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, java, "-Djava.library.path="+filepath.Join(dir, "lib"), "-cp", filepath.Join(dir, "classes"),
			"dev.causality.CausalityTest", phase, col.TCP, col.keys.key["android-app"], storage)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("java %s: %v\nstdout:\n%s\nstderr:\n%s", phase, err, stdout.String(), stderr.String())
		}
		var ids []string
		ok := false
		sc := bufio.NewScanner(&stdout)
		for sc.Scan() {
			if id, found := strings.CutPrefix(sc.Text(), "id "); found {
				ids = append(ids, id)
			}
			ok = ok || sc.Text() == "ok"
		}
		if !ok {
			t.Fatalf("java %s did not finish:\n%s\n%s", phase, stdout.String(), stderr.String())
		}
		return ids
	}
	jsonIDs := append(runJava("first"), runJava("second")...)
	if len(jsonIDs) != 11 {
		t.Fatalf("java printed %d ids, want 11: %q", len(jsonIDs), jsonIDs)
	}

	// 10 JSON events, 5 typed ones, then 1 JSON event after a restart.
	const want = 16
	msgs := readFor(t, col.kafka, col.kafka.Topic, want+1, 10*time.Second) // one more than expected, to see extras
	byID := map[string]*eventv1.Event{}
	byName := map[string]*eventv1.Event{}
	for _, m := range msgs {
		e := &eventv1.Event{}
		if err := proto.Unmarshal(m.Value, e); err != nil {
			t.Fatal(err)
		}
		byID[e.GetEventId()] = e // duplicates (at-least-once) collapse here
	}
	if len(byID) != want {
		t.Fatalf("Kafka holds %d distinct events, want %d", len(byID), want)
	}
	for _, id := range jsonIDs {
		if byID[id] == nil {
			t.Errorf("event %s tracked by Java is not in Kafka", id)
		}
	}
	var install string
	for _, e := range byID {
		switch {
		case e.GetScreenView() != nil:
			byName["screen:"+e.GetScreenView().GetScreenName()] = e
		case e.GetButtonTap() != nil:
			byName["tap"] = e
		case e.GetCustomEvent() != nil:
			byName["custom"] = e
		case e.GetPurchaseComplete() != nil:
			byName["purchase"] = e
		case e.GetNetworkChange() != nil:
			byName["network"] = e
		}
		if install == "" {
			install = e.GetInstallId()
		}
		d := e.GetDeviceContext()
		if e.GetAppId() != "android-app" || e.GetInstallId() != install || e.GetUserId() != "java-user" ||
			d.GetPlatform() != eventv1.Platform_PLATFORM_ANDROID || d.GetAppVersion() != "7.1.0" {
			t.Errorf("event %s: app %q install %q (first %q) user %q context %v", e.GetEventId(), e.GetAppId(), e.GetInstallId(), install, e.GetUserId(), d)
		}
	}
	if e := byName["screen:java-typed"]; e.GetScreenView().GetPreviousScreen() != "java-json-9" {
		t.Errorf("typed screen view: %v", e)
	}
	if e := byName["screen:java-second"]; e == nil {
		t.Error("the second launch's event is missing")
	}
	if e := byName["tap"]; e.GetButtonTap().GetButtonId() != "java-buy" {
		t.Errorf("button tap: %v", e)
	}
	if ce := byName["custom"].GetCustomEvent(); ce.GetEventName() != "java_custom" || ce.GetIntParams()["level"] != 3 || !ce.GetBoolParams()["hard"] || ce.GetFloatParams()["ratio"] != 0.25 || ce.GetStringParams()["name"] != "x" {
		t.Errorf("custom event: %v", ce)
	}
	if pc := byName["purchase"].GetPurchaseComplete(); pc.GetOrderId() != "order-j" || len(pc.GetItems()) != 1 || pc.GetItems()[0].GetQuantity() != 2 {
		t.Errorf("purchase: %v", pc)
	}
	if nc := byName["network"].GetNetworkChange(); nc.GetCurrentType() != eventv1.NetworkType_NETWORK_TYPE_CELLULAR_5G {
		t.Errorf("network change: %v", nc)
	}
}
