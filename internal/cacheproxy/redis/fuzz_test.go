package redis

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podkit/podkit/internal/cacheproxy/backend"
	"github.com/podkit/podkit/internal/cacheproxy/config"
)

func deadPool(t testing.TB) (*backend.Pool, *backend.PoolStats) {
	cfg, err := config.Parse([]byte("p:\n  listen: 127.0.0.1:1\n  redis: true\n  failure_policy: mcrouter\n  server_failure_limit: 1\n  server_retry_timeout: 600000\n  timeout: 1000\n  servers:\n   - 127.0.0.1:1:1\n   - 127.0.0.1:2:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := backend.NewMetrics(prometheus.NewRegistry())
	p := backend.NewPool(cfg.Pools[0], Codec{MaxValue: 1 << 20}, m, slog.New(slog.DiscardHandler))
	t.Cleanup(p.Close)
	return p, m.Pool("p", CommandNames())
}

var seeds = []string{
	"*2\r\n$3\r\nGET\r\n$1\r\na\r\n", "*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n", "PING\r\n", "GET a\r\n",
	"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n", "*1\r\n$4\r\nKEYS\r\n", "*0\r\n", "*-1\r\n",
	"*2\r\n$3\r\nGET\r\n:1\r\n", "*1\r\n$99999999999\r\n", "*3\r\n$4\r\nEVAL\r\n$1\r\nx\r\n$1\r\n0\r\n", "AUTH x\r\n",
	"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n", "QUIT\r\n", "*1\r\n$3\r\nGET\r\n", "SELECT 1\r\n", "*2\r\n$3\r\nDEL\r\n$0\r\n\r\n",
}

// FuzzRequest: any client input gets replies or a closed connection, never
// a panic or a hang.
func FuzzRequest(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	pool, stats := deadPool(f)
	h := &Handler{Pool: pool, Stats: stats, MaxValue: 1 << 20}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &state{batch: &backend.Batch{}, h: h, br: bufio.NewReader(bytes.NewReader(in)), authed: true}
		w := bufio.NewWriter(io.Discard)
		deadline := time.Now().Add(10 * time.Second)
		for range 10000 {
			r, quit, err := s.next()
			s.batch.Flush()
			if r != nil {
				r.WriteReply(w)
			}
			if err != nil || quit {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("no end of input after 10s")
			}
		}
	})
}

// FuzzReadReply: any server bytes give one value or an error, and the
// value measures (valueLen) as what was read.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"+OK\r\n", "$1\r\nx\r\n", "$-1\r\n", "*2\r\n$1\r\na\r\n$-1\r\n", ":12\r\n", "-ERR x\r\n",
		"*1\r\n*1\r\n*1\r\n:1\r\n", "%1\r\n+a\r\n+b\r\n", "$99999999999\r\n", "*99999999\r\n", "_\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := backend.NewCall()
		defer c.Release()
		err := Codec{MaxValue: 1 << 16}.ReadReply(bufio.NewReader(bytes.NewReader(in)), c)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(in, c.Reply) {
			t.Fatalf("reply %q is not a prefix of the input", c.Reply)
		}
		if n, ok := valueLen(c.Reply); !ok || n != len(c.Reply) {
			t.Fatalf("valueLen(%q) = %d, %v", c.Reply, n, ok)
		}
	})
}

func BenchmarkGetRequest(b *testing.B) {
	pool, stats := deadPool(b)
	h := &Handler{Pool: pool, Stats: stats, MaxValue: 1 << 20}
	req := []byte("*2\r\n$3\r\nGET\r\n$20\r\nuser:1234567:profile\r\n")
	rd := bytes.NewReader(req)
	s := &state{batch: &backend.Batch{}, h: h, br: bufio.NewReader(rd), authed: true}
	w := bufio.NewWriter(io.Discard)
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(req)
		s.br.Reset(rd)
		r, _, err := s.next()
		if err != nil {
			b.Fatal(err)
		}
		s.batch.Flush()
		r.WriteReply(w)
	}
}
