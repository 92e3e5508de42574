package sdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestReadFrame(t *testing.T) {
	frame := func(n uint32, body string) []byte {
		return append(binary.BigEndian.AppendUint32(nil, n), body...)
	}
	tests := []struct {
		name string
		in   []byte
		want string
		err  error
	}{
		{"frame", frame(3, "abc"), "abc", nil},
		{"clean end", nil, "", io.EOF},
		{"empty", frame(0, ""), "", ErrEmptyFrame},
		{"too large, nothing allocated", frame(1<<31, ""), "", ErrFrameTooLarge},
		{"torn header", []byte{0, 0}, "", ErrTruncatedFrame},
		{"torn body", frame(5, "ab"), "", ErrTruncatedFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadFrame(bytes.NewReader(tt.in), 1024, nil)
			if !errors.Is(err, tt.err) || string(got) != tt.want {
				t.Fatalf("ReadFrame = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 8, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := ReadFrame(bytes.NewReader(b), 64, nil)
		if err == nil && (len(got) == 0 || len(got) > 64 || len(got)+4 > len(b)) {
			t.Fatalf("frame of %d bytes from %d input bytes", len(got), len(b))
		}
	})
}
