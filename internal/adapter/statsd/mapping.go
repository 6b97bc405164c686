package statsd

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// Mapping is statsd_exporter's mapping file.
type Mapping struct {
	Defaults Defaults `yaml:"defaults"`
	Mappings []Rule   `yaml:"mappings"`
}

// Defaults holds the settings a rule may override; it is statsd_exporter's
// "defaults" block.
type Defaults struct {
	ObserverType        string            `yaml:"observer_type"`
	TimerType           string            `yaml:"timer_type"` // old spelling of observer_type
	MatchType           string            `yaml:"match_type"`
	GlobDisableOrdering bool              `yaml:"glob_disable_ordering"`
	HistogramOptions    *HistogramOptions `yaml:"histogram_options"`
	SummaryOptions      *SummaryOptions   `yaml:"summary_options"`
	Buckets             []float64         `yaml:"buckets"`   // old spelling
	Quantiles           []Quantile        `yaml:"quantiles"` // old spelling
	TTL                 time.Duration     `yaml:"ttl"`
}

// HistogramOptions are a histogram observer's buckets. The native histogram
// settings are accepted for compatibility; the text format cannot carry them.
type HistogramOptions struct {
	Buckets                     []float64 `yaml:"buckets"`
	NativeHistogramBucketFactor float64   `yaml:"native_histogram_bucket_factor"`
	NativeHistogramMaxBuckets   uint32    `yaml:"native_histogram_max_buckets"`
}

// SummaryOptions are a summary observer's objectives and window.
type SummaryOptions struct {
	Quantiles  []Quantile    `yaml:"quantiles"`
	MaxAge     time.Duration `yaml:"max_age"`
	AgeBuckets uint32        `yaml:"age_buckets"`
	BufCap     uint32        `yaml:"buf_cap"`
}

// Quantile is one summary objective.
type Quantile struct {
	Quantile float64 `yaml:"quantile"`
	Error    float64 `yaml:"error"`
}

// Rule is one mapping.
type Rule struct {
	Match            string            `yaml:"match"`
	MatchType        string            `yaml:"match_type"` // glob (default) or regex
	Name             string            `yaml:"name"`
	Labels           map[string]string `yaml:"labels"`
	Help             string            `yaml:"help"`
	HonorLabels      bool              `yaml:"honor_labels"`
	ObserverType     string            `yaml:"observer_type"`
	TimerType        string            `yaml:"timer_type"`
	HistogramOptions *HistogramOptions `yaml:"histogram_options"`
	SummaryOptions   *SummaryOptions   `yaml:"summary_options"`
	Buckets          []float64         `yaml:"buckets"`
	Quantiles        []Quantile        `yaml:"quantiles"`
	MatchMetricType  string            `yaml:"match_metric_type"` // counter, gauge or observer
	Action           string            `yaml:"action"`            // map (default) or drop
	TTL              *time.Duration    `yaml:"ttl"`
	Scale            *float64          `yaml:"scale"`
}

