package ring_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/testserver"
)

// recorders are fake cache servers that remember which keys reached them.
// They stand in for real memcached/redis in the placement comparison: a
// real backend can tell where a key landed too, but 25 of them for one
// test would cost more than the comparison itself.
type recorders struct {
	mu    sync.Mutex
	where map[string]string // key -> address of the recorder that saw it
	addrs []string
	lns   []net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func newRecorders(t *testing.T, n int) *recorders {
	r := &recorders{where: map[string]string{}}
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r.lns = append(r.lns, ln)
		r.addrs = append(r.addrs, ln.Addr().String())
		r.wg.Add(1)
		go r.accept(ln)
	}
	t.Cleanup(func() {
		for _, ln := range r.lns {
			ln.Close()
		}
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *recorders) accept(ln net.Listener) {
	defer r.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns = append(r.conns, c)
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer c.Close()
			r.serve(c, ln.Addr().String())
		}()
	}
}

func (r *recorders) serve(c net.Conn, addr string) {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return
		}
		var key string
		var reply string
		if line[0] == '*' { // RESP: *2 $3 get $n key
			n, _ := strconv.Atoi(strings.TrimSpace(string(line[1:])))
			var args []string
			for range n {
				hdr, err := br.ReadBytes('\n')
				if err != nil {
					return
				}
				l, _ := strconv.Atoi(strings.TrimSpace(string(hdr[1:])))
				b := make([]byte, l+2)
				if _, err := io.ReadFull(br, b); err != nil {
					return
				}
				args = append(args, string(b[:l]))
			}
			key, reply = args[len(args)-1], "$-1\r\n"
		} else {
			f := bytes.Fields(line)
			key, reply = string(f[len(f)-1]), "END\r\n"
		}
		r.mu.Lock()
		r.where[key] = addr
		r.mu.Unlock()
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

func (r *recorders) take() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.where
	r.where = map[string]string{}
	return m
}

type placementCase struct {
	name  string
	pool  string // pool body without listen and servers
	nsrv  int
	alias bool
	wts   []int
	redis bool
	keys  [][]byte
}

func keySets(rng *rand.Rand, binary bool) [][]byte {
	var keys [][]byte
	for i := range 1000 {
		keys = append(keys, []byte(fmt.Sprintf("key:%d", i)))
	}
	for range 1000 { // bytes >= 0x80: twemproxy sign-extends them
		n := 1 + rng.IntN(30)
		k := make([]byte, n)
		for j := range k {
			if binary {
				k[j] = byte(rng.IntN(256))
			} else {
				k[j] = byte(0x21 + rng.IntN(0xff-0x21+1))
			}
		}
		keys = append(keys, k)
	}
	return keys
}

