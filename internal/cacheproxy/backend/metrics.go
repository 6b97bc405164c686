package backend

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the per-pool and per-server series. Labels are bounded: pool
// and server names come from the configuration, commands from a fixed table.
type Metrics struct {
	requests  *prometheus.CounterVec
	errors    *prometheus.CounterVec
	ejections *prometheus.CounterVec
	inflight  *prometheus.GaugeVec
	up        *prometheus.GaugeVec
	latency   *prometheus.HistogramVec
	commands  *prometheus.CounterVec
	clients   *prometheus.GaugeVec
	clientErr *prometheus.CounterVec
}

// ErrorKinds are the values of the kind label of errors_total.
var ErrorKinds = []string{"timeout", "connect", "connection", "down", "closed", "protocol"}

// NewMetrics registers the series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	ps := []string{"pool", "server"}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ambassador", Name: "server_requests_total",
			Help: "Requests sent to (or failed for) a cache server."}, ps),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ambassador", Name: "server_errors_total",
			Help: "Requests to a cache server that got no reply, by kind: timeout, connect, connection, down, closed, protocol."},
			append(ps, "kind")),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ambassador", Name: "server_ejections_total",
			Help: "Times a server was taken out after server_failure_limit consecutive failures."}, ps),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "ambassador", Name: "server_in_flight_requests",
			Help: "Requests sent to a server and not yet answered."}, ps),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "ambassador", Name: "server_up",
			Help: "1 while a server takes requests, 0 while it is ejected or down."}, ps),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "ambassador", Name: "server_request_duration_seconds",
			Help:    "Time from queueing a request to a server to reading its reply.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, ps),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ambassador", Name: "commands_total",
			Help: "Client commands by name (\"other\" for names outside the command table)."}, []string{"pool", "command"}),
		clients: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "ambassador", Name: "client_connections",
			Help: "Open client connections."}, []string{"pool"}),
		clientErr: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "ambassador", Name: "client_errors_total",
			Help: "Client requests answered with an error by the ambassador itself, by kind: unsupported, malformed, auth."},
			[]string{"pool", "kind"}),
	}
	reg.MustRegister(m.requests, m.errors, m.ejections, m.inflight, m.up, m.latency, m.commands, m.clients, m.clientErr)
	return m
}

type serverMetrics struct {
	requests  prometheus.Counter
	ejections prometheus.Counter
	inflight  prometheus.Gauge
	live      prometheus.Gauge
	latency   prometheus.Observer
	byKind    map[string]prometheus.Counter
}

func (s *serverMetrics) errors(kind string) prometheus.Counter { return s.byKind[kind] }

func (m *Metrics) server(pool, name string) *serverMetrics {
	s := &serverMetrics{
		requests:  m.requests.WithLabelValues(pool, name),
		ejections: m.ejections.WithLabelValues(pool, name),
		inflight:  m.inflight.WithLabelValues(pool, name),
		live:      m.up.WithLabelValues(pool, name),
		latency:   m.latency.WithLabelValues(pool, name),
		byKind:    map[string]prometheus.Counter{},
	}
	for _, k := range ErrorKinds {
		s.byKind[k] = m.errors.WithLabelValues(pool, name, k)
	}
	s.live.Set(1)
	return s
}

// forget drops the series of a server removed by a reload, unless a server
// of the same name is still in the pool.
func (m *Metrics) forget(pool, name string, current []*Server) {
	for _, s := range current {
		if s.Name == name {
			return
		}
	}
	l := prometheus.Labels{"pool": pool, "server": name}
	m.requests.DeletePartialMatch(l)
	m.errors.DeletePartialMatch(l)
	m.ejections.DeletePartialMatch(l)
	m.inflight.DeletePartialMatch(l)
	m.up.DeletePartialMatch(l)
	m.latency.DeletePartialMatch(l)
}

// PoolStats are the per-pool counters a protocol handler updates.
type PoolStats struct {
	commands  map[string]prometheus.Counter
	other     prometheus.Counter
	Clients   prometheus.Gauge
	clientErr *prometheus.CounterVec
	pool      string
}

// Pool returns the per-pool counters for the given command names.
func (m *Metrics) Pool(pool string, commands []string) *PoolStats {
	ps := &PoolStats{commands: map[string]prometheus.Counter{}, pool: pool, clientErr: m.clientErr,
		other: m.commands.WithLabelValues(pool, "other"), Clients: m.clients.WithLabelValues(pool)}
	for _, c := range commands {
		ps.commands[c] = m.commands.WithLabelValues(pool, c)
	}
	return ps
}

// Command counts one command; name must be lower case.
func (ps *PoolStats) Command(name []byte) { ps.Counter(name).Inc() }

// Counter is the counter of a command; name must be lower case.
func (ps *PoolStats) Counter(name []byte) prometheus.Counter {
	if c, ok := ps.commands[string(name)]; ok {
		return c
	}
	return ps.other
}

// CommandCounter counts the commands of one client connection: a client
// tends to send the same command over and over, and comparing it with the
// last one costs less than looking it up.
type CommandCounter struct {
	last    []byte
	counter prometheus.Counter
}

// Count counts one command; name must be lower case.
func (cc *CommandCounter) Count(ps *PoolStats, name []byte) {
	if cc.counter == nil || string(name) != string(cc.last) {
		cc.counter = ps.Counter(name)
		cc.last = append(cc.last[:0], name...)
	}
	cc.counter.Inc()
}

// ClientError counts a request the ambassador answered with an error.
func (ps *PoolStats) ClientError(kind string) { ps.clientErr.WithLabelValues(ps.pool, kind).Inc() }
