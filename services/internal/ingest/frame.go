package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"causality.dev/api/frame"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
	"causality.dev/services/internal/eventcodec"
)

// DefaultMaxFrameBytes is the largest frame accepted unless configured.
const DefaultMaxFrameBytes = 1 << 20

// Frame errors; each maps to one ErrorCode sent before the close.
var (
	ErrEmptyFrame     = frame.ErrEmpty
	ErrFrameTooLarge  = frame.ErrTooLarge
	ErrTruncatedFrame = frame.ErrTruncated
	ErrMalformedFrame = errors.New("frame is not a valid protobuf message")
)

// ReadFrame reads one length-prefixed frame: a 4-byte big-endian length N,
// then N bytes. N is checked against max before anything is allocated. buf
// is reused when it is large enough; the returned slice aliases it.
func ReadFrame(r io.Reader, max uint32, buf []byte) ([]byte, error) {
	return frame.Read(r, max, buf)
}

// AppendFrame appends the length-prefixed encoding of m to dst.
func AppendFrame(dst []byte, m proto.Message) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst, err := proto.MarshalOptions{}.MarshalAppend(dst, m)
	if err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst, nil
}

// decodeClientFrame unmarshals a frame payload.
func decodeClientFrame(b []byte) (*ingestv1.ClientFrame, error) {
	f := &ingestv1.ClientFrame{}
	if err := proto.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedFrame, err)
	}
	if f.GetFrame() == nil {
		return nil, fmt.Errorf("%w: no frame type set", ErrMalformedFrame)
	}
	return f, nil
}

// decodeFrame decodes a frame payload and, for a batch, the encoding of
// each of its events (nil when they cannot be told apart). A frame holding
// only a batch, what SDKs send most, is decoded without proto.Unmarshal's
// reflection when it can be; everything else goes through
// decodeClientFrame.
func decodeFrame(b []byte) (*ingestv1.ClientFrame, [][]byte, error) {
	if f, raw, ok := decodeBatchFrame(b); ok {
		return f, raw, nil
	}
	f, err := decodeClientFrame(b)
	if err != nil {
		return nil, nil, err
	}
	var raw [][]byte
	if batch := f.GetBatch(); batch != nil {
		if raw = eventEncodings(b); len(raw) != len(batch.GetEvents()) {
			raw = nil
		}
	}
	return f, raw, nil
}

// decodeBatchFrame decodes a frame whose only field is a batch whose
// fields are all known, with the events through eventcodec. It returns
// false for any other frame, which proto.Unmarshal then decodes: the
// result is the same (TestDecodeFrame).
func decodeBatchFrame(b []byte) (*ingestv1.ClientFrame, [][]byte, bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != frameBatch || typ != protowire.BytesType {
		return nil, nil, false
	}
	l, m := protowire.ConsumeVarint(b[n:])
	if m < 0 || l != uint64(len(b)-n-m) {
		return nil, nil, false // not the only field
	}
	batch := &ingestv1.Batch{}
	dec := eventcodec.NewDecoder(b)
	var raw [][]byte
	for pos := n + m; pos < len(b); {
		num, typ, n := protowire.ConsumeTag(b[pos:])
		if n < 0 {
			return nil, nil, false
		}
		pos += n
		switch {
		case typ == protowire.BytesType && num == batchEvents:
			v, n := protowire.ConsumeBytes(b[pos:])
			if n < 0 {
				return nil, nil, false
			}
			start := pos + n - len(v)
			e, ok := dec.Event(start, start+len(v))
			if !ok {
				return nil, nil, false
			}
			batch.Events, raw = append(batch.Events, e), append(raw, v)
			pos += n
		case typ == protowire.VarintType && (num == batchSeq || num == batchSentAt || num == batchDropped):
			v, n := protowire.ConsumeVarint(b[pos:])
			if n < 0 {
				return nil, nil, false
			}
			switch num {
			case batchSeq:
				batch.Seq = v
			case batchSentAt:
				batch.SentAtMs = int64(v)
			default:
				batch.DroppedEvents = v
			}
			pos += n
		default:
			return nil, nil, false
		}
	}
	return &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: batch}}, raw, true
}

// Field numbers that the frame decoders follow, from the descriptors.
var (
	frameOneof   = (&ingestv1.ClientFrame{}).ProtoReflect().Descriptor().Oneofs().ByName("frame")
	frameBatch   = frameOneof.Fields().ByName("batch").Number()
	batchFields  = (&ingestv1.Batch{}).ProtoReflect().Descriptor().Fields()
	batchEvents  = batchFields.ByName("events").Number()
	batchSeq     = batchFields.ByName("seq").Number()
	batchSentAt  = batchFields.ByName("sent_at_ms").Number()
	batchDropped = batchFields.ByName("dropped_events").Number()
)

// eventEncodings returns the encoding of each event of the batch in b, a
// ClientFrame that proto.Unmarshal accepted, in the order Unmarshal decodes
// them, or nil when b holds no event. It follows Unmarshal's rules: the
// batch fields of the frame merge (their events are concatenated), another
// field of the frame oneof replaces the batch, and a field whose wire type
// does not match its declaration is an unknown field. The slices alias b.
func eventEncodings(b []byte) [][]byte {
	var out [][]byte
	ok := eachMessageField(b, func(num protowire.Number, v []byte) bool {
		switch {
		case num == frameBatch:
			return eachMessageField(v, func(num protowire.Number, ev []byte) bool {
				if num == batchEvents {
					out = append(out, ev)
				}
				return true
			})
		case frameOneof.Fields().ByNumber(num) != nil:
			out = out[:0]
		}
		return true
	})
	if !ok || len(out) == 0 {
		return nil
	}
	return out
}

// eachMessageField calls f with the number and contents of every
// length-delimited field of the message encoded in b, in order; it returns
// false when b is not a valid encoding or f returns false.
func eachMessageField(b []byte, f func(num protowire.Number, v []byte) bool) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if !f(num, v) {
			return false
		}
	}
	return true
}
