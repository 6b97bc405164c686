package backend

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// lineServer echoes each line it reads until frozen, then reads on without
// answering. It counts the connections it accepted.
type lineServer struct {
	ln      net.Listener
	accepts atomic.Int32
	frozen  atomic.Bool
	wg      sync.WaitGroup
}

func newLineServer(t *testing.T) *lineServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lineServer{ln: ln}
	var conns sync.Map
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepts.Add(1)
			conns.Store(nc, true)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer nc.Close()
				br := bufio.NewReader(nc)
				for {
					line, err := br.ReadBytes('\n')
					if err != nil {
						return
					}
					if !s.frozen.Load() {
						if _, err := nc.Write(line); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		s.wg.Wait()
	})
	return s
}

// call sends one line to srv and waits for its reply.
func call(srv *Server, line string) *Call {
	c := NewCall()
	c.Req = append(c.Req, line...)
	var b Batch
	srv.Do(c, 0, &b)
	b.Flush()
	c.Wait()
	return c
}

// TestReadDeadlineOutlivesIdle: the read deadline a call sets may pass
// after the connection went idle; that is no timeout, and the connection
// stays in use. Calls closer together than the timeout never time out,
// and a server that stops answering still does within about the timeout.
func TestReadDeadlineOutlivesIdle(t *testing.T) {
	t.Parallel()
	ls := newLineServer(t)
	cfg := pool(t, ls.ln.Addr().String()+":1 s")
	cfg.Timeout = 300 * time.Millisecond
	p := NewPool(cfg, nopCodec{}, NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	defer p.Close()
	srv := p.Servers()[0]

	check := func(step, line string) {
		t.Helper()
		c := call(srv, line)
		defer c.Release()
		if c.Err != nil || string(c.Reply) != line {
			t.Fatalf("%s: reply %q, err %v; want %q", step, c.Reply, c.Err, line)
		}
	}
	check("first call", "a\n")
	// Idle past the deadline (timeout plus slack) twice over.
	time.Sleep(3 * cfg.Timeout)
	check("after idle", "b\n")
	// A steady trickle, each call well within the timeout of the last:
	// together they span several timeouts.
	for i := range 12 {
		check("trickle", string(rune('c'+i))+"\n")
		time.Sleep(cfg.Timeout / 3)
	}
	if n := ls.accepts.Load(); n != 1 {
		t.Errorf("%d connections accepted, want 1: an idle deadline broke one", n)
	}
	if n := srv.failures.Load(); n != 0 {
		t.Errorf("%d failures counted, want 0", n)
	}

	ls.frozen.Store(true)
	start := time.Now()
	c := call(srv, "frozen\n")
	took := time.Since(start)
	var te interface{ Timeout() bool }
	if !errors.As(c.Err, &te) || !te.Timeout() {
		t.Errorf("call to a frozen server: err %v, want a timeout", c.Err)
	}
	c.Release()
	if took < cfg.Timeout || took > cfg.Timeout+5*time.Second {
		t.Errorf("frozen server timed out after %v, want about %v", took, cfg.Timeout)
	}
}
