// Command pause-bench compares podkit pause with catatonit -P and tini in one
// run on this machine, each as PID 1 of a fresh PID namespace: binary size,
// idle memory, wake-ups while idle, and zombies left after a burst of orphans.
package main

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Targets, from the README.
const (
	sizeTarget  = 1_500_000 // bytes
	rssTargetKB = 2200
)

func main() {
	os.Exit(run())
}

func run() int {
	bin := flag.String("bin", "", "pause binary, or a directory holding it (empty: build ./cmd/pause)")
	idle := flag.Duration("idle", 30*time.Second, "idle window for counting context switches")
	orphans := flag.Int("orphans", 1000, "orphans in the burst")
	timeout := flag.Duration("timeout", 3*time.Minute, "give up after this long")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "pause-bench: needs root, to make PID namespaces")
		return 1
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		fmt.Fprintln(os.Stderr, "pause-bench: needs nsenter (util-linux) to put orphans in the namespaces")
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	pause, cleanup, err := pauseBinary(ctx, *bin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pause-bench:", err)
		return 1
	}
	defer cleanup()

	cands := []*candidate{{name: "podkit pause", argv: []string{pause}}}
	var notes []string
	for _, c := range []*candidate{
		{name: "catatonit -P", argv: []string{"/usr/bin/catatonit", "-P"}},
		// tini needs a child; its own process is what is measured.
		{name: "tini", argv: []string{"/usr/bin/tini", "--", "sleep", "infinity"}},
	} {
		if _, err := os.Stat(c.argv[0]); err != nil {
			notes = append(notes, c.name+": column skipped, "+c.argv[0]+" is absent (apt-get install "+strings.Fields(c.name)[0]+")")
			continue
		}
		cands = append(cands, c)
	}

	fmt.Printf("pause as PID 1 of a fresh PID namespace, %d CPUs, Linux %s; idle window %v, burst of %d orphans\n\n",
		runtime.NumCPU(), kernel(), *idle, *orphans)

	// Idle figures for all at once: an idle process's wake-ups and memory do
	// not depend on its neighbours, and it saves an idle window per column.
	for _, c := range cands {
		c.measureStatic()
		if err := c.start(ctx); err != nil {
			c.err = err
		}
	}
	defer func() {
		for _, c := range cands {
			c.stop()
		}
	}()
	sleep(ctx, 2*time.Second)
	for _, c := range cands {
		if c.err == nil {
			c.rssKB, c.threads = statusInt(c.pid, "VmRSS"), statusInt(c.pid, "Threads")
			c.ctx0 = ctxSwitches(c.pid)
		}
	}
	sleep(ctx, *idle)
	for _, c := range cands {
		if c.err == nil {
			c.ctxIdle = ctxSwitches(c.pid) - c.ctx0
		}
	}
	// The bursts one after another, so that they do not compete for CPU.
	for _, c := range cands {
		if c.err == nil {
			c.zombies, c.err = burst(ctx, c.pid, *orphans)
		}
		c.stop()
	}

	printTable(cands, *idle, *orphans)
	for _, c := range cands {
		if c.err != nil {
			notes = append(notes, c.name+": "+c.err.Error())
		}
	}
	if len(notes) > 0 {
		fmt.Println()
		for _, n := range notes {
			fmt.Println("note:", n)
		}
	}
	if ctx.Err() != nil {
		fmt.Println("note: time budget reached; figures may be missing")
		return 1
	}
	return 0
}

type candidate struct {
	name    string
	argv    []string
	cmd     *exec.Cmd
	stopped bool
	pid     int
	err     error
	size    int64
	static  bool
	rssKB   int
	threads int
	ctx0    int
	ctxIdle int
	zombies int
}

func (c *candidate) measureStatic() {
	if st, err := os.Stat(c.argv[0]); err == nil {
		c.size = st.Size()
	}
	if f, err := elf.Open(c.argv[0]); err == nil {
		c.static = true
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				c.static = false
			}
		}
		f.Close()
	}
}

func (c *candidate) start(ctx context.Context) error {
	c.cmd = exec.Command(c.argv[0], c.argv[1:]...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := c.cmd.Start(); err != nil {
		return err
	}
	c.pid = c.cmd.Process.Pid
	// Ready once SIGTSTP is caught (pause asks for it last) or blocked
	// (catatonit blocks every signal it reads from its signalfd), or once the
	// process sleeps in sigtimedwait (tini, whose mask reads empty meanwhile).
	for deadline := time.Now().Add(5 * time.Second); ; sleep(ctx, 5*time.Millisecond) {
		if (statusHex(c.pid, "SigCgt")|statusHex(c.pid, "SigBlk"))&(1<<(syscall.SIGTSTP-1)) != 0 {
			return nil
		}
		if wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", c.pid)); strings.Contains(string(wchan), "sigtimedwait") {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return errors.New("not ready after 5s")
		}
	}
}

