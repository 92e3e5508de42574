package sim

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// drawScenario draws a whole small scenario: 300 devices, 20 simulated minutes from
// 07:00 UTC, the change at minute 10, 4% of the active devices tampered.
func drawScenario(t testing.TB, name string, seed uint64) ([]Timed, map[string]Label) {
	t.Helper()
	s, err := NewScenario(ScenarioConfig{Name: name, App: "shop", Seed: seed, Devices: 300,
		Start: time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC), Duration: 20 * time.Minute, ChangeAt: 10 * time.Minute,
		Prevalence: 0.04, GapMean: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var out []Timed
	for {
		e, ok := s.Next()
		if !ok {
			break
		}
		out = append(out, e)
	}
	labels := map[string]Label{}
	for _, l := range s.Labels() {
		labels[l.Device] = l
	}
	return out, labels
}

// byDevice groups the events of each device, in the order sent.
func byDevice(evs []Timed) map[string][]*eventv1.Event {
	m := map[string][]*eventv1.Event{}
	for _, e := range evs {
		m[e.Event.GetDeviceId()] = append(m[e.Event.GetDeviceId()], e.Event)
	}
	return m
}

func TestScenarioIsDeterministic(t *testing.T) {
	a, la := drawScenario(t, Forged, 9)
	b, lb := drawScenario(t, Forged, 9)
	if len(a) != len(b) || len(la) != len(lb) {
		t.Fatalf("two runs of seed 9: %d and %d events, %d and %d labels", len(a), len(b), len(la), len(lb))
	}
	for i := range a {
		if !proto.Equal(a[i].Event, b[i].Event) {
			t.Fatalf("event %d differs:\n%v\n%v", i, a[i].Event, b[i].Event)
		}
	}
}

func TestScenarioConfigErrors(t *testing.T) {
	good := ScenarioConfig{Name: Bot, App: "a", Seed: 1, Devices: 100, Start: time.Unix(0, 0), Duration: time.Hour, ChangeAt: time.Minute, Prevalence: 0.01, GapMean: time.Second}
	for name, change := range map[string]func(c *ScenarioConfig){
		"unknown name":    func(c *ScenarioConfig) { c.Name = "nope" },
		"no app":          func(c *ScenarioConfig) { c.App = "" },
		"few devices":     func(c *ScenarioConfig) { c.Devices = 3 },
		"change too late": func(c *ScenarioConfig) { c.ChangeAt = 2 * time.Hour },
		"prevalence":      func(c *ScenarioConfig) { c.Prevalence = 0 },
		"gap":             func(c *ScenarioConfig) { c.GapMean = time.Millisecond },
	} {
		t.Run(name, func(t *testing.T) {
			c := good
			change(&c)
			if _, err := NewScenario(c); err == nil {
				t.Error("accepted")
			}
		})
	}
	if _, err := NewScenario(good); err != nil {
		t.Fatal(err)
	}
}

// TestScenarioProperties checks that each scenario has its property by
// construction, on its tampered devices only, and that every device's
// sequence numbers are those of an honest SDK except for replays.
func TestScenarioProperties(t *testing.T) {
	for _, name := range ScenarioNames() {
		t.Run(name, func(t *testing.T) {
			evs, labels := drawScenario(t, name, 3)
			devs := byDevice(evs)
			tampered, shown := 0, 0
			for id, l := range labels {
				if l.Tampered {
					tampered++
					if l.Scenario != name {
						t.Errorf("%s: tampered device labelled %q", id, l.Scenario)
					}
					if l.Onset > 0 {
						shown++
					}
				} else if l.Onset != 0 {
					t.Errorf("genuine device %s has an onset", id)
				}
				if l.Events != len(devs[id]) {
					t.Errorf("%s: label counts %d events, %d sent", id, l.Events, len(devs[id]))
				}
			}
			if Legitimate(name) {
				if tampered > 0 {
					t.Fatalf("%d tampered devices in a legitimate scenario", tampered)
				}
			} else {
				if share := float64(tampered) / float64(len(labels)); tampered < 3 || share > 0.05 {
					t.Fatalf("%d tampered of %d devices, want about 4%% of the active ones", tampered, len(labels))
				}
				if shown < tampered*2/3 {
					t.Errorf("only %d of %d tampered devices showed it", shown, tampered)
				}
			}
			for id, es := range devs {
				l := labels[id]
				seen := map[uint64]bool{}
				repeats := 0
				for i, e := range es {
					if seen[e.GetSequence()] {
						repeats++
					} else if e.GetSequence() != uint64(len(seen)+1) {
						t.Fatalf("%s event %d: sequence %d after %d distinct", id, i, e.GetSequence(), len(seen))
					}
					seen[e.GetSequence()] = true
				}
				if repeats > 0 && !(name == Replay && l.Tampered) {
					t.Errorf("%s (tampered %v): %d repeated sequence numbers", id, l.Tampered, repeats)
				}
				check(t, name, id, l, es)
			}
		})
	}
}

// check asserts a scenario's property on one device's events.
func check(t *testing.T, name, id string, l Label, es []*eventv1.Event) {
	t.Helper()
	switch name {
	case Paywall:
		open, bypassed := false, 0
		for _, e := range es {
			switch {
			case e.GetCheckoutStart() != nil:
				open = true
			case e.GetPurchaseComplete() != nil:
				if !open {
					bypassed++
				}
				open = false
			}
		}
		if l.Tampered && l.Onset > 0 && bypassed == 0 {
			t.Errorf("paywall device %s: no purchase without checkout_start", id)
		}
		if !l.Tampered && bypassed > 0 {
			t.Errorf("genuine device %s: %d purchases without checkout_start", id, bypassed)
		}
	case Repackaged:
		for _, e := range es {
			unreleased := e.GetDeviceContext().GetBuildNumber() == "2507"
			if unreleased != l.Tampered {
				t.Fatalf("%s (tampered %v) sent build %s", id, l.Tampered, e.GetDeviceContext().GetBuildNumber())
			}
			if l.Tampered && e.GetCustomEvent() != nil {
				t.Fatalf("repackaged device %s sent a custom event", id)
			}
		}
	case Bot:
		if !l.Tampered {
			return
		}
		for i := 1; i < len(es); i++ {
			if gap := es[i].GetTimestampMs() - es[i-1].GetTimestampMs(); gap < 1980 || gap > 2020 {
				t.Fatalf("bot %s: gap %d ms", id, gap)
			}
			if payloadName(es[i]) != payloadName(es[i%len(botScript)]) {
				t.Fatalf("bot %s: event %d is %s, the script says %s", id, i, payloadName(es[i]), payloadName(es[i%len(botScript)]))
			}
		}
	case Replay:
		ids := map[uint64]string{}
		replays := 0
		for _, e := range es {
			if first, ok := ids[e.GetSequence()]; ok && first != e.GetEventId() {
				replays++
			}
			ids[e.GetSequence()] = e.GetEventId()
		}
		if l.Tampered && l.Onset > 0 && replays == 0 {
			t.Errorf("replay device %s: no replayed sequence number", id)
		}
	case Emulator:
		for _, e := range es {
			c := e.GetDeviceContext()
			if farm := c.GetDeviceModel() == "sdk_gphone64_x86_64"; farm != l.Tampered || (farm && !c.GetIsEmulator()) {
				t.Fatalf("%s (tampered %v): model %s emulator %v", id, l.Tampered, c.GetDeviceModel(), c.GetIsEmulator())
			}
		}
	case Forged:
		// A checkout step needs a checkout start earlier in the session.
		started, impossible := false, 0
		for _, e := range es {
			switch {
			case e.GetAppStart() != nil:
				started = false
			case e.GetCheckoutStart() != nil:
				started = true
			case e.GetCheckoutStep() != nil && !started:
				impossible++
			case e.GetAddToCart() != nil && e.GetAddToCart().GetPriceCents() == 1:
				impossible++
			}
		}
		if l.Tampered && l.Onset > 0 && impossible == 0 {
			t.Errorf("forger %s: no impossible sequence", id)
		}
		if !l.Tampered && impossible > 0 {
			t.Errorf("genuine device %s: %d impossible events", id, impossible)
		}
	case Rollout:
		for _, e := range es {
			if e.GetScreenView().GetScreenName() == "WhatsNew" && e.GetDeviceContext().GetAppVersion() != "2.6.0" {
				t.Fatalf("%s: WhatsNew on %s", id, e.GetDeviceContext().GetAppVersion())
			}
		}
	}
}

// TestRolloutAndSpike: the rollout reaches part of the fleet and shows its
// new screen; the spike doubles the devices at the same rate per device.
func TestRolloutAndSpike(t *testing.T) {
	evs, _ := drawScenario(t, Rollout, 4)
	updated, whatsNew := map[string]bool{}, 0
	for _, e := range evs {
		if e.Event.GetDeviceContext().GetAppVersion() == "2.6.0" {
			updated[e.Event.GetDeviceId()] = true
		}
		if e.Event.GetScreenView().GetScreenName() == "WhatsNew" {
			whatsNew++
		}
	}
	if len(updated) < 20 || len(updated) > 120 || whatsNew < 20 {
		t.Errorf("rollout: %d devices updated (want some of the 30%%), %d WhatsNew views", len(updated), whatsNew)
	}

	evs, _ = drawScenario(t, Spike, 4)
	change := time.Date(2026, 11, 25, 7, 10, 0, 0, time.UTC).UnixMilli()
	var events [2]int
	var devices [2]map[string]bool
	devices[0], devices[1] = map[string]bool{}, map[string]bool{}
	for _, e := range evs {
		ms := e.Event.GetTimestampMs() - e.Skew.Milliseconds()
		i := 0
		if ms >= change+2*60_000 { // after the new users' first minute
			i = 1
		} else if ms >= change {
			continue
		}
		events[i]++
		devices[i][e.Event.GetDeviceId()] = true
	}
	before := float64(events[0]) / float64(len(devices[0])) / 10
	afterRate := float64(events[1]) / float64(len(devices[1])) / 8
	if r := float64(len(devices[1])) / float64(len(devices[0])); r < 1.7 {
		t.Errorf("spike: %d devices after, %d before (×%.2f)", len(devices[1]), len(devices[0]), r)
	}
	if r := afterRate / before; r < 0.85 || r > 1.15 {
		t.Errorf("spike: %.1f events per device-minute after, %.1f before", afterRate, before)
	}
}

func TestActiveShareFollowsTheDay(t *testing.T) {
	day := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	if night, evening := ActiveShare(day.Add(3*time.Hour)), ActiveShare(day.Add(20*time.Hour)); night > evening/3 {
		t.Errorf("share at 03:00 %.2f, at 20:00 %.2f: want a quiet night", night, evening)
	}
	if a, b, m := ActiveShare(day.Add(7*time.Hour)), ActiveShare(day.Add(8*time.Hour)), ActiveShare(day.Add(7*time.Hour+30*time.Minute)); m <= a || m >= b {
		t.Errorf("07:30 share %.3f is not between 07:00 %.3f and 08:00 %.3f", m, a, b)
	}
}
