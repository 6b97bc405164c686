package cacheproxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/cacheproxy/ring"
	"github.com/podkit/podkit/internal/testserver"
)

// These tests cover the merging of single-key memcached gets bound for one
// server connection into one multi-get (backend.Server.Join, getMerger):
// every client request still gets exactly its own answer, in order, and
// behind the writes it was sent after.

// mItem is a stored item.
type mItem struct {
	key   string
	flags uint32
	val   []byte
}

// hit is the reply to a get of the item.
func (it mItem) hit() string {
	return fmt.Sprintf("VALUE %s %d %d\r\n%s\r\nEND\r\n", it.key, it.flags, len(it.val), it.val)
}

// mergeItems makes n items with values of many shapes: empty, tiny,
// binary, a few KiB, values that look like reply syntax, and (big) one of
// just over 1 MiB. Item i is placed on server i%len(pc.Servers), so every
// server holds as many items whatever ports the servers got.
func mergeItems(pc *config.Pool, prefix string, n int, big bool) []mItem {
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	items := make([]mItem, n)
	for i := range items {
		it := mItem{key: placedKey(pc, prefix, i)}
		if i%4 != 0 {
			it.flags = uint32(i) * 2654435761
		}
		switch i % 10 {
		case 0:
			it.val = []byte{}
		case 1:
			it.val = []byte("\r\nEND\r\n")
		case 2:
			it.val = fmt.Appendf(nil, "VALUE %s:%d 0 3\r\nabc\r\nEND\r\n", prefix, i+1)
		case 3:
			it.val = make([]byte, 2048+rng.IntN(4096))
			for j := range it.val {
				it.val[j] = byte(rng.IntN(256))
			}
		case 4:
			it.val = []byte("END")
		case 5:
			it.val = []byte("SERVER_ERROR not really\r\n")
		default:
			it.val = fmt.Appendf(nil, "v%d\x00\xff\r", i)
			for range rng.IntN(100) {
				it.val = append(it.val, byte(rng.IntN(256)))
			}
		}
		items[i] = it
	}
	if big && n > 150 {
		items[150].val = bytes.Repeat([]byte("0123456789abcdef\r\nEND\r\n"), (1<<20)/23+500)
	}
	return items
}

// placedKey is a key of item i that pc places on server i%len(pc.Servers).
// Items 7 and 8 get keys of unusual shapes: the longest memcached takes,
// and one with high bytes.
func placedKey(pc *config.Pool, prefix string, i int) string {
	for v := range 100000 {
		k := fmt.Sprintf("%s:%d:%d", prefix, i, v)
		switch i {
		case 7:
			k += ":" + strings.Repeat("L", 250-len(k)-1)
		case 8:
			k += ":\xe9\xff"
		}
		if shardOf(pc, k) == i%len(pc.Servers) {
			return k
		}
	}
	panic("no key for the server")
}

// storeItems sets items through the proxy, pipelined, checking each reply.
func storeItems(t *testing.T, addr string, items []mItem) {
	t.Helper()
	c := dial(t, addr)
	var req, want strings.Builder
	for _, it := range items {
		fmt.Fprintf(&req, "set %s %d 0 %d\r\n%s\r\n", it.key, it.flags, len(it.val), it.val)
		want.WriteString("STORED\r\n")
	}
	c.send(req.String())
	c.expect(want.String())
	c.c.Close()
}

// Reply expectations of mReq.fail.
const (
	mustAnswer = iota // the exact reply
	mayFail           // the exact reply or one SERVER_ERROR line
	mustFail          // one SERVER_ERROR line
)

// mReq is one request of a pipeline and the reply it must get.
type mReq struct {
	req  string
	want string
	fail int
}

func getReq(it mItem, present bool) mReq {
	r := mReq{req: "get " + it.key + "\r\n", want: "END\r\n"}
	if present {
		r.want = it.hit()
	}
	return r
}

// pipeline writes every request in one write and checks the replies in
// order. It reports failures as errors, so that it runs in any goroutine.
func pipeline(c *client, reqs []mReq) error {
	var b strings.Builder
	for _, r := range reqs {
		b.WriteString(r.req)
	}
	b.WriteString("version\r\n") // a sentinel: nothing extra may come before its reply
	werr := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c.c, b.String())
		werr <- err
	}()
	for i, r := range reqs {
		if err := readReply(c.br, r); err != nil {
			return fmt.Errorf("request %d %q: %w", i, clip([]byte(r.req)), err)
		}
	}
	if err := readReply(c.br, mReq{want: "VERSION test\r\n"}); err != nil {
		return fmt.Errorf("after the last reply: %w", err)
	}
	return <-werr
}

