package cacheproxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/testserver"
)

// TestPerKeyOrderWithSeveralConnections: with server_connections > 1 a
// key's requests still go over one connection, so a pipelining client
// reads its own writes (nutcracker loses this, recommendation.md).
func TestPerKeyOrderWithSeveralConnections(t *testing.T) {
	t.Parallel()
	rs := threeRedis(t)
	p := startProxy(t, poolYAML("r", freeAddr(t), rs, "redis: true\nserver_connections: 4"))
	clients := make([]*client, 4)
	for i := range clients {
		clients[i] = dial(t, p.Addr("r"))
	}
	var want strings.Builder
	var req strings.Builder
	for i := 1; i <= 500; i++ {
		fmt.Fprintf(&req, "%s%s", resp("SET", fmt.Sprintf("k%d", i%7), fmt.Sprint(i)), resp("GET", fmt.Sprintf("k%d", i%7)))
		fmt.Fprintf(&want, "+OK\r\n%s", bulk(fmt.Sprint(i)))
	}
	for _, c := range clients[1:] { // other traffic on the same servers
		c.send(strings.Repeat(resp("INCR", "noise"), 500))
	}
	clients[0].send(req.String())
	clients[0].expect(want.String())
}

// TestReadiness: /readyz fails while a pool has no live server.
func TestReadiness(t *testing.T) {
	t.Parallel()
	rs := threeRedis(t)
	p := startProxy(t, poolYAML("ok", freeAddr(t), rs[:2], "redis: true")+
		poolYAML("lonely", freeAddr(t), rs[2:], "redis: true\nfailure_policy: mcrouter\nserver_failure_limit: 1\nserver_retry_timeout: 60000\ntimeout: 500"))
	if err := p.Ready(t.Context()); err != nil {
		t.Fatalf("ready at start: %v", err)
	}
	rs[2].Stop()
	c := dial(t, p.Addr("lonely"))
	eventually(t, "pool lonely not ready", 20*time.Second, func() bool {
		c.do(resp("GET", "x"))
		err := p.Ready(t.Context())
		return err != nil && strings.Contains(err.Error(), "pool lonely: no live server")
	})
	// The healthy pool is unaffected.
	d := dial(t, p.Addr("ok"))
	d.send(resp("SET", "a", "1"))
	d.expect("+OK\r\n")
}

// TestIdleCloseIsNotAFailure: a server that closes an idle connection
// (redis "timeout 1") costs no client request and no failure count: the
// idle reader sees the close and the next request reconnects.
func TestIdleCloseIsNotAFailure(t *testing.T) {
	t.Parallel()
	rs := []*testserver.Server{testserver.Redis(t, "--timeout", "1")}
	p := startProxy(t, poolYAML("r", freeAddr(t), rs, "redis: true\nfailure_policy: mcrouter\nserver_failure_limit: 1"))
	c := dial(t, p.Addr("r"))
	for i := range 2 {
		c.send(resp("SET", "a", fmt.Sprint(i)) + resp("GET", "a"))
		c.expect("+OK\r\n" + bulk(fmt.Sprint(i)))
		time.Sleep(2500 * time.Millisecond) // redis closes the idle server connection
	}
	if e := p.counter(t, "ambassador_server_errors_total"); e != 0 {
		t.Errorf("server_errors_total = %v after idle closes", e)
	}
	if up := p.counter(t, "ambassador_server_up"); up != 1 {
		t.Errorf("server_up = %v", up)
	}
}
