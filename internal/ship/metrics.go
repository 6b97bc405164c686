package ship

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the outputs' metrics, labelled by output.
type Metrics struct {
	shipped *prometheus.CounterVec
	acked   *prometheus.CounterVec
	retries *prometheus.CounterVec
	errors  *prometheus.CounterVec
	rtt     *prometheus.HistogramVec
	pending *prometheus.GaugeVec
}

// NewMetrics registers the outputs' metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		shipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "logsidecar_records_shipped_total", Help: "Records written to an output (retransmissions included)."}, []string{"output"}),
		acked:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "logsidecar_records_acknowledged_total", Help: "Records an output has acknowledged."}, []string{"output"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "logsidecar_chunk_retries_total", Help: "Chunks sent again after a connection failure or an ack timeout."}, []string{"output"}),
		errors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "logsidecar_output_errors_total", Help: "Output errors: failed connects, writes, handshakes and ack timeouts."}, []string{"output"}),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "logsidecar_chunk_round_trip_seconds", Help: "Time from writing a chunk to its acknowledgement.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"output"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "logsidecar_output_buffered_bytes", Help: "Encoded bytes an output holds that are not yet acknowledged."}, []string{"output"}),
	}
	for _, c := range []prometheus.Collector{m.shipped, m.acked, m.retries, m.errors, m.rtt, m.pending} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

type outMetrics struct {
	shipped, acked, retries, errors prometheus.Counter
	rtt                             prometheus.Observer
	pending                         prometheus.Gauge
}

func (m *Metrics) For(output string) outMetrics {
	if m == nil {
		reg := prometheus.NewRegistry()
		m, _ = NewMetrics(reg)
	}
	return outMetrics{
		shipped: m.shipped.WithLabelValues(output),
		acked:   m.acked.WithLabelValues(output),
		retries: m.retries.WithLabelValues(output),
		errors:  m.errors.WithLabelValues(output),
		rtt:     m.rtt.WithLabelValues(output),
		pending: m.pending.WithLabelValues(output),
	}
}
