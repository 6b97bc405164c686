// Package exposition holds the metric families a source produces in one
// scrape and writes them in the Prometheus text format 0.0.4 or OpenMetrics 1.0.
//
// It exists instead of const metrics and promhttp because re-exposing 10,000
// upstream series must cost a few milliseconds: a Batch is a handful of slices
// that the writer turns straight into bytes, with no protobuf objects between.
package exposition

import (
	"math"
	"strconv"
	"strings"
)

// Type is a metric family's type.
type Type uint8

// Family types.
const (
	Untyped Type = iota
	Counter
	Gauge
	Summary
	Histogram
)

// String is the type as the text format spells it.
func (t Type) String() string {
	switch t {
	case Counter:
		return "counter"
	case Gauge:
		return "gauge"
	case Summary:
		return "summary"
	case Histogram:
		return "histogram"
	}
	return "untyped"
}

// ParseType reads a type as the text format or OpenMetrics spells it.
func ParseType(s string) (Type, bool) {
	switch s {
	case "counter":
		return Counter, true
	case "gauge":
		return Gauge, true
	case "summary":
		return Summary, true
	case "histogram":
		return Histogram, true
	case "untyped", "unknown", "":
		return Untyped, true
	}
	return Untyped, false
}

// Label is one label pair.
type Label struct{ Name, Value string }

// Sample is one line of exposition: Name is the full sample name, with any
// _total, _sum, _count or _bucket suffix.
type Sample struct {
	Name   string
	Labels []Label
	Value  float64
}

// Family is a named, typed group of samples.
type Family struct {
	Name    string
	Help    string
	Type    Type
	Samples []Sample
}

// Batch is what one source produced in one scrape. Sample names, label
// names and values are copied into one byte arena, and samples and labels
// are pointer-free records: a batch of 10,000 series is four allocations
// the garbage collector never scans, and it holds no reference to the
// buffer it was parsed from.
type Batch struct {
	fams    []famRec
	samples []sampleRec
	labels  []labelRec
	arena   []byte
}

type famRec struct {
	name, help string
	typ        Type
	first, end int // range in samples
}

type span struct{ off, len uint32 }

// noName marks a sample named as its family.
const noName = ^uint32(0)

type sampleRec struct {
	value      float64
	name       span
	lfirst, ln uint32 // range in labels
}

type labelRec struct{ name, value span }

// Reset empties b, keeping its capacity.
func (b *Batch) Reset() {
	b.fams = b.fams[:0]
	b.samples = b.samples[:0]
	b.labels = b.labels[:0]
	b.arena = b.arena[:0]
}

// Grow makes room for more samples, labels and arena bytes, so a source
// that knows the size of its last scrape allocates once.
func (b *Batch) Grow(samples, labels, bytes int) {
	if samples > cap(b.samples)-len(b.samples) {
		b.samples = append(make([]sampleRec, 0, len(b.samples)+samples), b.samples...)
	}
	if labels > cap(b.labels)-len(b.labels) {
		b.labels = append(make([]labelRec, 0, len(b.labels)+labels), b.labels...)
	}
	if bytes > cap(b.arena)-len(b.arena) {
		b.arena = append(make([]byte, 0, len(b.arena)+bytes), b.arena...)
	}
}

// Size reports what b holds, for Grow on the next scrape.
func (b *Batch) Size() (samples, labels, bytes int) {
	return len(b.samples), len(b.labels), len(b.arena)
}

// Family starts a family; the samples added next belong to it.
func (b *Batch) Family(name, help string, t Type) {
	n := len(b.samples)
	b.fams = append(b.fams, famRec{name: name, help: help, typ: t, first: n, end: n})
}

func (b *Batch) put(s string) span {
	off := len(b.arena)
	b.arena = append(b.arena, s...)
	return span{uint32(off), uint32(len(s))}
}

func (b *Batch) str(s span) string { return string(b.arena[s.off : s.off+s.len]) }

// Sample adds a sample to the current family (started by Family).
func (b *Batch) Sample(name string, v float64, labels ...Label) {
	f := &b.fams[len(b.fams)-1]
	rec := sampleRec{value: v, lfirst: uint32(len(b.labels)), ln: uint32(len(labels))}
	if name == f.name {
		rec.name = span{noName, 0}
	} else {
		rec.name = b.put(name)
	}
	for _, l := range labels {
		b.labels = append(b.labels, labelRec{name: b.put(l.Name), value: b.put(l.Value)})
	}
	b.samples = append(b.samples, rec)
	f.end = len(b.samples)
}

// Add is Family followed by one unlabelled Sample of the same name.
func (b *Batch) Add(name, help string, t Type, v float64) {
	b.Family(name, help, t)
	b.Sample(name, v)
}

// Len is the number of families.
func (b *Batch) Len() int { return len(b.fams) }

// Name is the name of family i.
func (b *Batch) Name(i int) string { return b.fams[i].name }

// Get returns family i as a self-contained Family (it copies; for tests
// and inspection, not the scrape path).
func (b *Batch) Get(i int) Family {
	f := b.fams[i]
	out := Family{Name: f.name, Help: f.help, Type: f.typ}
	for _, s := range b.samples[f.first:f.end] {
		smp := Sample{Name: f.name, Value: s.value}
		if s.name.off != noName {
			smp.Name = b.str(s.name)
		}
		for _, l := range b.labels[s.lfirst : s.lfirst+s.ln] {
			smp.Labels = append(smp.Labels, Label{Name: b.str(l.name), Value: b.str(l.value)})
		}
		out.Samples = append(out.Samples, smp)
	}
	return out
}