func readReply(br *bufio.Reader, r mReq) error {
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("read: %w (got %q)", err, line)
	}
	if strings.HasPrefix(line, "SERVER_ERROR ") && r.fail != mustAnswer && !strings.HasPrefix(r.want, line) {
		return nil
	}
	if r.fail == mustFail {
		return fmt.Errorf("got %q, want a SERVER_ERROR line", clip([]byte(line)))
	}
	if !strings.HasPrefix(r.want, line) {
		return fmt.Errorf("got line %q, want %q", clip([]byte(line)), clip([]byte(r.want)))
	}
	rest := make([]byte, len(r.want)-len(line))
	if n, err := io.ReadFull(br, rest); err != nil || string(rest) != r.want[len(line):] {
		return fmt.Errorf("got %q (err %v), want %q", clip([]byte(line+string(rest[:n]))), err, clip([]byte(r.want)))
	}
	return nil
}

// getMix is count single-key gets: hits, misses, runs of one key, the big
// item at most once, keys of every shard.
func getMix(rng *rand.Rand, items []mItem, missPrefix string, count int, bigIdx int) []mReq {
	var reqs []mReq
	pick := func() (mItem, bool) {
		if rng.IntN(100) < 30 {
			return mItem{key: fmt.Sprintf("%s:%d", missPrefix, rng.IntN(1000))}, false
		}
		i := rng.IntN(len(items))
		for i == bigIdx {
			i = rng.IntN(len(items))
		}
		return items[i], true
	}
	bigDone := bigIdx < 0
	for len(reqs) < count {
		switch r := rng.IntN(100); {
		case r < 15: // the same key several times in a row
			it, ok := pick()
			for range 2 + rng.IntN(3) {
				reqs = append(reqs, getReq(it, ok))
			}
		case r < 17 && !bigDone:
			bigDone = true
			reqs = append(reqs, getReq(items[bigIdx], true))
		default:
			it, ok := pick()
			reqs = append(reqs, getReq(it, ok))
		}
	}
	return reqs[:count]
}

// runClients runs one pipeline per client concurrently.
func runClients(t *testing.T, addr string, work [][]mReq) {
	t.Helper()
	clients := make([]*client, len(work))
	for i := range clients {
		clients[i] = dial(t, addr)
		_ = clients[i].c.SetDeadline(time.Now().Add(20 * time.Second))
	}
	var wg sync.WaitGroup
	for i, reqs := range work {
		wg.Go(func() {
			if err := pipeline(clients[i], reqs); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}

var (
	ringsMu sync.Mutex
	rings   = map[*config.Pool]*ring.Ring{}
)

// shardOf is the index in pc.Servers of key's server with every server live.
func shardOf(pc *config.Pool, key string) int {
	ringsMu.Lock()
	r := rings[pc]
	if r == nil {
		r = pc.Ring()
		rings[pc] = r
	}
	ringsMu.Unlock()
	return r.Locate([]byte(key))
}

// TestMergedGetsAnswerEachRequest: many clients pipelining single-key gets
// (hits, misses, repeats, every shard, values that look like protocol) get
// exactly their own replies, in order, although the gets share multi-gets.
func TestMergedGetsAnswerEachRequest(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, "hash: fnv1a_64"))
	pc := p.cfg.Pools[0]
	items := mergeItems(pc, "m1", 300, true)
	storeItems(t, p.Addr("mc"), items)

	work := make([][]mReq, 20)
	for i := range work {
		big := -1
		if i%2 == 0 {
			big = 150
		}
		work[i] = getMix(rand.New(rand.NewPCG(uint64(i), 1)), items, "m1miss", 200, big)
	}
	runClients(t, p.Addr("mc"), work)
}

// TestMergedGetsKeepOrderWithWrites: a get is never merged into a call
// queued before a later write of the same client: get, set, get, delete,
// get of each key, interleaved at random across keys and shards in one
// write, read the old value, STORED, the new value, DELETED and a miss.
func TestMergedGetsKeepOrderWithWrites(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, "server_connections: 2"))
	pc := p.cfg.Pools[0]
	const nclients, nkeys = 4, 90
	var all []mItem
	work := make([][]mReq, nclients)
	for ci := range work {
		items := mergeItems(pc, fmt.Sprintf("o%d", ci), nkeys, false)
		all = append(all, items...)
		seqs := make([][]mReq, nkeys)
		for i, it := range items {
			nv := it
			nv.flags = it.flags ^ 0x5a5a
			nv.val = fmt.Appendf(nil, "new %d\r\nEND\r\n%s", i, bytes.Repeat([]byte{'n'}, i*13))
			seqs[i] = []mReq{
				getReq(it, true),
				{req: fmt.Sprintf("set %s %d 0 %d\r\n%s\r\n", nv.key, nv.flags, len(nv.val), nv.val), want: "STORED\r\n"},
				getReq(nv, true),
				{req: "delete " + it.key + "\r\n", want: "DELETED\r\n"},
				getReq(it, false),
			}
		}
		// A random interleaving that keeps each key's own order.
		rng := rand.New(rand.NewPCG(uint64(ci), 2))
		var live []int
		for i := range seqs {
			live = append(live, i)
		}
		for len(live) > 0 {
			j := rng.IntN(len(live))
			k := live[j]
			work[ci] = append(work[ci], seqs[k][0])
			if seqs[k] = seqs[k][1:]; len(seqs[k]) == 0 {
				live = append(live[:j], live[j+1:]...)
			}
		}
	}
	storeItems(t, p.Addr("mc"), all)
	before := p.counter(t, "ambassador_server_requests_total")
	runClients(t, p.Addr("mc"), work)
	calls := p.counter(t, "ambassador_server_requests_total") - before
	reqs := nclients * nkeys * 5
	// Merging happened here too, so the order above was tested with it.
	if calls >= float64(reqs) {
		t.Errorf("%v server calls for %d requests: no get was merged", calls, reqs)
	}
}

