package backend

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestAppendLine(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 40) + "\r\n" // longer than the 16-byte reader buffer
	tests := []struct {
		name, in, want string
		max            int
		err            error
	}{
		{name: "one line, rest left", in: "get a\r\nget b\r\n", want: "pre:get a\r\n", max: 64},
		{name: "line longer than the reader's buffer", in: long, want: "pre:" + long, max: 64},
		{name: "line over the bound", in: long, max: 20, err: ErrLineTooLong},
		{name: "bare LF kept as sent", in: "get a\n", want: "pre:get a\n", max: 64},
		{name: "EOF inside a line", in: "get a", max: 64, err: io.ErrUnexpectedEOF},
		{name: "EOF between lines", in: "", max: 64, err: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := bufio.NewReaderSize(strings.NewReader(tt.in), 16)
			got, err := AppendLine(r, []byte("pre:"), tt.max)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("AppendLine = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestGrowKeepsContent(t *testing.T) {
	t.Parallel()
	b := Grow([]byte("ab"), 3)
	if len(b) != 5 || string(b[:2]) != "ab" {
		t.Fatalf("Grow = %q (len %d), want ab plus 3 bytes", b, len(b))
	}
	b = b[:2]
	if c := Grow(b, 1); &c[0] != &b[0] {
		t.Fatal("Grow reallocated although the slice had room")
	}
}
