package ingest

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

const writeTimeout = 10 * time.Second

// serveTCP accepts raw TCP connections until ctx ends, then waits for every
// session to drain.
func (s *Server) serveTCP(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer lingerClose(conn)
			st := &tcpStream{conn: conn, r: bufio.NewReaderSize(conn, 32<<10), max: uint32(s.cfg.MaxFrameBytes), idle: 3*s.cfg.Heartbeat + time.Second}
			sess := s.newSession(st, TransportTCP, conn.RemoteAddr().String())
			if !s.acquire() {
				sess.fail(ingestv1.ErrorCode_ERROR_CODE_INTERNAL, "collector at its connection limit; retry later")
				s.count(TransportTCP, "connection_limit")
				return
			}
			defer s.release()
			s.count(TransportTCP, sess.run(ctx))
		}()
	}
}

// tcpStream reads and writes length-prefixed frames (docs/protocol.md).
type tcpStream struct {
	conn net.Conn
	r    *bufio.Reader
	max  uint32
	idle time.Duration
	buf  []byte // reused read buffer
	out  []byte // reused write buffer
}

func (t *tcpStream) Recv() (*ingestv1.ClientFrame, error) {
	f, _, err := t.RecvEncoded()
	return f, err
}

// RecvEncoded is Recv that also returns the encoding of each event of a
// batch frame. They alias the frame's buffer, which is then not reused.
func (t *tcpStream) RecvEncoded() (*ingestv1.ClientFrame, [][]byte, error) {
	_ = t.conn.SetReadDeadline(time.Now().Add(t.idle))
	b, err := ReadFrame(t.r, t.max, t.buf)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, nil, errIdle
		}
		return nil, nil, err
	}
	t.buf = nil
	f, raw, err := decodeFrame(b)
	if err != nil {
		return nil, nil, err
	}
	if f.GetBatch() == nil && cap(b) <= 64<<10 {
		t.buf = b // keep small buffers nothing decoded aliases; let large ones go
	}
	return f, raw, nil
}

func (t *tcpStream) Send(f *ingestv1.ServerFrame) error {
	out, err := AppendFrame(t.out[:0], f)
	if err != nil {
		return err
	}
	t.out = out
	_ = t.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err = t.conn.Write(out)
	return err
}

// lingerClose half-closes conn and discards what the client still sends for
// a moment before closing, so that a last Error frame is not destroyed by a
// reset caused by unread input. The moment is bounded by closing the conn
// from a timer, not by a read deadline: the session's reader may still be in
// Recv, which sets its own (idle-long) deadline and would extend it.
func lingerClose(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
		t := time.AfterFunc(500*time.Millisecond, func() { tc.Close() })
		_, _ = io.Copy(io.Discard, io.LimitReader(tc, 4<<20))
		t.Stop()
	}
	conn.Close()
}
