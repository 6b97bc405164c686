// Command ambassador-bench compares the ambassador with nutcracker
// (twemproxy) in one run on this machine: the same three redis and three
// memcached shards, the same configuration file, the same load, and the
// direct-to-one-server figure beside both as the ceiling.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	os.Exit(run())
}

func run() int {
	bin := flag.String("bin", "./bin", "directory holding the ambassador binary")
	reps := flag.Int("reps", 5, "repetitions of each measurement (the median is shown)")
	scale := flag.Float64("scale", 1, "multiplies the request counts (0.2 for a quick look)")
	only := flag.String("only", "", "measure only the loads whose name contains this text (e.g. \"P=16\" or \"MGET\")")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 420*time.Second)
	defer cancel()
	b := &bench{ctx: ctx, scale: *scale, only: *only}
	defer b.stopAll()
	if err := b.setup(*bin); err != nil {
		fmt.Fprintf(os.Stderr, "ambassador-bench: %v\n", err)
		return 1
	}
	fmt.Printf("ambassador vs nutcracker %s, 3 shards each, %d reps (median), machine: %d CPUs\n\n", b.ncVersion, *reps, cpus())
	rows := b.measure(*reps)
	if ctx.Err() != nil {
		fmt.Println("(time budget reached: some rows are missing)")
	}
	print(rows)
	return 0
}

type bench struct {
	ctx       context.Context
	scale     float64
	only      string
	dir       string
	procs     []*exec.Cmd
	redis     []string
	mc        []string
	ncVersion string
	// listen addresses: target -> protocol -> addr
	addrs map[string]map[string]string
	pids  map[string]int // proxy processes, for their CPU time
}

func (b *bench) n(x int) int { return max(1000, int(float64(x)*b.scale)) }

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (b *bench) start(name string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = b.dir
	log, err := os.Create(filepath.Join(b.dir, filepath.Base(name)+"-"+strconv.Itoa(len(b.procs))+".log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w (is it installed?)", name, err)
	}
	b.procs = append(b.procs, cmd)
	return cmd, nil
}

func waitListen(addr string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after 15s", addr)
}

func (b *bench) stopAll() {
	for _, p := range b.procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

func (b *bench) setup(binDir string) error {
	var err error
	if b.dir, err = os.MkdirTemp("", "ambassador-bench"); err != nil {
		return err
	}
	amb, err := filepath.Abs(filepath.Join(binDir, "ambassador"))
	if err != nil {
		return err
	}
	if _, err := os.Stat(amb); err != nil {
		return fmt.Errorf("%s: %w (run make build first)", amb, err)
	}
	nc, err := lookPath("nutcracker")
	if err != nil {
		return err
	}
	if out, err := exec.Command(nc, "--version").CombinedOutput(); err == nil {
		b.ncVersion = strings.TrimPrefix(strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]), "This is ")
	}
	for range 3 {
		a := freeAddr()
		_, port, _ := net.SplitHostPort(a)
		if _, err := b.start("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", b.dir); err != nil {
			return err
		}
		b.redis = append(b.redis, a)
		m := freeAddr()
		_, port, _ = net.SplitHostPort(m)
		args := []string{"-l", "127.0.0.1", "-p", port, "-U", "0", "-t", "1", "-m", "256"}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "nobody")
		}
		if _, err := b.start("memcached", args...); err != nil {
			return err
		}
		b.mc = append(b.mc, m)
	}
	b.pids = map[string]int{}
	b.addrs = map[string]map[string]string{
		"direct": {"redis": b.redis[0], "mc": b.mc[0]},
	}
	conf := func(r, m string) string {
		var s strings.Builder
		fmt.Fprintf(&s, "redis3:\n  listen: %s\n  redis: true\n  hash: fnv1a_64\n  distribution: ketama\n  servers:\n", r)
		for _, a := range b.redis {
			fmt.Fprintf(&s, "   - %s:1\n", a)
		}
		fmt.Fprintf(&s, "mc3:\n  listen: %s\n  hash: fnv1a_64\n  distribution: ketama\n  servers:\n", m)
		for _, a := range b.mc {
			fmt.Fprintf(&s, "   - %s:1\n", a)
		}
		return s.String()
	}
	for _, target := range []string{"nutcracker", "ambassador"} {
		r, m := freeAddr(), freeAddr()
		path := filepath.Join(b.dir, target+".yml")
		if err := os.WriteFile(path, []byte(conf(r, m)), 0o644); err != nil {
			return err
		}
		var cmd *exec.Cmd
		if target == "nutcracker" {
			cmd, err = b.start(nc, "-c", path, "-s", strings.Split(freeAddr(), ":")[1], "-a", "127.0.0.1",
				"-o", filepath.Join(b.dir, "nc.log"), "-p", filepath.Join(b.dir, "nc.pid"))
		} else {
			cmd, err = b.start(amb, "-config", path, "-admin-addr", freeAddr(), "-log-level", "warn")
		}
		if err != nil {
			return err
		}
		b.pids[target] = cmd.Process.Pid
		b.addrs[target] = map[string]string{"redis": r, "mc": m}
	}
	for _, t := range b.addrs {
		for _, a := range t {
			if err := waitListen(a); err != nil {
				return err
			}
		}
	}
	return nil
}

func lookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(d, bin)); err == nil {
			return filepath.Join(d, bin), nil
		}
	}
	return "", fmt.Errorf("%s not found: apt-get install -y %s", bin, bin)
}

func cpus() int {
	n, _ := strconv.Atoi(strings.TrimSpace(mustOut("nproc")))
	return n
}

func mustOut(name string, args ...string) string {
	out, _ := exec.Command(name, args...).Output()
	return string(out)
}

// result is one measurement of one target.
type result struct {
	rps, p50 float64 // ops/s, ms
	cpu      float64 // the proxy's CPU time per operation, µs
}

// cpuTime is a process's user+system CPU time.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

type row struct {
	name    string
	metric  string // "rps" or "p50"
	target  float64
	results map[string][]result
	// ratios are ambassador / nutcracker per repetition, the two measured
	// back to back, so that a drift in the machine's load moves both.
	ratios []float64
}

var targets = []string{"direct", "nutcracker", "ambassador"}

func (b *bench) measure(reps int) []*row {
	type job struct {
		name, metric string
		target       float64
		fn           func(addrs map[string]string) (result, error)
		ops          int
	}
	rb := func(p, n int, test string) func(map[string]string) (result, error) {
		return func(a map[string]string) (result, error) {
			return b.redisBenchmark(a["redis"], p, n, test)
		}
	}
	mget := func(a map[string]string) (result, error) {
		return b.redisBenchmark(a["redis"], 1, b.n(30000), "mget")
	}
	mcl := func(p, n int, op string) func(map[string]string) (result, error) {
		return func(a map[string]string) (result, error) { return b.mcload(a["mc"], p, n, op) }
	}
	jobs := []job{
		{"redis SET -c 50 -P 16", "rps", 1.5, rb(16, b.n(300000), "set"), b.n(300000)},
		{"redis GET -c 50 -P 16", "rps", 1.5, rb(16, b.n(300000), "get"), b.n(300000)},
		{"redis SET -c 50 -P 1", "rps", 1.0, rb(1, b.n(50000), "set"), b.n(50000)},
		{"redis GET -c 50 -P 1", "rps", 1.0, rb(1, b.n(50000), "get"), b.n(50000)},
		{"redis MGET 10 keys -c 50, p50 ms", "p50", 0.7, mget, b.n(30000)},
		{"memcached set 50 conns P=16", "rps", 1.5, mcl(16, b.n(300000), "set"), b.n(300000)},
		{"memcached get 50 conns P=16", "rps", 1.5, mcl(16, b.n(300000), "get"), b.n(300000)},
		{"memcached set 50 conns P=1", "rps", 1.0, mcl(1, b.n(50000), "set"), b.n(50000)},
		{"memcached get 50 conns P=1", "rps", 1.0, mcl(1, b.n(50000), "get"), b.n(50000)},
	}
	var rows []*row
	for _, j := range jobs {
		if !strings.Contains(j.name, b.only) {
			continue
		}
		r := &row{name: j.name, metric: j.metric, target: j.target, results: map[string][]result{}}
		rows = append(rows, r)
		for rep := range reps {
			// Alternate the order so neither proxy always runs on a
			// machine warmed (or loaded) by the other.
			order := slices.Clone(targets)
			if rep%2 == 1 {
				order[1], order[2] = order[2], order[1]
			}
			got := map[string]result{}
			for _, t := range order {
				if b.ctx.Err() != nil {
					return rows
				}
				c0 := cpuTime(b.pids[t])
				res, err := j.fn(b.addrs[t])
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s on %s: %v\n", j.name, t, err)
					continue
				}
				if pid := b.pids[t]; pid != 0 {
					res.cpu = float64((cpuTime(pid) - c0).Microseconds()) / float64(j.ops)
				}
				r.results[t] = append(r.results[t], res)
				got[t] = res
			}
			if n, ok := got["nutcracker"]; ok {
				if a, ok := got["ambassador"]; ok {
					if j.metric == "p50" && n.p50 > 0 {
						r.ratios = append(r.ratios, a.p50/n.p50)
					} else if n.rps > 0 {
						r.ratios = append(r.ratios, a.rps/n.rps)
					}
				}
			}
		}
	}
	return rows
}

