package detect

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
	eventv1 "causality.dev/api/gen/causality/event/v1"
)

const minute = int64(60_000)

func testConfig() Config {
	c := DefaultConfig()
	c.Windows = []time.Duration{time.Minute}
	c.Lateness = 5 * time.Second
	c.Warmup = 8
	c.Memory = 2 * time.Hour
	return c
}

func newDetector(t testing.TB, cfg Config) *Detector {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// recorder feeds a detector and keeps what it finds.
type recorder struct {
	d     *Detector
	found []*detectv1.Anomaly
}

func (r *recorder) feed(e *eventv1.Event) { r.found = append(r.found, r.d.Observe(e)...) }
func (r *recorder) flush()                { r.found = append(r.found, r.d.Flush()...) }

func describe(as []*detectv1.Anomaly) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "\n  %s %s %s device=%q window=%s score=%.2f thr=%.2f: %s",
			a.GetKind(), a.GetAppId(), CohortLabel(a.GetCohort()), a.GetDeviceId(),
			time.UnixMilli(a.GetWindowStartMs()).UTC().Format("15:04"), a.GetScore(), a.GetThreshold(), a.GetSummary())
	}
	return b.String()
}

func TestGenuineStreamsDoNotAlert(t *testing.T) {
	tests := []struct {
		name   string
		change func(f *fleet, at int64)
	}{
		{"steady fleet", func(*fleet, int64) {}},
		{"legit new version with a slightly changed flow", func(f *fleet, at int64) {
			newVersion := func(i int) *eventv1.DeviceContext {
				c := genuineMix(i)
				c.AppVersion, c.BuildNumber = "2.6.0", "2600"
				return c
			}
			for _, d := range f.add(60, at, genuine, newVersion) {
				d.newFlow = true
			}
		}},
		{"marketing spike: twice the users, same behaviour", func(f *fleet, at int64) {
			f.add(150, at, genuine, genuineMix)
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{d: newDetector(t, testConfig())}
			f := newFleet(uint64(100 + i))
			f.add(150, t0, genuine, genuineMix)
			f.until(t0+15*minute, r.feed)
			tt.change(f, t0+15*minute)
			f.until(t0+35*minute, r.feed)
			r.flush()
			if len(r.found) > 0 {
				t.Errorf("%d anomalies on genuine traffic:%s", len(r.found), describe(r.found))
			}
			if s := r.d.Stats(); s.Events < 50_000 {
				t.Errorf("only %d events scored: the fleet is too small to mean anything", s.Events)
			}
		})
	}
}

func emulatorCtx(int) *eventv1.DeviceContext {
	c := androidCtx()
	c.IsEmulator, c.DeviceModel, c.Manufacturer = true, "sdk_gphone64_x86_64", "Google"
	return c
}

// ruleKinds are the per-device checks that need 2 of 3 windows.
var ruleKinds = []detectv1.AnomalyKind{
	detectv1.AnomalyKind_ANOMALY_KIND_FORGED_SEQUENCE, detectv1.AnomalyKind_ANOMALY_KIND_TIMING_REGULARITY,
	detectv1.AnomalyKind_ANOMALY_KIND_IDENTICAL_PATHS, detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS,
}

