package redis

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/podkit/podkit/internal/cacheproxy/backend"
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

// frameResult is one request found in a stream: where it starts, its
// length and the bytes dropped after it; or the error that ended framing.
type frameResult struct {
	at, n, skip int
	err         error
}

// frameStream frames stream as it arrives in chunks of the sizes chunk
// gives, each time from the start of the unconsumed bytes, as a client
// connection does.
func frameStream(t *testing.T, stream []byte, chunk func() int) []frameResult {
	t.Helper()
	f := &framer{maxValue: testMaxValue}
	var out []frameResult
	var buf []byte
	off, skip := 0, 0
	for fed := 0; fed < len(stream); {
		k := min(max(chunk(), 1), len(stream)-fed)
		buf = append(buf, stream[fed:fed+k]...)
		fed += k
		for {
			d := min(skip, len(buf)-off)
			skip, off = skip-d, off+d
			rest := buf[off:]
			if skip > 0 || len(rest) == 0 {
				break
			}
			n, need, sk, err := f.frame(rest)
			if err != nil {
				return append(out, frameResult{at: off, err: err})
			}
			if n == 0 {
				if need != 0 && need <= len(rest) {
					t.Fatalf("at %d: need %d with %d bytes in hand", off, need, len(rest))
				}
				break
			}
			if n > len(rest) {
				t.Fatalf("at %d: n %d past the %d bytes in hand", off, n, len(rest))
			}
			out = append(out, frameResult{at: off, n: n, skip: sk})
			off, skip = off+n, sk
		}
	}
	return out
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
	in := []byte(stream)
	whole := frameStream(t, in, func() int { return len(in) })
	if len(whole) != 12 {
		t.Fatalf("whole stream: %d frames, want 12: %v", len(whole), whole)
	}
	check := func(t *testing.T, got []frameResult) {
		t.Helper()
		if len(got) != len(whole) {
			t.Fatalf("%d frames, want %d:\n got %v\nwant %v", len(got), len(whole), got, whole)
		}
		for i := range got {
			if got[i].at != whole[i].at || got[i].n != whole[i].n || got[i].skip != whole[i].skip || got[i].err != whole[i].err {
				t.Fatalf("frame %d = %+v, want %+v", i, got[i], whole[i])
			}
		}
	}
	t.Run("bytewise", func(t *testing.T) {
		check(t, frameStream(t, in, func() int { return 1 }))
	})
	for seed := range uint64(50) {
		t.Run("random"+strconv.Itoa(int(seed)), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			check(t, frameStream(t, in, func() int { return 1 + r.IntN(64) }))
		})
	}
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
		fr := &framer{maxValue: testMaxValue}
		s := &state{batch: &backend.Batch{}, h: h, br: bufio.NewReaderSize(nil, 16<<10), authed: true}
		w := bufio.NewWriter(io.Discard)
		rest := in
		for len(rest) > 0 {
			n, need, skip, err := fr.frame(rest)
			if err != nil {
				break
			}
			if n == 0 {
				if need != 0 && need <= len(rest) {
					t.Fatalf("at %d: need %d with %d bytes in hand", len(in)-len(rest), need, len(rest))
				}
				break
			}
			if n > len(rest) || skip < 0 {
				t.Fatalf("at %d: frame = %d, skip %d, with %d bytes in hand", len(in)-len(rest), n, skip, len(rest))
			}
			src := bytes.NewReader(rest[:n])
			s.br.Reset(src)
			r, quit, perr := s.next()
			s.batch.Flush()
			if r != nil {
				r.WriteReply(w)
			}
			if errors.Is(perr, io.EOF) || errors.Is(perr, io.ErrUnexpectedEOF) {
				t.Fatalf("at %d: next read past the %d bytes framed %q: %v", len(in)-len(rest), n, rest[:n], perr)
			}
			if left := src.Len() + s.br.Buffered(); perr == nil && left != 0 {
				t.Fatalf("at %d: next left %d of the %d bytes framed %q", len(in)-len(rest), left, n, rest[:n])
			}
			if perr != nil || quit {
				break
			}
			rest = rest[n:]
			rest = rest[min(skip, len(rest)):]
		}
		if len(in) > 4<<10 {
			return
		}
		whole := frameStream(t, in, func() int { return len(in) })
		r := rand.New(rand.NewPCG(uint64(len(in)), 2))
		pieces := frameStream(t, in, func() int { return 1 + r.IntN(16) })
		if len(pieces) != len(whole) {
			t.Fatalf("in pieces %v, whole %v", pieces, whole)
		}
		for i := range whole {
			if pieces[i] != whole[i] {
				t.Fatalf("in pieces %v, whole %v", pieces, whole)
			}
		}
	})
}
