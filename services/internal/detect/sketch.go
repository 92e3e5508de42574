package detect

// Bounded memory for high-cardinality sets: a two-generation set of recent
// event ids and a count-min sketch.

// hashString is 64-bit FNV-1a: stable across processes, so hashes can be
// checkpointed.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 scrambles h (splitmix64 finaliser), to derive independent hashes.
func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// RecentSet remembers about the last Size keys added: keys go into the
// current generation; when it holds Size/2 keys the previous generation is
// dropped and the current one becomes previous. A key is remembered for at
// least Size/2 and at most Size insertions.
type RecentSet struct {
	Size      int
	Cur, Prev map[uint64]struct{}
}

// NewRecentSet returns a set remembering about size keys.
func NewRecentSet(size int) *RecentSet {
	return &RecentSet{Size: max(size, 2), Cur: map[uint64]struct{}{}, Prev: map[uint64]struct{}{}}
}

// Add adds k and reports whether it was already there.
func (s *RecentSet) Add(k uint64) (seen bool) {
	if _, ok := s.Cur[k]; ok {
		return true
	}
	if _, ok := s.Prev[k]; ok {
		return true
	}
	if len(s.Cur) >= s.Size/2 {
		s.Prev, s.Cur = s.Cur, make(map[uint64]struct{}, s.Size/2)
	}
	s.Cur[k] = struct{}{}
	return false
}

// Len is the number of keys remembered.
func (s *RecentSet) Len() int { return len(s.Cur) + len(s.Prev) }

// CountMin is a count-min sketch with conservative update: an estimate never
// undercounts and overcounts only through collisions.
type CountMin struct {
	width int
	rows  [][]uint16
}

// NewCountMin returns a sketch of depth rows of width counters (width is
// rounded up to a power of two).
func NewCountMin(width, depth int) *CountMin {
	w := 1
	for w < width {
		w <<= 1
	}
	c := &CountMin{width: w}
	for range depth {
		c.rows = append(c.rows, make([]uint16, w))
	}
	return c
}

func (c *CountMin) cell(row int, k uint64) int {
	return int(mix64(k+uint64(row)*0x9e3779b97f4a7c15) & uint64(c.width-1))
}

// Add counts k once and returns its new estimate.
func (c *CountMin) Add(k uint64) int {
	est := c.Estimate(k) + 1
	for r := range c.rows {
		i := c.cell(r, k)
		if int(c.rows[r][i]) < est && c.rows[r][i] < 65535 {
			c.rows[r][i] = uint16(est)
		}
	}
	return est
}

// Estimate returns an upper bound of the count of k.
func (c *CountMin) Estimate(k uint64) int {
	m := 65535
	for r := range c.rows {
		m = min(m, int(c.rows[r][c.cell(r, k)]))
	}
	return m
}

// Reset clears every counter.
func (c *CountMin) Reset() {
	for _, r := range c.rows {
		clear(r)
	}
}

// Bytes is the memory of the counters.
func (c *CountMin) Bytes() int { return 2 * c.width * len(c.rows) }