func TestTamperedStreams(t *testing.T) {
	tests := []struct {
		name  string
		start func(f *fleet, at int64) []*fdev
		kinds []detectv1.AnomalyKind // each must be found for every tampered device
	}{
		{"automation bots: regular timing, identical paths", func(f *fleet, at int64) []*fdev {
			return f.add(4, at, bot, func(int) *eventv1.DeviceContext { return androidCtx() })
		}, []detectv1.AnomalyKind{detectv1.AnomalyKind_ANOMALY_KIND_TIMING_REGULARITY, detectv1.AnomalyKind_ANOMALY_KIND_IDENTICAL_PATHS}},
		{"paywall bypass: purchases without checkout", func(f *fleet, at int64) []*fdev {
			return f.add(3, at, paywall, genuineMix)
		}, []detectv1.AnomalyKind{detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS}},
		{"replayed events", func(f *fleet, at int64) []*fdev {
			return f.add(3, at, replayer, genuineMix)
		}, []detectv1.AnomalyKind{detectv1.AnomalyKind_ANOMALY_KIND_REPLAY}},
		{"forged impossible sequences", func(f *fleet, at int64) []*fdev {
			return f.add(3, at, forger, genuineMix)
		}, []detectv1.AnomalyKind{detectv1.AnomalyKind_ANOMALY_KIND_FORGED_SEQUENCE}},
		{"emulator farm", func(f *fleet, at int64) []*fdev {
			return f.add(8, at, genuine, emulatorCtx)
		}, []detectv1.AnomalyKind{detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS}},
		{"repackaged build never released", func(f *fleet, at int64) []*fdev {
			ds := f.add(10, at, genuine, func(int) *eventv1.DeviceContext {
				c := androidCtx()
				c.BuildNumber = "2417" // 2.4.1 is build 2410
				return c
			})
			for _, d := range ds {
				d.stripCustom = true
			}
			return ds
		}, []detectv1.AnomalyKind{detectv1.AnomalyKind_ANOMALY_KIND_UNKNOWN_BUILD}},
		{"inconsistent device context", func(f *fleet, at int64) []*fdev {
			return f.add(2, at, genuine, func(int) *eventv1.DeviceContext {
				c := iosCtx()
				c.Manufacturer = "samsung"
				return c
			})
		}, []detectv1.AnomalyKind{detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			r := &recorder{d: newDetector(t, cfg)}
			f := newFleet(uint64(200 + i))
			f.add(300, t0, genuine, genuineMix)
			at := t0 + 30*minute
			f.until(at, r.feed)
			if len(r.found) > 0 {
				t.Fatalf("anomalies before the tampering started:%s", describe(r.found))
			}
			bad := map[string]bool{}
			devs := tt.start(f, at)
			for _, d := range devs {
				bad[d.id] = true
			}
			f.until(at+8*minute, r.feed)
			r.flush()

			// Every finding is about tampered devices; every tampered device is found.
			found := map[detectv1.AnomalyKind]map[string]int64{}
			for _, a := range r.found {
				devs := a.GetDevices()
				if a.GetDeviceId() != "" {
					devs = []string{a.GetDeviceId()}
				}
				if len(devs) == 0 || slices.ContainsFunc(devs, func(id string) bool { return !bad[id] }) {
					t.Errorf("finding about genuine devices:%s", describe([]*detectv1.Anomaly{a}))
				}
				if found[a.GetKind()] == nil {
					found[a.GetKind()] = map[string]int64{}
				}
				for _, id := range devs {
					if _, ok := found[a.GetKind()][id]; !ok {
						found[a.GetKind()][id] = a.GetWatermarkMs()
					}
				}
			}
			for _, k := range tt.kinds {
				for _, d := range devs {
					wm, ok := found[k][d.id]
					if !ok {
						t.Errorf("%s not found for tampered device %s; found:%s", k, d.id, describe(r.found))
						continue
					}
					// Time to detect, in event time: by the end of the second window
					// the device was active in from its first tampered event on; for
					// the statistical checks (2 of 3 windows with enough evidence
					// each) the fourth. Plus the lateness.
					n := 2
					if slices.Contains(ruleKinds, k) {
						n = 4
					}
					var windows []int64
					for _, m := range d.active {
						if m >= WindowOf(d.firstBad, minute).Start {
							windows = append(windows, m)
						}
					}
					if d.firstBad == 0 || len(windows) == 0 {
						t.Fatalf("%s never tampered", d.id)
					}
					limit := windows[min(n, len(windows))-1] + minute + cfg.Lateness.Milliseconds()
					if wm > limit {
						t.Errorf("%s for %s found at %s, after %d of its active windows (by %s)", k, d.id,
							time.UnixMilli(wm).UTC().Format("15:04:05"), n, time.UnixMilli(limit).UTC().Format("15:04:05"))
					}
				}
			}
		})
	}
}

