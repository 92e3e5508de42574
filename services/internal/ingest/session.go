package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// stream is one transport's view of a connection: TCP frames, a gRPC stream
// or WebSocket messages. Recv blocks until a frame, an error, or the stream
// is closed by returning from session.run.
type stream interface {
	Recv() (*ingestv1.ClientFrame, error)
	Send(*ingestv1.ServerFrame) error
}

// disconnect is why a stream ended, logged and counted.
type disconnect string

const (
	byClient       disconnect = "client_closed"
	byGoodbye      disconnect = "goodbye"
	byProtocol     disconnect = "protocol_error"
	byAuth         disconnect = "auth_failed"
	byIdle         disconnect = "idle_timeout"
	byDrain        disconnect = "drained"
	byCredits      disconnect = "credits_exceeded"
	bySendFailed   disconnect = "send_failed"
	byHelloTimeout disconnect = "hello_timeout"
	byRevoked      disconnect = "key_revoked"
)

// encodedReceiver is a stream that can also return, for a batch frame, the
// protobuf encoding of each of its events as received (nil when it cannot),
// so that they need not be marshalled again for Kafka.
type encodedReceiver interface {
	RecvEncoded() (*ingestv1.ClientFrame, [][]byte, error)
}

type recv struct {
	f   *ingestv1.ClientFrame
	raw [][]byte // the events' encodings, from an encodedReceiver
	err error
}

// session runs the protocol of docs/protocol.md over one stream.
type session struct {
	srv       *Server
	st        stream
	transport string
	remote    string
	logger    *slog.Logger
}

