package tail

import "bytes"

// Line is one line of a file, without its LF or CRLF.
type Line struct {
	Data []byte
	// Truncated marks a line cut at the maximum line length; the rest of it,
	// up to the next LF, was dropped and counted.
	Truncated bool
	// Partial marks a last line without LF emitted after the flush timeout
	// or at shutdown.
	Partial bool
}

// Framer splits a byte stream into lines. It never holds more than max bytes
// of an unfinished line, so a long line never stalls a file: the first max
// bytes are emitted, marked Truncated, and the rest is skipped up to the LF.
type Framer struct {
	max        int
	discarding bool
	// Dropped counts bytes skipped from over-long lines.
	Dropped int64
}

// NewFramer returns a framer for lines of at most max bytes (LF excluded).
func NewFramer(max int) *Framer {
	if max < 1 {
		max = 1
	}
	return &Framer{max: max}
}

// Frame appends the complete lines in data to lines. rest is the length of
// the unfinished tail of data that the caller keeps and passes again, with
// more bytes after it, to the next call. consumed is how many bytes of data
// are finished with: the resumable offset advances by it. Lines point into
// data.
func (f *Framer) Frame(data []byte, lines []Line) (out []Line, consumed, rest int) {
	out = lines
	pos := 0
	for pos < len(data) {
		i := bytes.IndexByte(data[pos:], '\n')
		if i < 0 {
			break
		}
		end := pos + i
		if f.discarding {
			f.Dropped += int64(end - pos)
			f.discarding = false
		} else {
			line := data[pos:end]
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			if len(line) > f.max {
				f.Dropped += int64(len(line) - f.max)
				out = append(out, Line{Data: line[:f.max], Truncated: true})
			} else {
				out = append(out, Line{Data: line})
			}
		}
		pos = end + 1
	}
	tail := data[pos:]
	if f.discarding {
		f.Dropped += int64(len(tail))
		return out, len(data), 0
	}
	// An unfinished line of more than max bytes (plus room for a CR) is
	// emitted now, truncated, instead of waiting for its end.
	if len(tail) > f.max+1 {
		f.Dropped += int64(len(tail) - f.max)
		out = append(out, Line{Data: tail[:f.max], Truncated: true})
		f.discarding = true
		return out, len(data), 0
	}
	return out, pos, len(tail)
}

// Flush returns the unfinished tail as a Partial line (CR kept out) and
// resets the framer.
func (f *Framer) Flush(tail []byte) Line {
	if len(tail) > 0 && tail[len(tail)-1] == '\r' {
		tail = tail[:len(tail)-1]
	}
	return Line{Data: tail, Partial: true}
}

// Reset forgets any over-long line being skipped, after a truncation.
func (f *Framer) Reset() { f.discarding = false }
