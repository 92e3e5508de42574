package sim

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// events draws n events from a fleet on a fake clock advancing 7 ms a step.
func events(t testing.TB, seed uint64, devices, n int) []*eventv1.Event {
	t.Helper()
	f := NewFleet(seed, devices, "shop")
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	out := make([]*eventv1.Event, n)
	for i := range out {
		out[i], _ = f.Next(now)
		now = now.Add(7 * time.Millisecond)
	}
	return out
}

// payloadName is the oneof field set in e, e.g. "screen_view".
func payloadName(e *eventv1.Event) string {
	m := e.ProtoReflect()
	if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("payload")); fd != nil {
		return string(fd.Name())
	}
	return ""
}

func TestFleetIsDeterministicForASeed(t *testing.T) {
	a, b := events(t, 42, 50, 3000), events(t, 42, 50, 3000)
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			t.Fatalf("event %d differs between two fleets of seed 42:\n%v\n%v", i, a[i], b[i])
		}
	}
	c := events(t, 43, 50, 3000)
	same := 0
	for i := range a {
		if a[i].GetDeviceId() == c[i].GetDeviceId() {
			same++
		}
	}
	if same == len(a) {
		t.Fatal("seeds 42 and 43 gave the same devices")
	}
}

func TestFleetCoversTheCatalogue(t *testing.T) {
	evs := events(t, 1, 200, 60000)
	seen := map[string]int{}
	for _, e := range evs {
		seen[payloadName(e)]++
	}
	oneof := (&eventv1.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")
	if oneof.Fields().Len() != 29 {
		t.Fatalf("the catalogue has %d payload types, this test expects 29", oneof.Fields().Len())
	}
	for i := range oneof.Fields().Len() {
		name := string(oneof.Fields().Get(i).Name())
		if seen[name] == 0 {
			t.Errorf("no %s among %d events", name, len(evs))
		}
	}
	if seen[""] > 0 {
		t.Errorf("%d events without a payload", seen[""])
	}
	t.Logf("payload mix: %v", seen)
}

// TestFleetFlows checks the invariants of every device's event stream.
func TestFleetFlows(t *testing.T) {
	evs := events(t, 7, 100, 40000)
	type state struct {
		seq       uint64
		screen    string // last screen_view not yet exited
		session   string
		checkouts map[string]bool // cart ids with a checkout_start
		ids       map[string]bool
	}
	devices := map[string]*state{}
	ids := map[string]bool{}
	for i, e := range evs {
		if ids[e.GetEventId()] {
			t.Fatalf("event %d: id %s repeated", i, e.GetEventId())
		}
		ids[e.GetEventId()] = true
		u, err := uuid.Parse(e.GetEventId())
		if err != nil || u.Version() != 7 {
			t.Fatalf("event %d: id %q is not a UUIDv7 (%v)", i, e.GetEventId(), err)
		}
		if got, want := int64(u.Time()/10000)-12219292800000, e.GetTimestampMs(); got != want {
			// uuid.Time is 100ns ticks since 1582; the id carries the event's ms.
			t.Fatalf("event %d: id time %d, timestamp_ms %d", i, got, want)
		}
		s := devices[e.GetDeviceId()]
		if s == nil {
			s = &state{checkouts: map[string]bool{}, ids: map[string]bool{}}
			devices[e.GetDeviceId()] = s
			if payloadName(e) != "app_start" {
				t.Fatalf("device %s starts with %s, not app_start", e.GetDeviceId(), payloadName(e))
			}
		}
		if e.GetSequence() != s.seq+1 {
			t.Fatalf("device %s: sequence %d after %d", e.GetDeviceId(), e.GetSequence(), s.seq)
		}
		s.seq = e.GetSequence()
		if e.GetSessionId() == "" || e.GetInstallId() == "" || e.GetDeviceContext().GetAppVersion() == "" || e.GetAppId() != "shop" {
			t.Fatalf("event %d lacks envelope fields: %v", i, e)
		}
		switch p := e.GetPayload().(type) {
		case *eventv1.Event_AppStart:
			s.screen = ""
			if e.GetSessionId() == s.session {
				t.Fatalf("device %s: app_start kept session %s", e.GetDeviceId(), s.session)
			}
		case *eventv1.Event_ScreenView:
			s.screen = p.ScreenView.GetScreenName()
		case *eventv1.Event_ScreenExit:
			if p.ScreenExit.GetScreenName() != s.screen {
				t.Fatalf("device %s: screen_exit of %q while on %q", e.GetDeviceId(), p.ScreenExit.GetScreenName(), s.screen)
			}
			s.screen = ""
		case *eventv1.Event_CheckoutStart:
			s.checkouts[p.CheckoutStart.GetCartId()] = true
		case *eventv1.Event_PurchaseComplete:
			pc := p.PurchaseComplete
			if !s.checkouts[pc.GetCartId()] {
				t.Fatalf("device %s: purchase of cart %s without checkout_start", e.GetDeviceId(), pc.GetCartId())
			}
			var sum int64
			for _, it := range pc.GetItems() {
				sum += int64(it.GetQuantity()) * it.GetPriceCents()
			}
			if sum != pc.GetTotalCents() || len(pc.GetItems()) == 0 {
				t.Fatalf("purchase %s: items sum to %d, total %d", pc.GetOrderId(), sum, pc.GetTotalCents())
			}
		case *eventv1.Event_UserLogin:
			if e.GetUserId() != p.UserLogin.GetUserId() {
				t.Fatalf("user_login of %s carries user_id %s", p.UserLogin.GetUserId(), e.GetUserId())
			}
		case *eventv1.Event_UserLogout:
			if e.GetUserId() == "" || e.GetUserId() != p.UserLogout.GetUserId() {
				t.Fatalf("user_logout of %s carries user_id %q", p.UserLogout.GetUserId(), e.GetUserId())
			}
		}
		s.session = e.GetSessionId()
	}
}
