// Package ship delivers encoded log records to outputs: the Fluentd forward
// protocol (batched, acknowledged) and stdout (JSON lines or raw), and says
// when data is acknowledged so checkpoints can advance.
package ship

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/podkit/podkit/internal/logrecord"
	"github.com/tinylib/msgp/msgp"
)

// Event is a record ready to encode: its fields, its resolved time and the
// text it was parsed from.
type Event struct {
	Rec  *logrecord.Record
	Time time.Time
	Raw  []byte
}

// Encoder appends an event in an output's format. One per goroutine.
type Encoder interface {
	Append(dst []byte, ev *Event) []byte
}

// Ack is data's claim on a checkpoint: Retain when data from it is taken,
// Release when that data is acknowledged. Fail marks data that will not be
// delivered in this run (shutdown cut it off): the checkpoint then never
// passes it, whoever releases it, so it is read again after a restart.
type Ack interface {
	Retain()
	Release()
	Fail()
}

// entryEncoder writes forward-protocol entries [time, record].
type entryEncoder struct{ eventTime bool }

func (e entryEncoder) Append(dst []byte, ev *Event) []byte {
	dst = msgp.AppendArrayHeader(dst, 2)
	if e.eventTime {
		dst = appendEventTime(dst, ev.Time)
	} else {
		dst = msgp.AppendInt64(dst, ev.Time.Unix())
	}
	return appendRecord(dst, ev.Rec)
}

// appendEventTime writes fluent.EventTime as the msgpack fixext8 of type 0,
// without the interface conversion msgp.AppendExtension costs per entry.
func appendEventTime(dst []byte, t time.Time) []byte {
	et := fluent.EventTime(t)
	n := len(dst)
	dst = append(dst, 0xd7, byte(et.ExtensionType()), 0, 0, 0, 0, 0, 0, 0, 0)
	et.MarshalBinaryTo(dst[n+2:])
	return dst
}

func appendRecord(dst []byte, r *logrecord.Record) []byte {
	dst = msgp.AppendMapHeader(dst, uint32(len(r.Fields)))
	for i := range r.Fields {
		f := &r.Fields[i]
		dst = msgp.AppendString(dst, f.Key)
		switch f.Kind {
		case logrecord.String:
			dst = msgp.AppendStringFromBytes(dst, f.Bytes)
		case logrecord.Int:
			dst = msgp.AppendInt64(dst, f.Int)
		case logrecord.Float:
			dst = msgp.AppendFloat64(dst, f.Float)
		case logrecord.Bool:
			dst = msgp.AppendBool(dst, f.Int != 0)
		case logrecord.Null:
			dst = msgp.AppendNil(dst)
		default:
			var err error
			if dst, err = msgp.AppendIntf(dst, f.Value); err != nil {
				dst = msgp.AppendNil(dst)
			}
		}
	}
	return dst
}

// JSONEncoder writes one JSON object per line: "time" first (RFC 3339 with
// nanoseconds), then the record's fields.
type JSONEncoder struct{}

// Append implements Encoder.
func (JSONEncoder) Append(dst []byte, ev *Event) []byte {
	dst = append(dst, `{"time":"`...)
	dst = ev.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	for i := range ev.Rec.Fields {
		f := &ev.Rec.Fields[i]
		dst = append(dst, ',')
		dst = appendJSONString(dst, f.Key)
		dst = append(dst, ':')
		switch f.Kind {
		case logrecord.String:
			dst = appendJSONString(dst, f.Bytes)
		case logrecord.Int:
			dst = strconv.AppendInt(dst, f.Int, 10)
		case logrecord.Float:
			if b, err := json.Marshal(f.Float); err == nil {
				dst = append(dst, b...)
			} else {
				dst = append(dst, "null"...)
			}
		case logrecord.Bool:
			dst = strconv.AppendBool(dst, f.Int != 0)
		case logrecord.Null:
			dst = append(dst, "null"...)
		default:
			if b, err := json.Marshal(f.Value); err == nil {
				dst = append(dst, b...)
			} else {
				dst = append(dst, "null"...)
			}
		}
	}
	return append(dst, '}', '\n')
}

// RawEncoder writes the text the record came from, one line per event.
type RawEncoder struct{}

// Append implements Encoder.
func (RawEncoder) Append(dst []byte, ev *Event) []byte {
	return append(append(dst, ev.Raw...), '\n')
}

const hexDigits = "0123456789abcdef"

func appendJSONString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		var r rune
		var size int
		switch v := any(s).(type) {
		case string:
			r, size = utf8.DecodeRuneInString(v[i:])
		case []byte:
			r, size = utf8.DecodeRune(v[i:])
		default:
			r, size = utf8.DecodeRuneInString(string(s[i:]))
		}
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
