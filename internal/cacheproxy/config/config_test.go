package config

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/cacheproxy/ring"
)

func TestParseNutcrackerExample(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("testdata/nutcracker.yml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Names(), ","); got != "alpha,beta,delta,gamma,omega" {
		t.Fatalf("pools %s", got)
	}
	a := c.Pool("alpha")
	if !a.Redis || !a.AutoEjectHosts || a.ServerRetryTimeout != 2*time.Second || a.ServerFailureLimit != 1 ||
		a.Timeout != 0 || a.Backlog != 512 || a.ServerConnections != 1 || a.Hash != "fnv1a_64" || a.Distribution != ring.Ketama {
		t.Errorf("alpha: %+v", a)
	}
	b2 := c.Pool("beta")
	if b2.HashTag != "{}" || b2.Timeout != 400*time.Millisecond || len(b2.Servers) != 4 {
		t.Errorf("beta: %+v", b2)
	}
	if s := b2.Servers[0]; s.Name != "server1" || s.Addr != "127.0.0.1:6380" || s.Weight != 1 {
		t.Errorf("beta server 0: %+v", s)
	}
	g := c.Pool("gamma")
	if !g.Preconnect || g.Backlog != 1024 || g.Redis || g.ServerFailureLimit != 3 {
		t.Errorf("gamma: %+v", g)
	}
	o := c.Pool("omega")
	if !o.ListenUnix || o.Listen != "/tmp/gamma" || o.ListenPerm != 0o666 || o.Servers[0].Weight != 100000 {
		t.Errorf("omega: %+v", o)
	}
}

func TestParseServer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, name, addr string
		weight         int
		err            string
	}{
		{in: "127.0.0.1:11211:1", name: "127.0.0.1", addr: "127.0.0.1:11211", weight: 1},
		{in: "cache-0.cache:6379:2", name: "cache-0.cache:6379", addr: "cache-0.cache:6379", weight: 2},
		{in: "127.0.0.1:11212:3 shard-a", name: "shard-a", addr: "127.0.0.1:11212", weight: 3},
		{in: "::1:6379:1", name: "::1:6379", addr: "[::1]:6379", weight: 1},
		{in: "127.0.0.1:11211:0", err: "invalid weight"},
		{in: "127.0.0.1:11211", err: "is not host:port:weight"},
		{in: "host:port:1", err: "invalid port"},
		{in: "127.0.0.1:70000:1", err: "invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := ParseServer(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Name != tt.name || s.Addr != tt.addr || s.Weight != tt.weight {
				t.Fatalf("got %+v", s)
			}
		})
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yml, want string
	}{
		{"unknown key", "p:\n  listen: 127.0.0.1:1\n  hsah: md5\n  servers:\n   - a:1:1\n", `line 3: pool "p": unknown key "hsah"`},
		{"bad hash", "p:\n  listen: 127.0.0.1:1\n  hash: sha1\n  servers:\n   - a:1:1\n", `line 3: pool "p": hash: unknown hash "sha1"`},
		{"bad tag", "p:\n  listen: 127.0.0.1:1\n  hash_tag: \"{\"\n  servers:\n   - a:1:1\n", "not a valid hash tag string with two characters"},
		{"bad bool", "p:\n  listen: 127.0.0.1:1\n  redis: yes\n  servers:\n   - a:1:1\n", `line 3: pool "p": redis: "yes" is not true or false`},
		{"bad server", "p:\n  listen: 127.0.0.1:1\n  servers:\n   - a:1:1\n   - b:x:1\n", `line 5: pool "p": server "b:x:1": invalid port`},
		{"duplicate name", "p:\n  listen: 127.0.0.1:1\n  servers:\n   - a:1:1 x\n   - b:2:1 x\n", `server name "x" is given twice`},
		{"no listen", "p:\n  servers:\n   - a:1:1\n", "listen is missing"},
		{"no servers", "p:\n  listen: 127.0.0.1:1\n", "servers is empty"},
		{"same listen", "p:\n  listen: 127.0.0.1:1\n  servers:\n   - a:1:1\nq:\n  listen: 127.0.0.1:1\n  servers:\n   - a:1:1\n", "like pool"},
		{"bad policy", "p:\n  listen: 127.0.0.1:1\n  failure_policy: retry\n  servers:\n   - a:1:1\n", "use twemproxy"},
		{"not yaml", "p: [", "yaml"},
		{"empty", "", "empty configuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}

// TestServerOrder: servers are kept in nutcracker's order (name length,
// then bytes), which modula placement depends on.
func TestServerOrder(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte("p:\n  listen: 127.0.0.1:1\n  servers:\n   - h:30:1 bb\n   - h:10:1 c\n   - h:20:1 ab\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range c.Pools[0].Servers {
		got = append(got, s.Name)
	}
	if strings.Join(got, ",") != "c,ab,bb" {
		t.Fatalf("order %v", got)
	}
}

func TestFromFlags(t *testing.T) {
	t.Parallel()
	c, err := FromFlags("default", "127.0.0.1:11211", []string{"a:11211", "b:11211:2", " "}, false)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pools[0]
	if len(p.Servers) != 2 || p.Servers[0].Name != "a" || p.Servers[1].Weight != 2 {
		t.Fatalf("%+v", p.Servers)
	}
	if _, err := FromFlags("default", "127.0.0.1:11211", nil, false); err == nil || !strings.Contains(err.Error(), "-servers is empty") {
		t.Fatalf("err %v", err)
	}
	if _, err := FromFlags("default", "nope", []string{"a:1"}, false); err == nil || !strings.Contains(err.Error(), "-listen") {
		t.Fatalf("err %v", err)
	}
}

func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile("testdata/nutcracker.yml")
	f.Add(b)
	f.Add([]byte("p:\n  listen: 127.0.0.1:1\n  servers:\n   - a:1:1 x\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := Parse(in)
		if err != nil {
			return
		}
		for _, p := range c.Pools {
			if len(p.Servers) == 0 || p.Listen == "" || p.HashFunc == nil {
				t.Fatalf("accepted an incomplete pool: %+v", p)
			}
			for _, s := range p.Servers {
				if s.Weight < 1 {
					t.Fatalf("weight %d accepted", s.Weight)
				}
			}
		}
	})
}