// mcStats reads memcached's stats from its own address.
func mcStats(t *testing.T, addr string) map[string]int64 {
	t.Helper()
	c := dial(t, addr)
	defer c.c.Close()
	c.send("stats\r\n")
	st := map[string]int64{}
	for range 500 {
		l := c.line()
		if l == "END\r\n" {
			return st
		}
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "STAT" {
			if n, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				st[f[1]] = n
			}
		}
	}
	t.Fatalf("stats of %s: no END", addr)
	return nil
}

// TestGetsAreMergedOnTheWire: the gets of pipelining clients reach the
// servers as far fewer commands than were sent. Counted twice: by the
// ambassador's per-server requests metric, and by memcached itself, whose
// bytes_read gives the number of get commands ("get" and CRLF are 5 bytes
// per command, each key costs its length plus a space) and whose cmd_get
// counts keys, each of which must have been asked exactly once.
func TestGetsAreMergedOnTheWire(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, ""))
	pc := p.cfg.Pools[0]
	items := mergeItems(pc, "w", 300, false)
	storeItems(t, p.Addr("mc"), items)

	work := make([][]mReq, 20)
	keys := make([]int, len(mcs))     // gets per shard
	keyBytes := make([]int, len(mcs)) // what their keys cost in a multi-get
	hits := make([]int, len(mcs))
	total := 0
	for i := range work {
		work[i] = getMix(rand.New(rand.NewPCG(uint64(i), 3)), items, "wmiss", 200, -1)
		for _, r := range work[i] {
			k := strings.TrimSuffix(strings.TrimPrefix(r.req, "get "), "\r\n")
			s := shardOf(pc, k)
			keys[s]++
			keyBytes[s] += len(k) + 1
			if r.want != "END\r\n" {
				hits[s]++
			}
			total++
		}
	}
	before := make([]map[string]int64, len(mcs))
	reqBefore := make([]float64, len(mcs))
	for i, srv := range pc.Servers {
		before[i] = mcStats(t, srv.Addr)
		reqBefore[i] = p.counter(t, "ambassador_server_requests_total", "server", srv.Name)
	}
	getsBefore := p.counter(t, "ambassador_commands_total", "command", "get")

	runClients(t, p.Addr("mc"), work)

	if d := p.counter(t, "ambassador_commands_total", "command", "get") - getsBefore; d != float64(total) {
		t.Errorf("commands_total{get} rose by %v, want %d", d, total)
	}
	var calls float64
	for i, srv := range pc.Servers {
		after := mcStats(t, srv.Addr)
		n := p.counter(t, "ambassador_server_requests_total", "server", srv.Name) - reqBefore[i]
		calls += n
		if d := after["cmd_get"] - before[i]["cmd_get"]; d != int64(keys[i]) {
			t.Errorf("%s: cmd_get rose by %d, want %d (one per get sent)", srv.Name, d, keys[i])
		}
		if d := after["get_hits"] - before[i]["get_hits"]; d != int64(hits[i]) {
			t.Errorf("%s: get_hits rose by %d, want %d", srv.Name, d, hits[i])
		}
		// bytes_read also counts the second "stats\r\n".
		extra := after["bytes_read"] - before[i]["bytes_read"] - int64(len("stats\r\n")) - int64(keyBytes[i])
		if extra <= 0 || extra%5 != 0 || float64(extra/5) != n {
			t.Errorf("%s: %d request bytes beyond the keys' (%d get commands?), ambassador counts %v calls",
				srv.Name, extra, extra/5, n)
		}
		t.Logf("%s: %d gets in %v calls", srv.Name, keys[i], n)
	}
	if calls > float64(total)/2 {
		t.Errorf("%v server calls for %d gets from %d pipelining clients: gets were not merged", calls, total, len(work))
	}
}

