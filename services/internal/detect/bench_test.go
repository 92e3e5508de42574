package detect

import (
	"runtime"
	"testing"
	"time"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/services/internal/sim"
)

// simEvents is n events of the simulator's genuine fleet of devices at
// rate events/s, stamped as the collector would.
func simEvents(devices, n, rate int) []*eventv1.Event {
	f := sim.NewFleet(5, devices, "shop")
	start := time.UnixMilli(t0)
	out := make([]*eventv1.Event, n)
	for i := range n {
		now := start.Add(time.Duration(i) * time.Second / time.Duration(rate))
		e, dev := f.Next(now)
		e.SentAtMs = now.Add(f.Skew(dev)).UnixMilli() + 200
		e.ReceivedAtMs = now.UnixMilli() + 250
		out[i] = e
	}
	return out
}

// BenchmarkObserve is events/s through scoring on one core: 1000 devices,
// 1 and 10 minute windows, 200k events (11 minutes at 300 events/s) per
// iteration into a fresh detector.
func BenchmarkObserve(b *testing.B) {
	events := simEvents(1000, 200_000, 300)
	var elapsed time.Duration
	for b.Loop() {
		d, _ := New(DefaultConfig())
		start := time.Now()
		for _, e := range events {
			d.Observe(e)
		}
		d.Flush()
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(len(events)*b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(len(events)*b.N), "ns/event")
}

// BenchmarkStateBytesPerDevice measures the heap the detector holds per
// active device (live heap after a GC), with a small dedup set so that the
// devices dominate.
func BenchmarkStateBytesPerDevice(b *testing.B) {
	const devices = 5000
	events := simEvents(devices, 150_000, 500)
	for b.Loop() {
		cfg := DefaultConfig()
		cfg.DedupSize = 1 << 12
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		d, _ := New(cfg)
		for _, e := range events {
			d.Observe(e)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		n, _, est := d.Size()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap-bytes/device")
		b.ReportMetric(float64(est)/float64(n), "estimated-bytes/device")
		runtime.KeepAlive(d)
	}
}
