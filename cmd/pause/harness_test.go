package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/podkit/podkit/internal/initproc"
)

// The black-box tests run the real binary, built once by TestMain with the
// Makefile's flags, as PID 1 of a fresh PID namespace and as an ordinary
// process, and look at it from the host through /proc.

const testVersion = "v0.0.0-test"

// pauseBin is the binary under test.
var pauseBin string

// helperEnv makes the test binary act as a helper process instead of running
// tests; see runHelper.
const helperEnv = "PODKIT_PAUSE_TEST_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	dir, err := os.MkdirTemp("", "pause-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by uid 65535 too, for the non-root test.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pauseBin = filepath.Join(dir, "pause")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion, "-o", pauseBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build pause: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runHelper is what the test binary does when started with helperEnv set.
func runHelper(mode string) int {
	switch mode {
	case "launch":
		// Exec os.Args[1:] with the signals in PODKIT_TEST_IGNORE ignored and
		// those in PODKIT_TEST_BLOCK blocked, like tini's sigconf test launcher.
		runtime.LockOSThread() // the mask set below is this thread's, and execve runs here
		for _, n := range sigList(os.Getenv("PODKIT_TEST_IGNORE")) {
			signal.Ignore(n)
		}
		var set uint64
		for _, n := range sigList(os.Getenv("PODKIT_TEST_BLOCK")) {
			set |= 1 << (n - 1)
		}
		const sigBlock = 0
		syscall.RawSyscall6(syscall.SYS_RT_SIGPROCMASK, sigBlock, uintptr(unsafe.Pointer(&set)), 0, 8, 0, 0)
		err := syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
		fmt.Fprintln(os.Stderr, "helper exec:", err)
		return 127
	case "orphan.c":
		// k8s build/pause/linux/orphan.c: a child that exits only once it has
		// been re-parented to PID 1.
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=spin")
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	case "spin":
		for deadline := time.Now().Add(10 * time.Second); os.Getppid() != 1 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper", mode)
	return 2
}

func sigList(s string) []syscall.Signal {
	var sigs []syscall.Signal
	for f := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ',' }) {
		n, _ := strconv.Atoi(f)
		sigs = append(sigs, syscall.Signal(n))
	}
	return sigs
}

// needRoot skips a test that needs root, or fails it in CI, where it must run.
func needRoot(t *testing.T, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root (PID namespaces, nsenter)"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			why = "needs " + tool + " (util-linux)"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why + "; CI=true, so not skipping")
	}
	t.Skip(why)
}

// opts says how to start a process under test.
type opts struct {
	args  []string // pause's arguments
	pid1  bool     // PID 1 of a fresh PID namespace
	path  string   // program, default pauseBin
	env   []string // added to the environment
	dir   string
	stdin io.Reader
	files []*os.File // ExtraFiles: fd 3, 4, ...
	sys   *syscall.SysProcAttr
}

// proc is a started process; t.Cleanup kills it by PID if it is still running.
type proc struct {
	t              *testing.T
	cmd            *exec.Cmd
	pid            int
	stdout, stderr string // file names
	done           chan struct{}
}

func launch(t *testing.T, o opts) *proc {
	t.Helper()
	path := o.path
	if path == "" {
		path = pauseBin
	}
	cmd := exec.Command(path, o.args...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.Dir = o.dir
	cmd.Stdin = o.stdin
	cmd.ExtraFiles = o.files
	cmd.SysProcAttr = o.sys
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if o.pid1 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWPID
	}
	// Files, not pipes: a background sibling holding a pipe open must not
	// keep Wait from returning.
	dir := t.TempDir()
	p := &proc{t: t, cmd: cmd, stdout: filepath.Join(dir, "stdout"), stderr: filepath.Join(dir, "stderr"), done: make(chan struct{})}
	var err error
	if cmd.Stdout, err = os.Create(p.stdout); err != nil {
		t.Fatal(err)
	}
	if cmd.Stderr, err = os.Create(p.stderr); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	cmd.Stdout.(*os.File).Close()
	cmd.Stderr.(*os.File).Close()
	p.pid = cmd.Process.Pid
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			cmd.Process.Kill()
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("pid %d did not exit after SIGKILL", p.pid)
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait returns the wait status, failing the test if the process runs longer than d.
func (p *proc) wait(d time.Duration) syscall.WaitStatus {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	case <-time.After(d):
		p.t.Fatalf("pid %d still running after %v; stderr: %q", p.pid, d, p.errOut())
		return 0
	}
}

