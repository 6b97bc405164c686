package collect

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

// fake is a source under the test's control: sources are the collector's
// input, and the real ones are tested against real servers in cmd/adapter.
type fake struct {
	calls   atomic.Int32
	started chan struct{}
	release chan struct{}
	err     error
	names   []string
}

func (f *fake) Scrape(ctx context.Context, b *exposition.Batch) error {
	if f.calls.Add(1) == 1 && f.started != nil {
		close(f.started)
	}
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if f.err != nil {
		return f.err
	}
	b.Add("fake_value", "A value.", exposition.Gauge, 42)
	return nil
}

func (f *fake) Names() []string { return f.names }

func newCollector(t *testing.T, timeout time.Duration, specs ...Spec) *Collector {
	t.Helper()
	c, err := New(specs, timeout, prometheus.NewRegistry(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestConcurrentScrapesShareOneFetch(t *testing.T) {
	t.Parallel()
	src := &fake{started: make(chan struct{}), release: make(chan struct{})}
	c := newCollector(t, 30*time.Second, Spec{Name: "app", Namespace: "app", Source: src})
	var wg sync.WaitGroup
	outs := make([]string, 5)
	wg.Go(func() { outs[0] = string(c.AppendScrape(nil, 0, exposition.Text)) })
	<-src.started
	for i := 1; i < 5; i++ {
		wg.Go(func() { outs[i] = string(c.AppendScrape(nil, 0, exposition.Text)) })
	}
	time.Sleep(time.Second) // let the four join the fetch in flight
	close(src.release)
	wg.Wait()
	if n := src.calls.Load(); n != 1 {
		t.Errorf("5 concurrent scrapes made %d fetches, want 1", n)
	}
	for i, o := range outs {
		if !strings.Contains(o, "fake_value 42\n") || !strings.Contains(o, "app_up 1\n") {
			t.Errorf("scrape %d:\n%s", i, o)
		}
	}
}

func TestFailingAndHangingSources(t *testing.T) {
	t.Parallel()
	hang := &fake{release: make(chan struct{})}
	c := newCollector(t, 300*time.Millisecond,
		Spec{Name: "ok", Namespace: "ok", Source: &fake{}},
		Spec{Name: "down", Namespace: "down", Source: &fake{err: errors.New("connection refused")}},
		Spec{Name: "hang", Namespace: "hang", Source: hang, Optional: true},
	)
	start := time.Now()
	out := string(c.AppendScrape(nil, 0, exposition.Text))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("scrape took %v with a 300ms timeout", took)
	}
	for _, want := range []string{"ok_up 1\n", "down_up 0\n", "hang_up 0\n", "# TYPE down_scrape_duration_seconds gauge\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Count(out, "fake_value 42") != 1 {
		t.Errorf("want fake_value once (from ok only):\n%s", out)
	}
	err := c.Ready(t.Context())
	if err == nil || !strings.Contains(err.Error(), "source down: connection refused") || strings.Contains(err.Error(), "hang") {
		t.Errorf("Ready = %v, want the required source named and the optional one not", err)
	}
}

func TestCollisionsAtStartup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		specs []Spec
		want  string
	}{
		{"none", nil, "no source configured"},
		{"same namespace", []Spec{{Name: "a", Namespace: "x", Source: &fake{}}, {Name: "b", Namespace: "x", Source: &fake{}}},
			`metric "x_up" is produced by both source "a" and source "b"`},
		{"declared names", []Spec{{Name: "a", Namespace: "a", Source: &fake{names: []string{"shared"}}},
			{Name: "b", Namespace: "b", Source: &fake{names: []string{"shared"}}}}, `metric "shared" is produced by both`},
		{"reserved prefix", []Spec{{Name: "a", Namespace: "adapter", Source: &fake{}}}, "reserved"},
		{"same name", []Spec{{Name: "a", Namespace: "a", Source: &fake{}}, {Name: "a", Namespace: "b", Source: &fake{}}}, "used twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := New(tc.specs, time.Second, prometheus.NewRegistry(), nil, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestHandlerHonoursPrometheusTimeout(t *testing.T) {
	t.Parallel()
	hang := &fake{release: make(chan struct{})}
	c := newCollector(t, time.Minute, Spec{Name: "hang", Namespace: "hang", Source: hang})
	srv := httptest.NewServer(c.MetricsHandler(true))
	defer srv.Close()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", "0.5")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if took := time.Since(start); resp.StatusCode != 200 || took > 20*time.Second {
		t.Errorf("HTTP %d after %v; want 200 well before the 1-minute source timeout", resp.StatusCode, took)
	}
}

func TestDuplicateFamiliesFirstWins(t *testing.T) {
	t.Parallel()
	c := newCollector(t, time.Second,
		Spec{Name: "a", Namespace: "a", Source: &fake{}},
		Spec{Name: "b", Namespace: "b", Source: &fake{}})
	out := string(c.AppendScrape(nil, 0, exposition.Text))
	if n := strings.Count(out, "# TYPE fake_value gauge"); n != 1 {
		t.Errorf("family fake_value written %d times:\n%s", n, out)
	}
}

// named returns the families of names, as a re-exposed upstream would.
type named []string

func (n named) Scrape(_ context.Context, b *exposition.Batch) error {
	for _, name := range n {
		b.Add(name, "", exposition.Gauge, 7)
	}
	return nil
}

func TestSourceCannotShadowAdapterFamilies(t *testing.T) {
	t.Parallel()
	c := newCollector(t, time.Second, Spec{Name: "up", Namespace: "up",
		Source: named{"up_up", "up_scrape_duration_seconds", "adapter_source_fetches_total", "ok"}})
	out := string(c.AppendScrape(nil, 0, exposition.Text))
	if strings.Count(out, "# TYPE up_up ") != 1 || strings.Contains(out, "up_up 7") || strings.Contains(out, "adapter_source_fetches_total 7") || !strings.Contains(out, "ok 7\n") {
		t.Errorf("got\n%s", out)
	}
}

func TestAcceptsGzip(t *testing.T) {
	t.Parallel()
	for h, want := range map[string]bool{"gzip": true, "deflate, gzip;q=1.0": true, "gzip;q=0": false, "": false, "br": false} {
		if got := acceptsGzip(h); got != want {
			t.Errorf("acceptsGzip(%q) = %v", h, got)
		}
	}
}

func BenchmarkScrape(b *testing.B) {
	c, err := New([]Spec{{Name: "app", Namespace: "app", Source: &fake{}}}, time.Second, prometheus.NewRegistry(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = c.AppendScrape(buf[:0], 0, exposition.Text)
	}
}

func TestNegotiate(t *testing.T) {
	t.Parallel()
	prom := "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
	tests := []struct {
		accept string
		om     bool
		want   exposition.Format
	}{
		{"", true, exposition.Text},
		{"*/*", true, exposition.Text},
		{"text/plain;version=0.0.4", true, exposition.Text},
		{prom, true, exposition.OpenMetrics},
		{"application/openmetrics-text", true, exposition.OpenMetrics},
		{prom, false, exposition.Text},
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", true, exposition.Text},
	}
	for _, tc := range tests {
		h := http.Header{}
		if tc.accept != "" {
			h.Set("Accept", tc.accept)
		}
		if got := negotiate(h, tc.om); got != tc.want {
			t.Errorf("negotiate(%q, %v) = %v, want %v", tc.accept, tc.om, got, tc.want)
		}
	}
}
