package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/sdk"
	"causality.dev/services/internal/kafkatest"
)

func skipWithoutKafka(b *testing.B) {
	if os.Getenv("CAUSALITY_TEST_KAFKA") == "" {
		b.Skip("CAUSALITY_TEST_KAFKA is not set: these numbers need the real broker")
	}
}

// sdkBenchEvent is a typical event, fully stamped as the SDK would stamp it.
func sdkBenchEvent(i int, session string) *eventv1.Event {
	var p *eventv1.Event
	switch i % 3 {
	case 0:
		p = &eventv1.Event{Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "ProductDetail", PreviousScreen: "Search"}}}
	case 1:
		p = &eventv1.Event{Payload: &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "add_to_cart", ButtonText: "Add to cart", ScreenName: "ProductDetail"}}}
	default:
		p = &eventv1.Event{Payload: &eventv1.Event_AddToCart{AddToCart: &eventv1.AddToCart{ProductId: fmt.Sprintf("sku-%05d", i%1000), Quantity: 1, PriceCents: 2499, Currency: "EUR", CartId: "cart-42"}}}
	}
	p.EventId = sdk.NewEventID()
	p.TimestampMs = time.Now().UnixMilli()
	p.DeviceId = "device-3f9a1c"
	p.InstallId = "0193a0c4-7b2e-7d11-9c7e-5a1f0e2d3c4b"
	p.SessionId = session
	p.UserId = "user-81723"
	p.DeviceContext = &eventv1.DeviceContext{
		Platform: eventv1.Platform_PLATFORM_ANDROID, OsVersion: "15", AppVersion: "4.12.0", BuildNumber: "4120",
		DeviceModel: "Pixel 8", Manufacturer: "Google", ScreenWidth: 1080, ScreenHeight: 2400, Locale: "fr-FR",
		Timezone: "Europe/Paris", NetworkType: eventv1.NetworkType_NETWORK_TYPE_WIFI, SdkVersion: sdk.Name + "/" + sdk.Version,
	}
	return p
}

// BenchmarkSDKThroughput: events per second one client pushes through one
// connection to the real collector and Kafka, until acknowledged. Each
// iteration tracks 1000 events and waits for the writer (Sync), so Track
// never drops.
func BenchmarkSDKThroughput(b *testing.B) {
	skipWithoutKafka(b)
	for _, queue := range []string{"memory", "disk"} {
		b.Run(queue, func(b *testing.B) {
			kcfg := kafkatest.Config(b)
			col := startSDKCollector(b, kcfg, sdkIngestConfig(b, "127.0.0.1:0"), nil)
			opts := []sdk.Option{sdk.WithQueueLimits(1<<20, 1<<30)}
			if queue == "disk" {
				opts = append(opts, sdk.WithQueueDir(b.TempDir()))
			}
			c, err := sdk.New(col.tcp, col.key, opts...)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			session := sdk.NewEventID()
			n := 0
			start := time.Now()
			for b.Loop() {
				for range 1000 {
					c.Track(sdkBenchEvent(n, session))
					n++
				}
				if err := c.Sync(ctx); err != nil {
					b.Fatal(err)
				}
			}
			if err := c.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			elapsed := time.Since(start)
			st := c.Stats()
			if st.Dropped != 0 || st.Acked != uint64(n) {
				b.Fatalf("stats %+v after %d events", st, n)
			}
			b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
			if err := c.Close(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// countingStream counts the bytes of TCP frames: 4-byte prefix + payload.
type countingStream struct {
	sdk.Stream
	up, down *atomic.Int64
}

func (s countingStream) Send(f []byte) error {
	s.up.Add(int64(4 + len(f)))
	return s.Stream.Send(f)
}

func (s countingStream) Recv() ([]byte, error) {
	f, err := s.Stream.Recv()
	if err == nil {
		s.down.Add(int64(4 + len(f)))
	}
	return f, err
}

type countingTransport struct{ up, down *atomic.Int64 }

func (t countingTransport) Dial(ctx context.Context, addr string) (sdk.Stream, error) {
	st, err := sdk.TCP{}.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	return countingStream{st, t.up, t.down}, nil
}

// countingConn counts every byte of an HTTP connection.
type countingConn struct {
	net.Conn
	up, down *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.up.Add(int64(n))
	return n, err
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.down.Add(int64(n))
	return n, err
}

// BenchmarkSDKWireBytes: bytes on the wire per event for the same events,
// 50 per batch, sent by the SDK over TCP frames and as the prototype's JSON
// to POST /v1/events/batch, both to the real collector, both ways counted
// (TCP payload bytes: frames with their length prefix, HTTP requests and
// responses with their headers; no TLS, no TCP/IP headers).
func BenchmarkSDKWireBytes(b *testing.B) {
	skipWithoutKafka(b)
	kcfg := kafkatest.Config(b)
	col := startSDKCollector(b, kcfg, sdkIngestConfig(b, "127.0.0.1:0"), nil)
	var sdkUp, sdkDown, httpUp, httpDown atomic.Int64
	c, err := sdk.New(col.tcp, col.key, sdk.WithTransport(countingTransport{&sdkUp, &sdkDown}))
	if err != nil {
		b.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{conn, &httpUp, &httpDown}, nil
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	session := sdk.NewEventID()
	url := "http://" + col.http + "/v1/events/batch"
	seq := uint64(0)
	events := 0
	var jsonBody, protoEvents int
	for b.Loop() {
		var batch []*eventv1.Event
		for i := range 50 {
			e := sdkBenchEvent(events+i, session)
			seq++
			js := proto.Clone(e).(*eventv1.Event)
			js.EventId, js.Sequence = sdk.NewEventID(), seq // the same event, another id
			batch = append(batch, js)
			protoEvents += proto.Size(js)
			c.Track(e)
		}
		events += 50
		if err := c.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		body, err := protojson.Marshal(&ingestv1.BatchIngestRequest{Events: batch})
		if err != nil {
			b.Fatal(err)
		}
		jsonBody += len(body)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", col.key)
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		respBody, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			b.Fatal(err)
		}
		var out ingestv1.BatchIngestResponse
		if err := protojson.Unmarshal(respBody, &out); err != nil || out.GetAcceptedCount() != 50 {
			b.Fatalf("HTTP batch: status %d, %v, accepted %d", resp.StatusCode, err, out.GetAcceptedCount())
		}
	}
	if err := c.Close(ctx); err != nil {
		b.Fatal(err)
	}
	if st := c.Stats(); st.Acked != uint64(events) {
		b.Fatalf("SDK stats %+v after %d events", st, events)
	}
	per := func(n int64) float64 { return float64(n) / float64(events) }
	b.ReportMetric(per(sdkUp.Load()), "sdk-up-B/event")
	b.ReportMetric(per(sdkDown.Load()), "sdk-down-B/event")
	b.ReportMetric(per(httpUp.Load()), "json-up-B/event")
	b.ReportMetric(per(httpDown.Load()), "json-down-B/event")
	b.ReportMetric(float64(jsonBody)/float64(events), "json-body-B/event")
	b.ReportMetric(float64(protoEvents)/float64(events), "proto-event-B/event")
	b.ReportMetric(0, "ns/op")
}
