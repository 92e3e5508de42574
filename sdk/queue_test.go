package sdk

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func openTestQueue(t *testing.T, dir string, maxEvents int, maxBytes int64) *queue {
	t.Helper()
	q, err := openQueue(dir, maxEvents, maxBytes, false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open queue: %v", err)
	}
	t.Cleanup(q.close)
	return q
}

func payload(seq uint64, size int) []byte {
	return bytes.Repeat([]byte{byte(seq)}, size)
}

func addN(t *testing.T, q *queue, from, n uint64, size int) {
	t.Helper()
	var items []item
	for s := from; s < from+n; s++ {
		items = append(items, item{seq: s, data: payload(s, size)})
	}
	if err := q.add(items); err != nil {
		t.Fatalf("add: %v", err)
	}
}

// liveSeqs returns the sequences queued and checks each record's bytes.
func liveSeqs(t *testing.T, q *queue, size int) []uint64 {
	t.Helper()
	var out []uint64
	for _, r := range q.recs[q.head:] {
		if r.state == stateDone {
			continue
		}
		b, ok := q.appendData(nil, r)
		if !ok || !bytes.Equal(b, payload(r.seq, size)) {
			t.Fatalf("record %d: bytes not as written (ok=%v)", r.seq, ok)
		}
		out = append(out, r.seq)
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestQueueSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, 1000, 1<<20)
	addN(t, q, 1, 10, 100)
	recs, _ := q.take(6, 1<<20)
	q.done(recs[:4]...) // 1..4 acknowledged
	q.done(recs[5])     // and 6, out of order; 5 is still in flight
	q.close()

	// Below the low-water mark (5) nothing comes back; above it, records of
	// a live segment are kept even if acknowledged (at least once: the
	// collector answers duplicate).
	q = openTestQueue(t, dir, 1000, 1<<20)
	if got, want := liveSeqs(t, q, 100), seqRange(5, 10); !slices.Equal(got, want) {
		t.Fatalf("after reopen got %v, want %v", got, want)
	}
	recs, _ = q.take(100, 1<<20)
	q.done(recs...)
	if q.live != 0 {
		t.Fatalf("live = %d after acking everything", q.live)
	}
	q.close()

	// Everything acknowledged: nothing comes back, and the sequence goes on.
	q = openTestQueue(t, dir, 1000, 1<<20)
	if q.live != 0 || q.next() != 11 {
		t.Fatalf("after acking all and reopening: live %d, next sequence %d; want 0 and 11", q.live, q.next())
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if len(segs) != 1 {
		t.Fatalf("segment files = %v, want one empty active segment", segs)
	}
}

func TestQueueTornRecord(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, path string, size int64)
		want   []uint64
	}{
		{"half-written record", func(t *testing.T, path string, size int64) {
			appendFile(t, path, []byte{0, 0, 0, 120, 1, 2, 3, 4, 0, 0}) // header says 120 bytes, 2 present
		}, seqRange(1, 3)},
		{"torn header", func(t *testing.T, path string, size int64) {
			appendFile(t, path, []byte{0, 0})
		}, seqRange(1, 3)},
		{"bad CRC in the last record", func(t *testing.T, path string, size int64) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{0xff}, size-1); err != nil {
				t.Fatal(err)
			}
		}, seqRange(1, 2)},
		{"absurd length", func(t *testing.T, path string, size int64) {
			appendFile(t, path, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
		}, seqRange(1, 3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			q := openTestQueue(t, dir, 1000, 1<<20)
			addN(t, q, 1, 3, 50)
			path, size := q.active.path, q.active.size
			q.close()
			tt.damage(t, path, size)

			q = openTestQueue(t, dir, 1000, 1<<20)
			if got := liveSeqs(t, q, 50); !slices.Equal(got, tt.want) {
				t.Fatalf("after recovery got %v, want %v", got, tt.want)
			}
			if q.stats.torn != 1 {
				t.Fatalf("torn = %d, want 1", q.stats.torn)
			}
			// The file was cut at the last good record: appending works and
			// the next open sees no damage.
			next := tt.want[len(tt.want)-1] + 1
			addN(t, q, next, 1, 50)
			q.close()
			q = openTestQueue(t, dir, 1000, 1<<20)
			if got, want := liveSeqs(t, q, 50), append(tt.want, next); !slices.Equal(got, want) || q.stats.torn != 0 {
				t.Fatalf("after append and reopen got %v (torn %d), want %v (torn 0)", got, q.stats.torn, want)
			}
		})
	}
}

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

