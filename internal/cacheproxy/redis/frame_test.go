package redis

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
// tests: small, so that large lengths are cheap to try.
const testMaxValue = 1 << 16

// maxInput bounds a fuzz input: room for a value of testMaxValue and a
// line of maxLine.
const maxInput = 1 << 17

type frameCase struct {
	name          string
	in            string
	n, need, skip int
	err           error
}

var frameCases = []frameCase{
	// Complete requests.
	{name: "get", in: "*2\r\n$3\r\nget\r\n$1\r\na\r\n", n: 20},
	{name: "empty bulk", in: "*2\r\n$3\r\nDEL\r\n$0\r\n\r\n", n: 19},
	{name: "bulk holding CRLF and *", in: "*2\r\n$4\r\nECHO\r\n$6\r\n*1\r\n\r\n\r\n", n: 26},
	{name: "mset", in: "*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n", n: 42},
	{name: "inline", in: "PING\r\n", n: 6},
	{name: "inline with args", in: "GET a\r\n", n: 7},
	{name: "empty line", in: "\r\n", n: 2},
	{name: "zero args", in: "*0\r\n", n: 4},
	{name: "null array", in: "*-1\r\n", n: 5},
	{name: "bulk at max value", in: "*1\r\n$" + strconv.Itoa(testMaxValue) + "\r\n" + strings.Repeat("v", testMaxValue) + "\r\n", n: 4 + 8 + testMaxValue + 2},

	// Pipelined: n is the first request only.
	{name: "pipelined resp", in: "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n", n: 14},
	{name: "pipelined inline", in: "GET a\r\nGET b\r\n", n: 7},
	{name: "resp then inline", in: "*1\r\n$4\r\nPING\r\nPING\r\n", n: 14},
	{name: "pipelined partial second", in: "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI", n: 14},

	// Partial requests.
	{name: "nothing", in: "", n: 0},
	{name: "partial count", in: "*2", n: 0},
	{name: "partial count CR", in: "*2\r", n: 0},
	{name: "partial header", in: "*2\r\n$3", n: 0},
	{name: "partial inline", in: "GET a", n: 0},
	{name: "header only", in: "*2\r\n", n: 0},
	{name: "partial bulk", in: "*2\r\n$3\r\nge", n: 0, need: 13},
	{name: "bulk without its CRLF yet", in: "*2\r\n$3\r\nget", n: 0, need: 13},
	{name: "second bulk split", in: "*2\r\n$3\r\nget\r\n$5\r\nab", n: 0, need: 24},
	{name: "second header missing", in: "*2\r\n$3\r\nget\r\n", n: 0},

	// Malformed: framed whole up to where readRequest fails.
	{name: "bad count", in: "*x\r\n$3\r\nget\r\n", n: 4},
	{name: "count too large", in: "*2000000\r\n$3\r\nget\r\n", n: 10},
	{name: "count without CR", in: "*1\n$4\r\nPING\r\n", n: 3},
	{name: "inline without CR", in: "GET a\nGET b\r\n", n: 6},
	{name: "$ missing", in: "*2\r\nget\r\n$1\r\na\r\n", n: 9},
	{name: "integer for bulk", in: "*2\r\n$3\r\nget\r\n:1\r\n", n: 17},
	{name: "empty header", in: "*1\r\n\r\n", n: 6},
	{name: "bare $", in: "*1\r\n$\r\n", n: 7},
	{name: "bad bulk length", in: "*1\r\n$x\r\nabc\r\n", n: 8},
	{name: "negative bulk length", in: "*1\r\n$-1\r\n", n: 9},
	{name: "bulk over max value", in: "*1\r\n$" + strconv.Itoa(testMaxValue+1) + "\r\n", n: 12},
	{name: "huge bulk length", in: "*1\r\n$99999999999\r\n", n: 18},
	{name: "header without CR", in: "*1\r\n$4\nPING\r\n", n: 7},
	{name: "bulk without CRLF", in: "*1\r\n$3\r\ngetXY*1\r\n", n: 13},
	{name: "bulk with LF only", in: "*2\r\n$3\r\nget\n\r\n$1\r\na\r\n", n: 13},
	{name: "inline too long", in: strings.Repeat("a", maxLine+1), n: maxLine + 1},
	{name: "inline too long with LF", in: strings.Repeat("a", maxLine) + "\n", n: maxLine + 1},
	{name: "header too long", in: "*1\r\n$" + strings.Repeat("1", maxLine), n: 4 + maxLine + 1},
}

