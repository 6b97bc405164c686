package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/podkit/podkit/internal/testserver"
)

// startAdapter runs the adapter with args plus -listen on a free port and
// returns its base URL; it is stopped (and must exit 0) when the test ends.
func startAdapter(t *testing.T, args ...string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	var stderr testserver.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"-listen", addr}, args...), func(string) string { return "" }, io.Discard, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("adapter exited %d:\n%s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("adapter did not stop within 30s")
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		select {
		case code := <-done:
			t.Fatalf("adapter exited %d before listening:\n%s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("adapter not listening after 15s:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, u string, hdr map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func metrics(t *testing.T, base string) string {
	t.Helper()
	code, _, body := get(t, base+"/metrics", nil)
	if code != 200 {
		t.Fatalf("/metrics: HTTP %d: %s", code, body)
	}
	return body
}

// value returns the value of the sample line starting with series (name
// and labels exactly as written), or fails.
func value(t *testing.T, body, series string) float64 {
	t.Helper()
	for line := range strings.SplitSeq(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return v
		}
	}
	t.Fatalf("no sample %s in:\n%s", series, body)
	return 0
}

func promtoolCheck(t *testing.T, body string) {
	t.Helper()
	bin := testserver.Require(t, "promtool")
	cmd := exec.CommandContext(t.Context(), bin, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func nginx(t *testing.T) *testserver.Server {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	static := filepath.Join(wd, "testdata", "static")
	ng := testserver.Nginx(t, func(dir string, port int) string {
		return testserver.NginxPrelude(dir) + fmt.Sprintf(`http {
    %s
    access_log off;
    server {
        listen 127.0.0.1:%d;
        location = /stub_status { stub_status; }
        location /static/ { alias %s/; default_type application/json; }
        location / { return 200 "hello\n"; }
    }
}
`, testserver.NginxHTTPPrelude(dir), port, static)
	})
	// Killing the master alone would orphan its worker, still serving:
	// ask the master to stop its workers first.
	t.Cleanup(func() { stopNginx(ng) })
	return ng
}

func stopNginx(ng *testserver.Server) {
	if err := ng.Signal(syscall.SIGTERM); err != nil {
		return
	}
	for range 250 {
		if syscall.Kill(ng.PID(), 0) != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNginxNamings(t *testing.T) {
	t.Parallel()
	ng := nginx(t)
	stub := "http://" + ng.Addr + "/stub_status"
	tests := []struct {
		naming string
		want   []string // lines that must appear
		lint   bool
	}{
		{"compat", []string{
			"# HELP nginx_connections_accepted Accepted client connections",
			"# TYPE nginx_connections_accepted counter",
			"# TYPE nginx_connections_handled counter",
			"# HELP nginx_connections_reading Connections where NGINX is reading the request header",
			"# HELP nginx_connections_waiting Idle client connections",
			"# HELP nginx_connections_writing Connections where NGINX is writing the response back to the client",
			"# HELP nginx_http_requests_total Total http requests",
			"# TYPE nginx_http_requests_total counter",
			"# TYPE nginx_connections_active gauge",
			"# HELP nginx_up Status of the last metric scrape",
		}, false},
		{"standard", []string{
			"# TYPE nginx_connections_accepted_total counter",
			"# TYPE nginx_connections_handled_total counter",
			"# TYPE nginx_http_requests_total counter",
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.naming, func(t *testing.T) {
			t.Parallel()
			base := startAdapter(t, "-naming", tc.naming, "-source", "nginx="+stub)
			before := metrics(t, base)
			after := metrics(t, base)
			for _, w := range tc.want {
				if !strings.Contains(after, w+"\n") {
					t.Errorf("missing %q", w)
				}
			}
			if value(t, after, "nginx_up") != 1 {
				t.Errorf("nginx_up != 1")
			}
			// One scrape is one fetch of stub_status: requests grow by 1.
			if d := value(t, after, "nginx_http_requests_total") - value(t, before, "nginx_http_requests_total"); d != 1 {
				t.Errorf("requests grew by %v between two scrapes, want 1", d)
			}
			if tc.lint {
				promtoolCheck(t, after)
			}
		})
	}
}

func TestMemcachedRedis(t *testing.T) {
	t.Parallel()
	mc := testserver.Memcached(t)
	rd := testserver.Redis(t)
	// Put one item in each so the values are checked, not just the names.
	c, err := net.DialTimeout("tcp", mc.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "set k 0 0 1\r\nx\r\nget k\r\nget nope\r\n")
	buf := make([]byte, 256)
	if _, err := io.ReadAtLeast(c, buf, len("STORED\r\n")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	rc, err := net.DialTimeout("tcp", rd.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(rc, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
	if _, err := io.ReadAtLeast(rc, buf, len("+OK\r\n")); err != nil {
		t.Fatal(err)
	}
	rc.Close()

	base := startAdapter(t, "-naming", "standard", "-source", "memcached="+mc.Addr, "-source", "redis="+rd.Addr)
	body := metrics(t, base)
	for series, want := range map[string]float64{
		"memcached_up":            1,
		"redis_up":                1,
		"memcached_current_items": 1,
		`memcached_commands_total{command="get",status="hit"}`:  1,
		`memcached_commands_total{command="get",status="miss"}`: 1,
		`memcached_commands_total{command="set",status="hit"}`:  1,
		`redis_db_keys{db="db0"}`:                               1,
		`redis_commands_total{cmd="set"}`:                       1,
	} {
		if got := value(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	promtoolCheck(t, body)
}

func TestSourceDown(t *testing.T) {
	t.Parallel()
	ng := nginx(t)
	rd := testserver.Redis(t)
	base := startAdapter(t, "-scrape-timeout", "2s", "-source", "nginx=http://"+ng.Addr+"/stub_status", "-source", "redis="+rd.Addr)
	if code, _, body := get(t, base+"/readyz", nil); code != 200 {
		t.Fatalf("/readyz with every source up: HTTP %d %s", code, body)
	}

	// A frozen source costs its own _up, within the scrape timeout, and
	// the other source still reports.
	if err := rd.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	body := metrics(t, base)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("scrape with a frozen source took %v", took)
	}
	if value(t, body, "redis_up") != 0 || value(t, body, "nginx_up") != 1 {
		t.Errorf("frozen redis: want redis_up 0 and nginx_up 1:\n%s", body)
	}
	_ = rd.Signal(syscall.SIGCONT)

	// A killed source answers at once: HTTP 200 and _up 0, never a 500.
	stopNginx(ng)
	start = time.Now()
	body = metrics(t, base)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("scrape with nginx down took %v", took)
	}
	if value(t, body, "nginx_up") != 0 {
		t.Errorf("nginx_up != 0 after nginx stopped")
	}
	if strings.Contains(body, "nginx_connections_active") {
		t.Errorf("stale nginx metrics exposed while nginx is down")
	}
	if value(t, body, "redis_up") != 1 {
		t.Errorf("redis_up != 1 after SIGCONT")
	}
	code, _, reason := get(t, base+"/readyz", nil)
	if code != 503 || !strings.Contains(reason, "source nginx") {
		t.Errorf("/readyz with nginx down: HTTP %d %q, want 503 naming the source", code, reason)
	}
	if code, _, _ := get(t, base+"/healthz", nil); code != 200 {
		t.Errorf("/healthz: HTTP %d", code)
	}
}

func TestStartsWithSourceDown(t *testing.T) {
	t.Parallel()
	// Like nginx-prometheus-exporter v1 (not 0.11): a sidecar may start
	// before the server it reads.
	port := testserver.FreePort(t)
	base := startAdapter(t, "-source", fmt.Sprintf("nginx=http://127.0.0.1:%d/stub_status", port))
	if v := value(t, metrics(t, base), "nginx_up"); v != 0 {
		t.Errorf("nginx_up = %v with nothing listening", v)
	}
	if code, _, _ := get(t, base+"/readyz", nil); code != 503 {
		t.Errorf("/readyz: HTTP %d, want 503", code)
	}
}

func TestPrometheusScrapesAdapter(t *testing.T) {
	t.Parallel()
	ng := nginx(t)
	// The adapter's address must be known before Prometheus starts.
	port := testserver.FreePort(t)
	prom := testserver.Prometheus(t, fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: adapter
    static_configs:
      - targets: ['127.0.0.1:%d']
`, port))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr testserver.Buffer
	go func() {
		done <- run(ctx, []string{"-listen", fmt.Sprintf("127.0.0.1:%d", port), "-naming", "standard",
			"-source", "nginx=http://" + ng.Addr + "/stub_status",
			// Prometheus's own /metrics, re-exposed with a prefix: a real
			// upstream for the re-exposition path.
			"-config", writeFile(t, "reexpose.yml", fmt.Sprintf(`sources:
  - kind: prometheus
    name: upstream
    address: http://%s/metrics
    rules:
      prefix: up_
      keep: ["prometheus_build_info|go_goroutines"]
      add_labels: {via: adapter}
`, prom.Addr))}, func(string) string { return "" }, io.Discard, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("adapter exited %d:\n%s", code, stderr.String())
		}
	})

	query := func(q string) []any {
		u := "http://" + prom.Addr + "/api/v1/query?query=" + url.QueryEscape(q)
		code, _, body := get(t, u, nil)
		if code != 200 {
			return nil // not ready yet
		}
		var r struct {
			Status string
			Data   struct{ Result []any }
		}
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("query %s: %v: %s", q, err, body)
		}
		return r.Data.Result
	}
	waitFor := func(queries ...string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for _, q := range queries {
			for len(query(q)) == 0 {
				if time.Now().After(deadline) {
					_, _, targets := get(t, "http://"+prom.Addr+"/api/v1/targets", nil)
					t.Fatalf("no result for %s after 60s; targets: %s\nadapter log:\n%s", q, targets, stderr.String())
				}
				time.Sleep(250 * time.Millisecond)
			}
		}
	}
	// Service discovery refreshes every 5 s: waitFor allows a generous minute.
	waitFor(`nginx_http_requests_total{job="adapter"} > 0`, `nginx_up == 1`, `up{job="adapter"} == 1`,
		`up_go_goroutines{via="adapter"}`, `upstream_up == 1`)
	promtoolCheck(t, metrics(t, fmt.Sprintf("http://127.0.0.1:%d", port)))
	if r := query(`up_prometheus_http_requests_total`); len(r) != 0 {
		t.Errorf("family outside keep re-exposed: %v", r)
	}
	// Prometheus negotiates OpenMetrics: the scrape must have no errors.
	_, _, targets := get(t, "http://"+prom.Addr+"/api/v1/targets", nil)
	if !strings.Contains(targets, `"health":"up"`) {
		t.Errorf("target not healthy: %s", targets)
	}

	// nginx killed mid-test: the target stays up, nginx_up turns 0 and the
	// nginx series go stale.
	stopNginx(ng)
	waitFor(`nginx_up == 0`, `up{job="adapter"} == 1`)
	deadline := time.Now().Add(30 * time.Second)
	for len(query(`nginx_connections_active`)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("nginx_connections_active still answered 30s after nginx stopped")
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNegotiationAndGzip(t *testing.T) {
	t.Parallel()
	mc := testserver.Memcached(t)
	base := startAdapter(t, "-source", "memcached="+mc.Addr)
	tests := []struct {
		name, accept, wantType string
	}{
		{"no accept", "", "text/plain; version=0.0.4"},
		{"curl", "*/*", "text/plain; version=0.0.4"},
		{"prometheus", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "application/openmetrics-text; version=1.0.0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := get(t, base+"/metrics", map[string]string{"Accept": tc.accept, "Accept-Encoding": "gzip"})
			if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), tc.wantType) {
				t.Fatalf("HTTP %d, Content-Type %q, want %q", code, h.Get("Content-Type"), tc.wantType)
			}
			if h.Get("Content-Encoding") != "gzip" {
				t.Fatalf("Content-Encoding %q, want gzip", h.Get("Content-Encoding"))
			}
			zr, err := gzip.NewReader(strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			plain, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			text := string(plain)
			om := strings.HasPrefix(tc.wantType, "application/openmetrics-text")
			if om != strings.HasSuffix(text, "# EOF\n") {
				t.Errorf("OpenMetrics %v but # EOF at end %v", om, strings.HasSuffix(text, "# EOF\n"))
			}
			if om && !strings.Contains(text, "# TYPE memcached_connections counter\n") {
				t.Errorf("OpenMetrics counter family not named without _total:\n%s", text)
			}
		})
	}
}

func TestStatsd(t *testing.T) {
	t.Parallel()
	addr := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	mapping := writeFile(t, "mapping.yml", `mappings:
  - match: "test.dispatcher.*.*.*"
    name: "dispatcher_events_total"
    labels:
      processor: "$1"
      action: "$2"
      outcome: "$3"
  - match: "request.*.latency"
    observer_type: histogram
    histogram_options:
      buckets: [0.01, 0.1, 1]
    name: "request_duration_seconds"
    labels: {handler: "$1"}
  - match: "noise.*"
    action: drop
`)
	base := startAdapter(t, "-naming", "standard", "-source", "statsd="+addr, "-statsd-mapping", mapping)
	u, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	fmt.Fprint(u, "test.dispatcher.FooProcessor.send.success:1|c\ntest.dispatcher.FooProcessor.send.success:2|c|@0.5\n")
	fmt.Fprint(u, "request.home.latency:50|ms\nrequest.home.latency:500|ms\nnoise.x:1|c\n")
	fmt.Fprint(u, "queue_depth:5|g|#queue:orders\nqueue_depth:+2|g|#queue:orders\nusers:alice|s\nusers:bob|s\nusers:alice|s\n")
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(tc, "tcp.hits,route=home:3|c\nnot a line\n")
	tc.Close()

	want := map[string]float64{
		`dispatcher_events_total{action="send",outcome="success",processor="FooProcessor"}`: 5,
		`request_duration_seconds_bucket{handler="home",le="0.1"}`:                          1,
		`request_duration_seconds_bucket{handler="home",le="+Inf"}`:                         2,
		`request_duration_seconds_sum{handler="home"}`:                                      0.55,
		`queue_depth{queue="orders"}`:                                                       7,
		`users`:                                                                             2,
		`tcp_hits_total{route="home"}`:                                                      3,
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		body := metrics(t, base)
		missing := ""
		for s := range want {
			if !strings.Contains(body, s+" ") {
				missing = s
			}
		}
		if missing == "" {
			for s, v := range want {
				if got := value(t, body, s); got != v {
					t.Errorf("%s = %v, want %v", s, got, v)
				}
			}
			if strings.Contains(body, "noise") {
				t.Errorf("dropped metric exposed")
			}
			if value(t, body, `adapter_statsd_line_errors_total{source="statsd"}`) != 1 {
				t.Errorf("bad line not counted")
			}
			promtoolCheck(t, body)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not exposed after 20s:\n%s", missing, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestJSON(t *testing.T) {
	t.Parallel()
	ng := nginx(t)
	cfg := writeFile(t, "json.yml", fmt.Sprintf(`sources:
  - kind: json
    name: app
    address: http://%s/static/status.json
    metrics:
      - name: app_queue_depth
        help: Messages waiting in each queue.
        path: $.queues.*
        value: "@.depth"
        labels: {queue: "key()", region: "$.region"}
      - name: app_pool_up
        help: Whether each active, non-empty pool is up.
        path: "$.pools[?@.active == true && @.size > 0]"
        value: "@.state"
        value_map: {UP: 1, DOWN: 0}
        labels: {pool: "@.name"}
      - name: app_requests_total
        type: counter
        path: $.requests
`, ng.Addr))
	base := startAdapter(t, "-config", cfg)
	body := metrics(t, base)
	for series, want := range map[string]float64{
		`app_queue_depth{queue="orders",region="eu"}`: 12,
		`app_queue_depth{queue="mail",region="eu"}`:   0,
		`app_pool_up{pool="a"}`:                       1,
		`app_pool_up{pool="b"}`:                       0,
		`app_requests_total`:                          1234,
		`app_up`:                                      1,
	} {
		if got := value(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if strings.Contains(body, `pool="c"`) || strings.Contains(body, `pool="d"`) {
		t.Errorf("filtered pool exposed:\n%s", body)
	}
	promtoolCheck(t, body)
}

func TestWebConfigBasicAuth(t *testing.T) {
	t.Parallel()
	mc := testserver.Memcached(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfg := writeFile(t, "web.yml", fmt.Sprintf("basic_auth_users:\n  prom: %s\n", hash))
	base := startAdapter(t, "-web-config", cfg, "-source", "memcached="+mc.Addr)
	if code, _, _ := get(t, base+"/metrics", nil); code != 401 {
		t.Errorf("no credentials: HTTP %d, want 401", code)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/metrics", nil)
	req.SetBasicAuth("prom", "s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("with credentials: HTTP %d", resp.StatusCode)
	}
}

func TestWebConfigTLS(t *testing.T) {
	t.Parallel()
	mc := testserver.Memcached(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "adapter"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile := writeFile(t, "cert.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	keyFile := writeFile(t, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	cfg := writeFile(t, "web.yml", fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n", certFile, keyFile))
	base := startAdapter(t, "-web-config", cfg, "-source", "memcached="+mc.Addr)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(strings.Replace(base, "http://", "https://", 1) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "memcached_up 1\n") {
		t.Errorf("HTTPS /metrics: HTTP %d\n%s", resp.StatusCode, body)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	collide := writeFile(t, "collide.yml", `sources:
  - kind: memcached
    name: a
    namespace: cache
    address: 127.0.0.1:1
  - kind: memcached
    name: b
    namespace: cache
    address: 127.0.0.1:2
`)
	jsonCollide := writeFile(t, "json.yml", `sources:
  - kind: json
    address: http://127.0.0.1:1/
    metrics:
      - {name: x, type: gauge, path: $.a}
      - {name: x, type: counter, path: $.b}
`)
	unknownKey := writeFile(t, "unknown.yml", "sources:\n  - kind: nginx\n    adress: http://x/\n")
	badWeb := writeFile(t, "web.yml", "tls_server_config:\n  cert_file: /nonexistent\n")
	tests := []struct {
		name string
		args []string
		want *regexp.Regexp
	}{
		{"no source", nil, regexp.MustCompile(`no source configured`)},
		{"bad source flag", []string{"-source", "nginx"}, regexp.MustCompile(`-source "nginx": want KIND=ADDRESS`)},
		{"unknown kind", []string{"-source", "apache=http://x/"}, regexp.MustCompile(`unknown kind "apache"`)},
		{"bad naming", []string{"-naming", "x", "-source", "memcached=127.0.0.1:1"}, regexp.MustCompile(`-naming "x"`)},
		{"namespace collision", []string{"-config", collide}, regexp.MustCompile(`cache_up" is produced by both source "a" and source "b"`)},
		{"json type collision", []string{"-config", jsonCollide}, regexp.MustCompile(`metrics\[1\] \(x\): metric x is already mapped as a gauge`)},
		{"unknown key", []string{"-config", unknownKey}, regexp.MustCompile(`line 3: field adress not found`)},
		{"bad web config", []string{"-web-config", badWeb, "-source", "memcached=127.0.0.1:1"}, regexp.MustCompile(`-web-config`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			code := run(t.Context(), append([]string{"-listen", "127.0.0.1:0"}, tc.args...), func(string) string { return "" }, io.Discard, &stderr)
			if code != 2 || !tc.want.MatchString(stderr.String()) {
				t.Errorf("exit %d, stderr %q; want 2 and %s", code, stderr.String(), tc.want)
			}
		})
	}
}

func TestEnvTwin(t *testing.T) {
	t.Parallel()
	mc := testserver.Memcached(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	env := map[string]string{"ADAPTER_LISTEN": addr, "ADAPTER_SOURCE": "memcached=" + mc.Addr}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, io.Discard, io.Discard) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("adapter not listening on ADAPTER_LISTEN")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := value(t, metrics(t, "http://"+addr), "memcached_up"); v != 1 {
		t.Errorf("memcached_up %v", v)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d", code)
	}
}
