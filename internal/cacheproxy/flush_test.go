package cacheproxy

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/testserver"
)

// TestLargeWriteKeepsLaterRequestsIntact: after a server connection has
// written a batch over 1 MiB (whose buffer is not kept for reuse), the
// requests of clients sharing that connection must still reach the server
// byte for byte. The buffer being written must never be the one senders
// append to meanwhile, or their bytes overwrite it mid-write and replies go
// to the wrong clients.
func TestLargeWriteKeepsLaterRequestsIntact(t *testing.T) {
	t.Parallel()
	mc := testserver.Memcached(t, "-I", "4m")
	listen := freeAddr(t)
	startProxy(t, poolYAML("p", listen, []*testserver.Server{mc}, "server_connections: 1\ntimeout: 10000"))

	c := dial(t, listen)
	// A large (but under 1 MiB) request first: its buffer becomes the
	// connection's spare, big enough to hold many later requests.
	warm := strings.Repeat("w", 512<<10)
	if got := c.do(fmt.Sprintf("set warm 0 0 %d\r\n%s\r\n", len(warm), warm)); got != "STORED\r\n" {
		t.Fatalf("set warm: %q", got)
	}
	big := strings.Repeat("b", 2<<20)
	if got := c.do(fmt.Sprintf("set big 0 0 %d\r\n%s\r\n", len(big), big)); got != "STORED\r\n" {
		t.Fatalf("set big: %q", got)
	}

	const clients, rounds = 16, 100
	deadline := time.Now().Add(20 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan string, clients)
	for g := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := dial(t, listen)
			for i := 0; i < rounds && time.Now().Before(deadline); i++ {
				k := fmt.Sprintf("k%d-%d", g, i)
				v := strings.Repeat(string(rune('a'+g)), 200+i)
				_ = cl.c.SetReadDeadline(time.Now().Add(5 * time.Second))
				cl.send(fmt.Sprintf("set %s 0 0 %d\r\n%s\r\nget %s\r\n", k, len(v), v, k))
				want := fmt.Sprintf("STORED\r\nVALUE %s 0 %d\r\n%s\r\nEND\r\n", k, len(v), v)
				got := make([]byte, len(want))
				n, err := io.ReadFull(cl.br, got)
				if err != nil || string(got) != want {
					errs <- fmt.Sprintf("client %d, request %d: got %q (%v), want %q", g, i, clip(got[:n]), err, clip([]byte(want)))
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
