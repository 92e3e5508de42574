package ingest

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/proto"

	eventv1 "causality.dev/api/gen/causality/event/v1"
	ingestv1 "causality.dev/api/gen/causality/ingest/v1"
)

// header returns a 4-byte big-endian length prefix.
func header(n uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, n)
}

// frameOf returns the length-prefixed encoding of m.
func frameOf(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := AppendFrame(nil, m)
	if err != nil {
		tb.Fatalf("AppendFrame: %v", err)
	}
	return b
}

func helloFrame(key string) *ingestv1.ClientFrame {
	return &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Hello{Hello: &ingestv1.Hello{
		ApiKey: key, SdkName: "causality-test", SdkVersion: "0.0.1", ClientTimeMs: 1767225600000,
	}}}
}

func TestAppendFrameReadFrameRoundTrip(t *testing.T) {
	msgs := []*ingestv1.ClientFrame{
		helloFrame("cik_test"),
		{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{ClientTimeMs: 42}}},
		{Frame: &ingestv1.ClientFrame_Goodbye{Goodbye: &ingestv1.Goodbye{}}}, // 2 bytes: a tag and a zero length
		{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: 7, SentAtMs: 1, Events: []*eventv1.Event{
			{EventId: "0193e2c4-7b7a-7c3e-8a55-0a1b2c3d4e5f", AppId: "app", DeviceId: "d", Payload: &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home"}}},
		}}}},
	}
	// All frames back to back in one stream, then a clean EOF.
	var stream []byte
	for _, m := range msgs {
		var err error
		if stream, err = AppendFrame(stream, m); err != nil {
			t.Fatal(err)
		}
	}
	r := bytes.NewReader(stream)
	var buf []byte
	for i, want := range msgs {
		b, err := ReadFrame(r, DefaultMaxFrameBytes, buf)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(b) != proto.Size(want) {
			t.Errorf("frame %d: %d bytes, want %d", i, len(b), proto.Size(want))
		}
		got, err := decodeClientFrame(b)
		if err != nil {
			t.Fatalf("frame %d: decode: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("frame %d: got %v, want %v", i, got, want)
		}
		buf = b
	}
	if _, err := ReadFrame(r, DefaultMaxFrameBytes, buf); err != io.EOF {
		t.Fatalf("after the last frame: err = %v, want io.EOF (a clean end between frames)", err)
	}
}

func TestAppendFrameAppends(t *testing.T) {
	prefix := []byte("keep")
	out, err := AppendFrame(prefix, &ingestv1.Ping{ClientTimeMs: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte("keep"), 0, 0, 0, 2, 0x08, 0x01)
	if !bytes.Equal(out, want) {
		t.Fatalf("AppendFrame = % x, want % x", out, want)
	}
}

func TestReadFrameErrors(t *testing.T) {
	const max = 16
	tests := []struct {
		name  string
		input []byte
		want  error
	}{
		{"empty stream is a clean EOF", nil, io.EOF},
		{"zero length", header(0), ErrEmptyFrame},
		{"zero length followed by bytes", append(header(0), 1, 2, 3), ErrEmptyFrame},
		{"one over max", append(header(max+1), make([]byte, max+1)...), ErrFrameTooLarge},
		{"huge length", header(0xFFFFFFFF), ErrFrameTooLarge},
		{"truncated header 1 byte", []byte{0}, ErrTruncatedFrame},
		{"truncated header 3 bytes", []byte{0, 0, 0}, ErrTruncatedFrame},
		{"header without body", header(4), ErrTruncatedFrame},
		{"truncated body", append(header(4), 1, 2), ErrTruncatedFrame},
		{"truncated body after a good frame", append(append(header(1), 9), append(header(3), 1)...), ErrTruncatedFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.input)
			var err error
			for range 3 { // read until the first error
				var b []byte
				if b, err = ReadFrame(r, max, nil); err != nil {
					if b != nil {
						t.Errorf("ReadFrame returned %d bytes with error %v", len(b), err)
					}
					break
				}
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if tt.want == io.EOF && err != io.EOF {
				t.Fatalf("err = %#v, want exactly io.EOF", err)
			}
		})
	}
}

func TestReadFrameAtMax(t *testing.T) {
	const max = 16
	in := append(header(max), bytes.Repeat([]byte{7}, max)...)
	b, err := ReadFrame(bytes.NewReader(in), max, nil)
	if err != nil {
		t.Fatalf("a frame of exactly max bytes: %v", err)
	}
	if len(b) != max {
		t.Fatalf("got %d bytes, want %d", len(b), max)
	}
}

