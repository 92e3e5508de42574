package detect

import (
	"testing"
	"time"

	"causality.dev/services/internal/sim"
)

// The simulator's genuine fleet (what the labelled evaluation starts from)
// must not alert: 300 devices with the whole catalogue of flows, crashes,
// logins and clock skews, 40 minutes at 100 events/s.
func TestSimulatorFleetDoesNotAlert(t *testing.T) {
	if testing.Short() {
		t.Skip("40 simulated minutes")
	}
	r := &recorder{d: newDetector(t, testConfig())}
	f := sim.NewFleet(3, 300, "shop")
	start := time.UnixMilli(t0)
	const rate = 100 // events per second
	for i := range 40 * 60 * rate {
		now := start.Add(time.Duration(i) * time.Second / rate)
		e, dev := f.Next(now)
		// What the SDK and the collector add: the device clock at sending
		// (skewed like the timestamp) and the server clock at receipt.
		e.SentAtMs = now.Add(f.Skew(dev)).UnixMilli() + 200
		e.ReceivedAtMs = now.UnixMilli() + 250
		r.feed(e)
	}
	r.flush()
	if len(r.found) > 0 {
		t.Errorf("%d anomalies on the simulator's genuine fleet:%s", len(r.found), describe(r.found))
	}
	if s := r.d.Stats(); s.Late[0] > s.Events/1000 {
		t.Errorf("%d of %d events late: the clock skew correction is not working", s.Late[0], s.Events)
	}
}
