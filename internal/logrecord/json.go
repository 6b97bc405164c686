package logrecord

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"time"
)

// JSON merges a JSON object's fields into the record. A line that is not a
// JSON object is kept raw and flagged with parse_error.
type JSON struct {
	TimeKey    string // "" takes no time from the line
	TimeLayout string // layout for string times; "" means RFC 3339
	keys       []string
}

// Parse implements Parser.
func (p *JSON) Parse(line []byte, r *Record) {
	trimmed := bytes.TrimSpace(line)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		r.Str(KeyMessage, line)
		r.Bool(KeyParseError, true)
		return
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || dec.More() {
		r.Str(KeyMessage, line)
		r.Bool(KeyParseError, true)
		return
	}
	p.keys = p.keys[:0]
	for k := range m {
		p.keys = append(p.keys, k)
	}
	slices.Sort(p.keys) // stable output order
	for _, k := range p.keys {
		v := m[k]
		if k == p.TimeKey && p.TimeKey != "" {
			if t, ok := jsonTime(v, p.TimeLayout); ok {
				r.Time = t
			}
		}
		addJSON(r, k, v)
	}
}

func addJSON(r *Record, k string, v any) {
	switch v := v.(type) {
	case string:
		r.Str(k, []byte(v))
	case json.Number:
		if i, err := v.Int64(); err == nil {
			r.Int(k, i)
		} else if f, err := v.Float64(); err == nil {
			r.Fields = append(r.Fields, Field{Key: k, Kind: Float, Float: f})
		} else {
			r.Str(k, []byte(v))
		}
	case bool:
		r.Bool(k, v)
	case nil:
		r.Fields = append(r.Fields, Field{Key: k, Kind: Null})
	default:
		r.Fields = append(r.Fields, Field{Key: k, Kind: Any, Value: normalize(v)})
	}
}

// normalize turns json.Number inside nested values into int64 or float64.
func normalize(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		if f, err := v.Float64(); err == nil {
			return f
		}
		return string(v)
	case map[string]any:
		for k, x := range v {
			v[k] = normalize(x)
		}
	case []any:
		for i, x := range v {
			v[i] = normalize(x)
		}
	}
	return v
}

func jsonTime(v any, layout string) (time.Time, bool) {
	switch v := v.(type) {
	case string:
		return parseTime(v, layout)
	case json.Number:
		f, err := v.Float64()
		if err != nil || f <= 0 || f > 1e11 {
			return time.Time{}, false
		}
		// Integer part and fraction apart, to keep as many digits as float64 has.
		s := strings.SplitN(string(v), ".", 2)
		sec, frac := math.Modf(f)
		t := time.Unix(int64(sec), int64(math.Round(frac*1e9)))
		if len(s) == 2 && len(s[1]) <= 9 {
			ns := s[1] + strings.Repeat("0", 9-len(s[1]))
			var n int64
			for _, c := range ns {
				if c < '0' || c > '9' {
					return t, true
				}
				n = n*10 + int64(c-'0')
			}
			t = time.Unix(int64(sec), n)
		}
		return t, true
	}
	return time.Time{}, false
}

func parseTime(s, layout string) (time.Time, bool) {
	if layout == "" {
		layout = time.RFC3339Nano
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}
