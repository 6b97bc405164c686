// Package jsonmap turns a JSON document into metrics through configured
// RFC 9535 JSONPath mappings: one parse of the document per scrape, filters
// with && and ||, map keys as label values, strings mapped to numbers.
package jsonmap

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/theory/jsonpath"
	"github.com/theory/jsonpath/spec"

	"github.com/podkit/podkit/internal/adapter/exposition"
	"github.com/podkit/podkit/internal/adapter/fetch"
)

// Metric is one mapping, as written in the YAML configuration.
type Metric struct {
	Name string `yaml:"name"`
	Help string `yaml:"help"`
	// Type is gauge (default), counter or untyped.
	Type string `yaml:"type"`
	// Path selects the nodes, one sample per node: "$.queues.*",
	// "$.pools[?@.state == 'active' && @.size > 0]".
	Path string `yaml:"path"`
	// Value is the sample value, relative to each node ("@.depth"); default
	// the node itself.
	Value string `yaml:"value"`
	// Labels: a literal, "$..." (a path from the root), "@..." (a path from
	// the node), or "key()" / "key(N)": the member name or index of the node
	// (N levels up), which turns map keys into label values.
	Labels map[string]string `yaml:"labels"`
	// ValueMap maps string values to numbers ("UP": 1, "DOWN": 0).
	ValueMap map[string]float64 `yaml:"value_map"`
}

type labelKind uint8

const (
	literal labelKind = iota
	rootPath
	nodePath
	key
)

type label struct {
	name  string
	kind  labelKind
	lit   string
	path  *jsonpath.Path
	level int
}

type mapping struct {
	Metric
	typ    exposition.Type
	path   *jsonpath.Path
	value  *jsonpath.Path // nil: the node itself
	labels []label
}

// Source reads a JSON endpoint.
type Source struct {
	url      string
	client   *fetch.Client
	headers  http.Header
	maxBody  int64
	mappings []mapping
	names    []string
	pool     sync.Pool
}

// ErrValue is wrapped by errors about a value that is not a number.
var ErrValue = errors.New("not a number")

// New compiles the mappings; every error names the mapping at fault.
func New(url string, client *fetch.Client, headers map[string]string, metrics []Metric, maxBody int64) (*Source, error) {
	ms, names, err := Compile(metrics)
	if err != nil {
		return nil, err
	}
	h := http.Header{"Accept": {"application/json"}}
	for k, v := range headers {
		h.Set(k, v)
	}
	s := &Source{url: url, client: client, headers: h, maxBody: maxBody, mappings: ms, names: names}
	s.pool.New = func() any { return new(bytes.Buffer) }
	return s, nil
}

// Compile checks and compiles mappings; it returns them and their family names.
func Compile(metrics []Metric) ([]mapping, []string, error) {
	if len(metrics) == 0 {
		return nil, nil, errors.New("metrics: none configured: a json source needs at least one mapping")
	}
	types := map[string]exposition.Type{}
	var names []string
	var out []mapping
	for i, m := range metrics {
		where := fmt.Sprintf("metrics[%d] (%s)", i, m.Name)
		if !exposition.ValidMetricName(m.Name) {
			return nil, nil, fmt.Errorf("%s: invalid metric name %q", where, m.Name)
		}
		var t exposition.Type
		switch m.Type {
		case "", "gauge":
			t = exposition.Gauge
		case "counter":
			t = exposition.Counter
		case "untyped":
			t = exposition.Untyped
		default:
			return nil, nil, fmt.Errorf("%s: type %q: want gauge, counter or untyped", where, m.Type)
		}
		if prev, ok := types[m.Name]; ok && prev != t {
			return nil, nil, fmt.Errorf("%s: metric %s is already mapped as a %s", where, m.Name, prev)
		} else if !ok {
			types[m.Name] = t
			names = append(names, m.Name)
		}
		mp := mapping{Metric: m, typ: t}
		if mp.Help == "" {
			mp.Help = "Value of " + m.Path + " in the JSON document."
		}
		var err error
		if mp.path, err = jsonpath.Parse(m.Path); err != nil {
			return nil, nil, fmt.Errorf("%s: path %q: %w", where, m.Path, err)
		}
		if m.Value != "" && m.Value != "@" {
			if mp.value, err = relative(m.Value); err != nil {
				return nil, nil, fmt.Errorf("%s: value %q: %w", where, m.Value, err)
			}
		}
		lnames := make([]string, 0, len(m.Labels))
		for k := range m.Labels {
			if !exposition.ValidLabelName(k) || k == "__name__" {
				return nil, nil, fmt.Errorf("%s: invalid label name %q", where, k)
			}
			lnames = append(lnames, k)
		}
		sort.Strings(lnames)
		for _, k := range lnames {
			l, err := compileLabel(k, m.Labels[k])
			if err != nil {
				return nil, nil, fmt.Errorf("%s: label %s: %w", where, k, err)
			}
			mp.labels = append(mp.labels, l)
		}
		out = append(out, mp)
	}
	return out, names, nil
}

