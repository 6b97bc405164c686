package logrecord

import (
	"bytes"
	"time"
)

// CRI reassembles the container runtime's log format,
//
//	2016-10-06T00:17:09.669794202Z stdout F the message
//
// where a P tag marks a line the runtime split and the next F line ends it.
// Use one CRI per file.
type CRI struct {
	// MaxBytes bounds a reassembled line; past it the rest is dropped and
	// the line is marked Truncated.
	MaxBytes int

	buf       []byte
	pending   bool
	truncated bool
	time      time.Time
	stream    []byte
}

// CRILine is one complete line of a container's output.
type CRILine struct {
	Time      time.Time
	Stream    []byte
	Message   []byte
	Truncated bool
}

// Add reads one line. It returns ok=false while a split line is pending.
// A line that is not in CRI format is returned whole as the message, with
// bad set.
func (c *CRI) Add(line []byte) (out CRILine, ok, bad bool) {
	t, stream, tag, msg, good := splitCRI(line)
	if !good {
		return CRILine{Message: line}, true, true
	}
	partial := len(tag) > 0 && tag[0] == 'P'
	if !c.pending && !partial {
		return CRILine{Time: t, Stream: stream, Message: msg}, true, false
	}
	if !c.pending {
		c.buf, c.truncated = c.buf[:0], false
		c.time = t // the first piece's time is the line's time
		c.stream = append(c.stream[:0], stream...)
		c.pending = true
	}
	c.append(msg)
	if partial {
		return CRILine{}, false, false
	}
	c.pending = false
	return CRILine{Time: c.time, Stream: c.stream, Message: c.buf, Truncated: c.truncated}, true, false
}

func (c *CRI) append(msg []byte) {
	if c.MaxBytes > 0 && len(c.buf)+len(msg) > c.MaxBytes {
		msg = msg[:max(c.MaxBytes-len(c.buf), 0)]
		c.truncated = true
	}
	c.buf = append(c.buf, msg...)
}

// Flush returns a pending split line, if any, as it stands.
func (c *CRI) Flush() (CRILine, bool) {
	if !c.pending {
		return CRILine{}, false
	}
	c.pending = false
	return CRILine{Time: c.time, Stream: c.stream, Message: c.buf, Truncated: c.truncated}, true
}

func splitCRI(line []byte) (t time.Time, stream, tag, msg []byte, ok bool) {
	i := bytes.IndexByte(line, ' ')
	if i <= 0 {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, string(line[:i]))
	if err != nil {
		return
	}
	rest := line[i+1:]
	i = bytes.IndexByte(rest, ' ')
	if i <= 0 {
		return
	}
	stream, rest = rest[:i], rest[i+1:]
	i = bytes.IndexByte(rest, ' ')
	if i < 0 {
		tag, msg = rest, nil
	} else {
		tag, msg = rest[:i], rest[i+1:]
	}
	if len(tag) == 0 || (tag[0] != 'P' && tag[0] != 'F') {
		return
	}
	return t, stream, tag, msg, true
}
