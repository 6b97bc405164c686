// Package collect scrapes the adapter's sources, each once per scrape and all
// at once, and turns their batches into one exposition with <ns>_up and
// <ns>_scrape_duration_seconds per source.
package collect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// Source fetches one application's monitoring data and appends it to b. It
// must return when ctx ends.
type Source interface {
	Scrape(ctx context.Context, b *exposition.Batch) error
}

// Namer is implemented by sources whose family names are known at start-up,
// so collisions between sources are found before the first scrape.
type Namer interface {
	Names() []string
}

// Spec describes one configured source.
type Spec struct {
	Name      string // unique; used in logs and adapter_ metrics' source label
	Namespace string // prefix of <ns>_up and <ns>_scrape_duration_seconds
	Source    Source
	Optional  bool // an optional source does not hold /readyz down
}

// ErrClosed is returned by scrapes after Close.
var ErrClosed = errors.New("adapter is shutting down")

type result struct {
	batch *exposition.Batch
	err   error
	dur   time.Duration
	at    time.Time
}

// UpHelper is implemented by sources that keep the HELP text of the
// exporter they replace for <ns>_up.
type UpHelper interface {
	UpHelp() string
}

type entry struct {
	Spec
	upName, durName string
	upHelp          string
	last            atomic.Pointer[result]
	fetches, errs   prometheus.Counter
}

// Collector scrapes the sources. Concurrent scrapes share each source's
// in-flight fetch (singleflight), so N scrapers at once cost one fetch.
type Collector struct {
	entries []*entry
	timeout time.Duration
	log     *slog.Logger
	own     prometheus.Gatherer
	runtime *encodedCache       // nil: none
	meta    map[string]struct{} // every <ns>_up and <ns>_scrape_duration_seconds
	sf      singleflight.Group

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
	base   context.Context
	cancel context.CancelFunc
}

// New checks the specs for name collisions and returns a collector.
// timeout bounds every fetch. reg receives the collector's own adapter_
// metrics and is read on every scrape; runtime (may be nil, see
// NewRuntimeRegistry) is read at most once a second.
func New(specs []Spec, timeout time.Duration, reg *prometheus.Registry, runtime prometheus.Gatherer, log *slog.Logger) (*Collector, error) {
	if len(specs) == 0 {
		return nil, errors.New("no source configured: give at least one -source KIND=ADDRESS or a sources: entry in -config")
	}
	owner := map[string]string{} // family name -> source name
	claim := func(src, name string) error {
		if !exposition.ValidMetricName(name) {
			return fmt.Errorf("source %q: invalid metric name %q", src, name)
		}
		if strings.HasPrefix(name, "adapter_") {
			return fmt.Errorf("source %q: metric name %q uses the adapter_ prefix reserved for the adapter's own metrics", src, name)
		}
		if o, ok := owner[name]; ok {
			if o == src {
				return fmt.Errorf("source %q: metric %q is defined twice", src, name)
			}
			return fmt.Errorf("metric %q is produced by both source %q and source %q: give one a different namespace or name", name, o, src)
		}
		owner[name] = src
		return nil
	}
	fetches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "adapter_source_fetches_total",
		Help: "Fetches of each source's data; concurrent scrapes share one fetch.",
	}, []string{"source"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "adapter_source_fetch_errors_total",
		Help: "Fetches of each source's data that failed or timed out.",
	}, []string{"source"})
	if err := reg.Register(fetches); err != nil {
		return nil, fmt.Errorf("register adapter metrics: %w", err)
	}
	if err := reg.Register(errs); err != nil {
		return nil, fmt.Errorf("register adapter metrics: %w", err)
	}
	c := &Collector{timeout: timeout, log: log, own: reg}
	if runtime != nil {
		c.runtime = &encodedCache{g: runtime, ttl: time.Second}
	}
	c.base, c.cancel = context.WithCancel(context.Background())
	seen := map[string]bool{}
	for _, s := range specs {
		if s.Name == "" || seen[s.Name] {
			return nil, fmt.Errorf("source name %q is empty or used twice: give each source its own name", s.Name)
		}
		seen[s.Name] = true
		e := &entry{Spec: s, upName: s.Namespace + "_up", durName: s.Namespace + "_scrape_duration_seconds",
			fetches: fetches.WithLabelValues(s.Name), errs: errs.WithLabelValues(s.Name)}
		e.upHelp = "Whether the last fetch of the " + s.Name + " source succeeded (1) or not (0)."
		if h, ok := s.Source.(UpHelper); ok {
			e.upHelp = h.UpHelp()
		}
		names := []string{e.upName, e.durName}
		if n, ok := s.Source.(Namer); ok {
			names = append(names, n.Names()...)
		}
		for _, n := range names {
			if err := claim(s.Name, n); err != nil {
				return nil, err
			}
		}
		c.entries = append(c.entries, e)
	}
	c.meta = map[string]struct{}{}
	for _, e := range c.entries {
		c.meta[e.upName] = struct{}{}
		c.meta[e.durName] = struct{}{}
	}
	return c, nil
}