// run serves the stream until it ends and returns why. ctx is the server's
// shutdown context: when it ends the client gets Drain. Batches already
// received are always published and acked (or their publish finishes) before
// run returns, so the producer can be closed after the front doors stop.
func (s *session) run(ctx context.Context) disconnect {
	cfg := s.srv.cfg
	m := s.srv.metrics
	m.conns.WithLabelValues(s.transport).Inc()
	defer m.conns.WithLabelValues(s.transport).Dec()

	frames := make(chan recv)
	done := make(chan struct{})
	defer close(done)
	// The reader gets the channel as an argument: the loop below sets its
	// own frames to nil to stop receiving, which must not race with it.
	go func(out chan<- recv) {
		er, _ := s.st.(encodedReceiver)
		for {
			var r recv
			if er != nil {
				r.f, r.raw, r.err = er.RecvEncoded()
			} else {
				r.f, r.err = s.st.Recv()
			}
			select {
			case out <- r:
			case <-done:
				return
			}
			if r.err != nil {
				return
			}
		}
	}(frames)

	// Hello.
	hello := time.NewTimer(cfg.HelloTimeout)
	defer hello.Stop()
	var app, keySum string
	var keyGen uint64
	var keysChanged <-chan struct{}
	select {
	case r := <-frames:
		if r.err != nil {
			return s.recvFailed(r.err)
		}
		h := r.f.GetHello()
		if h == nil {
			s.frameMetric(r.f)
			s.fail(ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED, "the first frame must be Hello")
			return byProtocol
		}
		m.frames.WithLabelValues(s.transport, "hello").Inc()
		// Watch before the lookup, so that no change can fall in between.
		keyGen, keysChanged = s.srv.keys.watch()
		keySum = HashKey(h.GetApiKey())
		var err error
		if h.GetApiKey() == "" {
			err = ErrUnknownKey
		} else {
			app, err = s.srv.keys.lookupHash(keySum)
		}
		if err != nil {
			code := ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED
			if errors.Is(err, ErrRevokedKey) {
				code = ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED
			}
			s.fail(code, err.Error())
			return byAuth
		}
		s.logger = s.logger.With("app", app, "sdk", h.GetSdkName()+"/"+h.GetSdkVersion())
	case <-hello.C:
		s.fail(ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED, "no Hello within "+cfg.HelloTimeout.String())
		return byHelloTimeout
	case <-ctx.Done():
		return byDrain
	}
	if err := s.st.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Welcome{Welcome: &ingestv1.Welcome{
		ConnectionId:        uuid.NewString(),
		AppId:               app,
		MaxFrameBytes:       uint32(cfg.MaxFrameBytes),
		Credits:             uint32(cfg.Credits),
		HeartbeatIntervalMs: uint32(cfg.Heartbeat.Milliseconds()),
		MaxBatchEvents:      uint32(cfg.MaxBatchEvents),
		Compressions:        supportedCompressions,
		ServerTimeMs:        s.srv.pipe.now().UnixMilli(),
	}}}); err != nil {
		return bySendFailed
	}

	// Batches are published concurrently, at most Credits at a time; acks
	// come back on a channel sized so that no publisher ever blocks.
	acks := make(chan *ingestv1.Ack, cfg.Credits)
	inflight := map[uint64]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	// Publishing outlives the shutdown signal: a batch that was read is
	// published (or times out) and acked if the stream still stands.
	pubCtx := context.WithoutCancel(ctx)

	idleAfter := 3 * cfg.Heartbeat
	idle := time.NewTimer(idleAfter)
	defer idle.Stop()
	var drainTimer <-chan time.Time
	shutdown := ctx.Done()
	closing := disconnect("")
	// keyHolds re-checks the key after the keyring changed.
	keyHolds := func() bool {
		keyGen, keysChanged = s.srv.keys.watch()
		a, err := s.srv.keys.lookupHash(keySum)
		return err == nil && a == app
	}
	revoked := func() disconnect {
		s.waitAcks(&wg, acks, inflight, true)
		s.fail(ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED, "ingest key revoked")
		return byRevoked
	}
	for {
		if closing != "" && len(inflight) == 0 {
			return closing
		}
		select {
		case r := <-frames:
			if r.err != nil {
				if len(inflight) > 0 && errors.Is(r.err, io.EOF) {
					// The client half-closed: still deliver the acks it is owed.
					frames = nil
					closing = byClient
					continue
				}
				s.waitAcks(&wg, acks, inflight, true)
				return s.recvFailed(r.err)
			}
			idle.Reset(idleAfter)
			s.frameMetric(r.f)
			switch f := r.f.GetFrame().(type) {
			case *ingestv1.ClientFrame_Hello:
				s.waitAcks(&wg, acks, inflight, true)
				s.fail(ingestv1.ErrorCode_ERROR_CODE_HELLO_REQUIRED, "Hello sent twice")
				return byProtocol
			case *ingestv1.ClientFrame_Ping:
				pong := &ingestv1.Pong{ClientTimeMs: f.Ping.GetClientTimeMs(), ServerTimeMs: s.srv.pipe.now().UnixMilli()}
				if s.st.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Pong{Pong: pong}}) != nil {
					s.waitAcks(&wg, acks, inflight, false)
					return bySendFailed
				}
			case *ingestv1.ClientFrame_Goodbye:
				frames = nil
				closing = byGoodbye
			case *ingestv1.ClientFrame_Batch:
				if s.srv.keys.generation() != keyGen && !keyHolds() {
					return revoked()
				}
				b := f.Batch
				raw := r.raw
				if len(b.GetCompressedEvents()) > 0 {
					raw = nil // the frame holds no event encodings to reuse
					if err := inflateBatch(b, 8*cfg.MaxFrameBytes); err != nil {
						s.waitAcks(&wg, acks, inflight, true)
						code := ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME
						if errors.Is(err, ErrInflatedTooLarge) {
							code = ingestv1.ErrorCode_ERROR_CODE_BATCH_TOO_LARGE
						}
						s.fail(code, err.Error())
						return byProtocol
					}
				}
				switch {
				case len(inflight) >= cfg.Credits:
					s.waitAcks(&wg, acks, inflight, true)
					s.fail(ingestv1.ErrorCode_ERROR_CODE_CREDITS_EXCEEDED, fmt.Sprintf("more than %d unacknowledged batches", cfg.Credits))
					return byCredits
				case inflight[b.GetSeq()]:
					s.waitAcks(&wg, acks, inflight, true)
					s.fail(ingestv1.ErrorCode_ERROR_CODE_CREDITS_EXCEEDED, fmt.Sprintf("batch seq %d is already unacknowledged", b.GetSeq()))
					return byCredits
				case len(b.GetEvents()) > cfg.MaxBatchEvents:
					s.waitAcks(&wg, acks, inflight, true)
					s.fail(ingestv1.ErrorCode_ERROR_CODE_BATCH_TOO_LARGE, fmt.Sprintf("batch has %d events, limit %d", len(b.GetEvents()), cfg.MaxBatchEvents))
					return byProtocol
				}
				inflight[b.GetSeq()] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					acks <- s.srv.pipe.ingestEncoded(pubCtx, s.transport, app, b, raw)
				}()
			}
		case a := <-acks:
			delete(inflight, a.GetSeq())
			if !s.sendAck(a) {
				s.waitAcks(&wg, acks, inflight, false)
				return bySendFailed
			}
		case <-keysChanged:
			if !keyHolds() {
				return revoked()
			}
		case <-idle.C:
			if closing != "" {
				continue // draining: the drain timer bounds the wait
			}
			s.waitAcks(&wg, acks, inflight, true)
			s.fail(ingestv1.ErrorCode_ERROR_CODE_IDLE_TIMEOUT, fmt.Sprintf("nothing received for %s", idleAfter))
			return byIdle
		case <-shutdown:
			shutdown = nil
			drain := &ingestv1.Drain{Reason: "collector shutting down", ReconnectAfterMs: 100}
			if s.st.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Drain{Drain: drain}}) != nil {
				s.waitAcks(&wg, acks, inflight, false)
				return bySendFailed
			}
			// Keep reading: batches already on the wire are still acked. The
			// client says Goodbye once it has its acks, or the timer ends it.
			drainTimer = time.After(cfg.DrainTimeout)
		case <-drainTimer:
			s.waitAcks(&wg, acks, inflight, true)
			return byDrain
		}
	}
}