func TestReadFrameSplitReads(t *testing.T) {
	// A reader that returns one byte per call must still give whole frames.
	in := append(append(header(3), 1, 2, 3), append(header(1), 4)...)
	r := iotest.OneByteReader(bytes.NewReader(in))
	for _, want := range [][]byte{{1, 2, 3}, {4}} {
		b, err := ReadFrame(r, 16, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("got % x, want % x", b, want)
		}
	}
	if _, err := ReadFrame(r, 16, nil); err != io.EOF {
		t.Fatalf("err = %v, want io.EOF", err)
	}
}

func TestReadFramePassesReaderErrors(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		name string
		r    io.Reader
	}{
		{"in the header", iotest.ErrReader(boom)},
		{"in the body", io.MultiReader(bytes.NewReader(append(header(8), 1)), iotest.ErrReader(boom))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ReadFrame(tt.r, 16, nil); !errors.Is(err, boom) {
				t.Fatalf("err = %v, want %v", err, boom)
			}
		})
	}
}

func TestReadFrameDoesNotAllocateAnOversizedLength(t *testing.T) {
	// A 4 GiB length prefix with a small max must be refused before any
	// buffer of that size exists.
	in := header(0xFFFFFFF0)
	r := bytes.NewReader(in)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		r.Reset(in)
		if _, err := ReadFrame(r, 1024, nil); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("err = %v, want ErrFrameTooLarge", err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
		t.Fatalf("10 refused frames allocated %d bytes; the length prefix must not be allocated", grew)
	}
}

func TestReadFrameReusesBuffer(t *testing.T) {
	in := append(append(header(3), 1, 2, 3), append(header(40), make([]byte, 40)...)...)
	r := bytes.NewReader(in)
	buf := make([]byte, 0, 8)

	b, err := ReadFrame(r, 64, buf)
	if err != nil {
		t.Fatal(err)
	}
	if &b[:1][0] != &buf[:1][0] {
		t.Error("a frame that fits was not read into the given buffer")
	}
	if !bytes.Equal(b, []byte{1, 2, 3}) {
		t.Errorf("got % x", b)
	}

	b2, err := ReadFrame(r, 64, buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(b2) != 40 || cap(b2) < 40 {
		t.Fatalf("len %d cap %d, want a 40-byte frame", len(b2), cap(b2))
	}
	if &b2[0] == &buf[:1][0] {
		t.Error("a frame larger than the buffer's capacity was written into it")
	}
}

func TestDecodeClientFrame(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"hello", mustMarshal(t, helloFrame("k")), true},
		{"invalid protobuf", []byte{0xff, 0xff, 0xff, 0xff}, false},
		{"no frame type set (unknown field only)", []byte{0x28, 0x01}, false}, // field 5, varint 1
		{"truncated length-delimited field", []byte{0x0a, 0x05, 0x01}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := decodeClientFrame(tt.in)
			if tt.ok {
				if err != nil || f == nil {
					t.Fatalf("decode: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrMalformedFrame) {
				t.Fatalf("err = %v, want ErrMalformedFrame", err)
			}
		})
	}
}

func mustMarshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// FuzzReadFrame reads frames from arbitrary bytes with an arbitrary maximum:
// it must never panic, never return an empty frame or one longer than max,
// return exactly the bytes that followed each prefix, end only with a known
// error, and every frame that decodes must survive AppendFrame/ReadFrame.
func FuzzReadFrame(f *testing.F) {
	seeds := [][]byte{
		nil,
		frameOf(f, helloFrame("cik_0123456789abcdef")),
		append(frameOf(f, helloFrame("k")), frameOf(f, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{ClientTimeMs: 5}}})...),
		frameOf(f, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{Seq: 1, Events: []*eventv1.Event{
			{EventId: "0193e2c4-7b7a-7c3e-8a55-0a1b2c3d4e5f", AppId: "a", DeviceId: "d", Properties: map[string]string{"k": "v"},
				Payload: &eventv1.Event_ButtonTap{ButtonTap: &eventv1.ButtonTap{ButtonId: "b"}}},
		}}}}),
		header(0),
		header(0xFFFFFFFF),
		append(header(5), 1, 2),
		{0, 0},
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		append(header(4), 0xff, 0xff, 0xff, 0xff),
	}
	for _, s := range seeds {
		f.Add(uint32(DefaultMaxFrameBytes), s)
		f.Add(uint32(8), s)
	}
	f.Fuzz(func(t *testing.T, max uint32, data []byte) {
		max = max%(2<<20) + 1 // keep allocations bounded: 1 byte .. 2 MiB
		r := bytes.NewReader(data)
		off := 0
		var buf []byte
		for {
			b, err := ReadFrame(r, max, buf)
			if err != nil {
				switch {
				case err == io.EOF:
					if off != len(data) {
						t.Fatalf("io.EOF at offset %d of %d", off, len(data))
					}
				case errors.Is(err, ErrTruncatedFrame), errors.Is(err, ErrEmptyFrame), errors.Is(err, ErrFrameTooLarge):
				default:
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(b) == 0 || uint32(len(b)) > max {
				t.Fatalf("frame of %d bytes with max %d", len(b), max)
			}
			if n := binary.BigEndian.Uint32(data[off:]); int(n) != len(b) || !bytes.Equal(b, data[off+4:off+4+len(b)]) {
				t.Fatalf("frame at offset %d is not the %d bytes after its prefix", off, n)
			}
			off += 4 + len(b)
			if cf, err := decodeClientFrame(b); err == nil {
				again, err := ReadFrame(bytes.NewReader(frameOf(t, cf)), uint32(DefaultMaxFrameBytes)*4, nil)
				if err != nil {
					t.Fatalf("re-read a re-encoded frame: %v", err)
				}
				cf2, err := decodeClientFrame(again)
				if err != nil {
					t.Fatalf("decode a re-encoded frame: %v", err)
				}
				if !proto.Equal(cf, cf2) {
					t.Fatalf("round trip changed the frame: %v != %v", cf, cf2)
				}
			}
			buf = b
		}
	})
}

// The byte-level examples in docs/protocol.md are these outputs.
func Example_helloFrame() {
	b, _ := AppendFrame(nil, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Hello{Hello: &ingestv1.Hello{
		ApiKey: "cik_demo", SdkName: "demo", SdkVersion: "1.0", ClientTimeMs: 1767225600000,
	}}})
	fmt.Println(hex.EncodeToString(b))
	// Output:
	// 0000001e0a1c0a0863696b5f64656d6f120464656d6f1a03312e302080d0eab6b733
}

func Example_batchFrame() {
	b, _ := AppendFrame(nil, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Batch{Batch: &ingestv1.Batch{
		Seq: 1, SentAtMs: 1767225600500, Events: []*eventv1.Event{{
			EventId:     "0193e2c4-7b7a-7c3e-8a55-0a1b2c3d4e5f",
			AppId:       "my-app",
			DeviceId:    "d1",
			TimestampMs: 1767225600000,
			Payload:     &eventv1.Event_ScreenView{ScreenView: &eventv1.ScreenView{ScreenName: "Home"}},
		}},
	}}})
	fmt.Println(hex.EncodeToString(b))
	// Output:
	// 0000004f124d080112420a2430313933653263342d376237612d376333652d386135352d30613162326333643465356612066d792d6170701a0264313880d0eab6b733f206060a04486f6d6518f4d3eab6b733
}

func Example_pingFrame() {
	b, _ := AppendFrame(nil, &ingestv1.ClientFrame{Frame: &ingestv1.ClientFrame_Ping{Ping: &ingestv1.Ping{ClientTimeMs: 1767225600000}}})
	fmt.Println(hex.EncodeToString(b))
	// Output:
	// 000000091a070880d0eab6b733
}

func Example_welcomeFrame() {
	b, _ := AppendFrame(nil, &ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Welcome{Welcome: &ingestv1.Welcome{
		ConnectionId: "c1", AppId: "my-app", MaxFrameBytes: 1 << 20, Credits: 8,
		HeartbeatIntervalMs: 15000, MaxBatchEvents: 1000, ServerTimeMs: 1767225600000,
	}}})
	fmt.Println(hex.EncodeToString(b))
	// Output:
	// 000000210a1f0a02633112066d792d61707018808040200828987530e8073880d0eab6b733
}

func Example_ackFrame() {
	b, _ := AppendFrame(nil, &ingestv1.ServerFrame{Frame: &ingestv1.ServerFrame_Ack{Ack: &ingestv1.Ack{Seq: 1, Results: []*ingestv1.EventResult{{
		Status: ingestv1.EventStatus_EVENT_STATUS_ACCEPTED, EventId: "0193e2c4-7b7a-7c3e-8a55-0a1b2c3d4e5f",
	}}}}})
	fmt.Println(hex.EncodeToString(b))
	// Output:
	// 0000002e122c080112280801122430313933653263342d376237612d376333652d386135352d306131623263336434653566
}
