package cacheproxy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/testserver"
)

// TestReloadKeepsClients: a reload that adds a server and a pool keeps the
// open client connection working; its keys move as nutcracker would place
// them with the new server list.
func TestReloadKeepsClients(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	listen := freeAddr(t)
	p := startProxy(t, poolYAML("mc", listen, mcs[:2], ""))
	c := dial(t, p.Addr("mc"))
	c.send("set a 0 0 1\r\n1\r\n")
	c.expect("STORED\r\n")

	rs := threeRedis(t)
	yml := poolYAML("mc", listen, mcs, "") + poolYAML("r", freeAddr(t), rs, "redis: true")
	cfg, err := config.Parse([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	// Same connection, new ring: every key goes where the new config says.
	pc := cfg.Pool("mc")
	k := keyOn(t, pc, mcs[2].Addr, "new:")
	c.send(fmt.Sprintf("set %s 0 0 1\r\nz\r\n", k))
	c.expect("STORED\r\n")
	d := dial(t, mcs[2].Addr)
	d.send("get " + k + "\r\n")
	d.expect(fmt.Sprintf("VALUE %s 0 1\r\nz\r\nEND\r\n", k))
	// The new pool serves.
	r := dial(t, p.Addr("r"))
	r.send(resp("PING"))
	r.expect("+PONG\r\n")

	// A listener that cannot be bound rejects the reload; nothing changes.
	busy := p.Addr("r")
	bad := poolYAML("mc", listen, mcs, "") + poolYAML("r", freeAddr(t), rs, "redis: true") + poolYAML("x", busy, rs, "")
	cfg2, err := config.Parse([]byte(bad))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(cfg2); err == nil || !strings.Contains(err.Error(), "pool x") {
		t.Fatalf("reload onto a busy address: err %v", err)
	}
	if p.Addr("x") != "" {
		t.Fatal("pool x exists after a failed reload")
	}
	if got := p.counter(t, "ambassador_config_reloads_total", "result", "error"); got != 1 {
		t.Errorf("reloads_total{error} = %v", got)
	}

	// Removing a pool closes its listener; the remaining pool still serves.
	cfg3, _ := config.Parse([]byte(poolYAML("mc", listen, mcs, "")))
	if err := p.Reload(cfg3); err != nil {
		t.Fatal(err)
	}
	if p.Addr("r") != "" {
		t.Fatal("pool r still listening")
	}
	c.send("get a\r\n")
	line := c.line()
	if !strings.HasPrefix(line, "VALUE a") && line != "END\r\n" {
		t.Fatalf("after reload: %q", line)
	}
}

// TestShutdownFinishesInFlight: requests read before shutdown get their
// replies, then connections close and Shutdown returns.
func TestShutdownFinishesInFlight(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, ""))
	c := dial(t, p.Addr("mc"))
	var req strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&req, "set k%d 0 0 1\r\nx\r\n", i)
	}
	if _, err := c.c.Write([]byte(req.String())); err != nil {
		t.Fatal(err)
	}
	c.expect("STORED\r\n") // the batch is being processed
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	// Every request it had read was answered before the close.
	n := 1
	for {
		l, err := c.br.ReadString('\n')
		if err != nil {
			break
		}
		if l != "STORED\r\n" {
			t.Fatalf("reply %q", l)
		}
		n++
	}
	if n < 2 {
		t.Errorf("%d replies", n)
	}
	if err := p.Ready(t.Context()); err != nil {
		t.Errorf("no pools left, ready: %v", err)
	}
}

// TestNutcrackerInterchangeable: keys written through nutcracker are found
// through the ambassador on the same configuration, and the reverse, on
// real memcached and redis servers.
func TestNutcrackerInterchangeable(t *testing.T) {
	t.Parallel()
	testserver.Require(t, "nutcracker")
	mcs := threeMemcached(t)
	rs := threeRedis(t)
	ncMC, ncR := freeAddr(t), freeAddr(t)
	body := func(mcL, rL string) string {
		return poolYAML("mc", mcL, mcs, "hash: fnv1a_64\ndistribution: ketama") +
			poolYAML("r", rL, rs, "redis: true\nhash: murmur\ndistribution: modula\nhash_tag: \"{}\"")
	}
	testserver.Nutcracker(t, body(ncMC, ncR), ncR)
	p := startProxy(t, body(freeAddr(t), freeAddr(t)))
	nm, nr := dial(t, ncMC), dial(t, ncR)
	am, ar := dial(t, p.Addr("mc")), dial(t, p.Addr("r"))
	// Where they differ on purpose: nutcracker drops the connection on a
	// command it cannot proxy, losing the replies pipelined with it; the
	// ambassador answers it with an error and keeps the others.
	pipeline := resp("GET", "a") + resp("KEYS", "*") + resp("GET", "b")
	nr.send(pipeline)
	if b, err := nr.br.ReadByte(); err == nil {
		t.Errorf("nutcracker answered %q to a pipeline with KEYS: it used to close the connection", b)
	}
	ar.send(pipeline)
	ar.expect("$-1\r\n-ERR unsupported command 'keys': the ambassador shards keys over servers and cannot proxy it\r\n$-1\r\n")
	nr = dial(t, ncR)

	for i := range 500 {
		k := fmt.Sprintf("k\xc3%d:{%d}", i, i%50)
		w, r := nm, am
		wr, rr := nr, ar
		if i%2 == 1 {
			w, r, wr, rr = am, nm, ar, nr
		}
		w.send(fmt.Sprintf("set %s 0 0 1\r\nv\r\n", k))
		w.expect("STORED\r\n")
		r.send("get " + k + "\r\n")
		r.expect(fmt.Sprintf("VALUE %s 0 1\r\nv\r\nEND\r\n", k))
		wr.send(resp("SET", k, "v"))
		wr.expect("+OK\r\n")
		rr.send(resp("GET", k))
		rr.expect(bulk("v"))
	}
}
