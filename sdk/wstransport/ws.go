// Package wstransport carries the SDK's frames over a WebSocket to the
// collector's GET /v1/stream: each frame is one binary message, without the
// length prefix. It is the transport of the js/wasm build (the browser's
// WebSocket underneath) and links no gRPC.
//
//	c, err := sdk.New("wss://collector.example.com/v1/stream", key, sdk.WithTransport(wstransport.New()))
package wstransport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/coder/websocket"

	"causality.dev/sdk"
)

// Transport dials WebSocket streams.
type Transport struct{}

// New returns a WebSocket transport.
func New() *Transport { return &Transport{} }

// Dial connects to addr: a ws:// or wss:// URL, or host:port, which means
// ws://host:port/v1/stream.
func (t *Transport) Dial(ctx context.Context, addr string) (sdk.Stream, error) {
	url := addr
	if !strings.HasPrefix(url, "ws://") && !strings.HasPrefix(url, "wss://") {
		url = "ws://" + addr + "/v1/stream"
	}
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("websocket %s: %w", url, err)
	}
	conn.SetReadLimit(sdk.MaxServerFrameBytes)
	sctx, cancel := context.WithCancel(context.Background())
	return &stream{conn: conn, ctx: sctx, cancel: cancel}, nil
}

type stream struct {
	conn   *websocket.Conn
	ctx    context.Context // ended by Close: unblocks Read and Write
	cancel context.CancelFunc
	once   sync.Once
}

func (s *stream) Send(frame []byte) error {
	return s.conn.Write(s.ctx, websocket.MessageBinary, frame)
}

func (s *stream) Recv() ([]byte, error) {
	typ, b, err := s.conn.Read(s.ctx)
	if err != nil {
		if errors.Is(err, websocket.ErrMessageTooBig) {
			return nil, fmt.Errorf("%w: %v", sdk.ErrFrameTooLarge, err)
		}
		return nil, err
	}
	if typ != websocket.MessageBinary {
		return nil, fmt.Errorf("%w: a text message", sdk.ErrMalformedFrame)
	}
	if len(b) == 0 {
		return nil, sdk.ErrEmptyFrame
	}
	return b, nil
}

func (s *stream) Close() error {
	s.once.Do(func() {
		s.cancel()
		_ = s.conn.CloseNow()
	})
	return nil
}