// Close stops new fetches, cancels those in flight and waits for them.
func (c *Collector) Close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

func (c *Collector) fetch(e *entry, timeout time.Duration) *result {
	v, _, _ := c.sf.Do(e.Name, func() (any, error) {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return &result{err: ErrClosed, at: time.Now()}, nil
		}
		c.wg.Add(1)
		c.mu.Unlock()
		defer c.wg.Done()

		ctx, cancel := context.WithTimeout(c.base, timeout)
		defer cancel()
		b := new(exposition.Batch)
		start := time.Now()
		err := e.Source.Scrape(ctx, b)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
		r := &result{batch: b, err: err, dur: time.Since(start), at: start}
		e.fetches.Inc()
		if err != nil {
			e.errs.Inc()
			r.batch = nil
		}
		if prev := e.last.Swap(r); (prev == nil || prev.err == nil) && err != nil {
			c.log.Warn("source down", "source", e.Name, "err", err)
		} else if prev != nil && prev.err != nil && err == nil {
			c.log.Info("source up again", "source", e.Name)
		}
		return r, nil
	})
	return v.(*result)
}

// Scrape fetches every source at once, each bounded by timeout (the
// collector's own when zero or larger), and returns the results in
// configuration order.
func (c *Collector) scrape(timeout time.Duration) []*result {
	if timeout <= 0 || timeout > c.timeout {
		timeout = c.timeout
	}
	res := make([]*result, len(c.entries))
	if len(c.entries) == 1 {
		res[0] = c.fetch(c.entries[0], timeout)
		return res
	}
	var wg sync.WaitGroup
	for i, e := range c.entries[1:] {
		wg.Go(func() { res[i+1] = c.fetch(e, timeout) })
	}
	res[0] = c.fetch(c.entries[0], timeout)
	wg.Wait()
	return res
}

// AppendScrape scrapes every source and appends the exposition of all of
// them (not the adapter's own metrics) to dst.
func (c *Collector) AppendScrape(dst []byte, timeout time.Duration, ft exposition.Format) []byte {
	res := c.scrape(timeout)
	var emitted map[string]struct{}
	if len(c.entries) > 1 {
		emitted = make(map[string]struct{}, 64)
	}
	for i, e := range c.entries {
		r := res[i]
		up := 0.0
		if r.err == nil {
			up = 1
			for j := range r.batch.Len() {
				name := r.batch.Name(j)
				if _, taken := c.meta[name]; taken || strings.HasPrefix(name, "adapter_") {
					// The adapter's own families win over a source's.
					continue
				}
				if emitted != nil {
					// Sources with dynamic names (StatsD, re-exposition) may
					// meet another source's family: the first one wins rather
					// than the scrape failing.
					if _, dup := emitted[name]; dup {
						continue
					}
					emitted[name] = struct{}{}
				}
				dst = r.batch.AppendFamily(dst, j, ft)
			}
		}
		meta := exposition.Family{Name: e.upName, Type: exposition.Gauge,
			Help:    e.upHelp,
			Samples: []exposition.Sample{{Name: e.upName, Value: up}}}
		dst = exposition.AppendFamily(dst, &meta, ft)
		meta = exposition.Family{Name: e.durName, Type: exposition.Gauge,
			Help:    "How long the last fetch of the " + e.Name + " source took, in seconds.",
			Samples: []exposition.Sample{{Name: e.durName, Value: r.dur.Seconds()}}}
		dst = exposition.AppendFamily(dst, &meta, ft)
	}
	return dst
}

// readyMaxAge is how old a source's last fetch may be for /readyz to trust
// it instead of fetching again.
const readyMaxAge = 10 * time.Second

// Ready returns nil when every required source's latest fetch succeeded,
// fetching the ones not fetched in the last 10 s.
func (c *Collector) Ready(ctx context.Context) error {
	var failed []string
	for _, e := range c.entries {
		if e.Optional {
			continue
		}
		r := e.last.Load()
		if r == nil || time.Since(r.at) > readyMaxAge {
			timeout := c.timeout
			if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
				timeout = time.Until(d)
			}
			r = c.fetch(e, timeout)
		}
		if r.err != nil {
			failed = append(failed, fmt.Sprintf("source %s: %v", e.Name, oneLine(r.err.Error())))
		}
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}
