package mobile_test

import (
	"strings"
	"testing"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/sdk/mobile"
	"causality.dev/sdk/sdktest"
)

func TestNewClientRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*mobile.Config)
		want string
	}{
		{"transport", func(c *mobile.Config) { c.Transport = "carrier-pigeon" }, "transport"},
		{"platform", func(c *mobile.Config) { c.Platform = "symbian" }, "platform"},
		{"network", func(c *mobile.Config) { c.NetworkType = "6g" }, "network type"},
		{"consent", func(c *mobile.Config) { c.Consent = 7 }, "consent"},
		{"sample rate", func(c *mobile.Config) { c.SampleRate = 2 }, "sample rate"},
		{"flush", func(c *mobile.Config) { c.FlushEvents = -1 }, "flush size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mobile.NewConfig()
			tt.edit(cfg)
			c, err := mobile.NewClient("127.0.0.1:1", "key", "", cfg)
			if err == nil {
				c.Close(100)
				t.Fatal("NewClient accepted the config")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// TestClientDelivers tracks through every kind of method and checks what the
// fake collector accepted, including the device context of the config.
func TestClientDelivers(t *testing.T) {
	col := sdktest.Start(t, nil)
	cfg := mobile.NewConfig()
	cfg.Platform, cfg.AppVersion, cfg.Locale, cfg.NetworkType = "android", "4.2.0", "de-DE", "wifi"
	dir := t.TempDir()
	c, err := mobile.NewClient(col.Addr, sdktest.Key, dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.TrackJSON(`{"eventId":"0192f7a0-0000-7000-8000-000000000001","screenView":{"screenName":"Home"}}`)
	if err != nil || id != "0192f7a0-0000-7000-8000-000000000001" {
		t.Fatalf("TrackJSON: %q, %v", id, err)
	}
	if id, err = c.TrackJSON(`{"buttonTap":{"buttonId":"buy"}}`); err != nil || len(id) != 36 {
		t.Fatalf("TrackJSON without id: %q, %v", id, err)
	}
	if _, err := c.TrackJSON(`{"noSuchField":1}`); err == nil {
		t.Fatal("TrackJSON accepted an unknown field")
	}
	c.Login("user-1", "password")
	p := mobile.NewParams()
	p.PutInt("level", 3)
	p.PutBool("hard", true)
	c.Custom("level_up", p)
	items := mobile.NewItems()
	items.Add("p1", "Pen", 2, 150)
	c.Purchase("order-1", 300, "EUR", items)
	if err := c.NetworkChange("wifi", "5g"); err != nil {
		t.Fatal(err)
	}
	if err := c.NetworkChange("wifi", "smoke"); err == nil {
		t.Fatal("NetworkChange accepted an unknown type")
	}
	c.OnBackground()
	if err := c.Flush(10_000); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	s := c.Stats()
	if s.Acked != 6 || s.Queued != 0 || s.LastError != "" {
		t.Fatalf("stats %+v, want 6 acked", s)
	}
	if err := c.OnTerminate(10_000); err != nil {
		t.Fatal(err)
	}
	got := col.Accepted()
	if len(got) != 6 {
		t.Fatalf("collector accepted %d events, want 6", len(got))
	}
	for _, e := range got {
		d := e.GetDeviceContext()
		if d.GetPlatform() != eventv1.Platform_PLATFORM_ANDROID || d.GetAppVersion() != "4.2.0" || d.GetLocale() != "de-DE" || d.GetNetworkType() != eventv1.NetworkType_NETWORK_TYPE_WIFI {
			t.Errorf("event %s: device context %v", e.GetEventId(), d)
		}
	}
	if got[0].GetEventId() != "0192f7a0-0000-7000-8000-000000000001" || got[0].GetScreenView().GetScreenName() != "Home" {
		t.Errorf("first event %v", got[0])
	}
	if ce := got[3].GetCustomEvent(); ce.GetIntParams()["level"] != 3 || !ce.GetBoolParams()["hard"] || got[3].GetUserId() != "user-1" {
		t.Errorf("custom event %v", got[3])
	}
	if pc := got[4].GetPurchaseComplete(); len(pc.GetItems()) != 1 || pc.GetItems()[0].GetQuantity() != 2 {
		t.Errorf("purchase %v", got[4])
	}
	if nc := got[5].GetNetworkChange(); nc.GetCurrentType() != eventv1.NetworkType_NETWORK_TYPE_CELLULAR_5G {
		t.Errorf("network change %v", got[5])
	}

	// The storage dir keeps the install id and the user across launches.
	c2, err := mobile.NewClient(col.Addr, sdktest.Key, dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.TrackJSON(`{"screenView":{"screenName":"Again"}}`); err != nil {
		t.Fatal(err)
	}
	if err := c2.Close(10_000); err != nil {
		t.Fatal(err)
	}
	got = col.Accepted()
	last := got[len(got)-1]
	if last.GetInstallId() != got[0].GetInstallId() || last.GetUserId() != "user-1" {
		t.Errorf("after a restart: install %q user %q, want %q and user-1", last.GetInstallId(), last.GetUserId(), got[0].GetInstallId())
	}
	if err := c2.Close(100); err == nil {
		t.Error("second Close returned nil")
	}
}

func TestConsentAndOptOut(t *testing.T) {
	col := sdktest.Start(t, nil)
	cfg := mobile.NewConfig()
	cfg.Consent = mobile.ConsentPending
	c, err := mobile.NewClient(col.Addr, sdktest.Key, t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(1000) })
	c.ScreenView("held", "")
	if err := c.SetConsent(5); err == nil {
		t.Fatal("SetConsent accepted 5")
	}
	if err := c.SetConsent(mobile.ConsentGranted); err != nil {
		t.Fatal(err)
	}
	c.ScreenView("after", "")
	col.WaitFor(t, "2 events", func() bool { return len(col.Accepted()) == 2 })
	names := map[string]bool{}
	for _, e := range col.Accepted() {
		names[e.GetScreenView().GetScreenName()] = true
	}
	if !names["held"] || !names["after"] {
		t.Fatalf("accepted screens %v, want held and after", names)
	}
	c.OptOut(true)
	if id, err := c.TrackJSON(`{"screenView":{"screenName":"out"}}`); err != nil || id != "" {
		t.Fatalf("TrackJSON while opted out: %q, %v; want no id", id, err)
	}
	if s := c.Stats(); s.Discarded != 1 {
		t.Fatalf("stats %+v, want 1 discarded", s)
	}
}
