package collect

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// The formats offered, text first so that a client that accepts anything
// (curl's */*) gets text, while Prometheus, which ranks OpenMetrics first,
// gets OpenMetrics.
var (
	offerText = expfmt.NewFormat(expfmt.TypeTextPlain)
	offerOM   = expfmt.NewFormat(expfmt.TypeOpenMetrics)
	// An OpenMetrics Accept without a version means 0.0.1; the 1.0.0
	// output is what such a client parses too.
	offerOM001 = expfmt.FmtOpenMetrics_0_0_1
)

var gzipPool = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return w }}

// freeBufs keeps a few response buffers. Unlike a sync.Pool it survives
// garbage collections, so a 400 KB exposition does not regrow its buffer on
// every scrape.
var freeBufs = make(chan *bytes.Buffer, 4)

func getBuf() *bytes.Buffer {
	select {
	case b := <-freeBufs:
		return b
	default:
		return new(bytes.Buffer)
	}
}

func putBuf(b *bytes.Buffer) {
	if b.Cap() > 16<<20 {
		return
	}
	b.Reset()
	select {
	case freeBufs <- b:
	default:
	}
}

// MetricsHandler serves the sources' metrics followed by the adapter's own.
// openMetrics false keeps the text format even for OpenMetrics scrapers
// (nginx-prometheus-exporter's counters without _total stay typed then).
func (c *Collector) MetricsHandler(openMetrics bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ft := negotiate(r.Header, openMetrics)
		timeout := c.timeout
		// Answer before Prometheus gives up: a source that hangs costs its
		// _up, not the whole scrape.
		if s := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); s != "" {
			if secs, err := strconv.ParseFloat(s, 64); err == nil && secs > 0 {
				if d := time.Duration(secs * 0.9 * float64(time.Second)); d < timeout {
					timeout = d
				}
			}
		}
		buf := getBuf()
		defer putBuf(buf)
		b := c.AppendScrape(buf.AvailableBuffer(), timeout, ft)
		buf.Write(b)
		if err := c.appendOwn(buf, ft); err != nil {
			c.log.Error("encode adapter metrics", "err", err)
		}
		if ft == exposition.OpenMetrics {
			buf.WriteString("# EOF\n")
		}
		h := w.Header()
		h.Set("Content-Type", ft.ContentType())
		h.Add("Vary", "Accept")
		h.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			gz := gzipPool.Get().(*gzip.Writer)
			gz.Reset(w)
			_, _ = gz.Write(buf.Bytes())
			_ = gz.Close()
			gz.Reset(io.Discard)
			gzipPool.Put(gz)
			return
		}
		h.Set("Content-Length", strconv.Itoa(buf.Len()))
		_, _ = w.Write(buf.Bytes())
	})
}

func (c *Collector) appendOwn(buf *bytes.Buffer, ft exposition.Format) error {
	if c.runtime != nil {
		b, err := c.runtime.appendTo(buf.AvailableBuffer(), ft)
		buf.Write(b)
		if err != nil {
			return err
		}
	}
	mfs, err := c.own.Gather()
	if err != nil {
		return err
	}
	for _, mf := range mfs {
		if ft == exposition.OpenMetrics {
			_, err = expfmt.MetricFamilyToOpenMetrics(buf, mf)
		} else {
			_, err = expfmt.MetricFamilyToText(buf, mf)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func negotiate(h http.Header, openMetrics bool) exposition.Format {
	if !openMetrics || h.Get("Accept") == "" {
		return exposition.Text
	}
	f := expfmt.NegotiateAccept(h, offerText, offerOM, offerOM001)
	if f.FormatType() == expfmt.TypeOpenMetrics {
		return exposition.OpenMetrics
	}
	return exposition.Text
}

func acceptsGzip(h string) bool {
	for part := range strings.SplitSeq(h, ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) != "gzip" {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}

// Server serves /metrics, /healthz and /readyz on one listener, with TLS and
// basic auth from an exporter-toolkit web configuration file when given.
type Server struct {
	c        *Collector
	log      *slog.Logger
	srv      *http.Server
	ln       net.Listener
	webCfg   string
	draining atomic.Bool
}

// NewServer returns a server for c. webConfig is the exporter-toolkit web
// configuration file ("" for plain HTTP); it is checked here so a bad file
// fails at start-up.
func NewServer(c *Collector, openMetrics bool, webConfig string, log *slog.Logger) (*Server, error) {
	if err := web.Validate(webConfig); err != nil {
		return nil, fmt.Errorf("-web-config %s: %w", webConfig, err)
	}
	s := &Server{c: c, log: log, webCfg: webConfig}
	mux := http.NewServeMux()
	mux.Handle("/metrics", c.MetricsHandler(openMetrics))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", s.readyz)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "shutting down")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.c.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, oneLine(err.Error()))
		return
	}
	fmt.Fprintln(w, "ok")
}

// Listen binds addr, so a bad address fails at start-up.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-listen %s: %w", addr, err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address, after Listen.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run serves until ctx ends; then /readyz answers 503 at once, in-flight
// scrapes get up to timeout to finish, and the server stops.
func (s *Server) Run(ctx context.Context, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		webCfg := s.webCfg
		err := web.Serve(s.ln, s.srv, &web.FlagConfig{WebConfigFile: &webCfg}, s.log)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.draining.Store(true)
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		s.srv.Close()
	}
	<-errc
	return err
}
