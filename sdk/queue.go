package sdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// queue holds events from the moment they are written until the collector
// acknowledges them (or they are dropped). With a directory it is a log of
// append-only segment files; without one it lives in memory.
//
// A segment file is a sequence of records:
//
//	uint32 length (big endian) of what follows the CRC: 8 + len(event)
//	uint32 CRC-32C of those bytes
//	uint64 sequence (big endian)
//	event  the serialized causality.event.v1.Event (whose sequence field is the same)
//
// Files are named after the first sequence they may hold; records are never
// rewritten. The active segment is appended to until it reaches segBytes;
// then a new one starts, and a segment that is not active is deleted once
// every record in it is acknowledged or dropped. The file "acked" holds the
// low-water mark (every sequence below it is finished), overwritten in place
// without fsync as acks come: after a restart, records below it are skipped
// (a stale mark only means some are sent again), and it keeps the
// per-install sequence going when no record is left. A torn last record (a
// crash during a write, a bad CRC) is detected on open and the file is
// truncated before it.
type queue struct {
	mu        sync.Mutex
	dir       string
	fsync     bool
	maxEvents int
	maxBytes  int64
	segBytes  int64
	logger    *slog.Logger
	notify    chan struct{} // gets a token when records become ready

	recs      []*record // in sequence order; recs[:head] are done
	head      int
	live      int   // records not done
	ready     int   // live records not in flight
	liveBytes int64 // memory mode: bytes of live records
	segs      []*segment
	active    *segment // the segment appended to; nil after a disk failure
	diskBytes int64
	nextSeq   uint64
	wbuf      []byte

	dropped   uint64 // dropped and not yet reported to the collector
	reporting uint64 // reported in batches not yet acknowledged
	stats     queueStats
	diskErr   error
	acked     *os.File // the low-water mark file
	savedLow  uint64   // the mark last written
}

type queueStats struct {
	dropped uint64 // total dropped because the queue was full
	torn    int    // torn records cut off when opening
}

type recState uint8

const (
	stateReady recState = iota
	stateInflight
	stateDone
)

type record struct {
	seq   uint64
	seg   *segment // nil: data is in memory
	off   int64    // offset of the event bytes in seg
	n     int      // length of the event bytes
	data  []byte   // memory mode only
	state recState
}

type segment struct {
	base uint64
	path string
	f    *os.File
	size int64
	live int
}

const (
	recHeader    = 16
	maxRecordLen = 8 + 1<<20 // sequence + the largest event the client keeps
	segSuffix    = ".seg"
	droppedFile  = "dropped"
	ackedFile    = "acked"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// openQueue opens (or creates) the queue in dir, recovering what a previous
// process left; dir "" gives a memory queue.
func openQueue(dir string, maxEvents int, maxBytes int64, fsync bool, logger *slog.Logger) (*queue, error) {
	q := &queue{
		dir: dir, fsync: fsync, maxEvents: maxEvents, maxBytes: maxBytes,
		segBytes: min(max(maxBytes/8, 4<<10), 1<<20),
		logger:   logger, notify: make(chan struct{}, 1), nextSeq: 1,
	}
	if dir == "" {
		return q, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("queue dir: %w", err)
	}
	if s, err := readSmallFile(dir, droppedFile); err == nil && s != "" {
		q.dropped, _ = strconv.ParseUint(s, 10, 64)
	}
	var err error
	if q.acked, err = os.OpenFile(filepath.Join(dir, ackedFile), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("queue ack mark: %w", err)
	}
	var mark [12]byte
	if n, _ := q.acked.ReadAt(mark[:], 0); n == len(mark) && crc32.Checksum(mark[:8], crcTable) == binary.BigEndian.Uint32(mark[8:]) {
		q.savedLow = binary.BigEndian.Uint64(mark[:8])
	}
	names, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		return nil, err
	}
	slices.Sort(names) // zero-padded names sort by base
	for _, name := range names {
		base, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(name), segSuffix), 10, 64)
		if err != nil {
			q.logger.Warn("causality: ignoring a file in the queue dir", "file", name)
			continue
		}
		if err := q.recover(name, base); err != nil {
			q.closeFiles()
			return nil, err
		}
	}
	// Bounds may have shrunk since the last run.
	for q.live > q.maxEvents {
		q.dropOldest()
	}
	for q.diskBytes > q.maxBytes && len(q.segs) > 1 {
		q.dropSegment(q.segs[0])
	}
	q.nextSeq = max(q.nextSeq, q.savedLow)
	if n := len(q.segs); n > 0 && q.segs[n-1].size < q.segBytes {
		q.active = q.segs[n-1]
	} else if err := q.roll(); err != nil {
		q.closeFiles()
		return nil, err
	}
	q.removeEmpty()
	q.persistDropped()
	return q, nil
}

