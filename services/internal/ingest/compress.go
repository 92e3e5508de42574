package ingest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// ErrInflatedTooLarge: a compressed batch inflates beyond the limit (a
// decompression bomb, or simply too much); the stream closes with
// ERROR_CODE_BATCH_TOO_LARGE.
var ErrInflatedTooLarge = errors.New("compressed batch inflates beyond the limit")

// supportedCompressions is what this collector inflates, for
// Welcome.compressions.
var supportedCompressions = []ingestv1.Compression{ingestv1.Compression_COMPRESSION_GZIP}

// inflateBatch turns a compressed batch into a plain one: it gunzips
// b.CompressedEvents (at most maxBytes of output), decodes the EventList
// into b.Events and clears CompressedEvents. A batch without
// compressed_events is left alone. Errors wrap ErrInflatedTooLarge or
// ErrMalformedFrame.
func inflateBatch(b *ingestv1.Batch, maxBytes int) error {
	if len(b.GetCompressedEvents()) == 0 {
		return nil
	}
	if len(b.GetEvents()) > 0 {
		return fmt.Errorf("%w: batch has both events and compressed_events", ErrMalformedFrame)
	}
	if b.GetCompression() != ingestv1.Compression_COMPRESSION_GZIP {
		return fmt.Errorf("%w: unsupported compression %v", ErrMalformedFrame, b.GetCompression())
	}
	zr, err := gzip.NewReader(bytes.NewReader(b.GetCompressedEvents()))
	if err != nil {
		return fmt.Errorf("%w: gzip: %v", ErrMalformedFrame, err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, int64(maxBytes)+1))
	if err != nil {
		return fmt.Errorf("%w: gzip: %v", ErrMalformedFrame, err)
	}
	if len(raw) > maxBytes {
		return fmt.Errorf("%w (%d bytes)", ErrInflatedTooLarge, maxBytes)
	}
	var list ingestv1.EventList
	if err := proto.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("%w: compressed events: %v", ErrMalformedFrame, err)
	}
	b.Events = list.Events
	b.CompressedEvents = nil
	return nil
}
