package cacheproxy

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/testserver"
)

// keyOn finds a key that the pool places on server addr.
func keyOn(t *testing.T, p *config.Pool, addr, prefix string) string {
	t.Helper()
	r := p.Ring()
	for i := range 100000 {
		k := prefix + strconv.Itoa(i)
		if p.Servers[r.Locate([]byte(k))].Addr == addr {
			return k
		}
	}
	t.Fatalf("no key on %s", addr)
	return ""
}

// restartRedis starts redis-server again on the port of a stopped one.
func restartRedis(t *testing.T, s *testserver.Server) *testserver.Server {
	dir := t.TempDir()
	return testserver.Start(t, dir, s.Addr, "redis-server", "--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir)
}

// load sends GETs for keys round-robin on one connection until stopped and
// counts replies by kind.
type load struct {
	ok, miss, errs atomic.Int64
	stop           chan struct{}
	wg             sync.WaitGroup
}

func startLoad(t *testing.T, addr string, keys []string) *load {
	l := &load{stop: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		c := dial(t, addr)
		deadline := time.Now().Add(60 * time.Second)
		for i := 0; time.Now().Before(deadline); i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			if _, err := c.c.Write([]byte(resp("GET", keys[i%len(keys)]))); err != nil {
				return
			}
			line, err := c.br.ReadString('\n')
			if err != nil {
				return
			}
			switch {
			case strings.HasPrefix(line, "-"):
				l.errs.Add(1)
			case line == "$-1\r\n":
				l.miss.Add(1)
			default:
				l.ok.Add(1)
				if _, err := c.br.ReadString('\n'); err != nil {
					return
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(l.end)
	return l
}

func (l *load) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// TestKilledServerTwemproxyPolicy: a server killed under load is ejected
// after server_failure_limit failures, its keys rehash (misses, not
// errors), and once it is back a background probe returns it to the ring.
func TestKilledServerTwemproxyPolicy(t *testing.T) {
	t.Parallel()
	rs := threeRedis(t)
	p := startProxy(t, poolYAML("r", freeAddr(t), rs, `redis: true
auto_eject_hosts: true
server_failure_limit: 1
server_retry_timeout: 300
timeout: 1000`))
	pc := p.cfg.Pools[0]
	victim := rs[1]
	dead := keyOn(t, pc, victim.Addr, "dead:")
	alive := keyOn(t, pc, rs[0].Addr, "alive:")
	c := dial(t, p.Addr("r"))
	c.send(resp("SET", dead, "1") + resp("SET", alive, "1"))
	c.expect("+OK\r\n+OK\r\n")
	ld := startLoad(t, p.Addr("r"), []string{alive, dead})
	time.Sleep(100 * time.Millisecond)

	victim.Stop()
	name := victim.Addr
	eventually(t, "ejection", 20*time.Second, func() bool {
		return p.counter(t, "ambassador_server_ejections_total", "server", name) >= 1
	})
	if up := p.counter(t, "ambassador_server_up", "server", name); up != 0 {
		t.Errorf("server_up = %v after ejection", up)
	}
	// Rehashed: the dead server's key is now a miss on another server.
	eventually(t, "rehash", 10*time.Second, func() bool { return c.do(resp("GET", dead)) == "$-1\r\n" })
	if err := p.Ready(t.Context()); err != nil {
		t.Errorf("ready with two live servers: %v", err)
	}
	errsAtEject := ld.errs.Load()
	time.Sleep(800 * time.Millisecond) // several retry periods
	if d := ld.errs.Load() - errsAtEject; d != 0 {
		t.Errorf("%d errors while ejected: the probe must find the server dead, not client requests", d)
	}

	restartRedis(t, victim)
	eventually(t, "probe puts the server back", 20*time.Second, func() bool {
		return p.counter(t, "ambassador_server_up", "server", name) == 1
	})
	c.send(resp("SET", dead, "2"))
	c.expect("+OK\r\n")
	d := dial(t, victim.Addr)
	d.send(resp("GET", dead))
	d.expect(bulk("2"))
	ld.end()
	if ld.ok.Load() == 0 {
		t.Error("no successful request under load")
	}
	if e := p.counter(t, "ambassador_server_errors_total", "server", name); e < 1 {
		t.Errorf("server_errors_total = %v, want >= 1", e)
	}
}

// TestKilledServerMcrouterPolicy: no rehash; the dead server's keys fail
// fast with an error reply while the others are served.
func TestKilledServerMcrouterPolicy(t *testing.T) {
	t.Parallel()
	rs := threeRedis(t)
	p := startProxy(t, poolYAML("r", freeAddr(t), rs, `redis: true
failure_policy: mcrouter
server_failure_limit: 1
server_retry_timeout: 300
timeout: 1000`))
	pc := p.cfg.Pools[0]
	victim := rs[2]
	dead := keyOn(t, pc, victim.Addr, "dead:")
	alive := keyOn(t, pc, rs[0].Addr, "alive:")
	c := dial(t, p.Addr("r"))
	c.send(resp("SET", dead, "1") + resp("SET", alive, "1"))
	c.expect("+OK\r\n+OK\r\n")
	victim.Stop()
	eventually(t, "server marked down", 20*time.Second, func() bool {
		c.do(resp("GET", dead))
		return p.counter(t, "ambassador_server_up", "server", victim.Addr) == 0
	})
	for range 20 {
		start := time.Now()
		got := c.do(resp("GET", dead))
		if !strings.Contains(got, "server is down") {
			t.Fatalf("GET of a down server's key: %q, want a fail-fast error", got)
		}
		if time.Since(start) > time.Second {
			t.Fatalf("fail-fast took %v", time.Since(start))
		}
		c.send(resp("GET", alive))
		c.expect(bulk("1"))
	}
	restartRedis(t, victim)
	eventually(t, "server back", 20*time.Second, func() bool {
		return p.counter(t, "ambassador_server_up", "server", victim.Addr) == 1
	})
	c.send(resp("SET", dead, "3") + resp("GET", dead))
	c.expect("+OK\r\n" + bulk("3"))
}

// freeze stops s with SIGSTOP and waits until every thread of it has
// stopped: kill returns before a busy thread stops, and a request sent at
// once could still be answered (seen on a loaded machine).
func freeze(t *testing.T, s *testserver.Server) {
	t.Helper()
	if err := s.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the server to stop", 10*time.Second, func() bool {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", s.PID()))
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			st := string(b)
			i := strings.LastIndexByte(st, ')')
			if err != nil || i < 0 || i+2 >= len(st) || (st[i+2] != 'T' && st[i+2] != 't') {
				return false
			}
		}
		return true
	})
}

