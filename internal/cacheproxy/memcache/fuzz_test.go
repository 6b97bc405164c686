package memcache

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

// deadPool is a pool whose one server refuses connections and is marked
// down after the first failure, so requests fail fast without the network.
func deadPool(t testing.TB) (*backend.Pool, *backend.PoolStats) {
	cfg, err := config.Parse([]byte("p:\n  listen: 127.0.0.1:1\n  failure_policy: mcrouter\n  server_failure_limit: 1\n  server_retry_timeout: 600000\n  timeout: 1000\n  servers:\n   - 127.0.0.1:1:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := backend.NewMetrics(prometheus.NewRegistry())
	p := backend.NewPool(cfg.Pools[0], Codec{MaxValue: 1 << 20}, m, slog.New(slog.DiscardHandler))
	t.Cleanup(p.Close)
	return p, m.Pool("p", Commands)
}

var seeds = []string{
	"get a\r\n", "get a b c\r\n", "gets a\r\n", "gat 10 a b\r\n", "set a 0 0 1\r\nx\r\n", "set a 0 0 1 noreply\r\nx\r\n",
	"cas a 0 0 1 5\r\nx\r\n", "delete a\r\n", "incr a 1\r\n", "touch a 1\r\n", "mg a v q\r\n", "ms a 2 T0\r\nhi\r\n",
	"md a q\r\n", "ma a\r\n", "mn\r\n", "version\r\n", "quit\r\n", "flush_all\r\n", "set a 0 0 5\r\nx\r\n", "\r\n",
	"get " + string(bytes.Repeat([]byte("k"), 300)) + "\r\n", "ms a b\r\nhi\r\n", "mg Zm9v b v\r\n", "set a 0 0 99999999\r\n",
}

// FuzzRequest: any client input gets replies or a closed connection, never
// a panic or a hang.
func FuzzRequest(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	pool, stats := deadPool(f)
	h := &Handler{Pool: pool, Stats: stats, MaxValue: 1 << 20, Version: "fuzz"}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &state{batch: &backend.Batch{}, h: h, br: bufio.NewReader(bytes.NewReader(in))}
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

// FuzzReadReply: any server bytes give a reply or an error, bounded by
// MaxValue.
func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"END\r\n", "VALUE a 0 1\r\nx\r\nEND\r\n", "VALUE a 0 1 9\r\nx\r\nVALUE b 0 0\r\n\r\nEND\r\n",
		"STORED\r\n", "VA 2 t\r\nhi\r\n", "SERVER_ERROR out of memory\r\n", "VALUE a 0 99999999999\r\n", "VALUE a\r\n"} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, in []byte, retrieval bool) {
		c := backend.NewCall()
		defer c.Release()
		if retrieval {
			c.Kind = kindRetrieval
		}
		err := Codec{MaxValue: 1 << 16}.ReadReply(bufio.NewReader(bytes.NewReader(in)), c)
		if err == nil && !bytes.HasPrefix(in, c.Reply[:min(len(c.Reply), len(in))]) && !bytes.Contains(c.Reply, []byte("\r\n")) {
			t.Fatalf("reply %q not from input", c.Reply)
		}
		if len(c.Reply) > len(in)+1<<16+64 {
			t.Fatalf("reply of %d bytes from %d input bytes", len(c.Reply), len(in))
		}
	})
}

func BenchmarkGetRequest(b *testing.B) {
	pool, stats := deadPool(b)
	h := &Handler{Pool: pool, Stats: stats, MaxValue: 1 << 20}
	req := bytes.Repeat([]byte("get user:1234567:profile\r\n"), 1)
	rd := bytes.NewReader(req)
	s := &state{batch: &backend.Batch{}, h: h, br: bufio.NewReader(rd)}
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
