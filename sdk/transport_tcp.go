//go:build !js

package sdk

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"net"
	"sync"
)

// defaultTransport is TCP frames wherever sockets exist.
func defaultTransport() Transport { return TCP{} }

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