func TestDetectorEdges(t *testing.T) {
	ev := func(id string, ts int64, typ func(*eventv1.Event)) *eventv1.Event {
		e := &eventv1.Event{EventId: id, AppId: "shop", DeviceId: "d1", InstallId: "i1", SessionId: "s1", TimestampMs: ts, DeviceContext: androidCtx()}
		typ(e)
		return e
	}
	t.Run("empty detector", func(t *testing.T) {
		d := newDetector(t, testConfig())
		if got := d.Flush(); len(got) != 0 {
			t.Errorf("Flush of an empty detector found %d anomalies", len(got))
		}
		if d.Watermark() != math.MinInt64 {
			t.Errorf("watermark %d before any event", d.Watermark())
		}
	})
	t.Run("late event is counted and dropped", func(t *testing.T) {
		d := newDetector(t, testConfig())
		d.Observe(ev("a", t0+10*minute, scroll()))
		d.Observe(ev("b", t0+10*minute-20_000, scroll())) // within lateness (5 s)? no: 20 s behind, but its window is still open
		d.Observe(ev("c", t0+8*minute, scroll()))         // window [8, 9) closed long ago
		s := d.Stats()
		if s.Events != 3 || s.Late[0] != 1 {
			t.Errorf("events %d late %d, want 3 and 1", s.Events, s.Late[0])
		}
		d.Flush()
		b, ok := d.Baseline(&detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_ANDROID}, 0)
		if !ok {
			t.Fatal("no baseline for the cohort")
		}
		if b.GetWindows() != 2 {
			t.Errorf("baseline learned %d windows, want 2 ([9,10) and [10,11)): the late event must not open a window", b.GetWindows())
		}
	})
	t.Run("duplicates by event id are ignored", func(t *testing.T) {
		d := newDetector(t, testConfig())
		d.Observe(ev("a", t0, scroll()))
		d.Observe(ev("a", t0, scroll()))
		if s := d.Stats(); s.Events != 1 || s.Duplicates != 1 {
			t.Errorf("events %d duplicates %d, want 1 and 1", s.Events, s.Duplicates)
		}
	})
	t.Run("invalid events are counted", func(t *testing.T) {
		d := newDetector(t, testConfig())
		d.Observe(&eventv1.Event{EventId: "x", AppId: "shop"})
		if s := d.Stats(); s.Invalid != 1 || s.Events != 0 {
			t.Errorf("invalid %d events %d, want 1 and 0", s.Invalid, s.Events)
		}
	})
	t.Run("first window without history does not alert", func(t *testing.T) {
		d := newDetector(t, testConfig())
		var found []*detectv1.Anomaly
		// A single device doing only purchases at a regular pace from the start:
		// the funnel check has no baseline to need, but nothing is known yet.
		for i := range 200 {
			found = append(found, d.Observe(ev(fmt.Sprint(i), t0+int64(i)*250, checkoutStep(3)))...)
		}
		found = append(found, d.Flush()...)
		for _, a := range found {
			if a.GetDeviceId() == "" {
				t.Errorf("cohort anomaly without any history:%s", describe([]*detectv1.Anomaly{a}))
			}
		}
	})
	t.Run("Flush returns what the last windows find", func(t *testing.T) {
		d := newDetector(t, testConfig())
		f := newFleet(5)
		f.add(60, t0, genuine, genuineMix)
		rep := f.add(1, t0+12*minute, replayer, genuineMix)[0]
		var before []*detectv1.Anomaly
		f.until(t0+13*minute, func(e *eventv1.Event) { before = append(before, d.Observe(e)...) })
		for _, a := range before {
			if a.GetDeviceId() == rep.id {
				t.Fatalf("found before its window closed:%s", describe([]*detectv1.Anomaly{a}))
			}
		}
		got := d.Flush()
		if !slices.ContainsFunc(got, func(a *detectv1.Anomaly) bool {
			return a.GetDeviceId() == rep.id && a.GetKind() == detectv1.AnomalyKind_ANOMALY_KIND_REPLAY
		}) {
			t.Errorf("Flush closed the replayer's only window but returned:%s", describe(got))
		}
	})
	t.Run("AdvanceTo closes quiet windows", func(t *testing.T) {
		d := newDetector(t, testConfig())
		d.Observe(ev("a", t0, scroll()))
		d.AdvanceTo(t0 + minute)
		if s := d.Stats(); s.WindowsClosed[0] != 1 {
			t.Errorf("%d windows closed after advancing past the first, want 1", s.WindowsClosed[0])
		}
	})
}

