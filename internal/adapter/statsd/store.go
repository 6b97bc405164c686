package statsd

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// maxSetMembers bounds the memory one set series holds.
const maxSetMembers = 10000

// maxCache bounds the mapping cache; past it the cache starts again.
const maxCache = 20000

type series struct {
	key     string
	labels  []exposition.Label
	value   float64
	members map[string]struct{}
	hist    prometheus.Histogram
	sum     prometheus.Summary
	last    time.Time
	ttl     time.Duration
}

type family struct {
	name, help string
	typ        exposition.Type
	set        bool
	rule       *rule
	series     map[string]*series
	order      []*series
	les        []string // formatted bucket bounds of a histogram
}

type cached struct {
	mapped
	family string
}

// Store holds the metrics built from StatsD events.
type Store struct {
	mu       sync.Mutex
	rules    []*rule
	defaults *rule
	standard bool
	fams     map[string]*family
	names    []string          // sorted family names
	derived  map[string]string // x_sum, x_count, x_bucket -> x
	cache    [5]map[string]cached
	scratch  []exposition.Label
	key      []byte
	now      func() time.Time

	conflicts prometheus.Counter
}

func newStore(rules []*rule, defaults *rule, standard bool, conflicts prometheus.Counter) *Store {
	s := &Store{rules: rules, defaults: defaults, standard: standard, fams: map[string]*family{},
		derived: map[string]string{}, now: time.Now, conflicts: conflicts}
	for i := range s.cache {
		s.cache[i] = map[string]cached{}
	}
	return s
}

func (s *Store) lookup(ev *Event) cached {
	c := s.cache[ev.Kind]
	if m, ok := c[string(ev.Name)]; ok {
		return m
	}
	if len(c) >= maxCache {
		clear(c)
	}
	m := cached{mapped: apply(s.rules, s.defaults, string(ev.Name), ev.Kind)}
	m.family = m.name
	if s.standard && ev.Kind == KindCounter && !strings.HasSuffix(m.name, "_total") {
		m.family = m.name + "_total"
	}
	c[string(ev.Name)] = m
	return m
}

// handle applies one event; the caller holds s.mu.
func (s *Store) handle(ev *Event) {
	m := s.lookup(ev)
	if m.drop {
		return
	}
	r := m.rule
	// Tags first, then the mapping's labels, which win unless honor_labels.
	ls := append(s.scratch[:0], ev.Tags...)
	for _, l := range m.labels {
		i := slices.IndexFunc(ls, func(x exposition.Label) bool { return x.Name == l.Name })
		switch {
		case i < 0:
			ls = append(ls, l)
		case !r.honor:
			ls[i] = l
		}
	}
	slices.SortFunc(ls, func(a, b exposition.Label) int { return strings.Compare(a.Name, b.Name) })
	s.scratch = ls
	key := s.key[:0]
	for _, l := range ls {
		key = append(key, l.Name...)
		key = append(key, 0xff)
		key = append(key, l.Value...)
		key = append(key, 0xfe)
	}
	s.key = key

	f := s.fams[m.family]
	typ := typeOf(ev.Kind, r)
	if f == nil {
		if !s.claim(m.family, typ) {
			s.conflicts.Inc()
			return
		}
		f = &family{name: m.family, help: r.help, typ: typ, set: ev.Kind == KindSet, rule: r, series: map[string]*series{}}
		if f.help == "" {
			f.help = "StatsD metric " + m.name + "."
		}
		if typ == exposition.Histogram {
			for _, b := range r.buckets {
				f.les = append(f.les, strconv.FormatFloat(b, 'g', -1, 64))
			}
		}
		s.fams[m.family] = f
		i, _ := slices.BinarySearch(s.names, m.family)
		s.names = slices.Insert(s.names, i, m.family)
	} else if f.typ != typ || f.set != (ev.Kind == KindSet) {
		s.conflicts.Inc()
		return
	}
	se := f.series[string(key)]
	if se == nil {
		se = &series{key: string(key), labels: slices.Clone(ls), ttl: r.ttl}
		switch typ {
		case exposition.Histogram:
			se.hist = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x", Help: "x", Buckets: r.buckets})
		case exposition.Summary:
			obj := make(map[float64]float64, len(r.summary.Quantiles))
			for _, q := range r.summary.Quantiles {
				obj[q.Quantile] = q.Error
			}
			se.sum = prometheus.NewSummary(prometheus.SummaryOpts{Name: "x", Help: "x", Objectives: obj,
				MaxAge: r.summary.MaxAge, AgeBuckets: r.summary.AgeBuckets, BufCap: r.summary.BufCap})
		}
		if f.set {
			se.members = map[string]struct{}{}
		}
		f.series[se.key] = se
		f.order = append(f.order, se)
	}
	se.last = s.now()
	if ev.Kind == KindSet {
		if len(se.members) < maxSetMembers {
			se.members[string(ev.SetValue)] = struct{}{}
		}
		se.value = float64(len(se.members))
		return
	}
	for _, v := range ev.Values {
		update(se, ev, v*r.scale)
	}
}

