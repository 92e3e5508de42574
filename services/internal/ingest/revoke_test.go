package ingest

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/api/gen/causality/ingest/v1/ingestv1grpc"
)

// revokeA marks keyA revoked in ts's keyring, as a reload would.
func revokeA(ts *testServer) {
	ts.keys.Add(KeyEntry{AppID: "app-a", SHA256: HashKey(keyA), Revoked: true})
}

// deleteA drops keyA from ts's keyring, as a reload of a file without it
// would.
func deleteA(ts *testServer) {
	ts.keys.replace(map[string]KeyEntry{HashKey(keyB): {AppID: "app-b", SHA256: HashKey(keyB)}})
}

func TestLiveRevocationTCP(t *testing.T) {
	tests := []struct {
		name   string
		change func(*testServer)
		// batchAfter sends a batch right after the change: it must not be
		// published, whichever the session sees first.
		batchAfter bool
	}{
		{"revoked, idle stream", revokeA, false},
		{"deleted, idle stream", deleteA, false},
		{"revoked, then a batch", revokeA, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &recorder{}
			ts := startServer(t, PublishFunc(pub.publish), nil)
			c := dial(t, ts.tcpAddr)
			other := dial(t, ts.tcpAddr)
			c.hello(keyA)
			other.hello(keyB)
			c.batch(1, liveEvent(1))
			wantStatuses(t, c.ack(), "accepted")

			tt.change(ts)
			if tt.batchAfter {
				c.batch(2, liveEvent(2))
			}
			c.expectError(ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED)
			wantPublished(t, pub, eventN(1).GetEventId())
			waitFor(t, "the revocation to be counted", func() bool {
				return testutil.ToFloat64(ts.metrics.disconnects.WithLabelValues(TransportTCP, string(byRevoked))) == 1
			})

			// A stream with another key goes on.
			other.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{ClientTimeMs: 7}}})
			if f := other.recv(); f.GetPong().GetClientTimeMs() != 7 {
				t.Fatalf("other key's stream got %v, want Pong", f)
			}
			// A new stream with the key is refused.
			again := dial(t, ts.tcpAddr)
			again.send(helloFrame(keyA))
			want := ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED
			if tt.name == "deleted, idle stream" {
				want = ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED
			}
			again.expectError(want)
		})
	}
}

func TestLiveRevocationUnrelatedChangeKeepsStream(t *testing.T) {
	ts := startServer(t, PublishFunc((&recorder{}).publish), nil)
	c := dial(t, ts.tcpAddr)
	c.hello(keyA)
	// Another key is revoked: keyA's stream must survive the change.
	ts.keys.Add(KeyEntry{AppID: "app-b", SHA256: HashKey(keyB), Revoked: true})
	c.batch(1, liveEvent(1))
	wantStatuses(t, c.ack(), "accepted")
}

func TestLiveRevocationGRPCAndWebSocket(t *testing.T) {
	ts := startServer(t, PublishFunc((&recorder{}).publish), nil)
	cc, err := grpc.NewClient(ts.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), safety)
	defer cancel()
	st, err := ingestv1grpc.NewIngestServiceClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(helloFrame(keyA)); err != nil {
		t.Fatal(err)
	}
	if f, err := st.Recv(); err != nil || f.GetWelcome() == nil {
		t.Fatalf("gRPC hello: %v, %v", f, err)
	}
	ws := dialWS(t, ts.httpAddr)
	ws.send(helloFrame(keyA))
	if f := ws.mustRecv(); f.GetWelcome() == nil {
		t.Fatalf("WebSocket hello: %v", f)
	}
	ws.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: 1, Events: []*eventv1.Event{liveEvent(1)}}}})
	wantStatuses(t, ws.mustRecv().GetAck(), "accepted")

	revokeA(ts)

	if f, err := st.Recv(); err != nil || f.GetError().GetCode() != ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED {
		t.Fatalf("gRPC stream after revocation: %v, %v; want Error KEY_REVOKED", f, err)
	}
	if f, err := st.Recv(); err != io.EOF {
		t.Fatalf("gRPC stream after the Error: %v, %v; want io.EOF", f, err)
	}
	if f := ws.mustRecv(); f.GetError().GetCode() != ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED {
		t.Fatalf("WebSocket after revocation: %v; want Error KEY_REVOKED", f)
	}
	ws.expectClose(websocket.StatusPolicyViolation)
}

// TestWatchKeysRevokesLiveStream goes through the file: an atomic rewrite
// (temp file + rename, as the admin API does) that revokes the key closes
// the open stream.
func TestWatchKeysRevokesLiveStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.json")
	write := func(entries ...KeyEntry) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(keysJSON(t, entries...)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(KeyEntry{AppID: "app-a", SHA256: HashKey(keyA)})
	ts := startServer(t, PublishFunc((&recorder{}).publish), nil)
	k, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	ts.keys = k // before any stream: sessions read srv.keys
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { WatchKeys(ctx, path, k, discardLogger()); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	c := dial(t, ts.tcpAddr)
	c.hello(keyA)
	write(KeyEntry{AppID: "app-a", SHA256: HashKey(keyA), Revoked: true})
	c.expectError(ingestv1.ErrorCode_ERROR_CODE_KEY_REVOKED)
}
