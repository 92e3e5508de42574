package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// DefaultMaxFrameBytes is the largest frame accepted unless configured.
const DefaultMaxFrameBytes = 1 << 20

// Frame errors; each maps to one ErrorCode sent before the close.
var (
	ErrEmptyFrame     = errors.New("frame length is 0")
	ErrFrameTooLarge  = errors.New("frame length exceeds the maximum")
	ErrTruncatedFrame = errors.New("stream ended inside a frame")
	ErrMalformedFrame = errors.New("frame is not a valid protobuf message")
)

// ReadFrame reads one length-prefixed frame: a 4-byte big-endian length N,
// then N bytes. N is checked against max before anything is allocated. buf
// is reused when it is large enough; the returned slice aliases it.
func ReadFrame(r io.Reader, max uint32, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrTruncatedFrame
		}
		return nil, err // io.EOF: a clean end between frames
	}
	n := binary.BigEndian.Uint32(hdr[:])
	switch {
	case n == 0:
		return nil, ErrEmptyFrame
	case n > max:
		return nil, fmt.Errorf("%w: %d > %d", ErrFrameTooLarge, n, max)
	}
	if uint32(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrTruncatedFrame
		}
		return nil, err
	}
	return buf, nil
}

// AppendFrame appends the length-prefixed encoding of m to dst.
func AppendFrame(dst []byte, m proto.Message) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst, err := proto.MarshalOptions{}.MarshalAppend(dst, m)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst, nil
}

// decodeClientFrame unmarshals a frame payload.
func decodeClientFrame(b []byte) (*ingestv1.ClientFrame, error) {
	f := &ingestv1.ClientFrame{}
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedFrame, err)
	}
	if f.GetFrame() == nil {
		return nil, fmt.Errorf("%w: no frame type set", ErrMalformedFrame)
	}
	return f, nil
}