func update(se *series, ev *Event, v float64) {
	switch ev.Kind {
	case KindCounter:
		se.value += v / ev.Rate
	case KindGauge:
		if ev.Relative {
			se.value += v
		} else {
			se.value = v
		}
	default:
		if ev.Kind == KindTimer {
			v /= 1000 // StatsD timers are in milliseconds; Prometheus wants seconds
		}
		n := int(math.Round(1 / ev.Rate))
		for range max(n, 1) {
			if se.hist != nil {
				se.hist.Observe(v)
			} else {
				se.sum.Observe(v)
			}
		}
	}
}

func typeOf(k Kind, r *rule) exposition.Type {
	switch k {
	case KindCounter:
		return exposition.Counter
	case KindGauge, KindSet:
		return exposition.Gauge
	}
	if r.histogram {
		return exposition.Histogram
	}
	return exposition.Summary
}

// claim reserves a family name and, for histograms and summaries, the
// names of their _sum, _count and _bucket samples, so x (a summary) and
// x_count (a gauge) cannot both be exposed.
func (s *Store) claim(name string, typ exposition.Type) bool {
	if !exposition.ValidMetricName(name) || strings.HasPrefix(name, "adapter_") {
		return false
	}
	if _, ok := s.derived[name]; ok {
		return false
	}
	if typ != exposition.Histogram && typ != exposition.Summary {
		return true
	}
	sufs := []string{"_sum", "_count", "_bucket"}
	for _, suf := range sufs {
		if _, ok := s.fams[name+suf]; ok {
			return false
		}
	}
	for _, suf := range sufs {
		s.derived[name+suf] = name
	}
	return true
}

// snapshot appends every family to b, expiring series past their ttl.
func (s *Store) snapshot(b *exposition.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var m dto.Metric
	var ls []exposition.Label
	for _, name := range s.names {
		f := s.fams[name]
		expired := false
		started := false
		for _, se := range f.order {
			if se.ttl > 0 && now.Sub(se.last) > se.ttl {
				delete(f.series, se.key)
				expired = true
				continue
			}
			if !started {
				b.Family(f.name, f.help, f.typ)
				started = true
			}
			switch f.typ {
			case exposition.Histogram:
				m.Reset()
				_ = se.hist.Write(&m)
				h := m.GetHistogram()
				for i, bk := range h.GetBucket() {
					ls = append(append(ls[:0], se.labels...), exposition.Label{Name: "le", Value: f.les[i]})
					b.Sample(f.name+"_bucket", float64(bk.GetCumulativeCount()), ls...)
				}
				ls = append(append(ls[:0], se.labels...), exposition.Label{Name: "le", Value: "+Inf"})
				b.Sample(f.name+"_bucket", float64(h.GetSampleCount()), ls...)
				b.Sample(f.name+"_sum", h.GetSampleSum(), se.labels...)
				b.Sample(f.name+"_count", float64(h.GetSampleCount()), se.labels...)
			case exposition.Summary:
				m.Reset()
				_ = se.sum.Write(&m)
				sm := m.GetSummary()
				for _, q := range sm.GetQuantile() {
					ls = append(append(ls[:0], se.labels...), exposition.Label{Name: "quantile", Value: strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64)})
					b.Sample(f.name, q.GetValue(), ls...)
				}
				b.Sample(f.name+"_sum", sm.GetSampleSum(), se.labels...)
				b.Sample(f.name+"_count", float64(sm.GetSampleCount()), se.labels...)
			default:
				b.Sample(f.name, se.value, se.labels...)
			}
		}
		if expired {
			f.order = slices.DeleteFunc(f.order, func(se *series) bool { _, ok := f.series[se.key]; return !ok })
		}
	}
}
