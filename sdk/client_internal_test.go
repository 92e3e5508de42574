package sdk

import (
	"context"
	"testing"
	"time"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	"causality.dev/sdk/sdktest"
)

// TestTrackDropsWhenStalled: with the collector hung in the handshake and the
// writer stalled (as on a stalled disk), the buffer fills and Track drops and
// counts instead of blocking; the count reaches the collector later.
func TestTrackDropsWhenStalled(t *testing.T) {
	hello, release := make(chan struct{}), make(chan struct{})
	col := sdktest.Start(t, func(c *sdktest.Conn) {
		if c.N == 1 {
			close(hello)
			<-release // then the connection closes
			return
		}
		_ = c.Serve(nil)
	})
	c, err := New(col.Addr, sdktest.Key, WithBuffer(16), WithTimeout(time.Hour), WithBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	ev := func() *eventv1.Event {
		return &eventv1.Event{Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "x"}}}
	}
	c.Track(ev())
	<-hello // the sender waits for a Welcome that will not come

	const n = 10000
	c.q.mu.Lock() // the writer stalls on its next write
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			c.Track(ev())
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		c.q.mu.Unlock()
		t.Fatal("Track blocked")
	}
	c.q.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	// At most the buffer plus one writer group got through.
	if st.Tracked+st.Dropped != n+1 || st.Dropped < n-16-256 {
		t.Fatalf("stats %+v: want tracked + dropped = %d, nearly all dropped", st, n+1)
	}
	close(release)
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var reported uint64
	for _, b := range col.Batches() {
		reported += b.GetDroppedEvents()
	}
	if reported != st.Dropped || len(col.Accepted()) != int(st.Tracked) {
		t.Fatalf("collector got %d events and %d reported drops; client tracked %d, dropped %d", len(col.Accepted()), reported, st.Tracked, st.Dropped)
	}
}
