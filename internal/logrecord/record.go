// Package logrecord turns log lines into records: parsers (raw, JSON, regex,
// nginx, CRI), multiline joining and the fields a record carries.
package logrecord

import (
	"fmt"
	"time"
)

// Kind is the type of a field's value.
type Kind uint8

// Field value kinds.
const (
	String Kind = iota
	Int
	Float
	Bool
	Null
	Any // Value holds a decoded JSON value (map, slice, ...)
)

// Field is one key and value. Bytes may point into the line being parsed:
// a record is encoded before the next line is read.
type Field struct {
	Key   string
	Kind  Kind
	Bytes []byte
	Int   int64
	Float float64
	Value any
}

// Record is one log event. It is reused from line to line.
type Record struct {
	// Time is the event's time from the line, zero when the line has none.
	Time   time.Time
	Fields []Field
}

// Reset empties r, keeping its storage. Old fields are not cleared: they
// point into buffers that live on anyway, and clearing costs GC write
// barriers on every line.
func (r *Record) Reset() {
	r.Time = time.Time{}
	r.Fields = r.Fields[:0]
}

// Str adds a string field.
func (r *Record) Str(key string, v []byte) {
	r.Fields = append(r.Fields, Field{Key: key, Kind: String, Bytes: v})
}

// Int adds an integer field.
func (r *Record) Int(key string, v int64) {
	r.Fields = append(r.Fields, Field{Key: key, Kind: Int, Int: v})
}

// Bool adds a boolean field.
func (r *Record) Bool(key string, v bool) {
	var i int64
	if v {
		i = 1
	}
	r.Fields = append(r.Fields, Field{Key: key, Kind: Bool, Int: i})
}

// Parser fills a record from one line.
type Parser interface {
	// Parse adds the line's fields to r. A line the parser cannot read is
	// still kept, as message with parse_error set: no line is dropped.
	Parse(line []byte, r *Record)
}

// Keys used by every parser.
const (
	KeyMessage    = "message"
	KeyParseError = "parse_error"
)

// NewParser returns the named parser: raw, json, nginx, or regex (with
// pattern). timeKey and timeLayout say where json and regex parsers find
// the event time.
func NewParser(name, pattern, timeKey, timeLayout string) (Parser, error) {
	switch name {
	case "raw", "cri":
		return Raw{}, nil
	case "json":
		return &JSON{TimeKey: timeKey, TimeLayout: timeLayout}, nil
	case "nginx":
		return &Nginx{}, nil
	case "regex":
		return NewRegex(pattern, timeKey, timeLayout)
	}
	return nil, fmt.Errorf("unknown parser %q: want raw, json, regex, nginx or cri", name)
}

// Raw keeps the line as message.
type Raw struct{}

// Parse implements Parser.
func (Raw) Parse(line []byte, r *Record) { r.Str(KeyMessage, line) }