func TestNewVersionInheritsBaseline(t *testing.T) {
	d := newDetector(t, testConfig())
	r := &recorder{d: d}
	f := newFleet(7)
	f.add(60, t0, genuine, func(int) *eventv1.DeviceContext { return androidCtx() })
	f.until(t0+12*minute, r.feed)
	f.add(20, t0+12*minute, genuine, func(int) *eventv1.DeviceContext {
		c := androidCtx()
		c.AppVersion, c.BuildNumber = "2.5.0", "2500"
		return c
	})
	f.until(t0+14*minute, r.feed)
	r.flush()
	old, _ := d.Baseline(&detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_ANDROID}, 0)
	nb, ok := d.Baseline(&detectv1.Cohort{AppId: "shop", AppVersion: "2.5.0", BuildNumber: "2500", Platform: eventv1.Platform_PLATFORM_ANDROID}, 0)
	if !ok {
		t.Fatal("no baseline for the new version")
	}
	if nb.GetSource() != "inherited from 2.4.1 (2410)" {
		t.Errorf("source %q, want inherited from 2.4.1 (2410)", nb.GetSource())
	}
	if nb.GetOwnWindows() >= nb.GetWindows() || nb.GetWindows() < 12 {
		t.Errorf("new version: %d windows of which %d own; want the predecessor's 12+ plus its own", nb.GetWindows(), nb.GetOwnWindows())
	}
	if nb.GetEventMix()["screen_view"] == 0 || len(nb.GetTransitions()) == 0 {
		t.Error("the inherited baseline has no event mix or transitions")
	}
	if old.GetSource() != sourceOwn {
		t.Errorf("the old version's source is %q, want %q", old.GetSource(), sourceOwn)
	}
	if len(r.found) > 0 {
		t.Errorf("anomalies:%s", describe(r.found))
	}
}

