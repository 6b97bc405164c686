package waitfor

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/testserver"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw     string
		wantErr string // empty: must parse
	}{
		{raw: "tcp://memcached-0.memcached:11211"},
		{raw: "tcp://127.0.0.1:0"},
		{raw: "tcp://[::1]:80"},
		{raw: "http://agg:2020/api/v1/health"},
		{raw: "http://agg:2020/api/v1/health#status=200-399"},
		{raw: "https://example.test/ready#status=204"},
		{raw: "dns://memcached.default.svc"},
		{raw: "dns://localhost"},
		{raw: "memcached:11211", wantErr: "unknown scheme"},
		{raw: "localhost", wantErr: "no scheme"},
		{raw: "udp://a:1", wantErr: `unknown scheme "udp"`},
		{raw: "tcp://host", wantErr: "want tcp://host:port"},
		{raw: "tcp://:80", wantErr: "want tcp://host:port"},
		{raw: "tcp://host:99999", wantErr: "port"},
		{raw: "tcp://host:80/path", wantErr: "only tcp://host:port"},
		{raw: "http:///health", wantErr: "want http://host"},
		{raw: "http://a/#code=200", wantErr: "#status=LO-HI"},
		{raw: "http://a/#status=299-200", wantErr: "within 100-599"},
		{raw: "http://a/#status=abc", wantErr: "within 100-599"},
		{raw: "http://a/#status=600", wantErr: "within 100-599"},
		{raw: "dns://name:53", wantErr: "want dns://name"},
		{raw: "dns://", wantErr: "want dns://name"},
		{raw: "tcp://a b:1", wantErr: "condition"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			t.Parallel()
			c, err := Parse(tt.raw)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse(%q) = %v", tt.raw, err)
				}
				if c.String() != tt.raw {
					t.Errorf("String() = %q, want the URL as given", c.String())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Parse(%q) error = %v, want one containing %q", tt.raw, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.raw) {
				t.Errorf("error %q does not name the condition", err)
			}
		})
	}
}

func TestCheckTCP(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ok := mustParse(t, "tcp://"+addr)
	if err := ok.Check(t.Context()); err != nil {
		t.Fatalf("check against a listener: %v", err)
	}
	ln.Close()
	if err := ok.Check(t.Context()); err == nil {
		t.Fatal("check after the listener closed succeeded")
	}
}

func TestCheckHTTPStatus(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(http.StatusOK)
		case "/moved":
			http.Redirect(w, r, "/ok", http.StatusFound)
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	tests := []struct {
		path    string
		wantErr string
	}{
		{path: "/ok"},
		{path: "/down", wantErr: "status 503, want 200-299"},
		// Redirects are not followed: the URL's own status counts.
		{path: "/moved", wantErr: "status 302, want 200-299"},
		{path: "/moved#status=200-399"},
		{path: "/down#status=503"},
		{path: "/ok#status=500-599", wantErr: "status 200, want 500-599"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			err := mustParse(t, srv.URL+tt.path).Check(t.Context())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Check = %v, want success", err)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("Check = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckHTTPHonoursDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	defer close(release)
	c := mustParse(t, srv.URL+"/slow")
	ctx, cancel := contextWithTimeout(t, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Check(ctx); err == nil {
		t.Fatal("check against a server that never answers succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("check took %v despite a 200ms deadline", d)
	}
}

func TestCheckDNS(t *testing.T) {
	t.Parallel()
	// localhost resolves from /etc/hosts: no packet leaves the machine.
	if err := mustParse(t, "dns://localhost").Check(t.Context()); err != nil {
		t.Fatalf("dns://localhost: %v", err)
	}
}

func TestWaitRealPeers(t *testing.T) {
	t.Parallel()
	// A port that is free now and gets a listener only after a few attempts.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lateAddr := ln.Addr().String()
	ln.Close()

	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) <= 2 {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(srv.Close)

	conds := []Condition{
		mustParse(t, "tcp://"+lateAddr),
		mustParse(t, srv.URL+"/api/v1/health"),
		mustParse(t, "dns://localhost"),
	}
	var logBuf testserver.Buffer
	opts := Options{
		AttemptTimeout: 2 * time.Second,
		Backoff:        Backoff{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, Jitter: 0.5},
		Log:            newLogger(&logBuf),
	}
	late := make(chan net.Listener, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("tcp", lateAddr)
		if err != nil {
			t.Errorf("listen late on %s: %v", lateAddr, err)
		}
		late <- l
	}()
	ctx, cancel := contextWithTimeout(t, 30*time.Second)
	defer cancel()
	results := Wait(ctx, conds, opts)
	if l := <-late; l != nil {
		defer l.Close()
	}
	for _, r := range results {
		if !r.OK {
			t.Errorf("%s did not hold: %v (log:\n%s)", r.Condition, r.Err, logBuf.String())
		}
	}
	if results[0].Attempts < 2 {
		t.Errorf("late tcp held after %d attempts, want several", results[0].Attempts)
	}
	if results[1].Attempts != 3 {
		t.Errorf("http held after %d attempts, want 3 (503, 503, 200)", results[1].Attempts)
	}
	// One line per change: the two 503s give one "not met" line.
	if n := strings.Count(logBuf.String(), `"condition":"`+srv.URL+`/api/v1/health","attempts":1,"error":"status 503`); n != 1 {
		t.Errorf("want one not-met line for the first 503, got %d:\n%s", n, logBuf.String())
	}
	if n := strings.Count(logBuf.String(), `"error":"status 503`); n != 1 {
		t.Errorf("repeated 503 logged %d times, want once:\n%s", n, logBuf.String())
	}
}

func mustParse(t *testing.T, raw string) Condition {
	t.Helper()
	c, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"tcp://memcached-0.memcached:11211", "http://agg:2020/api/v1/health#status=200-399",
		"https://a/b#status=204", "dns://memcached.default.svc", "tcp://[::1]:80", "x", "http://a/#status=-",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := Parse(raw)
		if err != nil {
			if !strings.Contains(err.Error(), "condition") {
				t.Errorf("error %q does not say which condition", err)
			}
			return
		}
		if c.String() != raw {
			t.Errorf("String() = %q, want %q", c.String(), raw)
		}
		if h, ok := c.(*httpCondition); ok && (h.lo < 100 || h.hi > 599 || h.lo > h.hi) {
			t.Errorf("%q parsed to status range %d-%d", raw, h.lo, h.hi)
		}
	})
}
