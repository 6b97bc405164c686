// Package statsd receives StatsD lines over UDP and TCP (with DogStatsD,
// InfluxDB and Librato tags), maps them with statsd_exporter's mapping file
// format and keeps counters, gauges, histograms and summaries for scrapes.
package statsd

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// Kind is a StatsD metric type.
type Kind uint8

// Kinds of StatsD samples.
const (
	KindCounter Kind = iota
	KindGauge
	KindTimer        // ms: converted to seconds
	KindDistribution // h, d: kept as sent
	KindSet
)

// Event is one parsed StatsD sample.
type Event struct {
	Name     []byte    // points into the packet
	Value    float64   // the first of Values
	Values   []float64 // DogStatsD's extended aggregation packs several: name:1:2:3|d
	Kind     Kind
	Relative bool // a gauge with an explicit sign: add, don't set
	Rate     float64
	SetValue []byte // for sets: the member
	Tags     []exposition.Label
}

// ErrLine is wrapped by every parse error.
var ErrLine = errors.New("bad statsd line")

// ParseLine parses one line (without its newline) into ev, reusing ev.Tags.
// Tag styles may not be mixed within one line.
func ParseLine(line []byte, ev *Event) error {
	ev.Tags = ev.Tags[:0]
	ev.Rate = 1
	ev.Relative = false
	ev.SetValue = nil
	ev.Values = ev.Values[:0]
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return fmt.Errorf("%w: no name:value in %q", ErrLine, trunc(line))
	}
	name := line[:colon]
	rest := line[colon+1:]
	styles := 0
	// InfluxDB: name,tag=val,tag2=val2
	if i := bytes.IndexByte(name, ','); i >= 0 {
		if err := parseTags(name[i+1:], ',', '=', ev); err != nil {
			return err
		}
		name = name[:i]
		styles++
	}
	// Librato: name#tag=val,tag2=val2
	if i := bytes.IndexByte(name, '#'); i >= 0 {
		if err := parseTags(name[i+1:], ',', '=', ev); err != nil {
			return err
		}
		name = name[:i]
		styles++
	}
	if len(name) == 0 {
		return fmt.Errorf("%w: empty metric name in %q", ErrLine, trunc(line))
	}
	ev.Name = name
	// value|type[|@rate][|#tags][|c:container][|T<ts>]
	bar := bytes.IndexByte(rest, '|')
	if bar < 0 {
		return fmt.Errorf("%w: no |type in %q", ErrLine, trunc(line))
	}
	val := rest[:bar]
	rest = rest[bar+1:]
	typ := rest
	if i := bytes.IndexByte(rest, '|'); i >= 0 {
		typ, rest = rest[:i], rest[i+1:]
	} else {
		rest = nil
	}
	switch string(typ) {
	case "c":
		ev.Kind = KindCounter
	case "g":
		ev.Kind = KindGauge
	case "ms":
		ev.Kind = KindTimer
	case "h", "d":
		ev.Kind = KindDistribution
	case "s":
		ev.Kind = KindSet
	default:
		return fmt.Errorf("%w: unknown type %q in %q", ErrLine, trunc(typ), trunc(line))
	}
	for len(rest) > 0 {
		part := rest
		if i := bytes.IndexByte(rest, '|'); i >= 0 {
			part, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		switch {
		case len(part) > 1 && part[0] == '@':
			r, err := strconv.ParseFloat(string(part[1:]), 64)
			if err != nil || r <= 0 || r > 1 {
				return fmt.Errorf("%w: bad sample rate %q", ErrLine, trunc(part))
			}
			ev.Rate = r
		case len(part) > 0 && part[0] == '#':
			if err := parseTags(part[1:], ',', ':', ev); err != nil {
				return err
			}
			styles++
		default:
			// DogStatsD container ID (c:), timestamp (T) and unknown
			// extensions carry nothing the exposition keeps.
		}
	}
	if styles > 1 {
		return fmt.Errorf("%w: tag styles mixed in %q", ErrLine, trunc(line))
	}
	if ev.Kind == KindSet {
		ev.SetValue = val
		return nil
	}
	if len(val) == 0 {
		return fmt.Errorf("%w: empty value in %q", ErrLine, trunc(line))
	}
	if ev.Kind == KindGauge && (val[0] == '+' || val[0] == '-') {
		ev.Relative = true
	}
	for len(val) > 0 {
		one := val
		if i := bytes.IndexByte(val, ':'); i >= 0 {
			one, val = val[:i], val[i+1:]
		} else {
			val = nil
		}
		v, err := strconv.ParseFloat(string(one), 64)
		if err != nil {
			return fmt.Errorf("%w: value %q is not a number", ErrLine, trunc(one))
		}
		if ev.Kind == KindCounter && v < 0 {
			return fmt.Errorf("%w: negative counter increment %q", ErrLine, trunc(one))
		}
		ev.Values = append(ev.Values, v)
	}
	ev.Value = ev.Values[0]
	return nil
}

// parseTags reads k<kv>v pairs separated by sep; tags without a value are
// ignored, as statsd_exporter does.
func parseTags(s []byte, sep, kv byte, ev *Event) error {
	for len(s) > 0 {
		part := s
		if i := bytes.IndexByte(s, sep); i >= 0 {
			part, s = s[:i], s[i+1:]
		} else {
			s = nil
		}
		i := bytes.IndexByte(part, kv)
		if i <= 0 || i == len(part)-1 {
			continue
		}
		k := exposition.SanitizeName(string(part[:i]))
		ev.Tags = append(ev.Tags, exposition.Label{Name: k, Value: string(part[i+1:])})
	}
	return nil
}

func trunc(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}
