// Package grpctransport carries the SDK's frames on the collector's gRPC
// IngestService.Stream: each sdk.Stream.Send is one ClientFrame message, each
// Recv one ServerFrame. It is a separate package so that the sdk package
// (and the js/wasm build) never links gRPC.
//
//	c, err := sdk.New("collector:7071", key, sdk.WithTransport(grpctransport.New(
//		grpc.WithTransportCredentials(credentials.NewTLS(nil)))))
package grpctransport

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"

	"causality.dev/api/gen/causality/ingest/v1/ingestv1grpc"
	"causality.dev/sdk"
)

// Transport dials a gRPC connection per stream.
type Transport struct {
	opts []grpc.DialOption
}

// New returns a transport dialing with opts, which must choose the transport
// security (grpc.WithTransportCredentials).
func New(opts ...grpc.DialOption) *Transport {
	return &Transport{opts: opts}
}

// Dial opens IngestService.Stream on addr (host:port).
func (t *Transport) Dial(ctx context.Context, addr string) (sdk.Stream, error) {
	opts := append([]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(sdk.MaxServerFrameBytes))}, t.opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", addr, err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	// ctx bounds the dial only; the stream lives until Close.
	stop := context.AfterFunc(ctx, cancel)
	st, err := cc.NewStream(sctx, &ingestv1grpc.IngestService_ServiceDesc.Streams[0], ingestv1grpc.IngestService_Stream_FullMethodName, grpc.ForceCodec(rawCodec{}))
	stop()
	if err != nil {
		cancel()
		cc.Close()
		return nil, fmt.Errorf("open stream on %s: %w", addr, err)
	}
	return &stream{cc: cc, st: st, cancel: cancel}, nil
}

type stream struct {
	cc     *grpc.ClientConn
	st     grpc.ClientStream
	cancel context.CancelFunc
	once   sync.Once
}

func (s *stream) Send(frame []byte) error { return s.st.SendMsg(&raw{b: frame}) }

func (s *stream) Recv() ([]byte, error) {
	m := &raw{}
	if err := s.st.RecvMsg(m); err != nil {
		return nil, err
	}
	return m.b, nil
}

func (s *stream) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.cc.Close()
	})
	return nil
}

// raw is an already-serialized message: the SDK builds frames itself.
type raw struct{ b []byte }

// rawCodec passes serialized frames through; on the wire they are the same
// protobuf bytes the "proto" codec would produce.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(*raw)
	if !ok {
		return nil, fmt.Errorf("grpctransport: cannot marshal %T", v)
	}
	// gRPC may write the bytes after SendMsg returns; the SDK reuses its
	// buffer, so hand over a copy.
	return append([]byte(nil), m.b...), nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*raw)
	if !ok {
		return fmt.Errorf("grpctransport: cannot unmarshal into %T", v)
	}
	m.b = append(m.b[:0], data...)
	return nil
}