// stop kills the namespace's init by PID, which takes the namespace with it.
func (c *candidate) stop() {
	if c.cmd == nil || c.cmd.Process == nil || c.stopped {
		return
	}
	c.stopped = true
	c.cmd.Process.Kill()
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// orphanScript forks $1 subshells that block reading fd 3, then exits,
// orphaning them to the namespace's PID 1. They exit together when the pipe
// on fd 3 closes.
const orphanScript = `i=0; while [ "$i" -lt "$1" ]; do read -r x <&3 & i=$((i+1)); done`

// burst puts n orphans under pid, lets them all exit at the same moment and
// counts, one second later, the zombies left.
func burst(ctx context.Context, pid, n int) (int, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer w.Close()
	before := len(children(pid))
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "nsenter", "-t", strconv.Itoa(pid), "-p", "--", "sh", "-c", orphanScript, "sh", strconv.Itoa(n))
	cmd.ExtraFiles = []*os.File{r}
	err = cmd.Run()
	r.Close()
	if err != nil {
		return 0, fmt.Errorf("orphans: %w", err)
	}
	for deadline := time.Now().Add(30 * time.Second); len(children(pid)) < before+n; sleep(ctx, 10*time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return 0, fmt.Errorf("only %d of %d orphans re-parented to PID 1", len(children(pid))-before, n)
		}
	}
	w.Close() // every orphan reads EOF and exits now
	sleep(ctx, time.Second)
	z := 0
	for _, st := range children(pid) {
		if st == 'Z' {
			z++
		}
	}
	return z, nil
}

func printTable(cands []*candidate, idle time.Duration, orphans int) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprint(tw, "metric\ttarget")
	for _, c := range cands {
		fmt.Fprint(tw, "\t"+c.name)
	}
	fmt.Fprintln(tw)
	row := func(metric, target string, cell func(c *candidate) (string, bool)) {
		fmt.Fprint(tw, metric+"\t"+target)
		for _, c := range cands {
			v, ok := cell(c)
			switch {
			case target == "-": // informational
			case ok:
				v += "  pass"
			default:
				v += "  FAIL"
			}
			fmt.Fprint(tw, "\t"+v)
		}
		fmt.Fprintln(tw)
	}
	row("binary size", "≤ 1.5 MB", func(c *candidate) (string, bool) {
		return fmt.Sprintf("%s B", group(c.size)), c.size <= sizeTarget
	})
	row("static binary", "yes", func(c *candidate) (string, bool) {
		if c.static {
			return "yes", true
		}
		return "no (needs libc)", false
	})
	measured := func(c *candidate, v string, ok bool) (string, bool) {
		if c.err != nil {
			return "n/a", false
		}
		return v, ok
	}
	row("idle RSS (VmRSS at 2 s)", "≤ 2.2 MB", func(c *candidate) (string, bool) {
		return measured(c, fmt.Sprintf("%d kB", c.rssKB), c.rssKB <= rssTargetKB)
	})
	row("threads", "-", func(c *candidate) (string, bool) {
		return measured(c, strconv.Itoa(c.threads), true)
	})
	row(fmt.Sprintf("voluntary ctx switches in %v idle, all threads", idle), "0", func(c *candidate) (string, bool) {
		return measured(c, strconv.Itoa(c.ctxIdle), c.ctxIdle == 0)
	})
	row(fmt.Sprintf("zombies 1 s after %d orphans exit at once", orphans), "0", func(c *candidate) (string, bool) {
		return measured(c, strconv.Itoa(c.zombies), c.zombies == 0)
	})
	tw.Flush()
}

// pauseBinary returns the pause binary to measure, building it with the
// Makefile's flags when bin is empty.
func pauseBinary(ctx context.Context, bin string) (string, func(), error) {
	if bin != "" {
		if st, err := os.Stat(bin); err == nil && st.IsDir() {
			bin = filepath.Join(bin, "pause")
		}
		if _, err := os.Stat(bin); err != nil {
			return "", nil, fmt.Errorf("-bin: %w", err)
		}
		abs, err := filepath.Abs(bin)
		return abs, func() {}, err
	}
	dir, err := os.MkdirTemp("", "pause-bench-")
	if err != nil {
		return "", nil, err
	}
	out := filepath.Join(dir, "pause")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=bench", "-o", out, "./cmd/pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build ./cmd/pause (run from the module root, or give -bin): %v\n%s", err, b)
	}
	return out, func() { os.RemoveAll(dir) }, nil
}

// ctxSwitches sums voluntary_ctxt_switches over every thread: the process's
// own line counts only its main thread.
func ctxSwitches(pid int) int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	sum := 0
	for _, t := range tasks {
		sum += statusInt(pid, "voluntary_ctxt_switches", "task", t.Name())
	}
	return sum
}

func statusLine(pid int, key string, task ...string) string {
	path := filepath.Join(append([]string{"/proc", strconv.Itoa(pid)}, append(task, "status")...)...)
	b, _ := os.ReadFile(path)
	_, rest, ok := strings.Cut(string(b), "\n"+key+":")
	if !ok {
		return ""
	}
	line, _, _ := strings.Cut(rest, "\n")
	return strings.TrimSuffix(strings.TrimSpace(line), " kB")
}

func statusInt(pid int, key string, task ...string) int {
	n, _ := strconv.Atoi(statusLine(pid, key, task...))
	return n
}

func statusHex(pid int, key string) uint64 {
	n, _ := strconv.ParseUint(statusLine(pid, key), 16, 64)
	return n
}

// children maps each child of ppid to its state letter.
func children(ppid int) map[int]byte {
	kids := map[int]byte{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// comm may hold spaces and parentheses: count fields after the last ')'.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) >= 2 && f[1] == strconv.Itoa(ppid) {
			kids[pid] = f[0][0]
		}
	}
	return kids
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func kernel() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "?"
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// group writes n with thousands separators.
func group(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