// recover reads one segment file, truncating a torn tail.
func (q *queue) recover(path string, base uint64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read queue segment: %w", err)
	}
	seg := &segment{base: base, path: path}
	q.nextSeq = max(q.nextSeq, base)
	off := 0
	for off < len(b) {
		rest := b[off:]
		if len(rest) < recHeader {
			break
		}
		n := int(binary.BigEndian.Uint32(rest))
		if n < 8 || n > maxRecordLen || len(rest) < 8+n {
			break
		}
		body := rest[8 : 8+n]
		if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(rest[4:]) {
			break
		}
		seq := binary.BigEndian.Uint64(body)
		if seq >= q.nextSeq {
			if seq >= q.savedLow { // below the mark: acknowledged before the restart
				q.recs = append(q.recs, &record{seq: seq, seg: seg, off: int64(off + recHeader), n: n - 8})
				q.live++
				q.ready++
				seg.live++
			}
			q.nextSeq = seq + 1
		}
		off += 8 + n
	}
	if off < len(b) {
		q.stats.torn++
		q.logger.Warn("causality: truncating a torn record in the queue", "file", path, "offset", off, "bytes", len(b)-off)
		if err := os.Truncate(path, int64(off)); err != nil {
			return fmt.Errorf("truncate torn queue segment: %w", err)
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open queue segment: %w", err)
	}
	seg.f, seg.size = f, int64(off)
	q.segs = append(q.segs, seg)
	q.diskBytes += seg.size
	return nil
}

// item is an event ready to be queued.
type item struct {
	seq  uint64
	data []byte // serialized event; owned by the queue from then on
}

// add queues items, dropping the oldest records when a bound is reached. It
// returns once the records are written (and fsynced, if enabled); a disk
// failure keeps them in memory and is returned, once.
func (q *queue) add(items []item) error {
	if len(items) == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	droppedBefore := q.dropped
	if extra := len(items) - q.maxEvents; extra > 0 { // the newest alone overflow the queue
		q.dropped += uint64(extra)
		q.stats.dropped += uint64(extra)
		items = items[extra:]
	}
	var err error
	if q.active != nil {
		err = q.write(items)
	}
	if q.active == nil { // memory mode, or the disk failed
		for _, it := range items {
			q.makeRoom(int64(len(it.data)), 0)
			q.push(&record{seq: it.seq, n: len(it.data), data: it.data})
			q.liveBytes += int64(len(it.data))
		}
	}
	q.nextSeq = items[len(items)-1].seq + 1
	q.trim()
	if q.dropped != droppedBefore {
		q.persistDropped()
	}
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return err
}

// write appends items to the active segment, rolling and dropping as needed.
func (q *queue) write(items []item) error {
	var recs []*record
	flush := func() error {
		if len(q.wbuf) == 0 {
			return nil
		}
		seg := q.active
		_, err := seg.f.WriteAt(q.wbuf, seg.size)
		if err == nil && q.fsync {
			err = seg.f.Sync()
		}
		if err != nil {
			_ = seg.f.Truncate(seg.size)
			return err
		}
		seg.size += int64(len(q.wbuf))
		q.diskBytes += int64(len(q.wbuf))
		for _, r := range recs {
			q.push(r)
			seg.live++
		}
		q.wbuf, recs = q.wbuf[:0], recs[:0]
		return nil
	}
	for i, it := range items {
		size := int64(recHeader + len(it.data))
		if q.active.size+int64(len(q.wbuf)) > 0 && q.active.size+int64(len(q.wbuf))+size > q.segBytes {
			if err := flush(); err != nil {
				return q.diskFailed(err, items[i-len(recs):])
			}
			if err := q.roll(); err != nil {
				return q.diskFailed(err, items[i:])
			}
		}
		q.makeRoom(size+int64(len(q.wbuf)), len(recs))
		off := q.active.size + int64(len(q.wbuf))
		q.wbuf = binary.BigEndian.AppendUint32(q.wbuf, uint32(8+len(it.data)))
		q.wbuf = append(q.wbuf, 0, 0, 0, 0)
		start := len(q.wbuf)
		q.wbuf = binary.BigEndian.AppendUint64(q.wbuf, it.seq)
		q.wbuf = append(q.wbuf, it.data...)
		binary.BigEndian.PutUint32(q.wbuf[start-4:], crc32.Checksum(q.wbuf[start:], crcTable))
		recs = append(recs, &record{seq: it.seq, seg: q.active, off: off + recHeader, n: len(it.data)})
	}
	if err := flush(); err != nil {
		return q.diskFailed(err, items[len(items)-len(recs):])
	}
	if cap(q.wbuf) > 1<<20 {
		q.wbuf = nil
	}
	return nil
}