func TestSeasonalRates(t *testing.T) {
	// Two days of 00:00-02:00 UTC with a per-device rate that differs by
	// hour (5 then 20 events per minute). The first day has no history for
	// 01:00 and the jump alerts; the second day each hour has its own
	// bucket and nothing alerts.
	d := newDetector(t, testConfig())
	id := 0
	day := func(n int) []*detectv1.Anomaly {
		var found []*detectv1.Anomaly
		start := t0 + int64(n)*24*60*minute
		for h := range 2 {
			per := 5 + 15*h
			for m := range 60 {
				for dev := range 25 {
					for k := range per {
						id++
						found = append(found, d.Observe(&eventv1.Event{EventId: fmt.Sprint(id), AppId: "shop", DeviceId: fmt.Sprint("d", dev), SessionId: "s",
							TimestampMs: start + int64(h)*60*minute + int64(m)*minute + int64(k)*(minute/int64(per)) + int64(dev*97+k*13%500), DeviceContext: androidCtx(),
							Payload: &eventv1.Event_ScrollEvent{ScrollEvent: &eventv1.ScrollEvent{}}})...)
					}
				}
			}
		}
		return append(found, d.Flush()...)
	}
	kinds := func(as []*detectv1.Anomaly) map[detectv1.AnomalyKind]int {
		m := map[detectv1.AnomalyKind]int{}
		for _, a := range as {
			if a.GetDeviceId() == "" {
				m[a.GetKind()]++
			}
		}
		return m
	}
	if k := kinds(day(0)); k[detectv1.AnomalyKind_ANOMALY_KIND_RATE_SPIKE] == 0 {
		t.Errorf("day 1: the unseen 01:00 level did not alert (cohort findings %v): the test shows nothing", k)
	}
	if found := day(1); kinds(found)[detectv1.AnomalyKind_ANOMALY_KIND_RATE_SPIKE] > 0 {
		t.Errorf("day 2 alerted on the usual 01:00 level:%s", describe(found))
	}
	b, _ := d.Baseline(&detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_ANDROID}, 0)
	byHour := b.GetEventsPerDeviceByHour()
	if len(byHour) != 24 {
		t.Fatalf("%d hourly buckets, want 24", len(byHour))
	}
	near(t, "00:00 rate", byHour[0], 5, 0.5)
	near(t, "01:00 rate", byHour[1], 20, 0.5)
	near(t, "02:00 rate (no data)", byHour[2], 0, 0)
}

func TestMemoryBounds(t *testing.T) {
	scroll := func(id string, dev string, ts int64) *eventv1.Event {
		return &eventv1.Event{EventId: id, AppId: "shop", DeviceId: dev, TimestampMs: ts, DeviceContext: androidCtx(),
			Payload: &eventv1.Event_ScrollEvent{ScrollEvent: &eventv1.ScrollEvent{}}}
	}
	t.Run("idle devices expire", func(t *testing.T) {
		cfg := testConfig()
		cfg.DeviceTTL = 5 * time.Minute
		d := newDetector(t, cfg)
		for i := range 50 {
			d.Observe(scroll(fmt.Sprint("a", i), fmt.Sprint("old-", i), t0+int64(i)))
		}
		// One device keeps going for 30 minutes: the others are idle.
		for m := range 30 {
			d.Observe(scroll(fmt.Sprint("b", m), "busy", t0+int64(m)*minute))
		}
		devices, _, _ := d.Size()
		if devices != 1 || d.Stats().DevicesExpired != 50 {
			t.Errorf("%d devices tracked, %d expired; want only the busy one left and 50 expired", devices, d.Stats().DevicesExpired)
		}
	})
	t.Run("device limit", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxDevices = 10
		d := newDetector(t, cfg)
		for i := range 25 {
			d.Observe(scroll(fmt.Sprint(i), fmt.Sprint("dev-", i), t0+int64(i)))
		}
		devices, _, _ := d.Size()
		if devices != 10 || d.Stats().DevicesRefused != 15 || d.Stats().Events != 25 {
			t.Errorf("%d devices, %d refused, %d events; want 10, 15 and all 25 events counted for the cohort", devices, d.Stats().DevicesRefused, d.Stats().Events)
		}
	})
	t.Run("cohort limit", func(t *testing.T) {
		cfg := testConfig()
		cfg.MaxCohorts = 3
		d := newDetector(t, cfg)
		for i := range 5 {
			e := scroll(fmt.Sprint(i), "d", t0+int64(i)*1000)
			e.DeviceContext = androidCtx()
			e.DeviceContext.BuildNumber = fmt.Sprint(2410 + i)
			d.Observe(e)
		}
		if _, cohorts, _ := d.Size(); cohorts != 3 {
			t.Errorf("%d cohorts, want at most 3", cohorts)
		}
		if _, ok := d.Baseline(&detectv1.Cohort{AppId: "shop", AppVersion: "2.4.1", BuildNumber: "2410", Platform: eventv1.Platform_PLATFORM_ANDROID}, 0); ok {
			t.Error("the least recently active cohort was kept")
		}
	})
	t.Run("dedup set is bounded", func(t *testing.T) {
		cfg := testConfig()
		cfg.DedupSize = 100
		d := newDetector(t, cfg)
		for i := range 1000 {
			d.Observe(scroll(fmt.Sprint(i), "d", t0+int64(i)))
		}
		if n := d.st.Dedup.Len(); n > 100 {
			t.Errorf("dedup set holds %d ids, want at most 100", n)
		}
	})
}

