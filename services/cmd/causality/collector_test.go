package main

// End-to-end tests of `causality collector` against the Kafka broker named by
// CAUSALITY_TEST_KAFKA (kafkatest falls back to an embedded one when it is
// unset): each front door, then Kafka is read back.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/api/gen/causality/ingest/v1/ingestv1grpc"
)

func TestCollectorTCP(t *testing.T) {
	t.Parallel()
	const app = "shop-ios"
	c := startCollector(t, []string{app}, "-ingest.credits=3", "-ingest.max-frame-bytes=262144", "-ingest.heartbeat=20s", "-ingest.max-batch-events=40")
	f := dialFrames(t, c.TCP)
	before := time.Now().UnixMilli()
	w := f.hello(t, c.keys.key[app])
	if w.GetAppId() != app || w.GetConnectionId() == "" || w.GetMaxFrameBytes() != 262144 || w.GetCredits() != 3 ||
		w.GetHeartbeatIntervalMs() != 20000 || w.GetMaxBatchEvents() != 40 || w.GetServerTimeMs() < before || w.GetServerTimeMs() > time.Now().UnixMilli() {
		t.Fatalf("Welcome does not state the configured limits: %v", w)
	}

	if err := f.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{ClientTimeMs: 42}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := f.recv(); err != nil || m.GetPong().GetClientTimeMs() != 42 || m.GetPong().GetServerTimeMs() == 0 {
		t.Fatalf("Ping answered %v, %v; want Pong echoing 42", m, err)
	}

	// Seven batches through a window of three credits: the first three go
	// out at once, then one more per ack.
	sent := map[uint64][]*eventv1.Event{}
	var all []*eventv1.Event
	next, acked := uint64(1), 0
	const batches = 7
	for acked < batches {
		for next <= batches && len(sent) < int(w.GetCredits()) {
			events := newEvents(app, 10+int(next))
			sent[next] = events
			all = append(all, events...)
			if err := f.send(batchFrame(next, events)); err != nil {
				t.Fatal(err)
			}
			next++
		}
		m, err := f.recv()
		if err != nil {
			t.Fatalf("waiting for an ack: %v", err)
		}
		ack := m.GetAck()
		events, ok := sent[ack.GetSeq()]
		if !ok {
			t.Fatalf("got %v, want an Ack of one of the batches in flight", m)
		}
		checkAck(t, ack, ack.GetSeq(), events, ingestv1.EventStatus_EVENT_STATUS_ACCEPTED)
		delete(sent, ack.GetSeq())
		acked++
	}
	// Goodbye, then close our side at once, as a client going away does.
	if err := f.send(goodbyeFrame); err != nil {
		t.Fatal(err)
	}
	if err := f.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if m, err := f.recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after Goodbye: %v, %v; want the collector to close", m, err)
	}

	got := readTopic(t, c.kafka, c.kafka.Topic, ids(all))
	checkStored(t, got, all)
}

func TestCollectorGRPC(t *testing.T) {
	t.Parallel()
	const app = "shop-android"
	c := startCollector(t, []string{app})
	conn, err := grpc.NewClient(c.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	client := ingestv1grpc.NewIngestServiceClient(conn)
	var all []*eventv1.Event

	t.Run("health", func(t *testing.T) {
		for _, svc := range []string{"", "causality.ingest.v1.IngestService"} {
			res, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health of %q: %v, %v; want SERVING", svc, res, err)
			}
		}
	})

	t.Run("reflection", func(t *testing.T) {
		st, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
			t.Fatal(err)
		}
		res, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range res.GetListServicesResponse().GetService() {
			names = append(names, s.GetName())
		}
		if !slices.Contains(names, "causality.ingest.v1.IngestService") {
			t.Errorf("reflection lists %q, want causality.ingest.v1.IngestService among them", names)
		}
	})

	t.Run("stream", func(t *testing.T) {
		st, err := client.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(helloFrame(c.keys.key[app])); err != nil {
			t.Fatal(err)
		}
		m, err := st.Recv()
		if err != nil || m.GetWelcome().GetAppId() != app || m.GetWelcome().GetCredits() == 0 {
			t.Fatalf("got %v, %v; want a Welcome for %s", m, err, app)
		}
		sent := map[uint64][]*eventv1.Event{}
		for seq := uint64(1); seq <= 3; seq++ {
			sent[seq] = newEvents(app, 25)
			all = append(all, sent[seq]...)
			if err := st.Send(batchFrame(seq, sent[seq])); err != nil {
				t.Fatal(err)
			}
		}
		for range 3 {
			m, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			seq := m.GetAck().GetSeq()
			checkAck(t, m.GetAck(), seq, sent[seq], ingestv1.EventStatus_EVENT_STATUS_ACCEPTED)
			delete(sent, seq)
		}
		if err := st.Send(goodbyeFrame); err != nil {
			t.Fatal(err)
		}
		if m, err := st.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("after Goodbye: %v, %v; want the stream to end", m, err)
		}
	})

	t.Run("send", func(t *testing.T) {
		events := newEvents(app, 12)
		all = append(all, events...)
		mctx := metadata.AppendToOutgoingContext(ctx, "x-api-key", c.keys.key[app])
		res, err := client.Send(mctx, &ingestv1.SendRequest{Batch: &ingestv1.Batch{Seq: 9, Events: events}})
		if err != nil {
			t.Fatal(err)
		}
		checkAck(t, res.GetAck(), 9, events, ingestv1.EventStatus_EVENT_STATUS_ACCEPTED)

		for _, key := range []string{"", "cik_wrong"} {
			mctx := metadata.AppendToOutgoingContext(ctx, "x-api-key", key)
			_, err := client.Send(mctx, &ingestv1.SendRequest{Batch: &ingestv1.Batch{Events: newEvents(app, 1)}})
			if status.Code(err) != codes.Unauthenticated {
				t.Errorf("Send with key %q: %v, want Unauthenticated", key, err)
			}
		}
	})

	got := readTopic(t, c.kafka, c.kafka.Topic, ids(all))
	checkStored(t, got, all)
}

