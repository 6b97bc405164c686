package initproc

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		ws   syscall.WaitStatus // layout of <sys/wait.h>: code<<8, or the signal number
		want int
	}{
		{"exit 0", 0, 0},
		{"exit 3", 3 << 8, 3},
		{"exit 255", 255 << 8, 255},
		{"SIGKILL", syscall.WaitStatus(syscall.SIGKILL), 137},
		{"SIGTERM", syscall.WaitStatus(syscall.SIGTERM), 143},
		{"SIGSEGV with core", syscall.WaitStatus(syscall.SIGSEGV) | 0x80, 139},
		{"signal 64", 64, 192},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ExitCode(tt.ws); got != tt.want {
				t.Errorf("ExitCode(%#x) = %d, want %d", uint32(tt.ws), got, tt.want)
			}
		})
	}
}

func TestReadSigset(t *testing.T) {
	// testdata/status-launcher is cat's /proc/self/status under a launcher
	// that blocked TERM, TTIN, USR1 and ignored INT, TTOU, USR2.
	tests := []struct {
		file, key string
		want      Sigset
		wantErr   bool
	}{
		{"status-launcher", "SigBlk", SigsetOf(syscall.SIGTERM, syscall.SIGTTIN, syscall.SIGUSR1), false},
		{"status-launcher", "SigIgn", SigsetOf(syscall.SIGINT, syscall.SIGTTOU, syscall.SIGUSR2), false},
		{"status-launcher", "SigCgt", 0, false},
		{"status-launcher", "SigX", 0, true},
		{"status-truncated", "SigIgn", 0, true},
		{"status-nonhex", "SigBlk", 0, true},
		{"missing", "SigIgn", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+tt.key, func(t *testing.T) {
			got, err := ReadSigset(filepath.Join("testdata", tt.file), tt.key)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error: %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %016x, want %016x", got, tt.want)
			}
		})
	}
}

func FuzzSigField(f *testing.F) {
	b, err := os.ReadFile("testdata/status-launcher")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b), "SigBlk")
	f.Add("SigIgn:\tffffffffffffffff\n", "SigIgn")
	f.Fuzz(func(t *testing.T, text, key string) {
		got, ok := sigField(text, key)
		if !ok {
			return
		}
		// A mask that parsed prints back, on its own line, as the same mask.
		again, ok := sigField(fmt.Sprintf("%s:\t%016x\n", key, uint64(got)), key)
		if !ok || again != got {
			t.Fatalf("%016x reparsed as %016x, %v", uint64(got), uint64(again), ok)
		}
	})
}

func TestCatchable(t *testing.T) {
	tests := []struct {
		name string
		skip Sigset
	}{
		{"nothing skipped", 0},
		{"launcher ignored INT and TTOU", SigsetOf(syscall.SIGINT, syscall.SIGTTOU)},
		{"launcher ignored TSTP", SigsetOf(syscall.SIGTSTP)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := catchable(tt.skip)
			for _, s := range got {
				if sig := s.(syscall.Signal); tt.skip.Has(sig) || sig == syscall.SIGKILL || sig == syscall.SIGSTOP {
					t.Errorf("%v listed", sig)
				}
			}
			never := SigsetOf(syscall.SIGKILL, syscall.SIGSTOP)
			if want := 64 - bits.OnesCount64(uint64(tt.skip|never)); len(got) != want {
				t.Errorf("%d signals, want %d", len(got), want)
			}
			// The readiness contract: SIGTSTP, when caught at all, comes last.
			if !tt.skip.Has(syscall.SIGTSTP) && got[len(got)-1] != syscall.SIGTSTP {
				t.Errorf("last is %v, want SIGTSTP", got[len(got)-1])
			}
		})
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("tool", 0o755)
	write("data", 0o644)
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "data"), nil, 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name, file, path string
		want             string
		wantErr          error
	}{
		{"slash kept as is", "./x", dir, "./x", nil},
		{"absolute kept as is", "/nonexistent", dir, "/nonexistent", nil},
		{"found", "tool", "/nonexistent:" + dir, dir + "/tool", nil},
		{"not found", "nope", dir, "", syscall.ENOENT},
		{"not executable", "data", dir, "", syscall.EACCES},
		{"not executable, then executable", "data", dir + ":" + other, other + "/data", nil},
		{"directory skipped", "subdir", dir, "", syscall.ENOENT},
		{"empty name", "", dir, "", syscall.ENOENT},
		{"empty element is cwd", "reap.go", ":" + dir, "", syscall.EACCES}, // the package dir's source file
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookPath(tt.file, tt.path)
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStartFailureCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{&os.PathError{Op: "exec", Path: "x", Err: syscall.ENOENT}, 127},
		{&os.PathError{Op: "exec", Path: "x", Err: syscall.EACCES}, 126},
		{&os.PathError{Op: "exec", Path: "x", Err: syscall.ENOEXEC}, 126},
	} {
		if got := StartFailureCode(tt.err); got != tt.want {
			t.Errorf("StartFailureCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// TestReap starts a main child and siblings that all exit before Reap runs,
// as after a burst of coalesced SIGCHLDs: one Reap must collect them all and
// report main's status.
func TestReap(t *testing.T) {
	var pids []int
	for _, code := range []string{"3", "0", "1", "0"} {
		pid, err := start([]string{"sh", "-c", "exit " + code}, os.Environ())
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for !isZombie(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d did not exit", pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	ws, exited := Reap(pids[0])
	if !exited || ExitCode(ws) != 3 {
		t.Fatalf("Reap = %v, %v; want exit 3", ws, exited)
	}
	for _, pid := range pids {
		if isZombie(pid) {
			t.Errorf("pid %d left a zombie", pid)
		}
	}
	if _, exited := Reap(pids[0]); exited {
		t.Error("second Reap reported main again")
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	return strings.HasPrefix(s[strings.LastIndexByte(s, ')')+1:], " Z")
}
