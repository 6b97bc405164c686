package promtext

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"sync"
	"unsafe"

	"github.com/podkit/podkit/internal/adapter/exposition"
	"github.com/podkit/podkit/internal/adapter/fetch"
)

// Rename rewrites family names matching Match (anchored) to Replacement,
// which may use $1 / ${name} captures.
type Rename struct {
	Match       *regexp.Regexp
	Replacement string
}

// LabelMatch selects series whose label Name matches Regex (anchored); a
// missing label reads as "".
type LabelMatch struct {
	Name  string
	Regex *regexp.Regexp
}

// Rules transform re-exposed families. A nil *Rules changes nothing.
type Rules struct {
	Prefix     string           // put before every family name (after Rename)
	Rename     []Rename         // first match wins
	Keep       []*regexp.Regexp // family names kept (all when empty), matched before renaming
	Drop       []*regexp.Regexp // family names dropped, matched before renaming
	KeepSeries []LabelMatch     // a series must match all of these
	DropSeries []LabelMatch     // a series matching any of these is dropped
	AddLabels  []exposition.Label
	DropLabels []string
}

func (r *Rules) family(name string) (string, bool) {
	if r == nil {
		return name, true
	}
	if len(r.Keep) > 0 {
		keep := false
		for _, re := range r.Keep {
			if re.MatchString(name) {
				keep = true
				break
			}
		}
		if !keep {
			return "", false
		}
	}
	for _, re := range r.Drop {
		if re.MatchString(name) {
			return "", false
		}
	}
	out := name
	for _, rn := range r.Rename {
		if m := rn.Match.FindStringSubmatchIndex(name); m != nil {
			out = string(rn.Match.ExpandString(nil, rn.Replacement, name, m))
			break
		}
	}
	out = r.Prefix + out
	if !exposition.ValidMetricName(out) {
		return "", false
	}
	return out, true
}

func (r *Rules) series(ls []exposition.Label) bool {
	for _, m := range r.KeepSeries {
		if !m.Regex.MatchString(value(ls, m.Name)) {
			return false
		}
	}
	for _, m := range r.DropSeries {
		if m.Regex.MatchString(value(ls, m.Name)) {
			return false
		}
	}
	return true
}

func (r *Rules) relabel(ls []exposition.Label) []exposition.Label {
	if len(r.DropLabels) > 0 {
		out := ls[:0]
		for _, l := range ls {
			drop := false
			for _, d := range r.DropLabels {
				if l.Name == d {
					drop = true
					break
				}
			}
			if !drop {
				out = append(out, l)
			}
		}
		ls = out
	}
	for _, add := range r.AddLabels {
		replaced := false
		for i := range ls {
			if ls[i].Name == add.Name {
				ls[i].Value = add.Value
				replaced = true
				break
			}
		}
		if !replaced {
			ls = append(ls, add)
		}
	}
	return ls
}

func value(ls []exposition.Label, name string) string {
	for _, l := range ls {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

// Source re-exposes a Prometheus or OpenMetrics endpoint.
type Source struct {
	url     string
	client  *fetch.Client
	rules   *Rules
	maxBody int64
	headers http.Header

	// One scratch, not a sync.Pool: the collector fetches a source once at
	// a time, and a pool would drop the buffer and the parser's size hints
	// at every GC, costing the allocations they exist to save.
	mu  sync.Mutex
	buf bytes.Buffer
	p   *Parser
}

// New returns a source for url; maxBody bounds the upstream body in bytes.
func New(url string, client *fetch.Client, rules *Rules, maxBody int64) *Source {
	s := &Source{url: url, client: client, rules: rules, maxBody: maxBody,
		// Ask for the text format first: cheap to parse, and OpenMetrics's
		// counter naming then never reaches us.
		headers: http.Header{"Accept": {"text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"}}}
	s.p = NewParser(rules)
	return s
}

// Scrape fetches and parses the endpoint.
func (s *Source) Scrape(ctx context.Context, b *exposition.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.client.Get(ctx, s.url, s.headers, &s.buf, s.maxBody); err != nil {
		return err
	}
	// The batch copies what it keeps, so the body is parsed in place: the
	// string must not outlive this call, and the buffer is not written
	// until the parse is over.
	body := s.buf.Bytes()
	if len(body) == 0 {
		return nil
	}
	if err := s.p.Parse(unsafe.String(&body[0], len(body)), b); err != nil {
		return fmt.Errorf("%s: %w", s.url, err)
	}
	return nil
}