// AppendFamily appends family i in format ft.
func (b *Batch) AppendFamily(dst []byte, i int, ft Format) []byte {
	f := &b.fams[i]
	if f.first == f.end {
		return dst
	}
	dst = appendHeader(dst, f.name, f.help, f.typ, ft)
	for _, s := range b.samples[f.first:f.end] {
		if s.name.off == noName {
			dst = append(dst, f.name...)
		} else {
			dst = append(dst, b.arena[s.name.off:s.name.off+s.name.len]...)
		}
		if s.ln > 0 {
			dst = append(dst, '{')
			for j, l := range b.labels[s.lfirst : s.lfirst+s.ln] {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = append(dst, b.arena[l.name.off:l.name.off+l.name.len]...)
				dst = append(dst, '=', '"')
				dst = appendLabelValueBytes(dst, b.arena[l.value.off:l.value.off+l.value.len])
				dst = append(dst, '"')
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ' ')
		dst = AppendFloat(dst, s.value)
		dst = append(dst, '\n')
	}
	return dst
}

// AppendTo appends every family in format ft.
func (b *Batch) AppendTo(dst []byte, ft Format) []byte {
	for i := range b.fams {
		dst = b.AppendFamily(dst, i, ft)
	}
	return dst
}

// ValidMetricName reports whether s is a legacy (ASCII) metric name, the
// only kind every scraper and promtool accept.
func ValidMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

// ValidLabelName reports whether s is a legacy label name.
func ValidLabelName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9') {
			continue
		}
		return false
	}
	return true
}

// SanitizeName turns s into a legacy metric name: every other character
// becomes '_', and a leading digit gets a '_' before it.
func SanitizeName(s string) string {
	if ValidMetricName(s) && !strings.Contains(s, ":") {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
			sb.WriteByte(c)
		case c >= '0' && c <= '9':
			if i == 0 {
				sb.WriteByte('_')
			}
			sb.WriteByte(c)
		default:
			sb.WriteByte('_')
		}
	}
	if sb.Len() == 0 {
		return "_"
	}
	return sb.String()
}

// Format is an output format.
type Format uint8

// Output formats.
const (
	Text        Format = iota // text/plain; version=0.0.4
	OpenMetrics               // application/openmetrics-text; version=1.0.0
)

// ContentType is the Content-Type header value of f.
func (f Format) ContentType() string {
	if f == OpenMetrics {
		return "application/openmetrics-text; version=1.0.0; charset=utf-8"
	}
	return "text/plain; version=0.0.4; charset=utf-8"
}

// AppendFamily appends a self-contained family in format ft to dst.
func AppendFamily(dst []byte, f *Family, ft Format) []byte {
	if len(f.Samples) == 0 {
		return dst
	}
	dst = appendHeader(dst, f.Name, f.Help, f.Type, ft)
	for i := range f.Samples {
		dst = AppendSample(dst, &f.Samples[i])
	}
	return dst
}

func appendHeader(dst []byte, name, help string, t Type, ft Format) []byte {
	typ := t.String()
	if ft == OpenMetrics {
		switch t {
		case Counter:
			// OpenMetrics names a counter family without _total; a counter
			// whose samples lack it cannot be typed (what expfmt does too).
			if base, ok := strings.CutSuffix(name, "_total"); ok {
				name = base
			} else {
				typ = "unknown"
			}
		case Untyped:
			typ = "unknown"
		}
	}
	if help != "" {
		dst = append(dst, "# HELP "...)
		dst = append(dst, name...)
		dst = append(dst, ' ')
		dst = appendHelp(dst, help, ft == OpenMetrics)
		dst = append(dst, '\n')
	}
	dst = append(dst, "# TYPE "...)
	dst = append(dst, name...)
	dst = append(dst, ' ')
	dst = append(dst, typ...)
	return append(dst, '\n')
}

// AppendSample appends one sample line.
func AppendSample(dst []byte, s *Sample) []byte {
	dst = append(dst, s.Name...)
	if len(s.Labels) > 0 {
		dst = append(dst, '{')
		for i, l := range s.Labels {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, l.Name...)
			dst = append(dst, '=', '"')
			dst = appendLabelValue(dst, l.Value)
			dst = append(dst, '"')
		}
		dst = append(dst, '}')
	}
	dst = append(dst, ' ')
	dst = AppendFloat(dst, s.Value)
	return append(dst, '\n')
}

// AppendFloat appends v as both formats spell it.
func AppendFloat(dst []byte, v float64) []byte {
	switch {
	case math.IsNaN(v):
		return append(dst, "NaN"...)
	case math.IsInf(v, 1):
		return append(dst, "+Inf"...)
	case math.IsInf(v, -1):
		return append(dst, "-Inf"...)
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.AppendInt(dst, int64(v), 10)
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}

func appendLabelValue(dst []byte, v string) []byte {
	if clean(v) {
		return append(dst, v...)
	}
	return appendEscaped(dst, v)
}

func appendLabelValueBytes(dst, v []byte) []byte {
	if clean(v) {
		return append(dst, v...)
	}
	return appendEscaped(dst, v)
}

func clean[T string | []byte](v T) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\\' || c == '"' || c == '\n' {
			return false
		}
	}
	return true
}

func appendEscaped[T string | []byte](dst []byte, v T) []byte {
	for i := 0; i < len(v); i++ {
		switch c := v[i]; c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '"':
			dst = append(dst, '\\', '"')
		case '\n':
			dst = append(dst, '\\', 'n')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

func appendHelp(dst []byte, h string, om bool) []byte {
	for i := 0; i < len(h); i++ {
		switch c := h[i]; c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '"':
			if om {
				dst = append(dst, '\\', '"')
			} else {
				dst = append(dst, c)
			}
		default:
			dst = append(dst, c)
		}
	}
	return dst
}
