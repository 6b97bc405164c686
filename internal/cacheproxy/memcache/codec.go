// Package memcache proxies the memcached text protocol, classic and meta
// commands, to a pool of memcached servers.
package memcache

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"

	"github.com/podkit/podkit/internal/cacheproxy/backend"
)

// Reply shapes of backend calls.
const (
	kindLine      uint8 = iota // one line; a meta "VA" line carries a value
	kindRetrieval              // VALUE blocks up to END
)

// maxReplyLine bounds one reply line from a server.
const maxReplyLine = 64 << 10

// Codec reads memcached replies.
type Codec struct {
	// MaxValue bounds one value in a reply.
	MaxValue int
}

var _ backend.Codec = Codec{}

// ReadReply implements backend.Codec.
func (c Codec) ReadReply(r *bufio.Reader, call *backend.Call) error {
	for {
		start := len(call.Reply)
		var err error
		call.Reply, err = appendLine(r, call.Reply, maxReplyLine)
		if err != nil {
			return err
		}
		line := call.Reply[start : len(call.Reply)-2]
		switch {
		case call.Kind == kindRetrieval && bytes.HasPrefix(line, []byte("VALUE ")):
			n, ok := atoi(field(line, 3))
			if !ok || n > c.MaxValue {
				return fmt.Errorf("%w: %q", backend.ErrProtocol, line)
			}
			if call.Reply, err = appendBlock(r, call.Reply, n); err != nil {
				return err
			}
		case call.Kind == kindRetrieval && string(line) != "END" && !isError(line):
			return fmt.Errorf("%w: %q", backend.ErrProtocol, line)
		case call.Kind == kindLine && bytes.HasPrefix(line, []byte("VA ")):
			n, ok := atoi(field(line, 1))
			if !ok || n > c.MaxValue {
				return fmt.Errorf("%w: %q", backend.ErrProtocol, line)
			}
			call.Reply, err = appendBlock(r, call.Reply, n)
			return err
		default:
			return nil
		}
	}
}

func isError(line []byte) bool {
	return bytes.Equal(line, []byte("ERROR")) || bytes.HasPrefix(line, []byte("CLIENT_ERROR")) ||
		bytes.HasPrefix(line, []byte("SERVER_ERROR"))
}

// appendBlock appends n data bytes and their CRLF.
func appendBlock(r *bufio.Reader, b []byte, n int) ([]byte, error) {
	start := len(b)
	b = backend.Grow(b, n+2)
	if _, err := io.ReadFull(r, b[start:]); err != nil {
		return b[:start], err
	}
	if b[len(b)-2] != '\r' || b[len(b)-1] != '\n' {
		return b, fmt.Errorf("%w: data block without CRLF", backend.ErrProtocol)
	}
	return b, nil
}

// appendLine appends one line ending in "\n" to b, normalised to end in
// "\r\n"; a longer line than max is backend.ErrLineTooLong.
func appendLine(r *bufio.Reader, b []byte, max int) ([]byte, error) {
	start := len(b)
	b, err := backend.AppendLine(r, b, max)
	if err != nil {
		return b, err
	}
	if len(b)-start < 2 || b[len(b)-2] != '\r' {
		b = append(b[:len(b)-1], '\r', '\n')
	}
	return b, nil
}

// Handshake implements backend.Codec: memcached needs none.
func (Codec) Handshake(net.Conn, *bufio.Reader) error { return nil }

// Probe implements backend.Codec with "version".
func (Codec) Probe(nc net.Conn, r *bufio.Reader) error {
	if _, err := io.WriteString(nc, "version\r\n"); err != nil {
		return err
	}
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("VERSION")) {
		return fmt.Errorf("probe: unexpected reply %q", line)
	}
	return nil
}

// atoi parses a non-negative decimal that fits an int.
func atoi(b []byte) (int, bool) { return backend.Digits(b) }

// field returns the i-th space-separated token of line, or nil; it saves
// the allocation of bytes.Fields on every value of every reply.
func field(line []byte, i int) []byte {
	for n := 0; ; n++ {
		for len(line) > 0 && line[0] == ' ' {
			line = line[1:]
		}
		if len(line) == 0 {
			return nil
		}
		end := bytes.IndexByte(line, ' ')
		if end < 0 {
			end = len(line)
		}
		if n == i {
			return line[:end]
		}
		line = line[end:]
	}
}
