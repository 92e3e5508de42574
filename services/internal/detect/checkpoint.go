package detect

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"google.golang.org/protobuf/proto"

	detectv1 "causality.dev/api/gen/causality/detect/v1"
)

// A checkpoint is one file: a magic line, then the gob of checkpoint. It is
// written to a temporary file, synced and renamed over the previous one, so
// a crash leaves the old or the new checkpoint, never half of one.

const checkpointMagic = "causality-detector-checkpoint v1\n"

// checkpoint is what a restart needs: the learned state, the retained
// anomalies with the offsets, where each output is, and what outputs keep
// (e.g. the webhook ids already delivered).
type checkpoint struct {
	SavedAtMs int64
	State     *State
	Anomalies [][]byte // marshalled, oldest first
	Next      uint64
	Evicted   uint64
	Cursors   map[string]uint64
	Outputs   map[string][]byte
}

// ErrCheckpointMismatch means the checkpoint was made with other window sizes.
var ErrCheckpointMismatch = errors.New("checkpoint made with other window sizes")

func encodeCheckpoint(w io.Writer, cp *checkpoint) error {
	if _, err := io.WriteString(w, checkpointMagic); err != nil {
		return err
	}
	return gob.NewEncoder(w).Encode(cp)
}

func decodeCheckpoint(r io.Reader) (*checkpoint, error) {
	magic := make([]byte, len(checkpointMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != checkpointMagic {
		return nil, errors.New("not a detector checkpoint (bad header)")
	}
	var cp checkpoint
	if err := gob.NewDecoder(r).Decode(&cp); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if cp.State == nil {
		return nil, errors.New("decode: no state")
	}
	return &cp, nil
}

// writeFileAtomic writes b to path through a synced temporary file and a
// rename.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func marshalAnomalies(as []*detectv1.Anomaly) ([][]byte, error) {
	out := make([][]byte, 0, len(as))
	for _, a := range as {
		b, err := proto.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("marshal anomaly %s: %w", a.GetId(), err)
		}
		out = append(out, b)
	}
	return out, nil
}

func unmarshalAnomalies(bs [][]byte) ([]*detectv1.Anomaly, error) {
	out := make([]*detectv1.Anomaly, 0, len(bs))
	for i, b := range bs {
		a := &detectv1.Anomaly{}
		if err := proto.Unmarshal(b, a); err != nil {
			return nil, fmt.Errorf("anomaly %d: %w", i, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// State returns the detector's learned state for a checkpoint. It is the
// live state: encode it before the detector takes more events.
func (d *Detector) State() *State { return d.st }

// Restore replaces the detector's state with a checkpointed one made with
// the same window sizes.
func (d *Detector) Restore(st *State) error {
	if !slices.Equal(st.Sizes, d.sizes) {
		return fmt.Errorf("%w: %v ms, now %v ms", ErrCheckpointMismatch, st.Sizes, d.sizes)
	}
	if st.Dedup == nil || st.Dedup.Size != d.cfg.DedupSize {
		old := st.Dedup
		st.Dedup = NewRecentSet(d.cfg.DedupSize)
		if old != nil {
			for k := range old.Prev {
				st.Dedup.Add(k)
			}
			for k := range old.Cur {
				st.Dedup.Add(k)
			}
		}
	}
	for _, m := range []*map[int64]bool{&st.Pending} {
		if *m == nil {
			*m = map[int64]bool{}
		}
	}
	if st.Apps == nil {
		st.Apps = map[string]*appState{}
	}
	for _, a := range st.Apps {
		if a.Screens == nil {
			a.Screens = map[string]uint16{}
		}
		if a.Platforms == nil {
			a.Platforms = map[int32]*platformState{}
		}
	}
	if st.Cohorts == nil {
		st.Cohorts, st.CohortIDs = map[uint32]*cohort{}, map[string]uint32{}
	}
	if st.Devices == nil {
		st.Devices = map[string]*device{}
	}
	for _, c := range st.Cohorts {
		for _, s := range c.Scales {
			for _, w := range s.Open {
				if w.TypeTr == nil {
					w.TypeTr = map[uint32]float64{}
				}
				if w.ScreenTr == nil {
					w.ScreenTr = map[uint32]float64{}
				}
			}
		}
	}
	d.st = st
	d.dirty = d.dirty[:0]
	for _, dv := range st.Devices {
		dv.dirty = false
		if len(dv.Buf) > 0 {
			d.markDirty(dv)
		}
	}
	return nil
}

// GobEncode writes the set as its size and keys (gob cannot encode
// map[uint64]struct{}).
func (s *RecentSet) GobEncode() ([]byte, error) {
	b := make([]byte, 0, 16+8*s.Len())
	b = binary.AppendUvarint(b, uint64(s.Size))
	b = binary.AppendUvarint(b, uint64(len(s.Prev)))
	for k := range s.Prev {
		b = binary.LittleEndian.AppendUint64(b, k)
	}
	for k := range s.Cur {
		b = binary.LittleEndian.AppendUint64(b, k)
	}
	return b, nil
}

// GobDecode reads what GobEncode wrote.
func (s *RecentSet) GobDecode(b []byte) error {
	r := bytes.NewReader(b)
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return fmt.Errorf("recent set: %w", err)
	}
	nPrev, err := binary.ReadUvarint(r)
	if err != nil {
		return fmt.Errorf("recent set: %w", err)
	}
	rest := b[len(b)-r.Len():]
	if len(rest)%8 != 0 || uint64(len(rest)/8) < nPrev {
		return errors.New("recent set: truncated")
	}
	s.Size = int(size)
	s.Prev = make(map[uint64]struct{}, nPrev)
	s.Cur = make(map[uint64]struct{}, uint64(len(rest)/8)-nPrev)
	for i := 0; i < len(rest); i += 8 {
		k := binary.LittleEndian.Uint64(rest[i:])
		if uint64(i/8) < nPrev {
			s.Prev[k] = struct{}{}
		} else {
			s.Cur[k] = struct{}{}
		}
	}
	return nil
}