func TestCollectorWebSocket(t *testing.T) {
	t.Parallel()
	const app = "shop-web"
	c := startCollector(t, []string{app})
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	dial := func(t *testing.T) (send func(*ingestv1.ClientFrame), recv func() (*ingestv1.ServerFrame, error)) {
		t.Helper()
		conn, _, err := websocket.Dial(ctx, "ws://"+c.HTTP+"/v1/stream", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		send = func(m *ingestv1.ClientFrame) {
			t.Helper()
			b, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if err := conn.Write(ctx, websocket.MessageBinary, b); err != nil {
				t.Fatal(err)
			}
		}
		recv = func() (*ingestv1.ServerFrame, error) {
			typ, b, err := conn.Read(ctx)
			if err != nil {
				return nil, err
			}
			if typ != websocket.MessageBinary {
				t.Fatalf("server sent a %v message, want binary", typ)
			}
			m := &ingestv1.ServerFrame{}
			return m, proto.Unmarshal(b, m)
		}
		return send, recv
	}

	var all []*eventv1.Event
	t.Run("stream", func(t *testing.T) {
		send, recv := dial(t)
		send(helloFrame(c.keys.key[app]))
		if m, err := recv(); err != nil || m.GetWelcome().GetAppId() != app {
			t.Fatalf("got %v, %v; want a Welcome for %s", m, err, app)
		}
		sent := map[uint64][]*eventv1.Event{}
		for seq := uint64(1); seq <= 4; seq++ {
			sent[seq] = newEvents(app, 15)
			all = append(all, sent[seq]...)
			send(batchFrame(seq, sent[seq]))
		}
		for range 4 {
			m, err := recv()
			if err != nil {
				t.Fatal(err)
			}
			seq := m.GetAck().GetSeq()
			checkAck(t, m.GetAck(), seq, sent[seq], ingestv1.EventStatus_EVENT_STATUS_ACCEPTED)
			delete(sent, seq)
		}
		send(goodbyeFrame)
		if m, err := recv(); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Fatalf("after Goodbye: %v, %v; want a normal close", m, err)
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		send, recv := dial(t)
		send(helloFrame("cik_not_a_key"))
		if m, err := recv(); err != nil || m.GetError().GetCode() != ingestv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
			t.Fatalf("got %v, %v; want Error UNAUTHENTICATED", m, err)
		}
		if m, err := recv(); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("after Error: %v, %v; want a policy-violation close", m, err)
		}
	})

	got := readTopic(t, c.kafka, c.kafka.Topic, ids(all))
	checkStored(t, got, all)
}

// The prototype README's two curl examples, bodies verbatim.
const (
	curlIngestSingle = `{
    "event": {
      "appId": "my-app",
      "deviceId": "device-001",
      "screenView": {"screenName": "HomeScreen"}
    }
  }`
	curlIngestBatch = `{
    "events": [
      {"appId": "my-app", "deviceId": "d1", "screenView": {"screenName": "Home"}},
      {"appId": "my-app", "deviceId": "d1", "buttonTap": {"buttonId": "login", "screenName": "Home"}}
    ]
  }`
)