// diskFailed switches the queue to memory for new records; items were not
// written and go to memory.
func (q *queue) diskFailed(err error, items []item) error {
	q.logger.Error("causality: queue disk write failed; new events are kept in memory only", "err", err)
	q.active, q.wbuf = nil, nil
	q.diskErr = err
	for _, it := range items {
		q.makeRoom(int64(len(it.data)), 0)
		q.push(&record{seq: it.seq, n: len(it.data), data: it.data})
		q.liveBytes += int64(len(it.data))
	}
	return fmt.Errorf("queue write: %w", err)
}

// roll starts a new active segment named after the next sequence.
func (q *queue) roll() error {
	path := filepath.Join(q.dir, fmt.Sprintf("%020d%s", q.nextSeq, segSuffix))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("create queue segment: %w", err)
	}
	if q.fsync {
		syncDir(q.dir)
	}
	if n := len(q.segs); n > 0 && q.segs[n-1].base == q.nextSeq {
		q.segs[n-1].f.Close() // an empty segment of the same name was just replaced
		q.segs = q.segs[:n-1]
	}
	seg := &segment{base: q.nextSeq, path: path, f: f}
	q.segs = append(q.segs, seg)
	old := q.active
	q.active = seg
	if old != nil && old.live == 0 {
		q.removeSegment(old)
	}
	return nil
}

func (q *queue) push(r *record) {
	q.recs = append(q.recs, r)
	q.live++
	q.ready++
}

// makeRoom drops the oldest records until one more of size bytes fits
// beside pending records not yet written.
func (q *queue) makeRoom(size int64, pending int) {
	for q.live > 0 && q.live+pending >= q.maxEvents {
		q.dropOldest()
	}
	if q.active == nil {
		for q.live > 0 && q.liveBytes+size > q.maxBytes {
			q.dropOldest()
		}
		return
	}
	for q.diskBytes+size > q.maxBytes && len(q.segs) > 1 && q.segs[0] != q.active {
		q.dropSegment(q.segs[0])
	}
}

// dropOldest drops the oldest record not in flight (or the oldest, if all are).
func (q *queue) dropOldest() {
	var victim *record
	for _, r := range q.recs[q.head:] {
		if r.state == stateReady {
			victim = r
			break
		}
		if r.state == stateInflight && victim == nil {
			victim = r
		}
	}
	if victim == nil {
		return
	}
	q.dropped++
	q.stats.dropped++
	q.finish(victim)
	q.trim()
}

// dropSegment deletes a whole segment, counting its live records as dropped.
func (q *queue) dropSegment(seg *segment) {
	var victims []*record
	for _, r := range q.recs[q.head:] {
		if r.seg == seg && r.state != stateDone {
			victims = append(victims, r)
		}
	}
	for _, r := range victims {
		q.dropped++
		q.stats.dropped++
		q.finish(r) // removes seg once its last record goes
	}
	if slices.Contains(q.segs, seg) {
		q.removeSegment(seg)
	}
	q.trim()
}

// finish forgets a record: acknowledged, invalid or dropped.
func (q *queue) finish(r *record) {
	if r.state == stateDone {
		return
	}
	if r.state == stateReady {
		q.ready--
	}
	r.state = stateDone
	q.live--
	if r.seg == nil {
		q.liveBytes -= int64(r.n)
		r.data = nil
	} else if r.seg.live--; r.seg.live == 0 && r.seg != q.active {
		q.removeSegment(r.seg)
	}
}

// trim forgets finished records at the head. Callers must not be ranging
// over q.recs.
func (q *queue) trim() {
	for q.head < len(q.recs) && q.recs[q.head].state == stateDone {
		q.recs[q.head] = nil
		q.head++
	}
	if q.head > 64 && q.head > len(q.recs)/2 {
		q.recs = append(q.recs[:0], q.recs[q.head:]...)
		q.head = 0
	}
	if q.acked == nil {
		return
	}
	low := q.nextSeq
	if q.head < len(q.recs) {
		low = q.recs[q.head].seq
	}
	if low > q.savedLow {
		var mark [12]byte
		binary.BigEndian.PutUint64(mark[:], low)
		binary.BigEndian.PutUint32(mark[8:], crc32.Checksum(mark[:8], crcTable))
		if _, err := q.acked.WriteAt(mark[:], 0); err == nil {
			q.savedLow = low
		}
	}
}

