package ingest

import (
	"bytes"
	"testing"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

func TestSessionCompressedBatches(t *testing.T) {
	pub := &recorder{}
	ts := startServer(t, PublishFunc(pub.publish), nil)
	c := dial(t, ts.tcpAddr)
	w := c.hello(keyA)
	if len(w.GetCompressions()) != 1 || w.GetCompressions()[0] != ingestv1.Compression_COMPRESSION_GZIP {
		t.Fatalf("Welcome compressions %v, want [GZIP]", w.GetCompressions())
	}
	c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{
		Seq: 1, Compression: ingestv1.Compression_COMPRESSION_GZIP,
		CompressedEvents: compressedList(t, liveEvent(1), liveEvent(2)),
	}}})
	wantStatuses(t, c.ack(), "accepted", "accepted")
	wantPublished(t, pub, liveEvent(1).GetEventId(), liveEvent(2).GetEventId())

	// A bomb: far more than 8 x max frame once inflated.
	bomb := &ingestv1.Batch{Seq: 2, Compression: ingestv1.Compression_COMPRESSION_GZIP,
		CompressedEvents: gzipBytes(t, bytes.Repeat([]byte{0}, 9*DefaultMaxFrameBytes))}
	c.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: bomb}})
	c.expectError(ingestv1.ErrorCode_ERROR_CODE_BATCH_TOO_LARGE)

	c2 := dial(t, ts.tcpAddr)
	c2.hello(keyA)
	c2.send(&ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{
		Seq: 1, Compression: ingestv1.Compression_COMPRESSION_GZIP, CompressedEvents: []byte("not gzip"),
	}}})
	c2.expectError(ingestv1.ErrorCode_ERROR_CODE_MALFORMED_FRAME)
}
