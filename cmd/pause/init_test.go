package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/podkit/podkit/internal/initproc"
)

// Init mode, pause.md §7 B.

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    config
		wantErr string
	}{
		{"pause", nil, config{}, ""},
		{"version", []string{"x", "-V"}, config{version: true}, ""},
		{"help", []string{"-h"}, config{help: true}, ""},
		{"command", []string{"--", "sh", "-v", "-h", "--"}, config{argv: []string{"sh", "-v", "-h", "--"}}, ""},
		{"group", []string{"-g", "--", "sh"}, config{group: true, argv: []string{"sh"}}, ""},
		{"expect forms", []string{"-e", "143", "-e=0", "-e255", "--", "sh"},
			config{argv: []string{"sh"}, expect: expect(0, 143, 255)}, ""},
		{"no command", []string{"-g", "--"}, config{}, "no command after --"},
		{"flag without command", []string{"-g"}, config{}, "-g needs a command"},
		{"argument without --", []string{"sleep", "1"}, config{}, `unexpected argument "sleep"`},
		{"unknown flag", []string{"-x", "--", "sh"}, config{}, `unknown flag "-x"`},
		{"code too big", []string{"-e", "256", "--", "sh"}, config{}, `-e "256"`},
		{"code negative", []string{"-e", "-1", "--", "sh"}, config{}, `-e "-1"`},
		{"code missing", []string{"-e", "--", "sh"}, config{}, `-e ""`},
		{"code not a number", []string{"-e", "x1", "--", "sh"}, config{}, `-e "x1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.version != tt.want.version || got.help != tt.want.help || got.group != tt.want.group ||
				got.expect != tt.want.expect || strings.Join(got.argv, " ") != strings.Join(tt.want.argv, " ") ||
				(got.argv == nil) != (tt.want.argv == nil) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func expect(codes ...int) (e [256]bool) {
	for _, c := range codes {
		e[c] = true
	}
	return e
}

func TestUsage(t *testing.T) { // B22
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // substring
		stderr string // substring
	}{
		{"no command", []string{"--"}, 2, "", "usage: pause"},
		{"unknown flag", []string{"-x", "--", "true"}, 2, "", `unknown flag "-x"`},
		{"bad code", []string{"-e", "256", "--", "true"}, 2, "", "0 to 255"},
		{"forgot --", []string{"sleep", "1"}, 2, "", "put it after --"},
		{"help", []string{"-h"}, 0, "usage: pause", ""},
		{"-v after -- is the command's", []string{"--", "-v"}, 127, "", "exec -v: no such file"},
		{"flags after -- are the command's", []string{"--", "sh", "-c", `echo "$@"`, "sh", "-v", "-h", "-e", "1"}, 0, "-v -h -e 1\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := launch(t, opts{args: tt.args})
			if code := p.code(10 * time.Second); code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, p.errOut())
			}
			if !strings.Contains(p.out(), tt.stdout) || !strings.Contains(p.errOut(), tt.stderr) {
				t.Errorf("stdout %q, stderr %q; want %q and %q in them", p.out(), p.errOut(), tt.stdout, tt.stderr)
			}
		})
	}
}

func TestExitStatus(t *testing.T) { // B18, B26
	needRoot(t)
	t.Parallel()
	// Every code passes through; -e CODE maps it, and only it, to 0.
	type job struct {
		args []string
		want int
	}
	var jobs []job
	for n := range 256 {
		exit := []string{"--", "sh", "-c", "exit " + strconv.Itoa(n)}
		jobs = append(jobs,
			job{exit, n},
			job{append([]string{"-e", strconv.Itoa(n)}, exit...), 0},
			job{append([]string{"-e", strconv.Itoa((n + 1) % 256)}, exit...), n})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	work := make(chan job)
	for range 3 {
		wg.Go(func() {
			for j := range work {
				err := exec.CommandContext(ctx, pauseBin, j.args...).Run()
				code := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				} else if err != nil {
					t.Errorf("%v: %v", j.args, err)
					continue
				}
				if code != j.want {
					t.Errorf("pause %s: exit %d, want %d", strings.Join(j.args, " "), code, j.want)
				}
			}
		})
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
}

func TestSignalDeath(t *testing.T) { // B19
	t.Parallel()
	for _, tt := range []struct {
		sig  string
		want int
	}{{"KILL", 137}, {"TERM", 143}, {"SEGV", 139}, {"HUP", 129}, {"INT", 130}, {"USR1", 138}} {
		t.Run(tt.sig, func(t *testing.T) {
			p := launch(t, opts{args: []string{"--", "sh", "-c", "kill -" + tt.sig + " $$; sleep 5"}})
			if code := p.code(10 * time.Second); code != tt.want {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.want, p.errOut())
			}
		})
	}
}

func TestForward(t *testing.T) { // B20, B26 (-e 143)
	needRoot(t)
	t.Parallel()
	sigs := []syscall.Signal{syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP,
		syscall.SIGINT, syscall.SIGALRM, syscall.SIGWINCH, syscall.Signal(40)}
	for _, m := range modes {
		for _, group := range []bool{false, true} {
			name := m.name
			if group {
				name += "/group"
			}
			t.Run(name, func(t *testing.T) {
				for _, sig := range sigs {
					args := []string{"--", "sleep", "60"}
					if group {
						args = append([]string{"-g"}, args...)
					}
					p := launch(t, opts{pid1: m.pid1, args: args})
					p.ready()
					p.signal(sig)
					want := 128 + int(sig)
					if sig == syscall.SIGWINCH { // ignored by default: sleep lives on
						time.Sleep(100 * time.Millisecond)
						p.running()
						p.signal(syscall.SIGTERM)
						want = 143
					}
					if code := p.code(10 * time.Second); code != want {
						t.Fatalf("%v: exit %d, want %d; stderr %q", sig, code, want, p.errOut())
					}
				}
			})
		}
	}
	t.Run("expect 143", func(t *testing.T) {
		p := launch(t, opts{args: []string{"-e", "143", "--", "sleep", "60"}})
		p.ready()
		p.signal(syscall.SIGTERM)
		if code := p.code(10 * time.Second); code != 0 {
			t.Fatalf("exit %d, want 0", code)
		}
	})
}

func TestStartFailure(t *testing.T) { // B21
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "noexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		argv []string
		path string
		want int
	}{
		{"not found", []string{"/nonexistent"}, "", 127},
		{"not found in PATH", []string{"no-such-command-podkit"}, "", 127},
		{"empty name", []string{""}, "", 127},
		{"directory", []string{"/etc"}, "", 126},
		{"not executable", []string{filepath.Join(dir, "noexec")}, "", 126},
		{"not executable in PATH", []string{"noexec"}, dir + ":/bin", 126},
		{"found later in PATH", []string{"true"}, "/nonexistent:" + dir + ":/bin", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opts{args: append([]string{"--"}, tt.argv...)}
			if tt.path != "" {
				o.env = []string{"PATH=" + tt.path}
			}
			p := launch(t, o)
			if code := p.code(10 * time.Second); code != tt.want {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.want, p.errOut())
			}
		})
	}
}

func TestStdio(t *testing.T) { // B23
	t.Parallel()
	p := launch(t, opts{args: []string{"--", "sh"}, stdin: strings.NewReader("echo out; echo err >&2; exit 5\n")})
	if code := p.code(10 * time.Second); code != 5 {
		t.Errorf("exit %d, want 5", code)
	}
	if p.out() != "out\n" || p.errOut() != "err\n" {
		t.Errorf("stdout %q, stderr %q", p.out(), p.errOut())
	}
}

func TestInitReaps(t *testing.T) { // B24
	needRoot(t)
	t.Parallel()
	const n = 100
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			g := newGate(t)
			p := launch(t, opts{pid1: m.pid1, files: []*os.File{g.r}, env: []string{"ORPHANS=" + orphanScript},
				args: []string{"--", "sh", "-c", `sh -c "$ORPHANS" sh ` + strconv.Itoa(n) + `; exec sleep 60`}})
			waitFor(t, 10*time.Second, "orphans re-parented to pause", func() bool { return len(children(p.pid)) == n+1 })
			g.open()
			waitFor(t, 5*time.Second, "orphans reaped", func() bool { return len(children(p.pid)) == 1 })
			p.ready()
			p.signal(syscall.SIGTERM)
			if code := p.code(10 * time.Second); code != 143 {
				t.Fatalf("exit %d, want 143", code)
			}
		})
	}
}

func TestGroup(t *testing.T) { // B25
	t.Parallel()
	// The child waits out a trap while its own child, sleep, keeps the
	// default SIGUSR1: only a signal to the whole group ends sleep early.
	const script = `trap : USR1; sleep 3; exit 7`
	for _, tt := range []struct {
		name   string
		args   []string
		prompt bool
	}{
		{"group", []string{"-g"}, true},
		{"child only", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := launch(t, opts{args: append(tt.args, "--", "sh", "-c", script)})
			p.ready()
			waitFor(t, 5*time.Second, "sleep under the child", func() bool {
				for kid := range children(p.pid) {
					if len(children(kid)) == 1 {
						return true
					}
				}
				return false
			})
			began := time.Now()
			p.signal(syscall.SIGUSR1)
			if code := p.code(10 * time.Second); code != 7 {
				t.Fatalf("exit %d, want 7", code)
			}
			if took := time.Since(began); tt.prompt != (took < 1500*time.Millisecond) {
				t.Fatalf("exit after %v; want prompt: %v", took, tt.prompt)
			}
		})
	}
}

func TestDispositions(t *testing.T) { // B27
	t.Parallel()
	// tini's sigconf test: the launcher ignores INT and TTOU and blocks TERM
	// and TTIN, then execs init, whose child reports its own dispositions.
	p := launch(t, opts{path: os.Args[0], args: []string{pauseBin, "--", "cat", "/proc/self/status"},
		env: []string{helperEnv + "=launch", "PODKIT_TEST_IGNORE=2,22", "PODKIT_TEST_BLOCK=15,21"}})
	if code := p.code(10 * time.Second); code != 0 {
		t.Fatalf("exit %d; stderr %q", code, p.errOut())
	}
	ignored, err := initproc.ReadSigset(p.stdout, "SigIgn")
	if err != nil {
		t.Fatal(err)
	}
	blocked, err := initproc.ReadSigset(p.stdout, "SigBlk")
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTTOU} {
		if !ignored.Has(sig) {
			t.Errorf("%v not ignored in the child; SigIgn %016x", sig, ignored)
		}
	}
	if !blocked.Has(syscall.SIGTTIN) {
		t.Errorf("SIGTTIN not blocked in the child; SigBlk %016x", blocked)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGCHLD} {
		if ignored.Has(sig) {
			t.Errorf("%v ignored in the child though the launcher did not ignore it", sig)
		}
	}
	// Known limit (initproc.Command.Ignored): the Go runtime unblocks SIGTERM
	// before main, so the launcher's block cannot be handed on.
	t.Logf("SIGTERM blocked in the child: %v (tini: true; a Go init cannot see it)", blocked.Has(syscall.SIGTERM))

	// A signal the launcher ignored stays ignored by init too: not forwarded.
	p = launch(t, opts{path: os.Args[0], args: []string{pauseBin, "--", "sleep", "60"},
		env: []string{helperEnv + "=launch", "PODKIT_TEST_IGNORE=2"}})
	p.ready()
	p.signal(syscall.SIGINT)
	time.Sleep(100 * time.Millisecond)
	p.running()
	p.signal(syscall.SIGTERM)
	if code := p.code(10 * time.Second); code != 143 {
		t.Fatalf("exit %d, want 143", code)
	}
}

func TestExitTogether(t *testing.T) { // B29: catatonit#4 and #5
	needRoot(t)
	t.Parallel()
	// The child and its 20 children all block on one pipe and exit the
	// moment it closes: the child's SIGCHLD coalesces with theirs.
	for _, m := range modes {
		for _, code := range []int{3, 127} {
			t.Run(m.name+"/"+strconv.Itoa(code), func(t *testing.T) {
				for range 5 {
					g := newGate(t)
					p := launch(t, opts{pid1: m.pid1, files: []*os.File{g.r}, env: []string{"ORPHANS=" + orphanScript},
						args: []string{"--", "sh", "-c", `sh -c "$ORPHANS" sh 20; read -r x <&3; exit ` + strconv.Itoa(code)}})
					waitFor(t, 10*time.Second, "orphans re-parented to pause", func() bool { return len(children(p.pid)) == 21 })
					g.open()
					if got := p.code(5 * time.Second); got != code {
						t.Fatalf("exit %d, want %d", got, code)
					}
				}
			})
		}
	}
}

func TestSiblings(t *testing.T) { // B30
	needRoot(t)
	t.Parallel()
	// Init leaves with the child's status at once. A sibling dies with the
	// namespace when init was its PID 1, and runs on otherwise (tini's choice).
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			g := newGate(t)
			p := launch(t, opts{pid1: m.pid1, files: []*os.File{g.r},
				args: []string{"--", "sh", "-c", `sleep 60 & read -r x <&3; exit 4`}})
			var sib int
			waitFor(t, 5*time.Second, "sibling", func() bool {
				for kid := range children(p.pid) {
					for gk := range children(kid) {
						sib = gk
					}
				}
				return sib != 0
			})
			t.Cleanup(func() { syscall.Kill(sib, syscall.SIGKILL) })
			g.open()
			if code := p.code(5 * time.Second); code != 4 {
				t.Fatalf("exit %d, want 4", code)
			}
			if m.pid1 {
				waitFor(t, 5*time.Second, "sibling gone with the namespace", func() bool { _, _, ok := stat(sib); return !ok })
			} else if st := state(sib); st != 'S' {
				t.Fatalf("sibling %d in state %q, want running", sib, st)
			}
		})
	}
}

func TestChildCwd(t *testing.T) { // B31
	t.Parallel()
	dir := t.TempDir()
	p := launch(t, opts{dir: dir, args: []string{"--", "sh", "-c", `pwd; sleep 60`}})
	waitFor(t, 5*time.Second, "pwd", func() bool { return p.out() != "" })
	if got := strings.TrimSpace(p.out()); got != dir {
		t.Errorf("child cwd %q, want %q", got, dir)
	}
	waitFor(t, 5*time.Second, "init in /", func() bool {
		cwd, _ := os.Readlink("/proc/" + strconv.Itoa(p.pid) + "/cwd")
		return cwd == "/"
	})
}

func TestChildStopCont(t *testing.T) { // B32
	needRoot(t)
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			p := launch(t, opts{pid1: m.pid1, args: []string{"--", "sleep", "60"}})
			p.ready()
			var kid int
			waitFor(t, 5*time.Second, "child", func() bool {
				for pid := range children(p.pid) {
					kid = pid
				}
				return kid != 0
			})
			syscall.Kill(kid, syscall.SIGSTOP)
			waitFor(t, 5*time.Second, "child stopped", func() bool { return state(kid) == 'T' })
			time.Sleep(100 * time.Millisecond)
			p.running()
			syscall.Kill(kid, syscall.SIGCONT)
			waitFor(t, 5*time.Second, "child resumed", func() bool { return state(kid) == 'S' })
			p.running()
			p.signal(syscall.SIGTERM)
			if code := p.code(10 * time.Second); code != 143 {
				t.Fatalf("exit %d, want 143", code)
			}
		})
	}
}

func TestTTY(t *testing.T) { // B33
	needRoot(t)
	t.Parallel()
	// pause leads a session on a fresh pty; its child takes the foreground,
	// so ^C reaches the child alone and init leaves with 130.
	master, slave := openPTY(t)
	p := launch(t, opts{args: []string{"--", "sleep", "60"}, stdin: slave,
		sys: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}})
	slave.Close()
	var kid int
	waitFor(t, 5*time.Second, "child in the terminal's foreground", func() bool {
		for pid := range children(p.pid) {
			kid = pid
		}
		return kid != 0 && tpgid(kid) == kid
	})
	if _, err := master.Write([]byte{3}); err != nil { // ^C
		t.Fatal(err)
	}
	if code := p.code(10 * time.Second); code != 130 {
		t.Fatalf("exit %d, want 130", code)
	}
}

func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skip("no pty:", err)
	}
	t.Cleanup(func() { master.Close() })
	var unlock int32
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		t.Fatal("unlock pty:", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		t.Fatal("pty number:", e)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, slave
}

// tpgid is the foreground process group of pid's terminal (/proc/PID/stat field 8).
func tpgid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 6 {
		return 0
	}
	n, _ := strconv.Atoi(f[5])
	return n
}
