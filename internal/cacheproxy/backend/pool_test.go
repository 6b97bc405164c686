package backend

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podkit/podkit/internal/cacheproxy/config"
)

type nopCodec struct{}

func (nopCodec) ReadReply(r *bufio.Reader, c *Call) error {
	line, err := r.ReadSlice('\n')
	c.Reply = append(c.Reply, line...)
	return err
}
func (nopCodec) Handshake(net.Conn, *bufio.Reader) error { return nil }
func (nopCodec) Probe(net.Conn, *bufio.Reader) error     { return nil }

func pool(t *testing.T, servers ...string) *config.Pool {
	t.Helper()
	var b strings.Builder
	b.WriteString("p:\n  listen: 127.0.0.1:1\n  servers:\n")
	for _, s := range servers {
		b.WriteString("   - " + s + "\n")
	}
	c, err := config.Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return c.Pools[0]
}

// TestUpdateKeepsUnchangedServers: a reload keeps the connections of
// servers it does not change and retires the removed ones.
func TestUpdateKeepsUnchangedServers(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	p := NewPool(pool(t, "127.0.0.1:1:1 a", "127.0.0.1:2:1 b"), nopCodec{}, NewMetrics(reg), slog.New(slog.DiscardHandler))
	defer p.Close()
	before := map[string]*Server{}
	for _, s := range p.Servers() {
		before[s.Name] = s
	}
	p.Update(pool(t, "127.0.0.1:1:1 a", "127.0.0.1:3:1 c"), nopCodec{})
	after := map[string]*Server{}
	for _, s := range p.Servers() {
		after[s.Name] = s
	}
	if after["a"] != before["a"] {
		t.Error("server a was replaced although it did not change")
	}
	if after["c"] == nil || after["b"] != nil {
		t.Fatalf("servers after update: %v", after)
	}
	p.closing.Wait()
	// The removed server refuses new calls.
	c := NewCall()
	var b Batch
	before["b"].Do(c, 0, &b)
	b.Flush()
	c.Wait()
	if !errors.Is(c.Err, ErrClosed) {
		t.Errorf("call to a removed server: %v", c.Err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "server" && l.GetValue() == "b" {
					t.Fatalf("%s still has a series for removed server b", mf.GetName())
				}
			}
		}
	}
}

// TestEjectionRebuildsRing: with the twemproxy policy and
// auto_eject_hosts, failed dials take a server off the ring.
func TestEjectionRebuildsRing(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens there now
	cfg := pool(t, dead+":1 dead", "127.0.0.1:9:1 other")
	cfg.AutoEjectHosts, cfg.ServerFailureLimit = true, 2
	p := NewPool(cfg, nopCodec{}, NewMetrics(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	defer p.Close()
	var victim *Server
	for _, s := range p.Servers() {
		if s.Name == "dead" {
			victim = s
		}
	}
	for i := range 2 {
		c := NewCall()
		var b Batch
		victim.Do(c, 0, &b)
		b.Flush()
		c.Wait()
		if c.Err == nil {
			t.Fatalf("call %d to a dead server succeeded", i)
		}
	}
	if victim.Live() || p.LiveCount() != 1 {
		t.Fatalf("live %v, live count %d after two failures", victim.Live(), p.LiveCount())
	}
	for i := range 200 {
		if s, _ := p.Route([]byte{byte(i), 'k'}); s == victim {
			t.Fatal("an ejected server still gets keys")
		}
	}
}