func TestFrame(t *testing.T) {
	for _, c := range frameCases {
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
				// The framer starts afresh: the next request frames alone.
				n2, need2, skip2, err2 := f.frame([]byte(c.in[:n]))
				if n2 != n || need2 != 0 || skip2 != skip || err2 != nil {
					t.Errorf("frame of the request alone = %d, %d, %d, %v", n2, need2, skip2, err2)
				}
			}
		})
	}
}

// TestFrameTooLarge: a request whose arguments add up to more than
// maxRequest is an error as soon as the framer sees it, before its bytes
// arrive.
func TestFrameTooLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 32 MiB")
	}
	const maxValue = 32 << 20
	var b []byte
	b = append(b, "*3\r\n$"+strconv.Itoa(maxValue)+"\r\n"...)
	b = append(b, make([]byte, maxValue)...)
	b = append(b, "\r\n$"+strconv.Itoa(maxValue)+"\r\n"...)
	f := &framer{maxValue: maxValue}
	n, need, skip, err := f.frame(b)
	if n != 0 || need != 0 || skip != 0 || !errors.Is(err, errTooLarge) {
		t.Fatalf("frame = %d, %d, %d, %v; want errTooLarge", n, need, skip, err)
	}
	// Reset by the error: a small request frames as usual.
	if n, _, _, err := f.frame([]byte("PING\r\n")); n != 6 || err != nil {
		t.Fatalf("after the error: frame = %d, %v", n, err)
	}
}

// newFrame is a fresh framer with the limit of these tests.
func newFrame() backend.FrameFunc {
	f := &framer{maxValue: testMaxValue}
	return f.frame
}

var stream = strings.Join([]string{
	"*2\r\n$3\r\nGET\r\n$1\r\na\r\n",
	"PING\r\n",
	"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$13\r\n*1\r\n$1\r\nx\r\n\r\n\r\n", // a value that looks like requests
	"\r\n",
	"*0\r\n",
	"*2\r\n$3\r\nDEL\r\n$0\r\n\r\n",
	"*1\r\n$" + strconv.Itoa(5000) + "\r\n" + strings.Repeat("z", 5000) + "\r\n",
	"GET b\r\n",
	"*-1\r\n",
	"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
	"*1\r\n$3\r\ngetXY", // bulk without CRLF
	"*2\r\n$3\r\nget\r\n$1\r\nb\r\n",
	"*1\r\n$4\r\nPI", // a partial request at the end
}, "")

func TestFrameInPieces(t *testing.T) {
	frametest.InPieces(t, newFrame, []byte(stream), 12, 64)
}

// FuzzFrameAgreesWithParser: a request the framer calls whole is read by
// next from exactly its bytes, without running out of input; next reads
// all of it unless it fails. (The client loop would frame anew what next
// left unread, but no request here leaves any, so this asserts it does
// not happen.) Framing the input in pieces finds the same requests.
func FuzzFrameAgreesWithParser(f *testing.F) {
	for _, c := range frameCases {
		if len(c.in) <= maxInput {
			f.Add([]byte(c.in))
		}
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(stream))
	pool, stats := deadPool(f)
	h := &Handler{Pool: pool, Stats: stats, MaxValue: testMaxValue}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > maxInput {
			return
		}
		s := &state{batch: &backend.Batch{}, h: h, br: bufio.NewReaderSize(nil, 16<<10), authed: true}
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