// TestFrozenServer: a SIGSTOPped server times out, is ejected after the
// failure limit, and comes back after SIGCONT.
func TestFrozenServer(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, `auto_eject_hosts: true
server_failure_limit: 2
server_retry_timeout: 300
timeout: 300`))
	pc := p.cfg.Pools[0]
	victim := mcs[0]
	frozen := keyOn(t, pc, victim.Addr, "frozen:")
	c := dial(t, p.Addr("mc"))
	c.send(fmt.Sprintf("set %s 0 0 1\r\nx\r\n", frozen))
	c.expect("STORED\r\n")
	freeze(t, victim)
	var timeouts int
	eventually(t, "ejection of the frozen server", 30*time.Second, func() bool {
		start := time.Now()
		got := c.do("get " + frozen + "\r\n")
		if strings.HasPrefix(got, "SERVER_ERROR") {
			timeouts++
			if !strings.Contains(got, "timeout") {
				t.Errorf("frozen server error %q, want a timeout", got)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("timeout took %v with timeout: 300", time.Since(start))
			}
		}
		return got == "END\r\n" // rehashed: a miss elsewhere
	})
	if timeouts == 0 || timeouts > 4 {
		t.Errorf("%d timeout errors before ejection, want 1..4 (failure limit 2)", timeouts)
	}
	if e := p.counter(t, "ambassador_server_errors_total", "server", victim.Addr, "kind", "timeout"); e < 1 {
		t.Errorf("timeout errors metric = %v", e)
	}
	if err := victim.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, "thawed server back", 20*time.Second, func() bool {
		return p.counter(t, "ambassador_server_up", "server", victim.Addr) == 1
	})
	c.send("get " + frozen + "\r\n")
	c.expect(fmt.Sprintf("VALUE %s 0 1\r\nx\r\nEND\r\n", frozen))
}
