package memcache

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/podkit/podkit/internal/cacheproxy/backend"
	"github.com/podkit/podkit/internal/cacheproxy/backend/frametest"
)

// testMaxValue is the value limit of the framer and Handler in these
// tests: small, so that large sizes are cheap to try.
const testMaxValue = 1 << 16

// maxInput bounds a fuzz input: room for a value of testMaxValue.
const maxInput = 1 << 17

type frameCase struct {
	name          string
	in            string
	n, need, skip int
	err           error
}

var frameCases = []frameCase{
	// Complete requests.
	{name: "get", in: "get a\r\n", n: 7},
	{name: "multi-get", in: "get a b c\r\n", n: 11},
	{name: "set", in: "set a 0 0 1\r\nx\r\n", n: 16},
	{name: "set upper case", in: "SET a 0 0 1\r\nx\r\n", n: 16},
	{name: "set value holding CRLF", in: "set a 0 0 7\r\nget b\r\n\r\n", n: 22},
	{name: "set empty value", in: "set a 0 0 0\r\n\r\n", n: 15},
	{name: "set noreply", in: "set a 0 0 1 noreply\r\nx\r\n", n: 24},
	{name: "set extra spaces", in: "set  a 0  0 1 \r\nx\r\n", n: 19},
	{name: "set max value", in: "set a 0 0 " + strconv.Itoa(testMaxValue) + "\r\n" + strings.Repeat("v", testMaxValue) + "\r\n", n: 17 + testMaxValue + 2},
	{name: "cas", in: "cas a 0 0 1 5\r\nx\r\n", n: 18},
	{name: "cas noreply", in: "cas a 0 0 1 5 noreply\r\nx\r\n", n: 26},
	{name: "ms", in: "ms a 2 T0\r\nhi\r\n", n: 15},
	{name: "ms flags", in: "ms a 2 T0 q b\r\nhi\r\n", n: 19},
	{name: "mg", in: "mg a v q\r\n", n: 10},
	{name: "delete", in: "delete a noreply\r\n", n: 18},
	{name: "quit", in: "quit\r\n", n: 6},
	{name: "empty line", in: "\r\n", n: 2},
	{name: "LF line", in: "get a\n", n: 6},
	{name: "LF only", in: "\n", n: 1},
	{name: "set LF", in: "set a 0 0 1\nx\r\n", n: 15},
	{name: "set CR CR LF", // the size is "1\r"
		in: "set a 0 0 1\r\r\nx\r\n", n: 14},

	// Pipelined: n is the first request only.
	{name: "pipelined gets", in: "get a\r\nget b\r\n", n: 7},
	{name: "set then get", in: "set a 0 0 1\r\nx\r\nget a\r\n", n: 16},
	{name: "ms then mn", in: "ms a 2\r\nhi\r\nmn\r\n", n: 12},

	// Partial requests.
	{name: "nothing", in: "", n: 0},
	{name: "partial line", in: "get a", n: 0},
	{name: "partial line CR", in: "get a\r", n: 0},
	{name: "set line only", in: "set a 0 0 5\r\n", n: 0, need: 20},
	{name: "partial value", in: "set a 0 0 5\r\nab", n: 0, need: 20},
	{name: "value without CRLF yet", in: "set a 0 0 5\r\nabcde", n: 0, need: 20},
	{name: "partial ms value", in: "ms a 10 T0\r\n0123", n: 0, need: 24},
	{name: "partial cas noreply", in: "cas a 0 0 3 9 noreply\r\nxy", n: 0, need: 28},

	// Malformed lines: the line alone, for next to answer.
	{name: "set missing size", in: "set a 0 0\r\nx\r\n", n: 11},
	{name: "set bad flags", in: "set a x 0 1\r\nx\r\n", n: 13},
	{name: "set bad size", in: "set a 0 0 -1\r\nx\r\n", n: 14},
	{name: "set size not a number", in: "set a 0 0 1x\r\nx\r\n", n: 14},
	{name: "set too many fields", in: "set a 0 0 1 foo\r\nx\r\n", n: 17},
	{name: "set key too long", in: "set " + strings.Repeat("k", maxKey+1) + " 0 0 1\r\nx\r\n", n: maxKey + 13},
	{name: "cas missing unique", in: "cas a 0 0 1\r\nx\r\n", n: 13},
	{name: "ms missing size", in: "ms a\r\nhi\r\n", n: 6},
	{name: "ms bad size", in: "ms a b\r\nhi\r\n", n: 8},
	{name: "ms key too long", in: "ms " + strings.Repeat("k", maxKey+1) + " 2\r\nhi\r\n", n: maxKey + 8},
	{name: "long command", in: strings.Repeat("s", 17) + " a 0 0 1\r\nx\r\n", n: 27},
	{name: "unknown command", in: "stats\r\n", n: 7},
	// The data block is framed by its size; next finds the missing CRLF.
	{name: "value without CRLF", in: "set a 0 0 1\r\nxyz\r\n", n: 16},

	// A value larger than maxValue: the line, then the value skipped.
	{name: "value too large", in: "set a 0 0 " + strconv.Itoa(testMaxValue+1) + "\r\n", n: 17, skip: testMaxValue + 3},
	{name: "value too large noreply", in: "set a 0 0 99999999 noreply\r\nxyz", n: 28, skip: 100000001},
	{name: "ms value too large", in: "ms a 99999999999\r\n", n: 18, skip: 100000000001},
}

