package memcache

import (
	"bytes"
)

// framer measures memcached requests for the event loop without reading
// them: a request is its line, and for a storage command (and ms) the data
// block after it when next would read one. A value too large to take is
// skipped unread after its line, as memcached swallows it.
type framer struct {
	maxValue int
	scanned  int // bytes of the line already searched for its end
	tok      [][]byte
	ends     []int
	cmd      [16]byte
}

// frame implements backend.FrameFunc.
func (f *framer) frame(b []byte) (n, need, skip int, err error) {
	i := bytes.IndexByte(b[f.scanned:], '\n')
	if i < 0 {
		if len(b) > maxLine {
			f.scanned = 0
			return len(b), 0, 0, nil // next reports the line too long
		}
		f.scanned = len(b)
		return 0, 0, 0, nil
	}
	eol := f.scanned + i + 1
	f.scanned = 0
	if eol > maxLine {
		return eol, 0, 0, nil
	}
	line := b[:eol-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	f.tok, f.ends = fields(f.tok[:0], f.ends[:0], line)
	if len(f.tok) == 0 || len(f.tok[0]) > len(f.cmd) {
		return eol, 0, 0, nil
	}
	cmd := f.cmd[:len(f.tok[0])]
	copy(cmd, f.tok[0])
	lowerInPlace(cmd)
	size := blockSize(cmd, f.tok)
	switch {
	case size < 0:
		return eol, 0, 0, nil
	case size > f.maxValue:
		return eol, 0, size + 2, nil
	case eol+size+2 > len(b):
		return 0, eol + size + 2, 0, nil
	}
	return eol + size + 2, 0, 0, nil
}

// blockSize is the length of the data block that follows a request line
// (its command lowered, tok its fields), without its CRLF; -1 when the line
// takes none: another command, or a storage line too malformed to say.
func blockSize(cmd []byte, tok [][]byte) int {
	n := 0
	switch string(cmd) {
	case "set", "add", "replace", "append", "prepend":
		n = 5
	case "cas":
		n = 6
	case "ms":
		if len(tok) < 3 || len(tok[1]) > maxKey {
			return -1
		}
		if size, ok := atoi(tok[2]); ok {
			return size
		}
		return -1
	default:
		return -1
	}
	noreply := len(tok) == n+1 && bytes.Equal(tok[n], noreplyTok)
	if len(tok) != n && !noreply {
		return -1
	}
	size, ok := atoi(tok[4])
	if !ok || len(tok[1]) > maxKey {
		return -1
	}
	if _, ok := atoi(tok[2]); !ok {
		return -1
	}
	return size
}
