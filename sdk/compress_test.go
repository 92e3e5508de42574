package sdk_test

import (
	"testing"
	"time"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/sdk"
	"causality.dev/sdk/sdktest"
	"google.golang.org/protobuf/proto"
)

// TestCompression: batches are gzipped only for a collector that lists gzip
// and only above the threshold; compressed batches are acked like any other
// and are smaller on the wire.
func TestCompression(t *testing.T) {
	gz := ingestv1.Compression_COMPRESSION_GZIP
	tests := []struct {
		name     string
		welcome  func() *ingestv1.Welcome
		opts     []sdk.Option
		events   int
		compress bool
	}{
		{name: "advertised, above the default threshold", welcome: sdktest.GzipWelcome, events: 100, compress: true},
		{name: "not advertised", welcome: sdktest.DefaultWelcome, events: 100},
		{name: "advertised, threshold 0 disables", welcome: sdktest.GzipWelcome, opts: []sdk.Option{sdk.WithCompressionThreshold(0)}, events: 100},
		{name: "advertised, below a high threshold", welcome: sdktest.GzipWelcome, opts: []sdk.Option{sdk.WithCompressionThreshold(1 << 20)}, events: 100},
		{name: "advertised, small batch", welcome: sdktest.GzipWelcome, events: 2},
		{name: "advertised, low threshold", welcome: sdktest.GzipWelcome, opts: []sdk.Option{sdk.WithCompressionThreshold(100)}, events: 2, compress: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			col := sdktest.Start(t, func(c *sdktest.Conn) {
				if c.Handshake(tt.welcome()) == nil {
					_ = c.Loop(nil)
				}
			})
			dc := &eventv1.DeviceContext{Platform: eventv1.Platform_PLATFORM_ANDROID, AppVersion: "1.2.3", OsVersion: "14", DeviceModel: "Pixel 8", Locale: "en-GB"}
			opts := append([]sdk.Option{sdk.WithDeviceContext(dc), sdk.WithFlush(1000, time.Hour)}, tt.opts...)
			c := newClient(t, col.Addr, opts...)
			for i := range tt.events {
				c.Track(screen(i))
			}
			flush(t, c)

			if got := len(col.Accepted()); got != tt.events {
				t.Fatalf("accepted %d events, want %d", got, tt.events)
			}
			if st := c.Stats(); st.Acked != uint64(tt.events) || st.Queued != 0 {
				t.Fatalf("stats %+v", st)
			}
			batches, sizes := col.Batches(), col.BatchBytes()
			if len(batches) != 1 {
				t.Fatalf("%d batches, want 1", len(batches))
			}
			b := batches[0]
			if compressed := b.GetCompression() == gz; compressed != tt.compress {
				t.Fatalf("compression %v, want compressed=%v", b.GetCompression(), tt.compress)
			}
			// The same batch uncompressed, as the SDK would have sent it.
			plain := &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: b.GetSeq(), Events: b.GetEvents(), SentAtMs: b.GetSentAtMs()}}}
			want := proto.Size(plain)
			if tt.compress {
				if sizes[0] >= want {
					t.Fatalf("compressed frame %d bytes, uncompressed %d", sizes[0], want)
				}
				t.Logf("%d events: %d bytes on the wire, %d uncompressed", tt.events, sizes[0], want)
			} else if sizes[0] != want {
				t.Fatalf("uncompressed frame %d bytes, want %d", sizes[0], want)
			}
		})
	}
}

func TestCompressionThresholdNegative(t *testing.T) {
	if _, err := sdk.New("127.0.0.1:1", sdktest.Key, sdk.WithCompressionThreshold(-1)); err == nil {
		t.Fatal("New accepted a negative compression threshold")
	}
}
