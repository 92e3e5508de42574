package ingest

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/api/gen/causality/ingest/v1/ingestv1grpc"
)

// grpcService adapts the Server to the generated IngestService.
type grpcService struct {
	ingestv1grpc.UnimplementedIngestServiceServer
	srv *Server
	ctx context.Context // shutdown
}

func (s *Server) newGRPCServer(ctx context.Context) *grpc.Server {
	opts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxFrameBytes),
		grpc.MaxConcurrentStreams(uint32(s.cfg.MaxConnections)),
	}, s.grpcOpts...)
	gs := grpc.NewServer(opts...)
	ingestv1grpc.RegisterIngestServiceServer(gs, &grpcService{srv: s, ctx: ctx})
	for _, register := range s.grpcRegister {
		register(gs)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(ingestv1grpc.IngestService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	context.AfterFunc(ctx, hs.Shutdown) // NOT_SERVING while draining
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)
	return gs
}

// Stream runs the same protocol as raw TCP over a bidirectional stream.
func (g *grpcService) Stream(st grpc.BidiStreamingServer[ingestv1.ClientFrame, ingestv1.ServerFrame]) error {
	remote := ""
	if p, ok := peer.FromContext(st.Context()); ok {
		remote = p.Addr.String()
	}
	sess := g.srv.newSession(grpcStream{st}, TransportGRPC, remote)
	if !g.srv.acquire() {
		return status.Error(codes.ResourceExhausted, "collector at its connection limit")
	}
	defer g.srv.release()
	// Returning ends the stream, which unblocks the session's reader.
	g.srv.count(TransportGRPC, sess.run(g.ctx))
	return nil
}

type grpcStream struct {
	grpc.BidiStreamingServer[ingestv1.ClientFrame, ingestv1.ServerFrame]
}

func (s grpcStream) Recv() (*ingestv1.ClientFrame, error) {
	f, err := s.BidiStreamingServer.Recv()
	if err != nil {
		if status.Code(err) == codes.ResourceExhausted {
			return nil, ErrFrameTooLarge
		}
		return nil, err
	}
	if f.GetFrame() == nil {
		return nil, ErrMalformedFrame
	}
	return f, nil
}

// Send delivers one batch; the ingest key is in the x-api-key metadata.
func (g *grpcService) Send(ctx context.Context, req *ingestv1.SendRequest) (*ingestv1.SendResponse, error) {
	var key string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("x-api-key"); len(v) > 0 {
			key = v[0]
		}
	}
	app, err := g.srv.keys.Lookup(key)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	b := req.GetBatch()
	if b == nil {
		return nil, status.Error(codes.InvalidArgument, "batch is required")
	}
	if err := inflateBatch(b, 8*g.srv.cfg.MaxFrameBytes); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if n := len(b.GetEvents()); n > g.srv.cfg.MaxBatchEvents {
		return nil, status.Errorf(codes.InvalidArgument, "batch has %d events, limit %d", n, g.srv.cfg.MaxBatchEvents)
	}
	g.srv.metrics.frames.WithLabelValues(TransportGRPC, "send").Inc()
	return &ingestv1.SendResponse{Ack: g.srv.pipe.ingest(ctx, TransportGRPC, app, b)}, nil
}
