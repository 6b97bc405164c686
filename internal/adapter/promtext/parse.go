// Package promtext re-exposes a Prometheus text or OpenMetrics endpoint:
// an allocation-light parser into exposition batches, and rules that
// rename families, add or drop labels and filter families and series.
package promtext

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("exposition syntax error")

// Parser parses exposition text. It keeps scratch space between calls; it is
// not safe for concurrent use.
type Parser struct {
	labels []exposition.Label
	rules  *Rules
	// state of the family being parsed
	famIdx  int // index in the batch, -1 before the first family
	famName string
	famType exposition.Type
	help    map[string]string
	types   map[string]exposition.Type
	skip    bool // the current family is filtered out
	out     string
	renamed map[string]string // sample suffix -> output sample name
	// last is the batch size of the last parse, so the next one allocates
	// its slices once.
	lastSamples, lastLabels, lastBytes int
}

// NewParser returns a parser applying rules (nil: none).
func NewParser(rules *Rules) *Parser {
	return &Parser{rules: rules, help: map[string]string{}, types: map[string]exposition.Type{}}
}

// Parse appends the families of data (text 0.0.4 or OpenMetrics 1.0) to b.
// Timestamps, exemplars and _created samples are dropped: the adapter
// exposes current values only.
func (p *Parser) Parse(data string, b *exposition.Batch) error {
	p.famIdx, p.famName, p.skip = -1, "", false
	clear(p.help)
	clear(p.types)
	b.Grow(p.lastSamples, p.lastLabels, p.lastBytes)
	s0, l0, a0 := b.Size()
	defer func() {
		// Nothing may keep referring to data after the parse.
		clear(p.help)
		clear(p.types)
		clear(p.renamed)
		p.famName, p.out = "", ""
		s1, l1, a1 := b.Size()
		p.lastSamples, p.lastLabels, p.lastBytes = s1-s0, l1-l0, a1-a0
	}()
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		var line string
		if i := strings.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, ""
		}
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		if err := p.line(line, b); err != nil {
			return fmt.Errorf("line %d: %w", lineNo, err)
		}
	}
	return nil
}

func (p *Parser) line(line string, b *exposition.Batch) error {
	i := 0
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	line = line[i:]
	if line == "" {
		return nil
	}
	if line[0] == '#' {
		return p.comment(line)
	}
	return p.sample(line, b)
}

func (p *Parser) comment(line string) error {
	rest := trimLeft(line[1:])
	kw, rest, _ := strings.Cut(rest, " ")
	if kw != "HELP" && kw != "TYPE" {
		return nil // plain comment, # UNIT or # EOF
	}
	rest = trimLeft(rest)
	name, arg, _ := strings.Cut(rest, " ")
	if !exposition.ValidMetricName(name) {
		return fmt.Errorf("%w: bad metric name %q in # %s", ErrSyntax, trunc(name), kw)
	}
	if kw == "HELP" {
		p.help[name] = unescapeHelp(arg)
		return nil
	}
	t, ok := exposition.ParseType(strings.TrimSpace(arg))
	if !ok {
		// gaugehistogram, stateset, info: kept, untyped.
		t = exposition.Untyped
	}
	p.types[name] = t
	return nil
}

// belongs reports whether sample name s is part of the family being parsed,
// and whether it is a _created sample to drop.
func (p *Parser) belongs(s string) (ok, drop bool) {
	if p.famIdx < 0 && !p.skip {
		return false, false
	}
	base := p.famName
	if !strings.HasPrefix(s, base) {
		return false, false
	}
	suf := s[len(base):]
	switch p.famType {
	case exposition.Counter:
		created := suf == "_created" || suf == "_total_created"
		return suf == "" || suf == "_total" || created, created
	case exposition.Summary:
		return suf == "" || suf == "_sum" || suf == "_count" || suf == "_created", suf == "_created"
	case exposition.Histogram:
		return suf == "_bucket" || suf == "_sum" || suf == "_count" || suf == "_created", suf == "_created"
	}
	return suf == "", false
}

// startFamily begins the family that sample name s belongs to.
func (p *Parser) startFamily(s string, b *exposition.Batch) {
	name, typ := s, exposition.Untyped
	if t, ok := p.types[s]; ok {
		typ = t
	} else {
		for _, suf := range [...]string{"_total", "_bucket", "_sum", "_count", "_created"} {
			if base, ok := strings.CutSuffix(s, suf); ok {
				if t, ok := p.types[base]; ok && t != exposition.Untyped && t != exposition.Gauge {
					name, typ = base, t
				}
				break
			}
		}
	}
	p.famName, p.famType = name, typ
	out := name
	if typ == exposition.Counter && s == name+"_total" {
		// OpenMetrics names the family without _total; the text format
		// names it as its samples.
		out = s
	}
	help := p.help[name]
	var keep bool
	out, keep = p.rules.family(out)
	p.skip = !keep
	if !keep {
		p.famIdx = -1
		return
	}
	// The input may be a buffer reused after this parse (see Source.Scrape):
	// what the batch keeps by reference is copied.
	out, help = strings.Clone(out), strings.Clone(help)
	p.out = out
	clear(p.renamed)
	b.Family(out, help, typ)
	p.famIdx = b.Len() - 1
}