// waitAcks waits for the batches in flight; with send, their acks are sent.
func (s *session) waitAcks(wg *sync.WaitGroup, acks chan *ingestv1.Ack, inflight map[uint64]bool, send bool) {
	for len(inflight) > 0 {
		a := <-acks
		delete(inflight, a.GetSeq())
		if send && !s.sendAck(a) {
			send = false
		}
	}
	wg.Wait()
}

// sendAck sends an ack, preceded by a Throttle when some of its events were
// rate limited, so the client pauses instead of resending at once.
func (s *session) sendAck(a *ingestv1.Ack) bool {
	var wait uint32
	for _, r := range a.GetResults() {
		if r.GetStatus() == ingestv1.EventStatus_EVENT_STATUS_RATE_LIMITED {
			wait = max(wait, r.GetRetryAfterMs())
		}
	}
	if wait > 0 {
		t := &ingestv1.Throttle{DelayMs: wait, Reason: "app rate limit"}
		if s.st.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Throttle{Throttle: t}}) != nil {
			return false
		}
	}
	return s.st.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Ack{Ack: a}}) == nil
}

// recvFailed maps a receive error to the Error frame, if any, and a reason.
func (s *session) recvFailed(err error) disconnect {
	var code ingestv1.ErrorCode
	switch {
	case errors.Is(err, ErrEmptyFrame):
		code = ingestv1.ErrorCode_ERROR_CODE_EMPTY_FRAME
	case errors.Is(err, ErrFrameTooLarge):
		code = ingestv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE
	case errors.Is(err, ErrMalformedFrame), errors.Is(err, ErrTruncatedFrame):
		code = ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME
	case errors.Is(err, errIdle):
		s.fail(ingestv1.ErrorCode_ERROR_CODE_IDLE_TIMEOUT, "nothing received in time")
		return byIdle
	default:
		s.logger.Debug("stream ended", "err", err)
		return byClient
	}
	s.srv.metrics.frames.WithLabelValues(s.transport, "malformed").Inc()
	s.fail(code, err.Error())
	return byProtocol
}

// errIdle is returned by a transport whose read deadline passed.
var errIdle = errors.New("read deadline passed")

func (s *session) fail(code ingestv1.ErrorCode, msg string) {
	s.logger.Info("closing stream", "code", code.String(), "msg", msg)
	_ = s.st.Send(&ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Error{Error: &ingestv1.Error{Code: code, Message: msg}}})
}

func (s *session) frameMetric(f *ingestv1.ClientFrame) {
	t := "unknown"
	switch f.GetFrame().(type) {
	case *ingestv1.ClientFrame_Hello:
		t = "hello"
	case *ingestv1.ClientFrame_Batch:
		t = "batch"
	case *ingestv1.ClientFrame_Ping:
		t = "ping"
	case *ingestv1.ClientFrame_Goodbye:
		t = "goodbye"
	}
	s.srv.metrics.frames.WithLabelValues(s.transport, t).Inc()
}