func (q *queue) removeSegment(seg *segment) {
	seg.f.Close()
	if err := os.Remove(seg.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		q.logger.Warn("causality: remove queue segment", "err", err)
	}
	q.diskBytes -= seg.size
	q.segs = slices.DeleteFunc(q.segs, func(s *segment) bool { return s == seg })
}

// removeEmpty removes segments with no live record other than the active one
// (left by a previous run whose events were all dropped).
func (q *queue) removeEmpty() {
	for _, seg := range slices.Clone(q.segs) {
		if seg.live == 0 && seg != q.active {
			q.removeSegment(seg)
		}
	}
}

// take marks up to maxEvents ready records in flight, oldest first, whose
// encoded size (each event plus 6 bytes of framing) stays within maxBytes,
// and appends their events to batch. Records too large to ever fit are
// finished and returned in tooLarge.
func (q *queue) take(maxEvents, maxBytes int) (recs []*record, tooLarge int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	size := 0
	for _, r := range q.recs[q.head:] {
		if len(recs) == maxEvents {
			break
		}
		if r.state != stateReady {
			continue
		}
		if r.n+6 > maxBytes {
			tooLarge++
			q.finish(r)
			continue
		}
		if size+r.n+6 > maxBytes {
			break
		}
		size += r.n + 6
		r.state = stateInflight
		q.ready--
		recs = append(recs, r)
	}
	q.trim()
	return recs, tooLarge
}

// appendData appends r's event bytes to dst. A record whose bytes cannot be
// read (its segment was dropped meanwhile, or the disk fails) is reported
// with ok false and must be finished by the caller.
func (q *queue) appendData(dst []byte, r *record) (_ []byte, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if r.state == stateDone {
		return dst, false
	}
	if r.seg == nil {
		return append(dst, r.data...), true
	}
	start := len(dst)
	dst = slices.Grow(dst, r.n)[:start+r.n]
	if _, err := r.seg.f.ReadAt(dst[start:], r.off); err != nil {
		q.logger.Error("causality: read queued event", "err", err)
		return dst[:start], false
	}
	return dst, true
}

// release puts in-flight records back to ready (to be sent again).
func (q *queue) release(recs []*record) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range recs {
		if r.state == stateInflight {
			r.state = stateReady
			q.ready++
		}
	}
}

// done finishes records (acknowledged or invalid).
func (q *queue) done(recs ...*record) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range recs {
		q.finish(r)
	}
	q.trim()
}

// lowWater returns the smallest sequence still queued, or the next sequence
// when the queue is empty: every event below it is finished.
func (q *queue) lowWater() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head < len(q.recs) {
		return q.recs[q.head].seq
	}
	return q.nextSeq
}

// next returns the sequence the next queued event gets.
func (q *queue) next() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.nextSeq
}

func (q *queue) counts() (live, ready int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.live, q.ready
}

// addDropped counts events lost before reaching the queue (Track's buffer
// was full), to be reported with the others.
func (q *queue) addDropped(n uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropped += n
	q.persistDropped()
}

// takeDropped returns the count to report in the next batch.
func (q *queue) takeDropped() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.dropped
	q.dropped = 0
	q.reporting += n
	return n
}

// reported settles a count sent in a batch: acknowledged, or to report again.
func (q *queue) reported(n uint64, acked bool) {
	if n == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.reporting -= n
	if !acked {
		q.dropped += n
	}
	q.persistDropped()
}

// persistDropped keeps the unreported drop count across launches.
func (q *queue) persistDropped() {
	if q.dir == "" {
		return
	}
	n := q.dropped + q.reporting
	if n == 0 {
		if err := os.Remove(filepath.Join(q.dir, droppedFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			q.logger.Warn("causality: remove drop count", "err", err)
		}
		return
	}
	if err := writeSmallFile(q.dir, droppedFile, strconv.FormatUint(n, 10), q.fsync); err != nil {
		q.logger.Warn("causality: save drop count", "err", err)
	}
}

// purge drops every record without counting it (opt-out).
func (q *queue) purge() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.live == 0 && q.dropped == 0 {
		return
	}
	for _, r := range q.recs[q.head:] {
		q.finish(r)
	}
	q.trim()
	q.dropped = 0
	q.persistDropped()
}

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closeFiles()
}

func (q *queue) closeFiles() {
	if q.acked != nil {
		q.acked.Close()
	}
	for _, s := range q.segs {
		if s.f != nil {
			s.f.Close()
		}
	}
}

// readSmallFile reads a small file of the queue dir, trimmed.
func readSmallFile(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	return strings.TrimSpace(string(b)), err
}

// writeSmallFile replaces a small file of the queue dir atomically.
func writeSmallFile(dir, name, content string, fsync bool) error {
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(content + "\n")
	if err == nil && fsync {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