// LoadMapping reads a mapping file strictly.
func LoadMapping(path string) (*Mapping, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Mapping
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil && err.Error() != "EOF" {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}

type labelTmpl struct {
	name, tmpl string
	static     bool
}

type rule struct {
	re          *regexp.Regexp
	name        string
	nameStatic  bool
	labels      []labelTmpl
	help        string
	honor       bool
	histogram   bool
	buckets     []float64
	summary     SummaryOptions
	kinds       int8 // -1: any; else a matchKind
	drop        bool
	ttl         time.Duration
	scale       float64
	description string
}

const (
	matchCounter int8 = iota
	matchGauge
	matchObserver
)

var defaultBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// compile turns the mapping into ordered rules: globs first, then regexes,
// each in file order, as statsd_exporter orders them.
func (m *Mapping) compile() ([]*rule, error) {
	var globs, regexes []*rule
	d := m.Defaults
	for i, r := range m.Mappings {
		where := fmt.Sprintf("mappings[%d] (match %q)", i, r.Match)
		mt := r.MatchType
		if mt == "" {
			mt = d.MatchType
		}
		if mt == "" {
			mt = "glob"
		}
		c := &rule{help: r.Help, honor: r.HonorLabels, kinds: -1, scale: 1,
			description: where}
		var expr string
		switch mt {
		case "glob":
			if r.Match == "" || strings.ContainsAny(r.Match, "[]()^$+?{}|\\") {
				return nil, fmt.Errorf("%s: a glob uses only name components and *", where)
			}
			for j, comp := range strings.Split(r.Match, ".") {
				if j > 0 {
					expr += `\.`
				}
				if comp == "*" {
					expr += `([^.]*)`
					continue
				}
				if strings.Contains(comp, "*") {
					// statsd_exporter rejects prefixed globs such as prefix_*;
					// a regular expression serves the same wish here.
					expr += strings.ReplaceAll(regexp.QuoteMeta(comp), `\*`, `([^.]*)`)
					continue
				}
				expr += regexp.QuoteMeta(comp)
			}
		case "regex":
			expr = r.Match
		default:
			return nil, fmt.Errorf("%s: match_type %q: want glob or regex", where, mt)
		}
		re, err := regexp.Compile("^(?:" + expr + ")$")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		c.re = re
		switch r.Action {
		case "", "map":
		case "drop":
			c.drop = true
		default:
			return nil, fmt.Errorf("%s: action %q: want map or drop", where, r.Action)
		}
		switch r.MatchMetricType {
		case "":
		case "counter":
			c.kinds = matchCounter
		case "gauge":
			c.kinds = matchGauge
		case "observer", "timer", "histogram", "distribution":
			c.kinds = matchObserver
		default:
			return nil, fmt.Errorf("%s: match_metric_type %q: want counter, gauge or observer", where, r.MatchMetricType)
		}
		if !c.drop {
			if r.Name == "" {
				return nil, fmt.Errorf("%s: name is missing", where)
			}
			c.name = r.Name
			c.nameStatic = !strings.Contains(r.Name, "$")
			if c.nameStatic && !exposition.ValidMetricName(r.Name) {
				return nil, fmt.Errorf("%s: invalid metric name %q", where, r.Name)
			}
			keys := make([]string, 0, len(r.Labels))
			for k := range r.Labels {
				if !exposition.ValidLabelName(k) {
					return nil, fmt.Errorf("%s: invalid label name %q", where, k)
				}
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				v := r.Labels[k]
				c.labels = append(c.labels, labelTmpl{name: k, tmpl: v, static: !strings.Contains(v, "$")})
			}
		}
		ot := first(r.ObserverType, r.TimerType, d.ObserverType, d.TimerType, "summary")
		switch ot {
		case "histogram":
			c.histogram = true
		case "summary", "default":
		default:
			return nil, fmt.Errorf("%s: observer_type %q: want histogram or summary", where, ot)
		}
		c.buckets = defaultBuckets
		for _, b := range [][]float64{d.Buckets, bucketsOf(d.HistogramOptions), r.Buckets, bucketsOf(r.HistogramOptions)} {
			if len(b) > 0 {
				c.buckets = b
			}
		}
		if !sort.Float64sAreSorted(c.buckets) {
			return nil, fmt.Errorf("%s: histogram buckets must be in increasing order", where)
		}
		c.summary = SummaryOptions{Quantiles: []Quantile{{0.5, 0.05}, {0.9, 0.01}, {0.99, 0.001}}, MaxAge: 10 * time.Minute, AgeBuckets: 5, BufCap: 500}
		for _, so := range []*SummaryOptions{d.SummaryOptions, r.SummaryOptions} {
			mergeSummary(&c.summary, so)
		}
		for _, q := range [][]Quantile{d.Quantiles, r.Quantiles} {
			if len(q) > 0 {
				c.summary.Quantiles = q
			}
		}
		c.ttl = d.TTL
		if r.TTL != nil {
			c.ttl = *r.TTL
		}
		if r.Scale != nil {
			c.scale = *r.Scale
		}
		if mt == "glob" {
			globs = append(globs, c)
		} else {
			regexes = append(regexes, c)
		}
	}
	return append(globs, regexes...), nil
}

func bucketsOf(h *HistogramOptions) []float64 {
	if h == nil {
		return nil
	}
	return h.Buckets
}

func mergeSummary(dst *SummaryOptions, src *SummaryOptions) {
	if src == nil {
		return
	}
	if len(src.Quantiles) > 0 {
		dst.Quantiles = src.Quantiles
	}
	if src.MaxAge > 0 {
		dst.MaxAge = src.MaxAge
	}
	if src.AgeBuckets > 0 {
		dst.AgeBuckets = src.AgeBuckets
	}
	if src.BufCap > 0 {
		dst.BufCap = src.BufCap
	}
}

func first(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// mapped is the outcome of mapping one StatsD name and kind.
type mapped struct {
	drop   bool
	name   string
	labels []exposition.Label // from the rule, expanded
	rule   *rule              // nil: unmapped, defaults apply
}

func kindClass(k Kind) int8 {
	switch k {
	case KindCounter:
		return matchCounter
	case KindGauge:
		return matchGauge
	}
	return matchObserver
}

// apply maps a StatsD name; rules are tried in order, the first match wins.
func apply(rules []*rule, defaults *rule, name string, k Kind) mapped {
	for _, r := range rules {
		if r.kinds >= 0 && r.kinds != kindClass(k) {
			continue
		}
		m := r.re.FindStringSubmatchIndex(name)
		if m == nil {
			continue
		}
		if r.drop {
			return mapped{drop: true}
		}
		out := mapped{rule: r, name: r.name}
		if !r.nameStatic {
			out.name = exposition.SanitizeName(string(r.re.ExpandString(nil, r.name, name, m)))
		}
		for _, l := range r.labels {
			v := l.tmpl
			if !l.static {
				v = string(r.re.ExpandString(nil, l.tmpl, name, m))
			}
			out.labels = append(out.labels, exposition.Label{Name: l.name, Value: v})
		}
		return out
	}
	return mapped{rule: defaults, name: exposition.SanitizeName(name)}
}
