package main

import (
	"debug/elf"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Pause mode, pause.md §7 A.

var modes = []struct {
	name string
	pid1 bool
}{{"pid1", true}, {"not-pid1", false}}

func TestVersion(t *testing.T) { // A1
	t.Parallel()
	for _, args := range [][]string{{"-v"}, {"-V"}, {"foo", "-v"}, {"-g", "-V", "-e", "3"}, {"-v", "--", "sleep", "9"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			p := launch(t, opts{args: args})
			if code := p.code(10 * time.Second); code != 0 {
				t.Errorf("exit %d, want 0", code)
			}
			if got, want := p.out(), "pause "+testVersion+"\n"; got != want {
				t.Errorf("stdout %q, want %q", got, want)
			}
			if e := p.errOut(); e != "" {
				t.Errorf("stderr %q, want nothing (no warning)", e)
			}
		})
	}
}

func TestShutdown(t *testing.T) { // A2, A3, A4
	needRoot(t)
	t.Parallel()
	tests := []struct {
		name  string
		pid1  bool
		sig   syscall.Signal
		word  string
		runs  int
		env   []string // helper launcher
		warns bool
	}{
		{"pid1/TERM", true, syscall.SIGTERM, "Terminated", 20, nil, false},
		{"pid1/INT", true, syscall.SIGINT, "Interrupt", 3, nil, false},
		{"not-pid1/TERM", false, syscall.SIGTERM, "Terminated", 3, nil, true},
		{"not-pid1/INT", false, syscall.SIGINT, "Interrupt", 3, nil, true},
		// A background job of a non-interactive shell starts with SIGINT ignored.
		{"not-pid1/INT-ignored-by-launcher", false, syscall.SIGINT, "Interrupt", 3,
			[]string{helperEnv + "=launch", "PODKIT_TEST_IGNORE=2"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range tt.runs {
				o := opts{pid1: tt.pid1, env: tt.env}
				if tt.env != nil {
					o.path, o.args = os.Args[0], []string{pauseBin}
				}
				p := launch(t, o)
				p.ready()
				if tt.warns {
					// A2: the warning, and pause goes on running.
					time.Sleep(50 * time.Millisecond)
					p.running()
				}
				p.signal(tt.sig)
				if code := p.code(10 * time.Second); code != 0 {
					t.Fatalf("exit %d, want 0; stderr %q", code, p.errOut())
				}
				want := "Shutting down, got signal: " + tt.word + "\n"
				if tt.warns {
					want = "Warning: pause should be the first process\n" + want
				}
				if got := p.errOut(); got != want {
					t.Fatalf("stderr %q, want %q", got, want)
				}
			}
		})
	}
}

func TestIgnoresOtherSignals(t *testing.T) { // A5, A6
	needRoot(t, "nsenter")
	t.Parallel()
	// A naive Go port dies with status 2 on SIGHUP; the stop signals must not
	// stop pause either.
	sigs := []syscall.Signal{syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
		syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGWINCH, syscall.SIGCONT, syscall.SIGURG,
		syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGCHLD, syscall.SIGIO, syscall.Signal(40)}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			p := launch(t, opts{pid1: m.pid1})
			p.ready()
			for _, sig := range sigs {
				p.signal(sig)
				time.Sleep(20 * time.Millisecond)
				p.running()
			}
			if m.pid1 {
				// A6: SIGKILL from inside the namespace does not reach its init.
				nsenter(t, p.pid, nil, nil, "sh", "-c", "kill -KILL 1")
				time.Sleep(50 * time.Millisecond)
				p.running()
			}
			p.signal(syscall.SIGTERM)
			if code := p.code(10 * time.Second); code != 0 {
				t.Fatalf("exit %d after TERM", code)
			}
		})
	}
}

