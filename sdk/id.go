package sdk

import (
	"encoding/hex"
	"math/rand/v2"
	"time"
)

// NewEventID returns a fresh UUIDv7 in canonical text form, the kind of id
// Track gives an event that has none. Callers that must know an event's id
// before tracking it (to log it, say) set Event.EventId themselves.
func NewEventID() string { return newID(time.Now()) }

// newID returns a UUIDv7 for time t: 48 bits of Unix milliseconds, then 74
// random bits. math/rand/v2's global generator is ChaCha8 seeded from the
// OS, which is plenty for uniqueness and needs no lock.
func newID(t time.Time) string {
	var u [16]byte
	ms := uint64(t.UnixMilli())
	r1, r2 := rand.Uint64(), rand.Uint64()
	u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	u[6] = 0x70 | byte(r1>>8)&0x0f // version 7
	u[7] = byte(r1)
	u[8] = 0x80 | byte(r2>>56)&0x3f // variant 10
	for i := 9; i < 16; i++ {
		u[i] = byte(r2 >> (8 * (15 - i)))
	}
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}
