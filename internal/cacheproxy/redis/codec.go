// Package redis proxies Redis RESP2 (and inline) commands to a pool of
// redis servers: single-key commands by their key, multi-key commands split
// per server and merged, connection commands answered here.
package redis

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"

	"github.com/podkit/podkit/internal/cacheproxy/backend"
)

const (
	maxLine     = 64 << 10
	maxNesting  = 64   // nesting of aggregate replies
	maxPipeline = 1024 // requests read before their replies are written
	maxArgs     = 1 << 20
)

// Codec reads RESP replies and prepares server connections.
type Codec struct {
	MaxValue int
	Auth     string // redis_auth: sent on every new server connection
	DB       int    // redis_db: selected on every new server connection
}

var _ backend.Codec = Codec{}

// ReadReply implements backend.Codec: it appends one raw RESP value.
func (c Codec) ReadReply(r *bufio.Reader, call *backend.Call) error {
	var err error
	call.Reply, err = appendValue(r, call.Reply, c.MaxValue, 0)
	return err
}

var errProto = backend.ErrProtocol

// appendValue copies one RESP value (RESP3 types included) from r to b.
func appendValue(r *bufio.Reader, b []byte, maxValue, depth int) ([]byte, error) {
	if depth > maxNesting {
		return b, fmt.Errorf("%w: nesting too deep", errProto)
	}
	start := len(b)
	b, err := appendLine(r, b)
	if err != nil {
		return b, err
	}
	line := b[start : len(b)-2]
	if len(line) == 0 {
		return b, fmt.Errorf("%w: empty line", errProto)
	}
	switch line[0] {
	case '+', '-', ':', ',', '_', '#', '(':
		return b, nil
	case '$', '!', '=':
		n, err := parseInt(line[1:])
		if err != nil || n < -1 || n > maxValue {
			return b, fmt.Errorf("%w: bad bulk length %q", errProto, line)
		}
		if n < 0 {
			return b, nil
		}
		at := len(b)
		b = backend.Grow(b, n+2)
		if _, err := io.ReadFull(r, b[at:]); err != nil {
			return b, err
		}
		if b[len(b)-2] != '\r' || b[len(b)-1] != '\n' {
			return b, fmt.Errorf("%w: bulk without CRLF", errProto)
		}
		return b, nil
	case '*', '%', '~', '>', '|':
		n, err := parseInt(line[1:])
		if err != nil || n < -1 || n > maxArgs {
			return b, fmt.Errorf("%w: bad aggregate length %q", errProto, line)
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		for range n {
			if b, err = appendValue(r, b, maxValue, depth+1); err != nil {
				return b, err
			}
		}
		return b, nil
	}
	return b, fmt.Errorf("%w: unknown type %q", errProto, line[0])
}

func appendLine(r *bufio.Reader, b []byte) ([]byte, error) {
	start := len(b)
	b, err := backend.AppendLine(r, b, maxLine)
	if errors.Is(err, backend.ErrLineTooLong) {
		return b, fmt.Errorf("%w: line too long", errProto)
	}
	if err != nil {
		return b, err
	}
	if len(b)-start < 2 || b[len(b)-2] != '\r' {
		return b, fmt.Errorf("%w: line without CRLF", errProto)
	}
	return b, nil
}

// Handshake implements backend.Codec: AUTH and SELECT as configured.
func (c Codec) Handshake(nc net.Conn, r *bufio.Reader) error {
	if c.Auth != "" {
		if err := roundTrip(nc, r, "AUTH", c.Auth); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	if c.DB != 0 {
		if err := roundTrip(nc, r, "SELECT", strconv.Itoa(c.DB)); err != nil {
			return fmt.Errorf("select %d: %w", c.DB, err)
		}
	}
	return nil
}

// Probe implements backend.Codec with PING.
func (c Codec) Probe(nc net.Conn, r *bufio.Reader) error { return roundTrip(nc, r, "PING") }

func roundTrip(nc net.Conn, r *bufio.Reader, args ...string) error {
	var b []byte
	b = appendCommand(b, args...)
	if _, err := nc.Write(b); err != nil {
		return err
	}
	reply, err := appendValue(r, nil, 1<<20, 0)
	if err != nil {
		return err
	}
	if reply[0] == '-' {
		return errors.New(string(bytes.TrimSpace(reply[1:])))
	}
	return nil
}

func appendCommand(b []byte, args ...string) []byte {
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, '\r', '\n')
	for _, a := range args {
		b = appendBulk(b, []byte(a))
	}
	return b
}

func appendBulk(b, v []byte) []byte {
	b = append(b, '$')
	b = strconv.AppendInt(b, int64(len(v)), 10)
	b = append(b, '\r', '\n')
	b = append(b, v...)
	return append(b, '\r', '\n')
}

// valueLen measures the RESP value at the start of b (a complete reply).
func valueLen(b []byte) (int, bool) {
	eol := bytes.IndexByte(b, '\n')
	if eol < 1 {
		return 0, false
	}
	line := b[:eol-1]
	if len(line) == 0 {
		return 0, false
	}
	switch line[0] {
	case '$', '!', '=':
		n, err := parseInt(line[1:])
		if err != nil {
			return 0, false
		}
		if n < 0 {
			return eol + 1, true
		}
		if eol+1+n+2 > len(b) {
			return 0, false
		}
		return eol + 1 + n + 2, true
	case '*', '%', '~', '>', '|':
		n, err := parseInt(line[1:])
		if err != nil {
			return 0, false
		}
		if line[0] == '%' || line[0] == '|' {
			n *= 2
		}
		off := eol + 1
		for range n {
			l, ok := valueLen(b[off:])
			if !ok {
				return 0, false
			}
			off += l
		}
		return off, true
	}
	return eol + 1, true
}

var errNotInt = errors.New("not an integer")

// parseInt is strconv.Atoi on bytes, without making a string of them: an
// optional sign and backend.Digits.
func parseInt(b []byte) (int, error) {
	neg := false
	if len(b) > 0 && (b[0] == '-' || b[0] == '+') {
		neg = b[0] == '-'
		b = b[1:]
	}
	n, ok := backend.Digits(b)
	if !ok {
		return 0, errNotInt
	}
	if neg {
		n = -n
	}
	return n, nil
}
