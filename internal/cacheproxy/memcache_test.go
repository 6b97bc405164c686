package cacheproxy

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/podkit/podkit/internal/testserver"
)

func threeMemcached(t *testing.T) []*testserver.Server {
	// -I 4m: items above memcached's 1 MiB default.
	return []*testserver.Server{testserver.Memcached(t, "-I", "4m"), testserver.Memcached(t, "-I", "4m"), testserver.Memcached(t, "-I", "4m")}
}

func TestMemcacheProtocol(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	listen := freeAddr(t)
	p := startProxy(t, poolYAML("mc", listen, mcs, "hash: fnv1a_64"))
	c := dial(t, p.Addr("mc"))

	tests := []struct {
		name string
		req  string
		want string
	}{
		{"set", "set a 5 0 1\r\nx\r\n", "STORED\r\n"},
		{"set binary-safe value", "set b 0 0 4\r\n\r\n\x00\xff\r\n", "STORED\r\n"},
		{"noreply stays silent", "set c 0 0 2 noreply\r\nzz\r\nget c\r\n", "VALUE c 0 2\r\nzz\r\nEND\r\n"},
		{"multi-get in key order with a miss", "get c nope a b a\r\n",
			"VALUE c 0 2\r\nzz\r\nVALUE a 5 1\r\nx\r\nVALUE b 0 4\r\n\r\n\x00\xff\r\nVALUE a 5 1\r\nx\r\nEND\r\n"},
		{"add existing", "add a 0 0 1\r\ny\r\n", "NOT_STORED\r\n"},
		{"append", "append a 0 0 2\r\nyz\r\nget a\r\n", "STORED\r\nVALUE a 5 3\r\nxyz\r\nEND\r\n"},
		{"incr", "set n 0 0 1\r\n5\r\nincr n 10\r\ndecr n 3\r\n", "STORED\r\n15\r\n12\r\n"},
		{"touch and gat", "touch n 100\r\ngat 100 n\r\n", "TOUCHED\r\nVALUE n 0 2\r\n12\r\nEND\r\n"},
		{"delete", "delete n\r\ndelete n\r\n", "DELETED\r\nNOT_FOUND\r\n"},
		{"delete noreply", "delete c noreply\r\nget c\r\n", "END\r\n"},
		{"meta set and get", "ms mk 2 T0\r\nhi\r\nmg mk v\r\n", "HD\r\nVA 2\r\nhi\r\n"},
		{"meta quiet miss hidden, mn answered", "mg missing v q\r\nmg mk v q\r\nmn\r\n", "VA 2\r\nhi\r\nMN\r\n"},
		{"meta delete and arithmetic", "md mk\r\nma cnt N0 J7 v\r\n", "HD\r\nVA 1\r\n7\r\n"},
		{"unknown command keeps the connection", "bogus\r\nget a\r\n", "ERROR\r\nVALUE a 5 3\r\nxyz\r\nEND\r\n"},
		{"cluster-wide command refused", "flush_all\r\n", "SERVER_ERROR flush_all is not supported by the ambassador (it would reach one shard only)\r\n"},
		{"bad format", "set k notanumber 0 1\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"key too long", "get " + strings.Repeat("k", 251) + "\r\n", "CLIENT_ERROR bad command line format\r\n"},
		{"version", "version\r\n", "VERSION test\r\n"},
	}
	for _, tt := range tests {
		c.send(tt.req)
		c.expect(tt.want)
	}

	// gets returns a cas unique that cas accepts.
	c.send("gets a\r\n")
	hdr := c.line()
	f := strings.Fields(hdr)
	if len(f) != 5 {
		t.Fatalf("gets header %q", hdr)
	}
	c.line()
	c.expect("END\r\n")
	c.send(fmt.Sprintf("cas a 0 0 1 %s\r\nq\r\ncas a 0 0 1 %s\r\nr\r\n", f[4], f[4]))
	c.expect("STORED\r\nEXISTS\r\n")

	// 1 MiB+ values, and high-byte keys, survive the trip.
	big := bytes.Repeat([]byte("0123456789abcdef"), 70000) // 1.07 MiB
	big[17] = 0
	c.send(fmt.Sprintf("set big\xe9\xff 0 0 %d\r\n%s\r\nget big\xe9\xff\r\n", len(big), big))
	c.expect(fmt.Sprintf("STORED\r\nVALUE big\xe9\xff 0 %d\r\n%s\r\nEND\r\n", len(big), big))

	// Every key landed where the ring says: ask each memcached directly.
	r := p.cfg.Pools[0].Ring()
	for i := range 300 {
		k := fmt.Sprintf("placed:%d", i)
		c.send(fmt.Sprintf("set %s 0 0 1\r\nv\r\n", k))
		c.expect("STORED\r\n")
		holder := p.cfg.Pools[0].Servers[r.Locate([]byte(k))].Addr
		for _, mc := range mcs {
			d := dial(t, mc.Addr)
			got := d.do("get " + k + "\r\n")
			if has := got != "END\r\n"; has != (mc.Addr == holder) {
				t.Fatalf("key %s: on %s = %v, ring says %s", k, mc.Addr, has, holder)
			}
			d.c.Close()
		}
	}
	if n := p.counter(t, "ambassador_commands_total", "command", "get"); n < 5 {
		t.Errorf("commands_total{get} = %v", n)
	}
}

func TestMemcacheQuitAndMalformed(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, ""))
	c := dial(t, p.Addr("mc"))
	// Replies before quit are written, then the connection closes.
	c.send("set q 0 0 1\r\n1\r\nget q\r\nquit\r\nget q\r\n")
	c.expect("STORED\r\nVALUE q 0 1\r\n1\r\nEND\r\n")
	if b, err := c.br.ReadByte(); err == nil {
		t.Fatalf("read %q after quit", b)
	}
	// A data block without its CRLF: error reply, then close.
	c = dial(t, p.Addr("mc"))
	c.send("set q 0 0 1\r\nxyz\r\n")
	c.expect("CLIENT_ERROR bad data chunk\r\n")
	if _, err := c.br.ReadByte(); err == nil {
		t.Fatal("connection still open after a bad data chunk")
	}
}

// TestMemcacheMultiGetLarge splits a 10,000-key get over three servers.
func TestMemcacheMultiGetLarge(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, ""))
	c := dial(t, p.Addr("mc"))
	var req, want strings.Builder
	for i := range 10000 {
		if i%2 == 0 {
			fmt.Fprintf(&req, "set k%d 0 0 %d noreply\r\n%d\r\n", i, len(fmt.Sprint(i)), i)
		}
	}
	req.WriteString("get")
	for i := range 10000 {
		fmt.Fprintf(&req, " k%d", i)
		if i%2 == 0 {
			fmt.Fprintf(&want, "VALUE k%d 0 %d\r\n%d\r\n", i, len(fmt.Sprint(i)), i)
		}
	}
	req.WriteString("\r\n")
	want.WriteString("END\r\n")
	c.send(req.String())
	c.expect(want.String())
}
