package cacheproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/testserver"
)

// TestSlowClientDoesNotStallOthers: replies are written by whoever reads
// them from a server; a client that stops reading must not hold up that
// server's replies to anyone else, and must still get all of its own, in
// order, once it reads again.
func TestSlowClientDoesNotStallOthers(t *testing.T) {
	t.Parallel()
	rs := threeRedis(t)
	p := startProxy(t, poolYAML("r", freeAddr(t), rs, "redis: true"))
	big := strings.Repeat("v", 256<<10)
	setup := dial(t, p.Addr("r"))
	setup.send(resp("SET", "big", big))
	setup.expect("+OK\r\n")

	const n = 80 // 20 MiB of replies, far more than the socket buffers hold
	slow := dial(t, p.Addr("r"))
	var req strings.Builder
	for i := range n {
		req.WriteString(resp("GET", "big"))
		req.WriteString(resp("ECHO", fmt.Sprint(i)))
	}
	slow.send(req.String())
	time.Sleep(200 * time.Millisecond) // let its replies pile up unread

	fast := dial(t, p.Addr("r"))
	start := time.Now()
	for i := range 50 {
		for _, k := range []string{"a", "b", "c", "big2"} { // keys on every server
			v := fmt.Sprint(i)
			fast.send(resp("SET", k, v) + resp("GET", k))
			fast.expect("+OK\r\n" + bulk(v))
		}
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("200 round trips beside a stalled client took %v", d)
	}

	want := bulk(big)
	for i := range n {
		got := make([]byte, len(want))
		if _, err := io.ReadFull(slow.br, got); err != nil || string(got) != want {
			t.Fatalf("slow client reply %d: err %v, %d bytes", i, err, len(got))
		}
		slow.expect(bulk(fmt.Sprint(i)))
	}
}

// BenchmarkRoundTrip measures a client's round trips through the proxy to
// real redis servers (allocations are the proxy's: it runs in-process).
func BenchmarkRoundTrip(b *testing.B) {
	rs := []*testserver.Server{testserver.Redis(b), testserver.Redis(b), testserver.Redis(b)}
	addr := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(b))
	cfg, err := config.Parse([]byte(poolYAML("r", addr, rs, "redis: true")))
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(cfg, Options{Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry(), Version: "bench", MaxValue: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	keys := []string{"MGET"}
	for i := range 10 {
		keys = append(keys, fmt.Sprintf("key:%d", i))
	}
	for _, bc := range []struct {
		name, req string
		lines     int // lines in the reply
	}{
		{"get", resp("GET", "key:1"), 1},
		{"get-pipeline-16", strings.Repeat(resp("GET", "key:1"), 16), 16},
		{"mget-10-keys", resp(keys...), 11},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := net.DialTimeout("tcp", p.Addr("r"), 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
			br := bufio.NewReader(c)
			req := []byte(bc.req)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				for range bc.lines {
					if _, err := br.ReadSlice('\n'); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// TestRepliesInOrderPastSlowServer: a pipeline's replies come back from
// several servers in any order, and are written in request order.
func TestRepliesInOrderPastSlowServer(t *testing.T) {
	t.Parallel()
	rs := threeRedis(t)
	p := startProxy(t, poolYAML("r", freeAddr(t), rs, "redis: true"))
	slowKey, fastKey := "", ""
	for i := 0; slowKey == "" || fastKey == ""; i++ {
		k := fmt.Sprintf("k%d", i)
		srv, _ := p.Pool("r").Route([]byte(k))
		if srv.Addr == rs[0].Addr {
			slowKey = k
		} else {
			fastKey = k
		}
	}
	c := dial(t, p.Addr("r"))
	c.send(resp("SET", slowKey, "slow") + resp("SET", fastKey, "fast"))
	c.expect("+OK\r\n+OK\r\n")

	// Freeze the slow key's server for a while: the pipeline's later
	// requests are answered first.
	freeze(t, rs[0])
	thaw := time.AfterFunc(300*time.Millisecond, func() { _ = rs[0].Signal(syscall.SIGCONT) })
	t.Cleanup(func() {
		if thaw.Stop() {
			_ = rs[0].Signal(syscall.SIGCONT)
		}
	})
	var req, want strings.Builder
	for range 5 {
		req.WriteString(resp("GET", slowKey) + resp("GET", fastKey) + resp("PING"))
		want.WriteString(bulk("slow") + bulk("fast") + "+PONG\r\n")
	}
	c.send(req.String())
	c.expect(want.String())
}
