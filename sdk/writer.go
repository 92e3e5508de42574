package sdk

import (
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
)

// maxEventBytes is the largest serialized event the client keeps; the
// collector refuses events above 64 KiB anyway.
const maxEventBytes = 1 << 20

// writeLoop is the writer goroutine: it takes what Track handed over,
// applies consent and opt-out, numbers the events and writes them to the
// queue, a group at a time (one write and one fsync per group).
func (c *Client) writeLoop() {
	defer c.wg.Done()
	w := &writer{c: c, seq: c.q.next()}
	group := make([]input, 0, 256)
	for {
		group = group[:0]
		select {
		case in := <-c.in:
			group = append(group, in)
		case <-c.poke:
		case <-c.quit:
			// Close has flushed; queue what raced with it and stop.
			for len(c.in) > 0 {
				group = append(group, <-c.in)
			}
			w.process(group)
			return
		}
	drain:
		for len(group) < cap(group) {
			select {
			case in := <-c.in:
				group = append(group, in)
			default:
				break drain
			}
		}
		w.process(group)
	}
}

type writer struct {
	c     *Client
	seq   uint64           // next sequence
	items []item           // to write
	held  []*eventv1.Event // consent pending
}

func (w *writer) process(group []input) {
	c := w.c
	c.saveState()
	c.mu.Lock()
	consent, out := c.consent, c.optedOut
	c.mu.Unlock()
	if out {
		w.discard(len(w.held))
		w.held = w.held[:0]
		c.q.purge()
	}
	switch consent {
	case ConsentGranted:
		for _, e := range w.held {
			w.queue(e)
		}
		w.held = w.held[:0]
	case ConsentDenied:
		w.discard(len(w.held))
		w.held = w.held[:0]
	}
	for _, in := range group {
		switch {
		case in.mark != nil:
			w.commit()
			w.mark(in.mark)
		case out:
			w.discard(1)
		case !in.pending || consent == ConsentGranted:
			w.queue(in.e)
		case consent == ConsentDenied:
			w.discard(1)
		default:
			w.hold(in.e)
		}
	}
	w.commit()
	c.held.Store(int64(len(w.held)))
}

func (w *writer) discard(n int) {
	w.c.discarded.Add(uint64(n))
}

// hold keeps an event until consent is known, dropping the oldest beyond the
// queue's event limit (counted, but not reported: nothing is sent without
// consent).
func (w *writer) hold(e *eventv1.Event) {
	if len(w.held) >= w.c.cfg.queueEvents {
		w.held = append(w.held[:0], w.held[1:]...)
		w.c.dropped.Add(1)
	}
	w.held = append(w.held, e)
}

// queue numbers and serializes an event for the next commit.
func (w *writer) queue(e *eventv1.Event) {
	e.Sequence = w.seq
	data, err := proto.Marshal(e)
	switch {
	case err != nil:
		w.c.cfg.logger.Warn("causality: event cannot be serialized; dropped", "event_id", e.GetEventId(), "err", err)
		w.c.invalid.Add(1)
		return
	case len(data) > maxEventBytes || int64(len(data)) > w.c.cfg.queueBytes/4:
		w.c.cfg.logger.Warn("causality: event too large; dropped", "event_id", e.GetEventId(), "bytes", len(data))
		w.c.invalid.Add(1)
		return
	}
	w.items = append(w.items, item{seq: w.seq, data: data})
	w.seq++
}

func (w *writer) commit() {
	if n := w.c.overflow.Swap(0); n > 0 {
		w.c.q.addDropped(n)
	}
	if len(w.items) == 0 {
		return
	}
	if err := w.c.q.add(w.items); err != nil {
		w.c.setErr(err)
	}
	clear(w.items)
	w.items = w.items[:0]
}

// mark answers a Sync at once (everything before it is written), or hands a
// Flush to the sender with the last sequence it must see finished.
func (w *writer) mark(m *marker) {
	if !m.flush {
		m.done <- nil
		return
	}
	c := w.c
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	if c.flushGone {
		m.done <- ErrClosed
		return
	}
	c.flushQ = append(c.flushQ, flushReq{last: w.seq - 1, done: m.done})
	select {
	case c.flushWake <- struct{}{}:
	default:
	}
}
