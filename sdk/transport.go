package sdk

import (
	"context"
	"errors"
	"io"

	"causality.dev/api/frame"
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
	ErrFrameTooLarge  = frame.ErrTooLarge
	ErrEmptyFrame     = frame.ErrEmpty
	ErrTruncatedFrame = frame.ErrTruncated
	ErrMalformedFrame = errors.New("frame is not a valid ServerFrame")
)

// ReadFrame reads one length-prefixed frame from r, checking the length
// against max before allocating. buf is reused when large enough; the result
// aliases it. A clean end between frames returns io.EOF.
func ReadFrame(r io.Reader, max uint32, buf []byte) ([]byte, error) {
	return frame.Read(r, max, buf)
}
