package redis

import (
	"bytes"
	"errors"
)

// maxRequest bounds one request in bytes, all of its arguments together.
func maxRequest(maxValue int) int { return max(2*maxValue, 64<<20) }

var errTooLarge = errors.New("request too large")

// framer measures RESP and inline requests for the event loop without
// reading them: it finds where the request readRequest would read ends, or
// the point where readRequest would stop with an error. A request that
// arrives in pieces is measured from where the last look stopped.
type framer struct {
	maxValue int
	pos      int // bytes of the request measured so far
	left     int // arguments still to measure after pos; 0: none begun
}

// frame implements backend.FrameFunc.
func (f *framer) frame(b []byte) (n, need, skip int, err error) {
	n, need, err = f.measure(b)
	if n > 0 || err != nil {
		f.pos, f.left = 0, 0
	}
	return n, need, 0, err
}

func (f *framer) measure(b []byte) (n, need int, err error) {
	if f.left == 0 {
		eol, ok := lineEnd(b, 0)
		if !ok {
			return 0, 0, nil
		}
		line := b[:eol]
		if len(line) < 2 || line[len(line)-2] != '\r' || line[0] != '*' || len(line) > maxLine {
			return eol, 0, nil // inline, or an error readRequest reports
		}
		k, err := parseInt(line[1 : len(line)-2])
		if err != nil || k > maxArgs || k <= 0 {
			return eol, 0, nil
		}
		f.pos, f.left = eol, k
	}
	limit := maxRequest(f.maxValue)
	for f.left > 0 {
		eol, ok := lineEnd(b, f.pos)
		if !ok {
			return 0, 0, nil
		}
		hdr := b[f.pos:eol]
		if len(hdr) < 3 || hdr[len(hdr)-2] != '\r' || hdr[0] != '$' || len(hdr) > maxLine {
			return eol, 0, nil
		}
		l, err := parseInt(hdr[1 : len(hdr)-2])
		if err != nil || l < 0 || l > f.maxValue {
			return eol, 0, nil
		}
		end := eol + l + 2
		if end > limit {
			return 0, 0, errTooLarge
		}
		if end > len(b) {
			return 0, end, nil
		}
		f.pos, f.left = end, f.left-1
		if b[end-2] != '\r' || b[end-1] != '\n' {
			return end, 0, nil
		}
	}
	return f.pos, 0, nil
}

// lineEnd finds the end of the line starting at from: just past its "\n",
// or, for a line already longer than readRequest takes, all of b (the
// reader stops there with its error).
func lineEnd(b []byte, from int) (int, bool) {
	if i := bytes.IndexByte(b[from:], '\n'); i >= 0 {
		return from + i + 1, true
	}
	if len(b)-from > maxLine {
		return len(b), true
	}
	return 0, false
}