// TestMergedGetsWithAKilledShard: when a shard dies under merged gets, the
// gets for it fail with SERVER_ERROR while the gets for the live shards in
// the same pipelines (and often in the same event loop pass) get their
// values; nothing is shifted or lost. The key stays on the dead shard
// (auto_eject_hosts false), so every later get of it fails.
func TestMergedGetsWithAKilledShard(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, `auto_eject_hosts: false
timeout: 2000`))
	pc := p.cfg.Pools[0]
	items := mergeItems(pc, "k", 300, false)
	storeItems(t, p.Addr("mc"), items)
	victim := 1
	victimAddr := pc.Servers[victim].Addr
	var vs *testserver.Server
	for _, s := range mcs {
		if s.Addr == victimAddr {
			vs = s
		}
	}

	const nclients = 8
	var killed atomic.Bool
	var rounds [nclients]atomic.Int32 // pipelines checked
	var after [nclients]atomic.Int32  // of them, sent after the kill
	var deadFails atomic.Int64
	stop := make(chan struct{})
	clients := make([]*client, nclients)
	for i := range clients {
		clients[i] = dial(t, p.Addr("mc"))
		_ = clients[i].c.SetDeadline(time.Now().Add(20 * time.Second))
	}
	var wg sync.WaitGroup
	var stopOnce sync.Once
	var cut atomic.Bool
	end := func() { stopOnce.Do(func() { close(stop) }) }
	// Before the connections close, should the test end early.
	t.Cleanup(func() {
		cut.Store(true)
		end()
		for _, c := range clients {
			_ = c.c.SetDeadline(time.Now())
		}
		wg.Wait()
	})
	for ci := range nclients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(ci), 4))
			for round := 0; round < 5000; round++ {
				select {
				case <-stop:
					return
				default:
				}
				post := killed.Load()
				reqs := getMix(rng, items, "kmiss", 200, -1)
				dead := 0
				for j := range reqs {
					k := strings.TrimSuffix(strings.TrimPrefix(reqs[j].req, "get "), "\r\n")
					if shardOf(pc, k) == victim {
						dead++
						reqs[j].fail = mayFail
						if post {
							reqs[j].fail = mustFail
						}
					}
				}
				if err := pipeline(clients[ci], reqs); err != nil {
					if !cut.Load() { // else cut short by the cleanup
						t.Errorf("client %d round %d (after the kill: %v): %v", ci, round, post, err)
					}
					return
				}
				if post {
					deadFails.Add(int64(dead))
					after[ci].Add(1)
				}
				rounds[ci].Add(1)
			}
		})
	}
	waitAll := func(what string, n int32, cs *[nclients]atomic.Int32) {
		eventually(t, what, 10*time.Second, func() bool {
			for i := range cs {
				if cs[i].Load() < n {
					return t.Failed()
				}
			}
			return true
		})
	}
	waitAll("a pipeline of each client", 1, &rounds)
	vs.Kill()
	killed.Store(true)
	waitAll("pipelines after the kill", 2, &after)
	end()
	wg.Wait()
	if t.Failed() {
		return
	}
	if deadFails.Load() == 0 {
		t.Fatal("no get of the dead shard's keys was sent after the kill")
	}
	if e := p.counter(t, "ambassador_server_errors_total", "server", pc.Servers[victim].Name); e < 1 {
		t.Errorf("server_errors_total of the dead shard = %v", e)
	}
	// A merged get of the live shards alone is still whole.
	c := dial(t, p.Addr("mc"))
	var reqs []mReq
	for _, it := range items {
		if shardOf(pc, it.key) != victim {
			reqs = append(reqs, getReq(it, true))
		}
	}
	if err := pipeline(c, reqs); err != nil {
		t.Error(err)
	}
}

