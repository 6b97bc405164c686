package cacheproxy

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/testserver"
)

// TestFreshConnectionsAlwaysGetAReply is nginx's memcached_pass seen from
// the ambassador: a new connection per request, one "get KEY", read up to
// END, close. Right after start (no server connection yet) and after, every
// such connection gets its whole reply: never a close without one.
func TestFreshConnectionsAlwaysGetAReply(t *testing.T) {
	t.Parallel()
	shards := []*testserver.Server{testserver.Memcached(t), testserver.Memcached(t), testserver.Memcached(t)}
	const keys = 24
	for i := range keys {
		if i%3 == 2 {
			continue // a third of the keys are misses
		}
		for _, s := range shards { // on every shard: wherever the ring puts it, it is there
			c := dial(t, s.Addr)
			if got := c.do(fmt.Sprintf("set /cache/key-%d 0 0 5\r\nv-%03d\r\n", i, i)); got != "STORED\r\n" {
				t.Fatalf("set on %s: %q", s.Addr, got)
			}
		}
	}
	extra := `hash: fnv1a_64
distribution: ketama
timeout: 5000
auto_eject_hosts: true
server_retry_timeout: 30000
server_failure_limit: 2`
	deadline := time.Now().Add(30 * time.Second)
	for round := 0; round < 4 && time.Now().Before(deadline); round++ {
		listen := freeAddr(t)
		startProxy(t, poolYAML("web", listen, shards, extra))
		var wg sync.WaitGroup
		errs := make(chan string, 8)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					k := (g*25 + i) % keys
					if err := getOnce(listen, k); err != nil {
						select {
						case errs <- fmt.Sprintf("round %d, client %d, get /cache/key-%d: %v", round, g, k, err):
						default:
						}
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
}

// getOnce dials, sends one get of /cache/key-k and checks the whole reply.
func getOnce(addr string, k int) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	key := fmt.Sprintf("/cache/key-%d", k)
	if _, err := fmt.Fprintf(c, "get %s\r\n", key); err != nil {
		return err
	}
	want := "END\r\n"
	if k%3 != 2 {
		want = fmt.Sprintf("VALUE %s 0 5\r\nv-%03d\r\nEND\r\n", key, k)
	}
	var got strings.Builder
	br := bufio.NewReader(c)
	for !strings.HasSuffix(got.String(), "END\r\n") {
		line, err := br.ReadString('\n')
		got.WriteString(line)
		if err != nil {
			return fmt.Errorf("connection ended after %q: %w", got.String(), err)
		}
		if strings.HasPrefix(line, "SERVER_ERROR") || strings.HasPrefix(line, "ERROR") || strings.HasPrefix(line, "CLIENT_ERROR") {
			break
		}
	}
	if got.String() != want {
		return fmt.Errorf("reply %q, want %q", got.String(), want)
	}
	return nil
}
