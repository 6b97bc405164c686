package tail

import (
	"bytes"
	"strings"
	"testing"
)

// frameAll feeds data to a framer in pieces of the given sizes, the way
// the follower does (unfinished tail carried over), and returns the lines
// and what is left unfinished.
func frameAll(data []byte, max int, cuts []int) (lines []string, tail string, consumed int) {
	f := NewFramer(max)
	var carry []byte
	for len(data) > 0 {
		n := len(data)
		if len(cuts) > 0 {
			n = min(max1(cuts[0]), len(data))
			cuts = cuts[1:]
		}
		buf := append(carry, data[:n]...)
		data = data[n:]
		out, c, rest := f.Frame(buf, nil)
		for _, l := range out {
			lines = append(lines, string(l.Data))
		}
		consumed += c
		carry = append([]byte(nil), buf[len(buf)-rest:]...)
		if c+rest != len(buf) {
			panic("consumed + rest != len")
		}
	}
	return lines, string(carry), consumed
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// reference frames the whole input at once with the standard library.
func reference(data string, max int) (lines []string, tail string) {
	parts := strings.Split(data, "\n")
	tail = parts[len(parts)-1]
	for _, p := range parts[:len(parts)-1] {
		p = strings.TrimSuffix(p, "\r")
		if len(p) > max {
			p = p[:max]
		}
		lines = append(lines, p)
	}
	return lines, tail
}

func TestFramer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		max  int
		cuts []int
	}{
		{"lf", "a\nbb\nccc\n", 10, nil},
		{"crlf", "a\r\nb\r\n", 10, []int{2, 1, 1}},
		{"cr split from lf", "abc\r", 10, []int{4}},
		{"partial", "a\nbc", 10, []int{1, 1, 1, 1}},
		{"long", strings.Repeat("x", 25) + "\nok\n", 10, []int{3, 3, 3, 3, 3, 3, 3, 3, 3, 3}},
		{"empty lines", "\n\n\n", 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, tail, _ := frameAll([]byte(tt.in), tt.max, tt.cuts)
			want, wantTail := reference(tt.in, tt.max)
			if strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("lines %q, want %q", got, want)
			}
			if len(wantTail) <= tt.max && tail != wantTail {
				t.Fatalf("tail %q, want %q", tail, wantTail)
			}
		})
	}
}

func FuzzFramer(f *testing.F) {
	f.Add([]byte("a\nb\r\nccc"), 4, []byte{1, 2, 3})
	f.Add([]byte(strings.Repeat("long", 20)+"\n\n"), 7, []byte{5})
	f.Add([]byte("\r\n\r\r\n"), 1, []byte{1, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte, max int, cutb []byte) {
		if max < 1 || max > 1<<12 {
			return
		}
		cuts := make([]int, len(cutb))
		for i, c := range cutb {
			cuts[i] = int(c)
		}
		got, tail, consumed := frameAll(data, max, cuts)
		want, _ := reference(string(data), max)
		if len(tail) > max+1 {
			t.Fatalf("carried %d bytes, max %d", len(tail), max)
		}
		if consumed+len(tail) != len(data) {
			t.Fatalf("consumed %d + tail %d != %d", consumed, len(tail), len(data))
		}
		// Cut-independent: every complete line matches the reference; a
		// truncated-early tail may add one line the reference still holds.
		if len(got) < len(want) || len(got) > len(want)+1 {
			t.Fatalf("%d lines, reference %d", len(got), len(want))
		}
		for i, w := range want {
			if got[i] != w && !(len(got[i]) == max && strings.HasPrefix(w, got[i])) {
				t.Fatalf("line %d %q, want %q", i, got[i], w)
			}
		}
		for _, l := range got {
			if len(l) > max || bytes.IndexByte([]byte(l), '\n') >= 0 {
				t.Fatalf("bad line %q", l)
			}
		}
	})
}
