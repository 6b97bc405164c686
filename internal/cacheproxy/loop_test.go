package cacheproxy

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
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
