package backend

import (
	"bufio"
	"errors"
	"io"
)

// ErrLineTooLong is AppendLine's answer to a line longer than its bound.
var ErrLineTooLong = errors.New("line too long")

// AppendLine appends one line read from r, up to and including its "\n", to
// b, in place of bufio's own buffer limit: a line longer than max bytes is
// ErrLineTooLong, and EOF inside a line is io.ErrUnexpectedEOF. The codecs
// check the line ending each in their protocol's way.
func AppendLine(r *bufio.Reader, b []byte, max int) ([]byte, error) {
	start := len(b)
	for {
		frag, err := r.ReadSlice('\n')
		if len(b)-start+len(frag) > max {
			return b, ErrLineTooLong
		}
		b = append(b, frag...)
		if err == nil {
			return b, nil
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF && len(b) > start {
				err = io.ErrUnexpectedEOF
			}
			return b, err
		}
	}
}

// Grow extends b by n bytes, reallocating with a quarter to spare when it
// lacks room, so that a value is read straight into its place in b.
func Grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n+len(b)/4)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// Digits parses a non-negative decimal of up to 18 digits from b, without
// making a string of it (a length or count either protocol could use is far
// shorter; a longer one is an error either way).
func Digits(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
