package detect

import (
	"sync"
	"time"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
)

// Ring keeps the most recent anomalies in memory, each with an offset one
// above the previous. Subscribers and outputs read it after a cursor (the
// offset they last took); a cursor below what was evicted has a gap.
// Anomalies in the ring are shared: readers must not modify them.
type Ring struct {
	mu      sync.Mutex
	buf     []*detectv1.Anomaly
	head    int    // index of the oldest
	n       int    // how many are held
	next    uint64 // offset of the next anomaly
	evicted uint64 // largest offset evicted, 0 if none
	changed chan struct{}
}

// NewRing returns a ring holding at most capacity anomalies whose first
// offset is next (at least 1).
func NewRing(capacity int, next uint64) *Ring {
	return &Ring{buf: make([]*detectv1.Anomaly, max(capacity, 1)), next: max(next, 1), changed: make(chan struct{})}
}

// Append gives the anomalies their offsets (and detected_at_ms when unset)
// and wakes the readers.
func (r *Ring) Append(now time.Time, as ...*detectv1.Anomaly) {
	if len(as) == 0 {
		return
	}
	r.mu.Lock()
	for _, a := range as {
		a.Offset = r.next
		r.next++
		if a.GetDetectedAtMs() == 0 {
			a.DetectedAtMs = now.UnixMilli()
		}
		if r.n == len(r.buf) {
			r.evicted = r.buf[r.head].GetOffset()
			r.head = (r.head + 1) % len(r.buf)
			r.n--
		}
		r.buf[(r.head+r.n)%len(r.buf)] = a
		r.n++
	}
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Read returns up to max anomalies with offsets above after, oldest first;
// gap is true when some of them were evicted before being read. wait is
// closed when more arrive.
func (r *Ring) Read(after uint64, max int) (items []*detectv1.Anomaly, gap bool, wait <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	gap = after < r.evicted
	for i := 0; i < r.n && len(items) < max; i++ {
		a := r.buf[(r.head+i)%len(r.buf)]
		if a.GetOffset() > after {
			items = append(items, a)
		}
	}
	return items, gap, r.changed
}

// Next is the offset the next anomaly will get.
func (r *Ring) Next() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next
}

// Oldest is the offset of the oldest anomaly held (Next when empty).
func (r *Ring) Oldest() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return r.next
	}
	return r.buf[r.head].GetOffset()
}

// Evicted is the largest offset that fell out of the ring, 0 if none.
func (r *Ring) Evicted() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.evicted
}

// snapshot returns what the checkpoint keeps.
func (r *Ring) snapshot() (items []*detectv1.Anomaly, next, evicted uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.n {
		items = append(items, r.buf[(r.head+i)%len(r.buf)])
	}
	return items, r.next, r.evicted
}

// restore puts checkpointed anomalies back (offsets kept), and makes the
// next offset at least next.
func (r *Ring) restore(items []*detectv1.Anomaly, next, evicted uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.head, r.n = 0, 0
	r.evicted = evicted
	if len(items) > len(r.buf) {
		r.evicted = max(r.evicted, items[len(items)-len(r.buf)-1].GetOffset())
		items = items[len(items)-len(r.buf):]
	}
	for _, a := range items {
		r.buf[r.n] = a
		r.n++
	}
	r.next = max(r.next, next)
	if r.n > 0 {
		r.next = max(r.next, r.buf[(r.head+r.n-1)%len(r.buf)].GetOffset()+1)
	}
}