func (p *Parser) sample(line string, b *exposition.Batch) error {
	i := 0
	for i < len(line) && isNameChar(line[i], i) {
		i++
	}
	if i == 0 {
		return fmt.Errorf("%w: %q does not start with a metric name", ErrSyntax, trunc(line))
	}
	name := line[:i]
	ok, drop := p.belongs(name)
	if !ok {
		p.startFamily(name, b)
		_, drop = p.belongs(name)
	}
	p.labels = p.labels[:0]
	rest := line[i:]
	if len(rest) > 0 && rest[0] == '{' {
		var err error
		rest, err = p.parseLabels(rest[1:])
		if err != nil {
			return err
		}
	}
	rest = trimLeft(rest)
	end := -1
	for j := 0; j < len(rest); j++ {
		if rest[j] == ' ' || rest[j] == '\t' {
			end = j
			break
		}
	}
	valText := rest
	if end >= 0 {
		valText = rest[:end]
	}
	v, err := parseFloat(valText)
	if err != nil {
		return fmt.Errorf("%w: value %q of %s", ErrSyntax, trunc(valText), name)
	}
	if drop || p.skip {
		return nil
	}
	if p.rules != nil {
		if !p.rules.series(p.labels) {
			return nil
		}
		p.labels = p.rules.relabel(p.labels)
	}
	out := name
	if p.out != p.famName {
		out = p.renameSample(name)
	}
	b.Sample(out, v, p.labels...)
	return nil
}

func (p *Parser) renameSample(name string) string {
	suf := name[len(p.famName):]
	if n, ok := p.renamed[suf]; ok {
		return n
	}
	if p.renamed == nil {
		p.renamed = map[string]string{}
	}
	base := p.out
	if p.famType == exposition.Counter && strings.HasSuffix(base, "_total") && suf == "_total" {
		suf = ""
	}
	n := base + suf
	p.renamed[name[len(p.famName):]] = n
	return n
}

func (p *Parser) parseLabels(s string) (string, error) {
	for {
		s = trimLeft(s)
		if s == "" {
			return "", fmt.Errorf("%w: unterminated label set", ErrSyntax)
		}
		if s[0] == '}' {
			return s[1:], nil
		}
		j := 0
		for j < len(s) && isLabelChar(s[j], j) {
			j++
		}
		if j == 0 {
			return "", fmt.Errorf("%w: bad label name at %q", ErrSyntax, trunc(s))
		}
		lname := s[:j]
		s = trimLeft(s[j:])
		if len(s) < 2 || s[0] != '=' {
			return "", fmt.Errorf("%w: label %s has no '='", ErrSyntax, lname)
		}
		s = trimLeft(s[1:])
		if s == "" || s[0] != '"' {
			return "", fmt.Errorf("%w: label %s value is not quoted", ErrSyntax, lname)
		}
		s = s[1:]
		k := 0
		escaped := false
		for k < len(s) && s[k] != '"' {
			if s[k] == '\\' {
				escaped = true
				k++
			}
			k++
		}
		if k >= len(s) {
			return "", fmt.Errorf("%w: label %s value is not terminated", ErrSyntax, lname)
		}
		val := s[:k]
		if escaped {
			val = unescapeLabel(val)
		}
		p.labels = append(p.labels, exposition.Label{Name: lname, Value: val})
		s = trimLeft(s[k+1:])
		if s != "" && s[0] == ',' {
			s = s[1:]
		} else if s == "" || s[0] != '}' {
			return "", fmt.Errorf("%w: expected ',' or '}' after label %s", ErrSyntax, lname)
		}
	}
}

func parseFloat(s string) (float64, error) {
	switch s {
	case "+Inf", "Inf":
		return strconv.ParseFloat("+Inf", 64)
	}
	// ParseFloat accepts "inf", "infinity" and hex floats too; the formats do
	// not, but accepting them loses nothing.
	return strconv.ParseFloat(s, 64)
}

func trimLeft(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	return s
}

func isNameChar(c byte, i int) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
}

func isLabelChar(c byte, i int) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
}

func unescapeLabel(s string) string {
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			i++
			switch s[i] {
			case 'n':
				c = '\n'
			default:
				c = s[i]
			}
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

func unescapeHelp(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	return unescapeLabel(s)
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}
