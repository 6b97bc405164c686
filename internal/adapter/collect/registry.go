package collect

import (
	"bytes"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// NewRuntimeRegistry returns a registry with the Go and process collectors
// and adapter_build_info, as admin.NewRegistry makes them. The collector
// serves it encoded at most once a second: reading /proc and encoding the
// Go runtime's families on every scrape cost over half the CPU of an nginx
// scrape, and a second-old RSS or goroutine count misleads no one.
func NewRuntimeRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "adapter_build_info",
			Help:        "A metric with a constant '1' value labelled by the version and Go version it was built with.",
			ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	return reg
}

// encodedCache keeps a gatherer's exposition in both formats for ttl.
type encodedCache struct {
	g   prometheus.Gatherer
	ttl time.Duration

	mu       sync.Mutex
	at       time.Time
	text, om []byte
}

func (c *encodedCache) appendTo(dst []byte, ft exposition.Format) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) > c.ttl {
		text, om, err := encode(c.g)
		if err != nil {
			return dst, err
		}
		c.text, c.om, c.at = text, om, time.Now()
	}
	if ft == exposition.OpenMetrics {
		return append(dst, c.om...), nil
	}
	return append(dst, c.text...), nil
}

func encode(g prometheus.Gatherer) (text, om []byte, err error) {
	mfs, err := g.Gather()
	if err != nil {
		return nil, nil, err
	}
	var tb, ob bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&tb, mf); err != nil {
			return nil, nil, err
		}
		if _, err := expfmt.MetricFamilyToOpenMetrics(&ob, mf); err != nil {
			return nil, nil, err
		}
	}
	return tb.Bytes(), ob.Bytes(), nil
}
