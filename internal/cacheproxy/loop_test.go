package cacheproxy

import (
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/testserver"
)

// TestPipelineBeyondTheClientLimit sends, in one write, many times more
// requests than a client may have unanswered, then half-closes: the reading
// stops at the limit and must start again as replies go out, even though
// the socket has nothing new to read, and every request read before the
// end of the stream must be answered.
func TestPipelineBeyondTheClientLimit(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	rs := threeRedis(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, "")+poolYAML("rd", freeAddr(t), rs, "  redis: true\n"))
	const n = 6000
	cases := []struct {
		pool, set, get, want string
	}{
		{"mc", "set k%d 0 0 %d\r\n%s\r\n", "get k%d\r\n", "VALUE k%d 0 %d\r\n%s\r\nEND\r\n"},
		{"rd", "*3\r\n$3\r\nSET\r\n$%d\r\nk%d\r\n$%d\r\n%s\r\n", "*2\r\n$3\r\nGET\r\n$%d\r\nk%d\r\n", "$%d\r\n%s\r\n"},
	}
	for _, tc := range cases {
		for round := range 2 {
			c, err := net.DialTimeout("tcp", p.Addr(tc.pool), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			var req, want strings.Builder
			for i := range n {
				v := fmt.Sprint(i * 7)
				k := fmt.Sprintf("k%d", i)
				if tc.pool == "mc" {
					fmt.Fprintf(&req, tc.set, i, len(v), v)
					want.WriteString("STORED\r\n")
				} else {
					fmt.Fprintf(&req, tc.set, len(k), i, len(v), v)
					want.WriteString("+OK\r\n")
				}
			}
			for i := range n {
				v := fmt.Sprint(i * 7)
				k := fmt.Sprintf("k%d", i)
				if tc.pool == "mc" {
					fmt.Fprintf(&req, tc.get, i)
					fmt.Fprintf(&want, tc.want, i, len(v), v)
				} else {
					fmt.Fprintf(&req, tc.get, len(k), i)
					fmt.Fprintf(&want, tc.want, len(v), v)
				}
			}
			go func() {
				_, _ = io.WriteString(c, req.String())
				if round == 1 {
					_ = c.(*net.TCPConn).CloseWrite()
				}
			}()
			got := make([]byte, want.Len())
			k, err := io.ReadFull(c, got)
			if err != nil || string(got) != want.String() {
				t.Fatalf("%s round %d: %d of %d reply bytes, err %v; first difference at %d", tc.pool, round, k, want.Len(), err, firstDiff(got[:k], want.String()))
			}
			if round == 1 {
				// Everything answered, then the end of the stream closes.
				if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
					t.Fatalf("%s: after the replies: %q, %v", tc.pool, b, err)
				}
			}
			c.Close()
		}
	}
}

func firstDiff(a []byte, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestUnreachableServerHoldsNoOtherClient: a request for a server whose
// host drops SYNs waits for its dial, up to the pool's timeout, and gets
// an error then; meanwhile other clients' requests for a live server are
// answered at once, as the dial happens off the event loop.
func TestUnreachableServerHoldsNoOtherClient(t *testing.T) {
	t.Parallel()
	mc := testserver.Memcached(t)
	hole := &testserver.Server{Addr: blackhole(t)}
	p := startProxy(t, poolYAML("mc", freeAddr(t), []*testserver.Server{mc, hole}, "timeout: 2000\nserver_failure_limit: 100"))
	pc := p.cfg.Pools[0]
	lost, live := keyOn(t, pc, hole.Addr, "lost:"), keyOn(t, pc, mc.Addr, "live:")

	a := dial(t, p.Addr("mc"))
	asked := time.Now()
	a.send("get " + lost + "\r\n")
	time.Sleep(100 * time.Millisecond) // the dial is under way

	b := dial(t, p.Addr("mc"))
	start := time.Now()
	for i := range 50 {
		b.send(fmt.Sprintf("set %s 0 0 1\r\n%d\r\nget %s\r\n", live, i%10, live))
		b.expect(fmt.Sprintf("STORED\r\nVALUE %s 0 1\r\n%d\r\nEND\r\n", live, i%10))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("50 round trips to the live server took %v while a dial hung", d)
	}
	if line := a.line(); !strings.HasPrefix(line, "SERVER_ERROR ") {
		t.Errorf("request for the unreachable server: %q, want a SERVER_ERROR", line)
	}
	if d := time.Since(asked); d < time.Second {
		t.Errorf("the unreachable server's request failed after %v: its dial was not left to hang", d)
	}
}

// blackhole listens on a free 127.0.0.1 port without ever accepting and
// fills the accept queue, so that the kernel drops further SYNs: a dial to
// it hangs until its timeout.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 64 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			return addr // the queue is full: SYNs are dropped now
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s still takes connections after 64 dials", addr)
	return ""
}

// TestFrozenServerHoldsNoOtherClient: requests for a SIGSTOPped server
// fill its socket until writes to it would wait; they wait off the event
// loop, so another client's requests for a live server are answered at
// once, and the frozen server's requests fail at the pool's timeout.
func TestFrozenServerHoldsNoOtherClient(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, "timeout: 5000\nserver_failure_limit: 100"))
	pc := p.cfg.Pools[0]
	victim := mcs[0]
	cold, warm := keyOn(t, pc, victim.Addr, "cold:"), keyOn(t, pc, mcs[1].Addr, "warm:")
	freeze(t, victim)
	defer func() { _ = victim.Signal(syscall.SIGCONT) }()

	// 24 MiB of sets: far more than the sockets between the ambassador
	// and the frozen server hold.
	const sets, size = 24, 1 << 20
	a := dial(t, p.Addr("mc"))
	value := strings.Repeat("v", size)
	var req strings.Builder
	for range sets {
		fmt.Fprintf(&req, "set %s 0 0 %d\r\n%s\r\n", cold, size, value)
	}
	a.send(req.String())
	eventually(t, "the sets queued for the frozen server", 20*time.Second, func() bool {
		return p.counter(t, "ambassador_server_in_flight_requests", "server", victim.Addr) == sets
	})

	b := dial(t, p.Addr("mc"))
	start := time.Now()
	for i := range 50 {
		b.send(fmt.Sprintf("set %s 0 0 1\r\n%d\r\nget %s\r\n", warm, i%10, warm))
		b.expect(fmt.Sprintf("STORED\r\nVALUE %s 0 1\r\n%d\r\nEND\r\n", warm, i%10))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("50 round trips to a live server took %v beside a frozen one", d)
	}
	for i := range sets {
		if line := a.line(); !strings.HasPrefix(line, "SERVER_ERROR ") {
			t.Fatalf("set %d for the frozen server: %q, want a SERVER_ERROR", i, line)
		}
	}
}