func TestCollectorHTTP(t *testing.T) {
	t.Parallel()
	const app = "my-app"
	c := startCollector(t, []string{app})
	key := c.keys.key[app]
	hc := &http.Client{Timeout: waitLimit}
	post := func(t *testing.T, path, contentType, key string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://"+c.HTTP+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		if key != "" {
			req.Header.Set("X-API-Key", key)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}
	type batchResult struct {
		Index   int    `json:"index"`
		EventID string `json:"eventId"`
		Status  string `json:"status"`
		Reason  string `json:"reason"`
	}
	// want is what Kafka must hold afterwards, by event id.
	want := map[string]*eventv1.Event{}
	start := time.Now().UnixMilli()

	t.Run("curl single event", func(t *testing.T) {
		res, b := post(t, "/v1/events/ingest", "application/json", key, []byte(curlIngestSingle))
		var got struct {
			EventID string `json:"eventId"`
			Status  string `json:"status"`
		}
		if err := json.Unmarshal(b, &got); err != nil || res.StatusCode != http.StatusOK || got.Status != "accepted" {
			t.Fatalf("%s %s (%v); want 200 with status accepted", res.Status, b, err)
		}
		if id, err := uuid.Parse(got.EventID); err != nil || id.Version() != 7 {
			t.Fatalf("eventId %q is not a UUIDv7 (%v)", got.EventID, err)
		}
		want[got.EventID] = &eventv1.Event{EventId: got.EventID, AppId: app, DeviceId: "device-001",
			Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "HomeScreen"}}}
	})

	t.Run("curl batch", func(t *testing.T) {
		res, b := post(t, "/v1/events/batch", "application/json", key, []byte(curlIngestBatch))
		var got struct {
			AcceptedCount int           `json:"acceptedCount"`
			RejectedCount int           `json:"rejectedCount"`
			Results       []batchResult `json:"results"`
		}
		if err := json.Unmarshal(b, &got); err != nil || res.StatusCode != http.StatusOK || got.AcceptedCount != 2 || got.RejectedCount != 0 || len(got.Results) != 2 {
			t.Fatalf("%s %s (%v); want 200 with 2 accepted, 0 rejected, 2 results", res.Status, b, err)
		}
		payloads := []*eventv1.Event{
			{Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home"}}},
			{Payload: &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "login", ScreenName: "Home"}}},
		}
		for i, r := range got.Results {
			if r.Index != i || r.Status != "accepted" || r.EventID == "" || want[r.EventID] != nil {
				t.Fatalf("result %d: %+v; want index %d accepted with a fresh event id", i, r, i)
			}
			e := payloads[i]
			e.EventId, e.AppId, e.DeviceId = r.EventID, app, "d1"
			want[r.EventID] = e
		}
	})

	t.Run("protobuf batch", func(t *testing.T) {
		good := newEvents(app, 3)
		bad := newEvent(app, "")
		body, err := proto.Marshal(&ingestv1.BatchIngestRequest{Events: append(slices.Clone(good), bad)})
		if err != nil {
			t.Fatal(err)
		}
		res, b := post(t, "/v1/events/batch", "application/x-protobuf", key, body)
		got := &ingestv1.BatchIngestResponse{}
		if err := proto.Unmarshal(b, got); err != nil || res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Fatalf("%s %q (%v); want 200 with a protobuf body", res.Status, b, err)
		}
		if got.GetAcceptedCount() != 3 || got.GetRejectedCount() != 1 || len(got.GetResults()) != 4 {
			t.Fatalf("got %v; want 3 accepted, 1 rejected, 4 results", got)
		}
		for i, r := range got.GetResults() {
			wantStatus, wantReason := "accepted", ""
			if i == 3 {
				wantStatus, wantReason = "invalid", "missing_device_id"
			}
			if int(r.GetIndex()) != i || r.GetStatus() != wantStatus || r.GetReason() != wantReason || r.GetEventId() != append(good, bad)[i].GetEventId() {
				t.Errorf("result %d: %v; want %s %s", i, r, wantStatus, wantReason)
			}
		}
		for _, e := range good {
			want[e.GetEventId()] = e
		}
	})

	t.Run("no key", func(t *testing.T) {
		res, b := post(t, "/v1/events/ingest", "application/json", "", []byte(curlIngestSingle))
		if res.StatusCode != http.StatusUnauthorized || !bytes.Contains(b, []byte("X-API-Key")) {
			t.Errorf("%s %s; want 401 naming the X-API-Key header", res.Status, b)
		}
	})

	got := readTopic(t, c.kafka, c.kafka.Topic, slices.Collect(maps.Keys(want)))
	for id, w := range want {
		m := got[id]
		e := &eventv1.Event{}
		if err := proto.Unmarshal(m.Value, e); err != nil {
			t.Fatal(err)
		}
		if string(m.Key) != w.GetDeviceId() || e.GetAppId() != app || e.GetDeviceId() != w.GetDeviceId() ||
			e.GetReceivedAtMs() < start || e.GetTimestampMs() < start-time.Minute.Milliseconds() ||
			!proto.Equal(&eventv1.Event{Payload: e.Payload}, &eventv1.Event{Payload: w.Payload}) {
			t.Errorf("event %s in Kafka (key %q): %v; want device %s, app %s, times set, payload of %v", id, m.Key, e, w.GetDeviceId(), app, w)
		}
	}
}