func TestQueueDropsOldest(t *testing.T) {
	for _, dir := range []string{"memory", "disk"} {
		t.Run("events/"+dir, func(t *testing.T) {
			d := ""
			if dir == "disk" {
				d = t.TempDir()
			}
			q := openTestQueue(t, d, 5, 1<<20)
			addN(t, q, 1, 8, 10)
			if got := liveSeqs(t, q, 10); !slices.Equal(got, seqRange(4, 8)) {
				t.Fatalf("kept %v, want the newest 4..8", got)
			}
			if q.stats.dropped != 3 || q.takeDropped() != 3 {
				t.Fatalf("dropped = %d, want 3 (and 3 to report)", q.stats.dropped)
			}
			if q.takeDropped() != 0 {
				t.Fatal("a reported drop count was reported twice")
			}
		})
		t.Run("bytes/"+dir, func(t *testing.T) {
			d := ""
			if dir == "disk" {
				d = t.TempDir()
			}
			const limit = 64 << 10
			q := openTestQueue(t, d, 100000, limit)
			for s := uint64(1); s <= 200; s++ { // 200 KiB through a 64 KiB queue, one at a time
				addN(t, q, s, 1, 1000)
			}
			got := liveSeqs(t, q, 1000)
			if len(got) == 0 || !slices.Equal(got, seqRange(got[0], 200)) {
				t.Fatalf("kept %v, want a run of the newest ending at 200", got)
			}
			if q.stats.dropped != uint64(200-len(got)) {
				t.Fatalf("dropped %d, kept %d of 200", q.stats.dropped, len(got))
			}
			var used int64
			if d == "" {
				used = q.liveBytes
			} else {
				used = dirBytes(t, d)
			}
			if used > limit {
				t.Fatalf("queue uses %d bytes, limit %d", used, limit)
			}
			if len(got) < 40 {
				t.Fatalf("kept only %d KiB of a 64 KiB queue", len(got))
			}
		})
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	var n int64
	for _, s := range segs {
		fi, err := os.Stat(s)
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

func TestQueueInflightAndRelease(t *testing.T) {
	q := openTestQueue(t, t.TempDir(), 1000, 1<<20)
	addN(t, q, 1, 6, 10)
	a, _ := q.take(2, 1<<20)
	b, _ := q.take(2, 1<<20)
	if fmt.Sprint(seqsOf(a), seqsOf(b)) != "[1 2] [3 4]" {
		t.Fatalf("take gave %v then %v", seqsOf(a), seqsOf(b))
	}
	q.done(b...)
	if q.lowWater() != 1 {
		t.Fatalf("low water %d with 1 and 2 in flight, want 1", q.lowWater())
	}
	q.release(a) // connection lost: 1 and 2 go out again, before 5 and 6
	c, _ := q.take(10, 1<<20)
	if got := seqsOf(c); !slices.Equal(got, []uint64{1, 2, 5, 6}) {
		t.Fatalf("after release take gave %v, want [1 2 5 6]", got)
	}
	q.done(c...)
	if q.lowWater() != 7 || q.live != 0 {
		t.Fatalf("low water %d, live %d; want 7 and 0", q.lowWater(), q.live)
	}
}

func seqsOf(recs []*record) []uint64 {
	var s []uint64
	for _, r := range recs {
		s = append(s, r.seq)
	}
	return s
}

func TestQueueDropCountSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, 2, 1<<20)
	addN(t, q, 1, 5, 10)
	n := q.takeDropped() // sent in a batch that is never acknowledged
	q.close()
	if n != 3 {
		t.Fatalf("dropped %d, want 3", n)
	}
	q = openTestQueue(t, dir, 2, 1<<20)
	if got := q.takeDropped(); got != 3 {
		t.Fatalf("after restart the count to report is %d, want 3", got)
	}
	q.reported(3, true)
	q.close()
	q = openTestQueue(t, dir, 2, 1<<20)
	if got := q.takeDropped(); got != 0 {
		t.Fatalf("an acknowledged count came back: %d", got)
	}
}

func TestQueueDeletesAcknowledgedSegments(t *testing.T) {
	dir := t.TempDir()
	q := openTestQueue(t, dir, 1000, 128<<10) // segments of 16 KiB
	for s := uint64(1); s <= 60; s++ {
		addN(t, q, s, 1, 1000)
	}
	if n := len(q.segs); n < 4 {
		t.Fatalf("60 KiB made %d segments of 16 KiB", n)
	}
	recs, _ := q.take(1000, 1<<20)
	q.done(recs...)
	segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if len(segs) != 1 || dirBytes(t, dir) > q.segBytes {
		t.Fatalf("after acking everything: %d segment files, %d bytes; want only the active one", len(segs), dirBytes(t, dir))
	}
	q.close()
	q = openTestQueue(t, dir, 1000, 128<<10)
	if q.live != 0 || q.next() != 61 {
		t.Fatalf("reopened: %d live, next sequence %d; want 0 and 61", q.live, q.next())
	}
}