// TestEscalation: a window whose score is far beyond its threshold alerts
// when that window closes, without waiting for the second window of the
// 2-of-3 rule; without escalation the same devices are found a window
// later at the earliest. An emulator of the genuine fleet, there before the
// farm arrived, is part of the cohort's normal and never named.
func TestEscalation(t *testing.T) {
	for _, tt := range []struct {
		name     string
		escalate float64
	}{{"on", 3}, {"off", 0}} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Escalate = tt.escalate
			r := &recorder{d: newDetector(t, cfg)}
			f := newFleet(11)
			f.add(600, t0, genuine, genuineMix)
			old := f.add(1, t0, genuine, emulatorCtx)[0]
			at := t0 + 30*minute
			f.until(at, r.feed)
			if len(r.found) > 0 {
				t.Fatalf("anomalies before the tampering started:%s", describe(r.found))
			}
			bots := f.add(4, at, bot, func(int) *eventv1.DeviceContext { return iosCtx() })
			farm := f.add(12, at, genuine, emulatorCtx)
			f.until(at+6*minute, r.feed)
			r.flush()

			first := map[detectv1.AnomalyKind]map[string]int64{} // kind -> device -> watermark of its first naming
			for _, a := range r.found {
				devs := a.GetDevices()
				if a.GetDeviceId() != "" {
					devs = []string{a.GetDeviceId()}
				}
				for _, id := range devs {
					if id == old.id {
						t.Errorf("the fleet's own emulator is named:%s", describe([]*detectv1.Anomaly{a}))
					}
					if first[a.GetKind()] == nil {
						first[a.GetKind()] = map[string]int64{}
					}
					if _, ok := first[a.GetKind()][id]; !ok {
						first[a.GetKind()][id] = a.GetWatermarkMs()
					}
				}
			}
			// The first window of the tampering is [at, at+1m); the second closes
			// at at+2m.
			second := at + 2*minute
			check := func(kind detectv1.AnomalyKind, devs []*fdev, mustFind bool) {
				t.Helper()
				for _, d := range devs {
					wm, ok := first[kind][d.id]
					switch {
					case tt.escalate > 0 && (!ok || wm >= second):
						t.Errorf("%s of %s not found when its first window closed (found %v at %s):%s", kind, d.id, ok,
							time.UnixMilli(wm).UTC().Format("15:04:05"), describe(r.found))
					case tt.escalate == 0 && ok && wm < second:
						t.Errorf("%s of %s found in its first window without escalation", kind, d.id)
					case tt.escalate == 0 && mustFind && !ok:
						t.Errorf("%s of %s never found", kind, d.id)
					}
				}
			}
			check(detectv1.AnomalyKind_ANOMALY_KIND_TIMING_REGULARITY, bots, true)
			check(detectv1.AnomalyKind_ANOMALY_KIND_DEVICE_SIGNALS, farm, false)
		})
	}
}