func relative(p string) (*jsonpath.Path, error) {
	if !strings.HasPrefix(p, "@") {
		return nil, errors.New("a value path starts with @ (relative to the selected node)")
	}
	return jsonpath.Parse("$" + p[1:])
}

func compileLabel(name, v string) (label, error) {
	l := label{name: name}
	switch {
	case strings.HasPrefix(v, "$"):
		p, err := jsonpath.Parse(v)
		if err != nil {
			return l, err
		}
		l.kind, l.path = rootPath, p
	case strings.HasPrefix(v, "@"):
		p, err := relative(v)
		if err != nil {
			return l, err
		}
		l.kind, l.path = nodePath, p
	case strings.HasPrefix(v, "key(") && strings.HasSuffix(v, ")"):
		arg := v[4 : len(v)-1]
		l.kind = key
		if arg != "" {
			n, err := strconv.Atoi(arg)
			if err != nil || n < 0 {
				return l, fmt.Errorf("%q: want key() or key(N), N levels up", v)
			}
			l.level = n
		}
	default:
		l.kind, l.lit = literal, v
	}
	return l, nil
}

// Names lists the families the source produces.
func (s *Source) Names() []string { return s.names }

// Scrape fetches the document once and applies every mapping to it.
func (s *Source) Scrape(ctx context.Context, b *exposition.Batch) error {
	buf := s.pool.Get().(*bytes.Buffer)
	defer s.pool.Put(buf)
	if err := s.client.Get(ctx, s.url, s.headers, buf, s.maxBody); err != nil {
		return err
	}
	doc, err := Decode(buf.Bytes())
	if err != nil {
		return fmt.Errorf("%s: %w", s.url, err)
	}
	Apply(s.mappings, doc, b)
	return nil
}

// Decode parses a JSON document, keeping numbers exact.
func Decode(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode JSON: more than one document")
	}
	return doc, nil
}

// Apply adds the samples every mapping selects in doc to b. Mappings of one
// name form one family; a label set seen twice keeps its first sample rather
// than breaking the scrape.
func Apply(ms []mapping, doc any, b *exposition.Batch) {
	families := map[string]int{}
	seen := map[string]struct{}{}
	type pending struct {
		fam    string
		v      float64
		labels []exposition.Label
	}
	var samples []pending
	var order []string
	var sig strings.Builder
	for i := range ms {
		m := &ms[i]
		if _, ok := families[m.Name]; !ok {
			families[m.Name] = i
			order = append(order, m.Name)
		}
		nodes := m.path.SelectLocated(doc)
		// Objects decode into Go maps: sort by location so the output
		// order does not change from scrape to scrape.
		nodes.Sort()
		for _, n := range nodes {
			node := n.Node
			if m.value != nil {
				vs := m.value.Select(node)
				if len(vs) == 0 {
					continue
				}
				node = vs[0]
			}
			v, err := number(node, m.ValueMap)
			if err != nil {
				continue
			}
			ls := make([]exposition.Label, 0, len(m.labels))
			ok := true
			for _, l := range m.labels {
				val, found := l.eval(doc, n)
				if !found {
					ok = false
					break
				}
				ls = append(ls, exposition.Label{Name: l.name, Value: val})
			}
			if !ok {
				continue
			}
			sig.Reset()
			sig.WriteString(m.Name)
			for _, l := range ls {
				sig.WriteByte(0xff)
				sig.WriteString(l.Name)
				sig.WriteByte(0xfe)
				sig.WriteString(l.Value)
			}
			if _, dup := seen[sig.String()]; dup {
				continue
			}
			seen[sig.String()] = struct{}{}
			samples = append(samples, pending{m.Name, v, ls})
		}
	}
	for _, name := range order {
		m := &ms[families[name]]
		started := false
		for _, p := range samples {
			if p.fam != name {
				continue
			}
			if !started {
				b.Family(name, m.Help, m.typ)
				started = true
			}
			b.Sample(name, p.v, p.labels...)
		}
	}
}

func (l *label) eval(doc any, n *spec.LocatedNode) (string, bool) {
	switch l.kind {
	case literal:
		return l.lit, true
	case rootPath, nodePath:
		from := doc
		if l.kind == nodePath {
			from = n.Node
		}
		vs := l.path.Select(from)
		if len(vs) == 0 {
			return "", false
		}
		return text(vs[0]), true
	case key:
		i := len(n.Path) - 1 - l.level
		if i < 0 {
			return "", false
		}
		switch e := n.Path[i].(type) {
		case spec.Name:
			return string(e), true
		case spec.Index:
			return strconv.Itoa(int(e)), true
		}
	}
	return "", false
}

func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case nil:
		return ""
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func number(v any, valueMap map[string]float64) (float64, error) {
	switch x := v.(type) {
	case json.Number:
		return strconv.ParseFloat(x.String(), 64)
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case string:
		if f, ok := valueMap[x]; ok {
			return f, nil
		}
		if f, err := strconv.ParseFloat(x, 64); err == nil {
			return f, nil
		}
		return 0, fmt.Errorf("%w: %q (map it with value_map)", ErrValue, x)
	}
	return 0, fmt.Errorf("%w: %T", ErrValue, v)
}
