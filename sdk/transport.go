package sdk

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// A Transport opens streams to a collector. The client holds at most one
// stream at a time and dials again after a failure. TCP is the default;
// sdk/grpctransport and sdk/wstransport hold the others, so that this package
// links neither gRPC nor WebSocket code.
type Transport interface {
	Dial(ctx context.Context, addr string) (Stream, error)
}

// A Stream carries encoded frames in both directions: each Send is one
// serialized ClientFrame, each Recv one serialized ServerFrame (without any
// length prefix: framing is the transport's job). The client calls Send from
// one goroutine and Recv from another; Close may be called at any time, more
// than once, and must unblock both. The slice Recv returns is only read until
// the next Recv.
type Stream interface {
	Send(frame []byte) error
	Recv() ([]byte, error)
	Close() error
}

// MaxServerFrameBytes bounds what a transport accepts from a collector. The
// largest legitimate ServerFrame is an Ack for a full batch, far below it.
const MaxServerFrameBytes = 4 << 20

// Frame errors. Transports return them (wrapped) so that the client can say
// clearly why it dropped a connection.
var (
	ErrFrameTooLarge  = errors.New("frame length exceeds the maximum")
	ErrEmptyFrame     = errors.New("frame length is 0")
	ErrTruncatedFrame = errors.New("stream ended inside a frame")
	ErrMalformedFrame = errors.New("frame is not a valid ServerFrame")
)

// ReadFrame reads one length-prefixed frame from r, checking the length
// against max before allocating. buf is reused when large enough; the result
// aliases it. A clean end between frames returns io.EOF.
func ReadFrame(r io.Reader, max uint32, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrTruncatedFrame
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	switch {
	case n == 0:
		return nil, ErrEmptyFrame
	case n > max:
		return nil, fmt.Errorf("%w: %d > %d bytes", ErrFrameTooLarge, n, max)
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