func TestPauseReaps(t *testing.T) { // A7, A8, A9, A10, A17 (subreaper)
	needRoot(t, "nsenter")
	t.Parallel()

	t.Run("pid1/sleep-orphan", func(t *testing.T) { // A7
		p := launch(t, opts{pid1: true})
		p.ready()
		nsenter(t, p.pid, nil, nil, "sh", "-c", "sleep 0.3 & exit 0")
		waitFor(t, 5*time.Second, "orphan re-parented to pause", func() bool { return len(children(p.pid)) == 1 })
		waitFor(t, 5*time.Second, "orphan reaped", func() bool { return len(children(p.pid)) == 0 })
	})

	t.Run("pid1/orphan.c", func(t *testing.T) { // A8: exits only once re-parented to PID 1
		p := launch(t, opts{pid1: true})
		p.ready()
		nsenter(t, p.pid, nil, []string{helperEnv + "=orphan.c"}, os.Args[0])
		waitFor(t, 15*time.Second, "orphan.c child reaped", func() bool { return len(children(p.pid)) == 0 })
	})

	const n = 50
	for _, tt := range []struct {
		name    string
		path    string // PID 1
		args    []string
		zombies int
	}{
		{"pid1/50-orphans-together", pauseBin, nil, 0}, // A9
		// A10: the harness sees zombies when PID 1 does not reap.
		{"pid1/control-sleep", "/bin/sleep", []string{"60"}, n},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := launch(t, opts{pid1: true, path: tt.path, args: tt.args})
			if tt.path == pauseBin {
				p.ready()
			}
			g := newGate(t)
			nsenter(t, p.pid, []*os.File{g.r}, nil, "sh", "-c", orphanScript, "sh", strconv.Itoa(n))
			waitFor(t, 10*time.Second, "orphans re-parented to PID 1", func() bool { return len(children(p.pid)) == n })
			g.open()
			if tt.zombies == 0 {
				waitFor(t, 5*time.Second, "orphans reaped", func() bool { return len(children(p.pid)) == 0 })
				return
			}
			waitFor(t, 5*time.Second, "zombies under the control PID 1", func() bool { return zombies(p.pid) == tt.zombies })
			time.Sleep(200 * time.Millisecond)
			if z := zombies(p.pid); z != tt.zombies {
				t.Fatalf("%d zombies, want %d", z, tt.zombies)
			}
		})
	}

	t.Run("not-pid1/subreaper", func(t *testing.T) { // A17
		// A shell forks a child and execs pause, so pause inherits it. Once
		// pause is ready the child runs the orphan script: the orphans go to
		// the nearest subreaper, pause, not to the host's init.
		start, release := newGate(t), newGate(t)
		script := `{ read -r x <&4; sh -c "$ORPHANS" sh ` + strconv.Itoa(n) + `; } & exec "$PAUSE"`
		p := launch(t, opts{path: "/bin/sh", args: []string{"-c", script},
			env:   []string{"ORPHANS=" + orphanScript, "PAUSE=" + pauseBin},
			files: []*os.File{release.r, start.r}})
		p.ready()
		start.open()
		waitFor(t, 10*time.Second, "orphans re-parented to pause", func() bool { return len(children(p.pid)) == n })
		release.open()
		waitFor(t, 5*time.Second, "orphans reaped", func() bool { return len(children(p.pid)) == 0 })
	})
}

func TestStoppedChild(t *testing.T) { // A12
	needRoot(t, "nsenter")
	t.Parallel()
	p := launch(t, opts{pid1: true})
	p.ready()
	nsenter(t, p.pid, nil, nil, "sh", "-c", "sleep 2 & exit 0")
	var kid int
	waitFor(t, 5*time.Second, "orphan re-parented to pause", func() bool {
		for pid := range children(p.pid) {
			kid = pid
		}
		return kid != 0
	})
	syscall.Kill(kid, syscall.SIGSTOP)
	waitFor(t, 5*time.Second, "child stopped", func() bool { return state(kid) == 'T' })
	time.Sleep(100 * time.Millisecond)
	p.running()
	if st := state(kid); st != 'T' {
		t.Fatalf("stopped child in state %q, want T (not reaped)", st)
	}
	syscall.Kill(kid, syscall.SIGCONT)
	waitFor(t, 5*time.Second, "child resumed", func() bool { return state(kid) == 'S' })
	waitFor(t, 5*time.Second, "child exited and reaped", func() bool { return len(children(p.pid)) == 0 })
	p.running()
}

func TestShutdownKillsNamespace(t *testing.T) { // A11
	needRoot(t, "nsenter")
	t.Parallel()
	p := launch(t, opts{pid1: true})
	p.ready()
	in := launch(t, opts{path: "nsenter", args: []string{"-t", strconv.Itoa(p.pid), "-p", "--", "sleep", "60"}})
	var sleeper int
	waitFor(t, 5*time.Second, "sleep inside the namespace", func() bool {
		for pid := range children(in.pid) {
			sleeper = pid
		}
		return sleeper != 0
	})
	p.signal(syscall.SIGTERM)
	if code := p.code(10 * time.Second); code != 0 {
		t.Fatalf("exit %d, want 0", code)
	}
	waitFor(t, 5*time.Second, "namespace emptied", func() bool { _, _, ok := stat(sleeper); return !ok })
	in.wait(5 * time.Second)
}

