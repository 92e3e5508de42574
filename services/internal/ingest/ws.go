package ingest

import (
	"context"
	"errors"
	"net/http"

	"github.com/coder/websocket"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"google.golang.org/protobuf/proto"
)

// serveWS upgrades GET /v1/stream to a WebSocket that carries one frame per
// binary message, without the length prefix. Browsers cannot set headers on
// a WebSocket, so the key travels in Hello as on every stream.
func (s *Server) serveWS(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	if !s.acquire() {
		http.Error(w, "collector at its connection limit", http.StatusServiceUnavailable)
		return
	}
	defer s.release()
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: []string{"*"}})
	if err != nil {
		return // Accept already answered the request
	}
	s.wsWG.Add(1)
	defer s.wsWG.Done()
	// Messages up to twice the maximum get an Error frame; larger ones are
	// closed by the WebSocket layer with status 1009 (message too big).
	conn.SetReadLimit(2 * int64(s.cfg.MaxFrameBytes))
	rctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	defer cancel()
	st := &wsStream{ctx: rctx, conn: conn, max: s.cfg.MaxFrameBytes}
	why := s.newSession(st, TransportWS, r.RemoteAddr).run(ctx)
	s.count(TransportWS, why)
	code := websocket.StatusNormalClosure
	if why == byProtocol || why == byAuth || why == byCredits || why == byRevoked {
		code = websocket.StatusPolicyViolation
	}
	conn.Close(code, string(why))
}

type wsStream struct {
	ctx  context.Context
	conn *websocket.Conn
	max  int
}

func (w *wsStream) Recv() (*ingestv1.ClientFrame, error) {
	typ, b, err := w.conn.Read(w.ctx)
	if err != nil {
		// Above the read limit the library has already closed with 1009.
		if errors.Is(err, websocket.ErrMessageTooBig) {
			return nil, errors.Join(ErrFrameTooLarge, err)
		}
		return nil, err
	}
	switch {
	case typ != websocket.MessageBinary:
		return nil, errors.Join(ErrMalformedFrame, errors.New("frames must be binary messages"))
	case len(b) == 0:
		return nil, ErrEmptyFrame
	case len(b) > w.max:
		return nil, ErrFrameTooLarge
	}
	return decodeClientFrame(b)
}

func (w *wsStream) Send(f *ingestv1.ServerFrame) error {
	b, err := proto.Marshal(f)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(w.ctx, writeTimeout)
	defer cancel()
	return w.conn.Write(ctx, websocket.MessageBinary, b)
}