// TestPlacementMatchesNutcracker sends thousands of keys through the real
// nutcracker and checks that ring places each one on the server nutcracker
// chose, for every hash function and distribution, with weights, names,
// hash tags, 25 servers (the float32 point count) and binary keys.
func TestPlacementMatchesNutcracker(t *testing.T) {
	testserver.Require(t, "nutcracker")
	rng := rand.New(rand.NewPCG(1, 2))
	text := keySets(rng, false)
	bin := keySets(rng, true)
	var tagged [][]byte
	for i := range 1000 {
		tagged = append(tagged, []byte(fmt.Sprintf("user%d:{%d}:profile", i, i%97)), []byte(fmt.Sprintf("{}x%d", i)))
	}
	var cases []placementCase
	names := []string{"fnv1a_64", "fnv1_64", "fnv1a_32", "fnv1_32", "md5", "crc16", "crc32", "crc32a", "one_at_a_time", "murmur", "jenkins", "hsieh"}
	for _, h := range names {
		for _, d := range []string{"ketama", "modula"} {
			cases = append(cases, placementCase{name: h + "/" + d, pool: "hash: " + h + "\n  distribution: " + d, nsrv: 3, keys: text})
		}
	}
	cases = append(cases,
		placementCase{name: "named-weighted", pool: "hash: fnv1a_64\n  distribution: ketama", nsrv: 3, alias: true, wts: []int{1, 2, 3}, keys: text},
		placementCase{name: "weighted-modula", pool: "hash: md5\n  distribution: modula", nsrv: 3, wts: []int{3, 1, 2}, keys: text},
		placementCase{name: "25-servers", pool: "hash: fnv1a_64\n  distribution: ketama", nsrv: 25, keys: text},
		placementCase{name: "hash-tag", pool: "hash: murmur\n  hash_tag: \"{}\"", nsrv: 4, keys: tagged},
		placementCase{name: "redis-binary", pool: "redis: true\n  hash: fnv1a_64", nsrv: 5, redis: true, keys: bin},
		placementCase{name: "redis-binary-jenkins", pool: "redis: true\n  hash: jenkins\n  distribution: modula", nsrv: 3, redis: true, keys: bin},
	)
	rec := newRecorders(t, 25)

	var yml strings.Builder
	listen := make([]string, len(cases))
	used := map[int]bool{}
	for i, c := range cases {
		port := testserver.FreePort(t)
		for used[port] { // FreePort may hand out a port twice
			port = testserver.FreePort(t)
		}
		used[port] = true
		listen[i] = fmt.Sprintf("127.0.0.1:%d", port)
		fmt.Fprintf(&yml, "p%d:\n  listen: %s\n  %s\n  servers:\n", i, listen[i], c.pool)
		for j := range c.nsrv {
			w := 1
			if c.wts != nil {
				w = c.wts[j]
			}
			line := fmt.Sprintf("%s:%d", rec.addrs[j], w)
			if c.alias {
				line += fmt.Sprintf(" shard-%c", 'a'+j)
			}
			fmt.Fprintf(&yml, "   - %s\n", line)
		}
	}
	cfg, err := config.Parse([]byte(yml.String()))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, yml.String())
	}
	nc := testserver.Nutcracker(t, yml.String(), listen[len(listen)-1])
	defer nc.Stop()
	for i, c := range cases {
		p := cfg.Pool(fmt.Sprintf("p%d", i))
		r := p.Ring()
		sendThrough(t, listen[i], c.keys, c.redis)
		got := rec.take() // complete: sendThrough waited for every reply
		bad := 0
		for k, addr := range got {
			want := p.Servers[r.Locate([]byte(k))].Addr
			if addr != want {
				if bad < 3 {
					t.Errorf("%s: key %q: nutcracker sent it to %s, ring says %s", c.name, k, addr, want)
				}
				bad++
			}
		}
		if len(got) < len(c.keys)*9/10 {
			t.Errorf("%s: only %d of %d keys observed", c.name, len(got), len(c.keys))
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d keys placed differently", c.name, bad, len(got))
		}
	}
	// The float32 rule: 25 equal servers get 156 points each, not 160.
	p25 := cfg.Pool(fmt.Sprintf("p%d", len(names)*2+2))
	if pts := p25.Ring().Points(); pts[0] != 156 {
		t.Errorf("25 equal servers: %d points for server 0, want 156", pts[0])
	}
}

// sendThrough sends one get per key through the proxy, pipelined, and waits
// for every reply.
func sendThrough(t *testing.T, addr string, keys [][]byte, redis bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	var buf bytes.Buffer
	for _, k := range keys {
		if redis {
			fmt.Fprintf(&buf, "*2\r\n$3\r\nget\r\n$%d\r\n%s\r\n", len(k), k)
		} else {
			fmt.Fprintf(&buf, "get %s\r\n", k)
		}
	}
	go func() { _, _ = c.Write(buf.Bytes()) }()
	br := bufio.NewReader(c)
	for i := range keys {
		if _, err := br.ReadBytes('\n'); err != nil {
			t.Fatalf("reply %d of %d: %v", i, len(keys), err)
		}
	}
}
