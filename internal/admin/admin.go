// Package admin serves the admin surface every podkit daemon shares:
// /healthz, /readyz with a one-line reason, and /metrics from a dedicated registry.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
)

// ErrShuttingDown is the readiness reason once shutdown has started.
var ErrShuttingDown = errors.New("shutting down")

// Check reports whether a part of the daemon can do its job right now. The
// error's text is the reason /readyz gives; keep it to one line.
type Check func(ctx context.Context) error

// NewRegistry returns a registry with the Go and process collectors and a
// <namespace>_build_info gauge, ready for the daemon's own metrics.
func NewRegistry(namespace, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace:   namespace,
			Name:        "build_info",
			Help:        "A metric with a constant '1' value labelled by the version and Go version it was built with.",
			ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	return reg
}

// Server is the admin HTTP server.
type Server struct {
	log      *slog.Logger
	mux      *http.ServeMux
	srv      *http.Server
	ln       net.Listener
	draining atomic.Bool

	webConfig string

	mu     sync.Mutex
	checks []namedCheck
}

type namedCheck struct {
	name string
	fn   Check
}

// New returns an admin server whose /metrics serves reg. Handle adds more
// routes before Listen.
func New(reg *prometheus.Registry, log *slog.Logger) *Server {
	return NewWithMetrics(promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg,
		EnableOpenMetrics: true,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelError),
	}), log)
}

// NewWithMetrics returns an admin server whose /metrics is served by
// metrics, for a daemon that writes its exposition itself (the adapter).
func NewWithMetrics(metrics http.Handler, log *slog.Logger) *Server {
	s := &Server{log: log, mux: http.NewServeMux()}
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	s.mux.HandleFunc("/readyz", s.readyz)
	s.mux.Handle("/metrics", metrics)
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// SetWebConfig serves TLS and basic auth from an exporter-toolkit web
// configuration file. The file is checked now, so a bad one fails at start-up.
func (s *Server) SetWebConfig(file string) error {
	if err := ValidateWebConfig(file); err != nil {
		return err
	}
	s.webConfig = file
	return nil
}

// ValidateWebConfig checks an exporter-toolkit web configuration file ("" is
// plain HTTP), for daemons that check their flags before building a server.
func ValidateWebConfig(file string) error {
	if err := web.Validate(file); err != nil {
		return fmt.Errorf("web config %s: %w", file, err)
	}
	return nil
}

// Handle adds a route, for daemons that serve more than the admin surface.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// AddCheck adds a readiness check; /readyz is 200 only when every check passes.
func (s *Server) AddCheck(name string, fn Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, namedCheck{name, fn})
}

// Ready runs the readiness checks in order and returns the first failure.
func (s *Server) Ready(ctx context.Context) error {
	if s.draining.Load() {
		return ErrShuttingDown
	}
	s.mu.Lock()
	checks := append([]namedCheck(nil), s.checks...)
	s.mu.Unlock()
	for _, c := range checks {
		if err := c.fn(ctx); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, oneLine(err.Error()))
		return
	}
	fmt.Fprintln(w, "ok")
}

func oneLine(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' || s[i] == '\r' {
			return s[:i]
		}
	}
	return s
}

// Listen binds addr. It is separate from Serve so a bad address is reported
// at start-up and tests can bind port 0 and read Addr.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listen %s: %w", addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address, after Listen.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until Shutdown; a clean stop returns nil.
func (s *Server) Serve() error {
	var err error
	if s.webConfig == "" {
		err = s.srv.Serve(s.ln)
	} else {
		file := s.webConfig
		err = web.Serve(s.ln, s.srv, &web.FlagConfig{WebConfigFile: &file}, s.log)
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin server: %w", err)
	}
	return nil
}

// Drain makes /readyz answer 503 from now on, while the server keeps
// answering probes and scrapes during the daemon's drain.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown stops the server, waiting for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.Drain()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
		return fmt.Errorf("admin shutdown: %w", err)
	}
	return nil
}

// Run serves until ctx is cancelled, then drains readiness, waits for
// drained to close (the daemon's own in-flight work; nil for none) and stops
// the server, letting in-flight requests finish, all within timeout. It is
// the usual way a daemon's errgroup runs the admin server.
func (s *Server) Run(ctx context.Context, drained <-chan struct{}, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Drain()
	end := time.Now().Add(timeout)
	if drained != nil {
		deadline := time.NewTimer(timeout)
		defer deadline.Stop()
		select {
		case <-drained:
		case <-deadline.C:
		}
	}
	// Requests in flight (a scrape, a probe) get what is left, at least a second.
	sctx, cancel := context.WithDeadline(context.Background(), later(end, time.Now().Add(time.Second)))
	defer cancel()
	err := s.Shutdown(sctx)
	<-errc
	return err
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
