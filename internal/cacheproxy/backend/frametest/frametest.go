// Package frametest checks a protocol's framer (a backend.FrameFunc) the
// way the client loop uses it: on a stream that arrives in pieces, and
// against the parser that reads what it frames. The redis and memcache
// tests share it.
package frametest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/podkit/podkit/internal/cacheproxy/backend"
)

// Result is one request found in a stream: where it starts, its length
// and the bytes dropped after it; or the error that ended framing.
type Result struct {
	At, N, Skip int
	Err         error
}

// Stream frames stream with frame as it arrives in chunks of the sizes
// chunk gives, each time from the start of the unconsumed bytes, as a
// client connection does; it drops the bytes a frame says to skip. It
// fails t if frame asks for fewer bytes than it has, or calls a request
// longer than them.
func Stream(t testing.TB, frame backend.FrameFunc, stream []byte, chunk func() int) []Result {
	t.Helper()
	var out []Result
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
			n, need, sk, err := frame(rest)
			if err != nil {
				return append(out, Result{At: off, Err: err})
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
			out = append(out, Result{At: off, N: n, Skip: sk})
			off, skip = off+n, sk
		}
	}
	return out
}

// InPieces frames stream whole, which must give frames results, then
// byte by byte and in 50 seeded runs of random chunks of 1 to maxChunk
// bytes, each with a fresh framer from newFrame, and fails unless every
// run finds the frames of the whole stream.
func InPieces(t *testing.T, newFrame func() backend.FrameFunc, stream []byte, frames, maxChunk int) {
	t.Helper()
	whole := Stream(t, newFrame(), stream, func() int { return len(stream) })
	if len(whole) != frames {
		t.Fatalf("whole stream: %d frames, want %d: %v", len(whole), frames, whole)
	}
	check := func(t *testing.T, got []Result) {
		t.Helper()
		if len(got) != len(whole) {
			t.Fatalf("%d frames, want %d:\n got %v\nwant %v", len(got), len(whole), got, whole)
		}
		for i := range got {
			if got[i] != whole[i] {
				t.Fatalf("frame %d = %+v, want %+v", i, got[i], whole[i])
			}
		}
	}
	t.Run("bytewise", func(t *testing.T) {
		check(t, Stream(t, newFrame(), stream, func() int { return 1 }))
	})
	for seed := range uint64(50) {
		t.Run("random"+strconv.Itoa(int(seed)), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 1))
			check(t, Stream(t, newFrame(), stream, func() int { return 1 + r.IntN(maxChunk) }))
		})
	}
}

// Split frames in whole and in random chunks of 1 to 16 bytes, each with
// a fresh framer from newFrame, and fails unless both find the same
// frames. The chunks are seeded by the length of in, so that a fuzz input
// splits the same way each time it runs.
func Split(t testing.TB, newFrame func() backend.FrameFunc, in []byte) {
	t.Helper()
	whole := Stream(t, newFrame(), in, func() int { return len(in) })
	r := rand.New(rand.NewPCG(uint64(len(in)), 2))
	pieces := Stream(t, newFrame(), in, func() int { return 1 + r.IntN(16) })
	if len(pieces) != len(whole) {
		t.Fatalf("in pieces %v, whole %v", pieces, whole)
	}
	for i := range whole {
		if pieces[i] != whole[i] {
			t.Fatalf("in pieces %v, whole %v", pieces, whole)
		}
	}
}

// Walk frames in request by request, as if it came in one read, and has
// next read each request the framer calls whole from br, reset to hold
// exactly that request's bytes; then it drops the bytes the framer says to
// skip. It fails t if the framer asks for fewer bytes than it has or calls
// a request longer than them, if next runs out of input (reads past the
// request), or if next succeeds and leaves some of it unread. It stops at
// a framing error, a partial request, or once next fails or the client
// quits.
func Walk(t testing.TB, frame backend.FrameFunc, in []byte, br *bufio.Reader, next func() (quit bool, err error)) {
	t.Helper()
	rest := in
	for len(rest) > 0 {
		n, need, skip, err := frame(rest)
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
		br.Reset(src)
		quit, perr := next()
		if errors.Is(perr, io.EOF) || errors.Is(perr, io.ErrUnexpectedEOF) {
			t.Fatalf("at %d: next read past the %d bytes framed %q: %v", len(in)-len(rest), n, rest[:n], perr)
		}
		if left := src.Len() + br.Buffered(); perr == nil && left != 0 {
			t.Fatalf("at %d: next left %d of the %d bytes framed %q", len(in)-len(rest), left, n, rest[:n])
		}
		if perr != nil || quit {
			break
		}
		rest = rest[n:]
		rest = rest[min(skip, len(rest)):]
	}
}
