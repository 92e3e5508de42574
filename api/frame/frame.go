// Package frame is the raw TCP framing both ends of the wire agree on: every
// frame is a 4-byte big-endian length N followed by N bytes of one serialized
// ClientFrame or ServerFrame (docs/protocol.md). The collector and the SDK
// both read frames with Read.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Read errors.
var (
	ErrEmpty     = errors.New("frame length is 0")
	ErrTooLarge  = errors.New("frame length exceeds the maximum")
	ErrTruncated = errors.New("stream ended inside a frame")
)

// Read reads one frame from r, checking its length against max before
// allocating. buf is reused when it is large enough; the result aliases it.
// A clean end between frames returns io.EOF.
func Read(r io.Reader, max uint32, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrTruncated
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	switch {
	case n == 0:
		return nil, ErrEmpty
	case n > max:
		return nil, fmt.Errorf("%w: %d > %d bytes", ErrTooLarge, n, max)
	}
	if uint32(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrTruncated
		}
		return nil, err
	}
	return buf, nil
}