func TestIdle(t *testing.T) { // A13, A14
	needRoot(t)
	t.Parallel()
	// pause.md §5.2 measured 2.0-2.25 MB for a Go pause; the README's 2.2 MB
	// target is checked by bench/pause. The test allows for the startup
	// threads a loaded machine makes the runtime spawn (~15 kB each).
	const rssBudgetKB = 2560
	const window = 10 * time.Second
	p := launch(t, opts{pid1: true})
	p.ready()
	time.Sleep(2 * time.Second)
	if rss := statusField(t, p.pid, "VmRSS"); rss > rssBudgetKB {
		t.Errorf("idle VmRSS %d kB, budget %d kB", rss, rssBudgetKB)
	}
	before := ctxSwitches(t, p.pid)
	time.Sleep(window)
	if d := ctxSwitches(t, p.pid) - before; d != 0 {
		t.Errorf("%d voluntary context switches in %v idle, want 0", d, window)
	}
	p.running()
}

// ctxSwitches sums voluntary_ctxt_switches over every thread: the process's
// own status line counts only the main thread, and Go runs several.
func ctxSwitches(t *testing.T, pid int) int {
	t.Helper()
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, task := range tasks {
		sum += statusField(t, pid, "voluntary_ctxt_switches", "task", task.Name())
	}
	return sum
}

func statusField(t *testing.T, pid int, key string, task ...string) int {
	t.Helper()
	path := filepath.Join(append([]string{"/proc", strconv.Itoa(pid)}, append(task, "status")...)...)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				t.Fatalf("%s %s: %v", path, key, err)
			}
			return n
		}
	}
	t.Fatalf("%s: no %s", path, key)
	return 0
}

func TestStaticScratch(t *testing.T) { // A15
	needRoot(t)
	t.Parallel()
	f, err := elf.Open(pauseBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
			t.Fatalf("binary has %v: not static", prog.Type)
		}
	}
	const sizeBudget = 1_500_000 // bytes: 1.5 MB, the README's promise
	if st, err := os.Stat(pauseBin); err != nil {
		t.Fatal(err)
	} else if st.Size() > sizeBudget {
		t.Errorf("binary is %d bytes, budget %d", st.Size(), sizeBudget)
	}

	// A scratch root holds the binary and nothing else: no /proc, /dev, shell.
	root := t.TempDir()
	b, err := os.ReadFile(pauseBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "pause"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	scratch := func() *syscall.SysProcAttr { return &syscall.SysProcAttr{Chroot: root} }

	p := launch(t, opts{path: "/pause", args: []string{"-v"}, sys: scratch()})
	if code := p.code(10 * time.Second); code != 0 || p.out() != "pause "+testVersion+"\n" {
		t.Fatalf("pause -v in scratch: exit %d, stdout %q, stderr %q", code, p.out(), p.errOut())
	}

	p = launch(t, opts{path: "/pause", pid1: true, sys: scratch()})
	p.ready()
	p.signal(syscall.SIGTERM)
	if code := p.code(10 * time.Second); code != 0 {
		t.Fatalf("pause in scratch: exit %d; stderr %q", code, p.errOut())
	}

	// Init mode without /proc cannot read the launcher's dispositions; it
	// says so and runs the command anyway.
	p = launch(t, opts{path: "/pause", args: []string{"--", "/pause", "-v"}, pid1: true, sys: scratch()})
	if code := p.code(10 * time.Second); code != 0 || p.out() != "pause "+testVersion+"\n" {
		t.Fatalf("pause -- /pause -v in scratch: exit %d, stdout %q, stderr %q", code, p.out(), p.errOut())
	}
	if !strings.Contains(p.errOut(), "ignored signals not handed on") {
		t.Errorf("stderr %q, want the dispositions warning", p.errOut())
	}
}

func TestNonRoot(t *testing.T) { // A16
	needRoot(t)
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			p := launch(t, opts{pid1: m.pid1, dir: "/", sys: &syscall.SysProcAttr{
				Credential: &syscall.Credential{Uid: 65535, Gid: 65535, NoSetGroups: true}}})
			p.ready()
			p.signal(syscall.SIGTERM)
			if code := p.code(10 * time.Second); code != 0 {
				t.Fatalf("exit %d; stderr %q", code, p.errOut())
			}
		})
	}
}

func TestCwd(t *testing.T) { // A17: pause does not pin the directory it was started in
	needRoot(t)
	t.Parallel()
	p := launch(t, opts{dir: t.TempDir()})
	p.ready()
	waitFor(t, 5*time.Second, "cwd /", func() bool {
		cwd, _ := os.Readlink("/proc/" + strconv.Itoa(p.pid) + "/cwd")
		return cwd == "/"
	})
}
