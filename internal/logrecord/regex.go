package logrecord

import (
	"fmt"
	"regexp"
)

// Regex fills fields from the named groups of a regular expression. A
// group named after the time key gives the event time.
type Regex struct {
	re         *regexp.Regexp
	names      []string
	timeKey    string
	timeLayout string
	idx        []int
}

// NewRegex compiles pattern, which must have at least one named group.
func NewRegex(pattern, timeKey, timeLayout string) (*Regex, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("regex %q: %w", pattern, err)
	}
	names := re.SubexpNames()
	named := false
	for _, n := range names {
		named = named || n != ""
	}
	if !named {
		return nil, fmt.Errorf("regex %q has no named group: use (?P<name>...)", pattern)
	}
	return &Regex{re: re, names: names, timeKey: timeKey, timeLayout: timeLayout}, nil
}

// Parse implements Parser.
func (p *Regex) Parse(line []byte, r *Record) {
	p.idx = p.re.FindSubmatchIndex(line)
	if p.idx == nil {
		r.Str(KeyMessage, line)
		r.Bool(KeyParseError, true)
		return
	}
	for i, n := range p.names {
		if n == "" || p.idx[2*i] < 0 {
			continue
		}
		v := line[p.idx[2*i]:p.idx[2*i+1]]
		if n == p.timeKey {
			if t, ok := parseTime(string(v), p.timeLayout); ok {
				r.Time = t
			}
		}
		r.Str(n, v)
	}
}