// redisBenchmark runs redis-benchmark and returns requests/s and p50.
func (b *bench) redisBenchmark(addr string, pipeline, n int, test string) (result, error) {
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"-h", host, "-p", port, "-c", "50", "-P", strconv.Itoa(pipeline), "-n", strconv.Itoa(n),
		"-r", "100000", "--csv"}
	if test == "mget" {
		args = append(args, "MGET")
		for range 10 {
			args = append(args, "key:__rand_int__")
		}
	} else {
		args = append(args, "-t", test)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-benchmark", args...).Output()
	if err != nil {
		return result{}, fmt.Errorf("redis-benchmark: %w", err)
	}
	recs, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil {
		return result{}, err
	}
	for _, rec := range recs {
		if len(rec) >= 5 && rec[0] != "test" {
			rps, _ := strconv.ParseFloat(rec[1], 64)
			p50, _ := strconv.ParseFloat(rec[4], 64)
			return result{rps: rps, p50: p50}, nil
		}
	}
	return result{}, fmt.Errorf("no result in %q", out)
}

// mcload drives the memcached text protocol: 50 connections, pipeline
// depth p, 100k keys, 3-byte values, n operations in all. Requests are
// prepared before the clock starts so the generator costs little CPU.
func (b *bench) mcload(addr string, p, n int, op string) (result, error) {
	const conns = 50
	var done atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	per := n / conns
	batches := make([][][]byte, conns)
	for i := range batches {
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		for range 32 {
			var buf []byte
			for range p {
				k := strconv.Itoa(rng.IntN(100000))
				if op == "set" {
					buf = append(buf, "set key:"+k+" 0 0 3\r\nabc\r\n"...)
				} else {
					buf = append(buf, "get key:"+k+"\r\n"...)
				}
			}
			batches[i] = append(batches[i], buf)
		}
	}
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(deadline)
			br := bufio.NewReaderSize(c, 64<<10)
			for sent, j := 0, 0; sent < per; sent, j = sent+p, j+1 {
				if _, err := c.Write(batches[i][j%len(batches[i])]); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				for range p {
					if err := readMC(br); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
				done.Add(int64(p))
			}
		}()
	}
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return result{}, e
	}
	return result{rps: float64(done.Load()) / time.Since(start).Seconds()}, nil
}

var (
	stored = []byte("STORED\r\n")
	end    = []byte("END\r\n")
	value  = []byte("VALUE ")
)

// readMC reads one reply to a set or a get.
func readMC(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		switch {
		case bytes.Equal(line, stored), bytes.Equal(line, end):
			return nil
		case bytes.HasPrefix(line, value):
			f := bytes.Fields(line)
			size, _ := strconv.Atoi(string(f[3]))
			if _, err := br.Discard(size + 2); err != nil {
				return err
			}
		default:
			return errors.New("unexpected reply " + strconv.Quote(string(line)))
		}
	}
}

func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func median(rs []result, metric string) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		switch metric {
		case "p50":
			v[i] = r.p50
		case "cpu":
			v[i] = r.cpu
		default:
			v[i] = r.rps
		}
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func print(rows []*row) {
	w := os.Stdout
	fmt.Fprintf(w, "%-34s %12s %12s %12s %8s %8s %-5s %s\n", "load (three shards)", "direct*", "nutcracker", "ambassador", "ratio", "target", "", "proxy CPU µs/op nc / amb")
	for _, r := range rows {
		d, n, a := median(r.results["direct"], r.metric), median(r.results["nutcracker"], r.metric), median(r.results["ambassador"], r.metric)
		format := func(v float64) string {
			if v == 0 {
				return "-"
			}
			if r.metric == "p50" {
				return fmt.Sprintf("%.3f ms", v)
			}
			return fmt.Sprintf("%.0f/s", v)
		}
		ratio, verdict, tgt := 0.0, "n/a", ""
		if n > 0 && a > 0 && len(r.ratios) > 0 {
			ratio = medianOf(r.ratios)
			if r.metric == "p50" {
				verdict = pass(ratio <= r.target)
				tgt = fmt.Sprintf("<=%.1fx", r.target)
			} else {
				verdict = pass(ratio >= r.target)
				tgt = fmt.Sprintf(">=%.1fx", r.target)
			}
		}
		fmt.Fprintf(w, "%-34s %12s %12s %12s %7.2fx %8s %-5s %.1f / %.1f\n", r.name, format(d), format(n), format(a), ratio, tgt, verdict,
			median(r.results["nutcracker"], "cpu"), median(r.results["ambassador"], "cpu"))
	}
	fmt.Fprintln(w, "\n* direct: the same load on one of the shards, without a proxy: the ceiling.")
	fmt.Fprintln(w, "  ratio: the median over the repetitions of ambassador / nutcracker, each pair measured")
	fmt.Fprintln(w, "  back to back (for p50 latency, lower is better).")
	fmt.Fprintln(w, "  proxy CPU: user+system time of the proxy process per operation (10 ms ticks): the")
	fmt.Fprintln(w, "  figure least disturbed by other load on the machine.")
}

func pass(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}