// TestMergedGetsAroundGetsAndGat: gets, gat, gats and multi-key gets,
// which are not merged, pipelined among merged gets, each get their own
// reply: gets and gats with the item's cas unique.
func TestMergedGetsAroundGetsAndGat(t *testing.T) {
	t.Parallel()
	mcs := threeMemcached(t)
	p := startProxy(t, poolYAML("mc", freeAddr(t), mcs, ""))
	pc := p.cfg.Pools[0]
	items := mergeItems(pc, "g", 60, false)
	storeItems(t, p.Addr("mc"), items)
	// The cas uniques, from the servers themselves.
	cas := map[string]string{}
	for _, it := range items {
		d := dial(t, pc.Servers[shardOf(pc, it.key)].Addr)
		d.send("gets " + it.key + "\r\n")
		f := strings.Fields(d.line())
		if len(f) != 5 {
			t.Fatalf("gets %q from its server: %v", it.key, f)
		}
		cas[it.key] = f[4]
		d.c.Close()
	}
	withCas := func(it mItem) string {
		return fmt.Sprintf("VALUE %s %d %d %s\r\n%s\r\nEND\r\n", it.key, it.flags, len(it.val), cas[it.key], it.val)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	var reqs []mReq
	for range 400 {
		a, b := items[rng.IntN(len(items))], items[rng.IntN(len(items))]
		switch rng.IntN(12) {
		case 0:
			reqs = append(reqs, mReq{req: "gets " + a.key + "\r\n", want: withCas(a)})
		case 1:
			reqs = append(reqs, mReq{req: "gat 1000 " + a.key + "\r\n", want: a.hit()})
		case 2:
			reqs = append(reqs, mReq{req: "gats 2000 " + a.key + "\r\n", want: withCas(a)})
		case 3:
			reqs = append(reqs, mReq{req: "gets nothing:here\r\n", want: "END\r\n"})
		case 4:
			reqs = append(reqs, mReq{req: "get " + a.key + " nothing " + b.key + "\r\n",
				want: strings.TrimSuffix(a.hit(), "END\r\n") + b.hit()})
		case 5:
			reqs = append(reqs, mReq{req: "gets " + a.key + " " + b.key + "\r\n",
				want: strings.TrimSuffix(withCas(a), "END\r\n") + withCas(b)})
		case 6:
			reqs = append(reqs, getReq(mItem{key: "absent:" + a.key[:min(len(a.key), 20)]}, false))
		default:
			reqs = append(reqs, getReq(a, true))
		}
	}
	before := p.counter(t, "ambassador_server_requests_total")
	c := dial(t, p.Addr("mc"))
	_ = c.c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := pipeline(c, reqs); err != nil {
		t.Fatal(err)
	}
	// Unmerged, each request would cost one call per server of its keys.
	unmerged := 0
	for _, r := range reqs {
		f := strings.Fields(r.req)[1:]
		if strings.HasPrefix(r.req, "gat") {
			f = f[1:]
		}
		seen := map[int]bool{}
		for _, k := range f {
			seen[shardOf(pc, k)] = true
		}
		unmerged += len(seen)
	}
	calls := p.counter(t, "ambassador_server_requests_total") - before
	if calls >= float64(unmerged) {
		t.Errorf("%v server calls where unmerged requests make %d: no get was merged", calls, unmerged)
	}
	t.Logf("%d requests: %v server calls, %d unmerged", len(reqs), calls, unmerged)
	// The cas uniques read through the ambassador are the live ones.
	for _, it := range items[:10] {
		c.send(fmt.Sprintf("cas %s 0 0 1 %s\r\nx\r\n", it.key, cas[it.key]))
		c.expect("STORED\r\n")
	}
}