// A line longer than maxLine, with no end in sight.
var tooLong = frameCase{name: "line too long", in: "get " + strings.Repeat("k", maxLine), n: maxLine + 4}

func TestFrame(t *testing.T) {
	for _, c := range append(frameCases, tooLong) {
		t.Run(c.name, func(t *testing.T) {
			f := &framer{maxValue: testMaxValue}
			n, need, skip, err := f.frame([]byte(c.in))
			if n != c.n || need != c.need || skip != c.skip || !errors.Is(err, c.err) {
				t.Errorf("frame(%.80q) = %d, %d, %d, %v; want %d, %d, %d, %v",
					c.in, n, need, skip, err, c.n, c.need, c.skip, c.err)
			}
			if n == 0 && need != 0 && need <= len(c.in) {
				t.Errorf("need %d with %d bytes in hand", need, len(c.in))
			}
			if n > 0 {
				// The framer starts afresh: the request frames alone.
				n2, need2, skip2, err2 := f.frame([]byte(c.in[:n]))
				if n2 != n || need2 != 0 || skip2 != skip || err2 != nil {
					t.Errorf("frame of the request alone = %d, %d, %d, %v", n2, need2, skip2, err2)
				}
			}
		})
	}
}

// TestFrameLongLineInPieces: a line that passes maxLine across reads is
// framed whole once it does, and not before.
func TestFrameLongLineInPieces(t *testing.T) {
	b := []byte(tooLong.in)
	f := &framer{maxValue: testMaxValue}
	for _, k := range []int{1, 1 << 10, maxLine / 2, maxLine} {
		if n, need, _, err := f.frame(b[:k]); n != 0 || need != 0 || err != nil {
			t.Fatalf("frame of %d bytes = %d, %d, %v; want more", k, n, need, err)
		}
	}
	if n, _, _, err := f.frame(b); n != len(b) || err != nil {
		t.Fatalf("frame of %d bytes = %d, %v", len(b), n, err)
	}
	if n, _, _, err := f.frame([]byte("get a\r\n")); n != 7 || err != nil {
		t.Fatalf("after it: frame = %d, %v", n, err)
	}
}

// newFrame is a fresh framer with the limit of these tests.
func newFrame() backend.FrameFunc {
	f := &framer{maxValue: testMaxValue}
	return f.frame
}

var stream = strings.Join([]string{
	"get a\r\n",
	"set a 0 0 13\r\nget b\r\nquit\r\n\r\n", // a value that looks like requests
	"gets a b c\n",
	"\r\n",
	"cas a 0 0 1 5 noreply\r\nx\r\n",
	"set big 0 0 " + strconv.Itoa(testMaxValue+10) + "\r\n" + strings.Repeat("get z\r\n", testMaxValue/7+2)[:testMaxValue+10] + "\r\n", // skipped
	"ms a 2 T0\r\nhi\r\n",
	"set a 0 0 1\nx\r\n",
	"SET b 0 0 4000 noreply\r\n" + strings.Repeat("y", 4000) + "\r\n",
	"mg a v\r\n",
	"set a 0 0\r\n", // malformed: the line alone
	"ms a 2\r\nhi\r\n",
	"set a 0 0 1\r\nxyz\r\n", // no CRLF after the value: framed by size
	"delete a\r\n",
	"set a 0 0 10\r\nabc", // a partial request at the end
}, "")

func TestFrameInPieces(t *testing.T) {
	frametest.InPieces(t, newFrame, []byte(stream), 15, 256)
}

// FuzzFrameAgreesWithParser: a request the framer calls whole is read by
// next from exactly its bytes, without running out of input; next reads
// all of it unless it fails. (The client loop would frame anew what next
// left unread, but no request here leaves any, so this asserts it does
// not happen.) Framing the input in pieces finds the same requests.
func FuzzFrameAgreesWithParser(f *testing.F) {
	for _, c := range frameCases {
		f.Add([]byte(c.in))
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(stream))
	pool, stats := deadPool(f)
	h := &Handler{Pool: pool, Stats: stats, MaxValue: testMaxValue, Version: "fuzz"}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > maxInput {
			return
		}
		s := &state{batch: &backend.Batch{}, h: h, br: bufio.NewReaderSize(nil, 16<<10)}
		w := bufio.NewWriter(io.Discard)
		frametest.Walk(t, newFrame(), in, s.br, func() (bool, error) {
			r, quit, err := s.next()
			s.batch.Flush()
			if r != nil {
				r.WriteReply(w)
			}
			return quit, err
		})
		if len(in) > 4<<10 {
			return
		}
		frametest.Split(t, newFrame, in)
	})
}