// TestNewcomersAtPopulationRates: a wave of new genuine devices (a
// marketing spike) brings jailbroken devices at the population's rate into a
// cohort whose own devices happened to have none: not an anomaly.
func TestNewcomersAtPopulationRates(t *testing.T) {
	r := &recorder{d: newDetector(t, testConfig())}
	f := newFleet(12)
	f.add(150, t0, genuine, func(int) *eventv1.DeviceContext { return iosCtx() })
	f.add(100, t0, genuine, func(i int) *eventv1.DeviceContext {
		c := iosCtx()
		c.AppVersion, c.BuildNumber = "2.4.0", "2400"
		c.IsJailbroken = i == 0
		return c
	})
	at := t0 + 30*minute
	f.until(at, r.feed)
	f.add(300, at, genuine, func(i int) *eventv1.DeviceContext {
		c := iosCtx()
		c.IsJailbroken = i%100 < 2 // 2% of the newcomers: 6 devices
		return c
	})
	f.until(at+8*minute, r.feed)
	r.flush()
	if len(r.found) > 0 {
		t.Errorf("anomalies on a spike of genuine devices:%s", describe(r.found))
	}
}

// TestFunnel: a purchase without checkout_start in its session is a bypass,
// even when a checkout was abandoned in an earlier session, and even when
// timestamps put the device's events slightly out of sequence; a purchase
// after a checkout_start of its session is not.
func TestFunnel(t *testing.T) {
	type step struct {
		session string
		seq     uint64
		at      int64 // ms after t0
		payload func(*eventv1.Event)
	}
	start := func(s string, seq uint64, at int64) step { return step{s, seq, at, appStart()} }
	tests := []struct {
		name  string
		steps []step
		want  bool
	}{
		{"checkout then purchase", []step{start("s1", 1, 0), {"s1", 2, 1000, checkoutStart()}, {"s1", 3, 2000, purchase()}}, false},
		{"purchase alone", []step{start("s1", 1, 0), {"s1", 2, 1000, addToCart()}, {"s1", 3, 2000, purchase()}}, true},
		{"a checkout abandoned in an earlier session", []step{
			start("s1", 1, 0), {"s1", 2, 1000, checkoutStart()},
			start("s2", 3, 20_000), {"s2", 4, 21_000, addToCart()}, {"s2", 5, 22_000, purchase()},
		}, true},
		{"the purchase timed after the next event", []step{
			start("s1", 1, 0), {"s1", 2, 1000, addToCart()}, {"s1", 3, 1400, purchase()}, {"s1", 4, 1300, scroll()},
		}, true},
		{"events lost before the purchase: not judged", []step{
			start("s1", 1, 0), {"s1", 2, 1000, addToCart()}, {"s1", 5, 2000, purchase()},
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Genuine history first, then the device's steps among the fleet's.
			r := &recorder{d: newDetector(t, testConfig())}
			f := newFleet(13)
			f.add(50, t0, genuine, genuineMix)
			at := t0 + 15*minute
			f.until(at, r.feed)
			for i, s := range tt.steps {
				e := &eventv1.Event{EventId: fmt.Sprint("e", i), AppId: "shop", DeviceId: "d1", InstallId: "i1", SessionId: s.session,
					Sequence: s.seq, TimestampMs: at + s.at, DeviceContext: androidCtx()}
				s.payload(e)
				r.feed(e)
			}
			f.until(at+3*minute, r.feed)
			r.flush()
			got := slices.ContainsFunc(r.found, func(a *detectv1.Anomaly) bool {
				return a.GetKind() == detectv1.AnomalyKind_ANOMALY_KIND_FUNNEL_BYPASS && a.GetDeviceId() == "d1"
			})
			if got != tt.want {
				t.Errorf("funnel bypass found %v, want %v:%s", got, tt.want, describe(r.found))
			}
		})
	}
}

