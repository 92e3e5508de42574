package sdk

import (
	"context"
	"log/slog"
	"testing"
	"time"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"google.golang.org/protobuf/proto"
)

// BenchmarkTrack is the cost on the caller's goroutine: building an event
// with a typed helper, stamping it and handing it over. The writer is held
// (as if the disk stalled) and the benchmark empties the buffer itself every
// 16384 events with the timer stopped, so the numbers are the caller's alone:
// no marshalling, no I/O, no reader to wake or contend with.
func BenchmarkTrack(b *testing.B) {
	c, err := New("127.0.0.1:1", "k", WithBuffer(1<<15), WithDeviceContext(&eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_IOS, OsVersion: "18.1", AppVersion: "4.2.0"}))
	if err != nil {
		b.Fatal(err)
	}
	c.q.mu.Lock() // the writer stops at its first write
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.ScreenView("home", "feed")
		if i++; i%(1<<14) == 0 {
			b.StopTimer()
			for len(c.in) > 0 {
				<-c.in
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(c.dropped.Load())/float64(b.N), "dropped/op")
	c.q.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	_ = c.Close(ctx)
}

// BenchmarkQueue is the writer's cost per event: serializing and appending
// to the queue in groups of 50 (one write and, on disk, one fsync per group).
func BenchmarkQueue(b *testing.B) {
	for _, bc := range []struct {
		name  string
		disk  bool
		fsync bool
	}{{"memory", false, false}, {"disk", true, false}, {"disk+fsync", true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			dir := ""
			if bc.disk {
				dir = b.TempDir()
			}
			q, err := openQueue(dir, 1<<30, 1<<40, bc.fsync, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer q.close()
			e := &eventv1.Event{EventId: newID(time.Now()), DeviceId: "d", InstallId: "i", SessionId: newID(time.Now()), TimestampMs: 1,
				DeviceContext: &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_IOS, OsVersion: "18.1", AppVersion: "4.2.0"},
				Payload:       &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "home"}}}
			items := make([]item, 0, 50)
			seq := uint64(1)
			b.ReportAllocs()
			for b.Loop() {
				e.Sequence = seq
				data, _ := proto.Marshal(e)
				items = append(items, item{seq: seq, data: data})
				seq++
				if len(items) == cap(items) {
					if err := q.add(items); err != nil {
						b.Fatal(err)
					}
					recs, _ := q.take(50, 1<<20) // acknowledged at once: segments roll and go
					q.done(recs...)
					items = items[:0]
				}
			}
		})
	}
}
