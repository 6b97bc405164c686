package cacheproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/testserver"
)

// poolYAML writes one pool of servers with extra settings.
func poolYAML(name, listen string, servers []*testserver.Server, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:\n  listen: %s\n", name, listen)
	for _, l := range strings.Split(strings.TrimSpace(extra), "\n") {
		if l != "" {
			fmt.Fprintf(&b, "  %s\n", strings.TrimSpace(l))
		}
	}
	b.WriteString("  servers:\n")
	for _, s := range servers {
		fmt.Fprintf(&b, "   - %s:1\n", s.Addr)
	}
	return b.String()
}

type testProxy struct {
	*Proxy
	reg *prometheus.Registry
	cfg *config.Config
}

func startProxy(t *testing.T, yml string) *testProxy {
	t.Helper()
	cfg, err := config.Parse([]byte(yml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yml)
	}
	reg := prometheus.NewRegistry()
	p, err := New(cfg, Options{Log: slog.New(slog.DiscardHandler), Registry: reg, Version: "test", MaxValue: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &testProxy{Proxy: p, reg: reg, cfg: cfg}
}

func (p *testProxy) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := p.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

type client struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReaderSize(c, 1<<20)}
}

func (c *client) send(s string) {
	c.t.Helper()
	go func() { _, _ = io.WriteString(c.c, s) }()
}

// expect reads exactly len(want) bytes and compares.
func (c *client) expect(want string) {
	c.t.Helper()
	got := make([]byte, len(want))
	n, err := io.ReadFull(c.br, got)
	if err != nil || string(got) != want {
		c.t.Fatalf("reply:\n got %q (err %v)\nwant %q", clip(got[:n]), err, clip([]byte(want)))
	}
}

func (c *client) line() string {
	c.t.Helper()
	l, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read line: %v", err)
	}
	return l
}

// do sends one request and reads one line.
func (c *client) do(req string) string {
	c.t.Helper()
	c.send(req)
	return c.line()
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	usedMu    sync.Mutex
	usedPorts = map[int]bool{}
)

// freeAddr is a free address not handed out before in this test binary:
// FreePort alone may return one port twice in a row.
func freeAddr(t *testing.T) string {
	usedMu.Lock()
	defer usedMu.Unlock()
	for {
		p := testserver.FreePort(t)
		if !usedPorts[p] {
			usedPorts[p] = true
			return fmt.Sprintf("127.0.0.1:%d", p)
		}
	}
}

func clip(b []byte) []byte {
	if len(b) > 300 {
		return append(append(b[:150:150], "..."...), b[len(b)-150:]...)
	}
	return b
}