// A transition no baseline has, made now and then by single genuine
// devices, is learned as rare (Markov.Novel) once each device went on
// for the rule's windows without being judged forged; a forger's unseen
// transitions are not learned. Event time, through Observe.
func TestNovelTransitions(t *testing.T) {
	r := &recorder{d: newDetector(t, testConfig())}
	f := newFleet(11)
	f.add(150, t0, genuine, genuineMix)
	f.until(t0+14*minute, r.feed)
	type extra struct {
		dev string
		ts  int64
		p   func(*eventv1.Event)
	}
	var extras []extra
	memory := func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_MemoryWarning{MemoryWarning: &eventv1.MemoryWarning{Level: "low"}}
	}
	battery := func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_BatteryChange{BatteryChange: &eventv1.BatteryChange{BatteryLevel: 0.2}}
	}
	network := func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_NetworkChange{NetworkChange: &eventv1.NetworkChange{}}
	}
	// From minute 14 on, every minute one more genuine device has a memory
	// warning after a scroll, then goes on scrolling for 3 minutes; one
	// forger makes several unseen transitions in one minute.
	for m := int64(14); m < 24; m++ {
		dev := fmt.Sprintf("rare-%d", m)
		ts := t0 + m*minute
		for i := range 36 {
			p := scroll()
			if i == 3 {
				p = memory
			}
			extras = append(extras, extra{dev, ts, p})
			ts += 1000 + f.r.Int64N(8000)
		}
	}
	for i, p := range []func(*eventv1.Event){scroll(), battery, tap("x"), network, scroll(), memory, tap("y"), battery, scroll(), network, appStart(), battery} {
		extras = append(extras, extra{"forger", t0 + 16*minute + int64(i)*4000 + 1000, p})
	}
	slices.SortStableFunc(extras, func(a, b extra) int { return int(a.ts - b.ts) })
	seq := map[string]uint64{}
	for _, x := range extras {
		f.until(x.ts, r.feed)
		seq[x.dev]++
		e := &eventv1.Event{EventId: fmt.Sprintf("%s-%d", x.dev, seq[x.dev]), AppId: f.app, DeviceId: x.dev, InstallId: "i-" + x.dev, SessionId: "s-" + x.dev,
			TimestampMs: x.ts, Sequence: seq[x.dev], DeviceContext: androidCtx()}
		x.p(e)
		r.feed(e)
	}
	f.until(t0+27*minute, r.feed)
	r.flush()

	var forged bool
	for _, a := range r.found {
		if strings.HasPrefix(a.GetDeviceId(), "rare-") {
			t.Errorf("a genuine device with a rare transition alerted:%s", describe([]*detectv1.Anomaly{a}))
		}
		forged = forged || (a.GetDeviceId() == "forger" && a.GetKind() == detectv1.AnomalyKind_ANOMALY_KIND_FORGED_SEQUENCE)
	}
	if !forged {
		t.Errorf("the forger was not found:%s", describe(r.found))
	}
	typ := func(p func(*eventv1.Event)) uint16 {
		e := &eventv1.Event{}
		p(e)
		return TypeOf(e)
	}
	ps := r.d.st.Apps[f.app].platform(int32(eventv1.Platform_PLATFORM_ANDROID))
	rare := TransitionKey(typ(scroll()), typ(memory))
	if c, from := ps.Types.Seen(rare); c >= 0.5 || from < 200 {
		t.Fatalf("scroll>memory_warning counted %v from %v: the test needs it unseen from a common origin", c, from)
	}
	// 10 genuine devices made it, each taught it after 3 of its windows
	// without a hit; the forger, caught, did not.
	if n := ps.Types.Novel[rare]; n < 9 || n > 10 {
		t.Errorf("scroll>memory_warning learned as novel %v times, want 10 (decayed)", n)
	}
	_, from := ps.Types.Seen(rare)
	if u := ps.Types.Unseen(rare); u < 5/(from+10) {
		t.Errorf("chance of scroll>memory_warning %v: not raised by the devices that made it", u)
	}
	for _, k := range []uint32{TransitionKey(typ(scroll()), typ(battery)), TransitionKey(typ(tap("")), typ(network)), TransitionKey(typ(tap("")), typ(battery))} {
		if n := ps.Types.Novel[k]; n != 0 {
			t.Errorf("the forger's transition %s taught as novel (%v)", transitionName(r.d.st.Apps[f.app], trans{Key: k}), n)
		}
	}
}