// code is the exit code of a process that must exit within d.
func (p *proc) code(d time.Duration) int {
	p.t.Helper()
	ws := p.wait(d)
	if !ws.Exited() {
		p.t.Fatalf("pid %d ended with %v, not an exit; stderr: %q", p.pid, ws, p.errOut())
	}
	return ws.ExitStatus()
}

func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if p.exited() {
		p.t.Fatalf("pid %d already exited; stderr: %q", p.pid, p.errOut())
	}
	if err := syscall.Kill(p.pid, sig); err != nil {
		p.t.Fatalf("kill %d %v: %v", p.pid, sig, err)
	}
}

func (p *proc) out() string    { b, _ := os.ReadFile(p.stdout); return string(b) }
func (p *proc) errOut() string { b, _ := os.ReadFile(p.stderr); return string(b) }

// ready waits until pause catches SIGTSTP. The Go runtime never does that on
// its own and pause asks for SIGTSTP last, so from then on every signal pause
// handles is caught; before, the first milliseconds of a Go PID 1 drop signals
// or die of them with status 2 (pause.md §5.5).
func (p *proc) ready() {
	p.t.Helper()
	waitFor(p.t, 10*time.Second, "pause catching signals", func() bool {
		if p.exited() {
			p.t.Fatalf("pid %d exited before it was ready; stderr: %q", p.pid, p.errOut())
		}
		caught, _ := initproc.ReadSigset("/proc/"+strconv.Itoa(p.pid)+"/status", "SigCgt")
		return caught.Has(syscall.SIGTSTP)
	})
}

// running fails the test unless the process is still running, and not stopped.
func (p *proc) running() {
	p.t.Helper()
	if p.exited() {
		p.t.Fatalf("pid %d exited (%v); stderr: %q", p.pid, p.cmd.ProcessState, p.errOut())
	}
	if st := state(p.pid); st != 'S' && st != 'R' {
		p.t.Fatalf("pid %d is in state %c", p.pid, st)
	}
}

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, d)
		}
	}
}

// stat reads state and parent from /proc/PID/stat; comm may hold spaces and
// parentheses, so fields are counted after the last ')'.
func stat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	return f[0][0], ppid, true
}

func state(pid int) byte {
	s, _, _ := stat(pid)
	return s
}

// children maps each child of ppid to its state letter, seen from the host.
func children(ppid int) map[int]byte {
	kids := map[int]byte{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, pp, ok := stat(pid); ok && pp == ppid {
			kids[pid] = st
		}
	}
	return kids
}

func zombies(ppid int) int {
	n := 0
	for _, st := range children(ppid) {
		if st == 'Z' {
			n++
		}
	}
	return n
}

// nsenter runs argv in the PID namespace of pid and waits for it.
func nsenter(t *testing.T, pid int, files []*os.File, env []string, argv ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-p", "--"}, argv...)...)
	cmd.ExtraFiles = files
	cmd.Env = append(os.Environ(), env...)
	// A file, not a pipe: the orphans argv leaves behind inherit its output
	// and would keep a pipe, and Wait, open.
	out, err := os.CreateTemp(t.TempDir(), "nsenter")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("nsenter %v: %v\n%s", argv, err, b)
	}
}

// orphanScript forks $1 subshells that each block reading fd 3, then exits,
// orphaning them. They all exit at the same moment, when the last writer of
// the pipe on fd 3 closes it: a burst of coalesced SIGCHLDs for their reaper.
const orphanScript = `i=0; while [ "$i" -lt "$1" ]; do read -r x <&3 & i=$((i+1)); done`

// gate is a pipe whose write end the test closes to release readers of fd 3.
type gate struct{ r, w *os.File }

func newGate(t *testing.T) *gate {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return &gate{r, w}
}

func (g *gate) open() { g.w.Close() }
