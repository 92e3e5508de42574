package sdk

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
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

// TCP is the default transport: raw TCP, each frame a 4-byte big-endian
// length followed by that many bytes of protobuf.
type TCP struct {
	// Dialer dials the connection; nil means a zero net.Dialer.
	Dialer *net.Dialer
	// TLS, when set, wraps the connection in TLS (the collector behind a
	// TLS-terminating load balancer). The zero value is plain TCP.
	TLS *tls.Config
	// MaxFrameBytes bounds received frames; 0 means MaxServerFrameBytes.
	MaxFrameBytes uint32
}

// Dial connects to addr (host:port).
func (t TCP) Dial(ctx context.Context, addr string) (Stream, error) {
	d := t.Dialer
	if d == nil {
		d = &net.Dialer{}
	}
	var conn net.Conn
	var err error
	if t.TLS != nil {
		conn, err = (&tls.Dialer{NetDialer: d, Config: t.TLS}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	max := t.MaxFrameBytes
	if max == 0 {
		max = MaxServerFrameBytes
	}
	return &tcpStream{conn: conn, r: bufio.NewReaderSize(conn, 16<<10), max: max}, nil
}

type tcpStream struct {
	conn net.Conn
	r    *bufio.Reader
	max  uint32
	buf  []byte
	hdr  [4]byte
	once sync.Once
}

func (s *tcpStream) Send(frame []byte) error {
	binary.BigEndian.PutUint32(s.hdr[:], uint32(len(frame)))
	bufs := net.Buffers{s.hdr[:], frame}
	_, err := bufs.WriteTo(s.conn)
	return err
}

func (s *tcpStream) Recv() ([]byte, error) {
	b, err := ReadFrame(s.r, s.max, s.buf)
	if err == nil && cap(b) <= 64<<10 {
		s.buf = b
	}
	return b, err
}

func (s *tcpStream) Close() error {
	err := net.ErrClosed
	s.once.Do(func() { err = s.conn.Close() })
	return err
}

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
