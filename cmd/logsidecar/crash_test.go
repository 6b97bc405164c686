package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/forwardtest"
)

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "logsidecar")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestCrashLosesNothing kills the sidecar with SIGKILL at random points
// while it ships a file that keeps growing (and rotating), restarts it,
// and checks that every line arrives, with duplicates bounded by what can
// be unacknowledged at a kill: the chunks in flight and being built.
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel()
	bin := buildBinary(t)
	rcv, err := forwardtest.Start("127.0.0.1:0", forwardtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	dir := t.TempDir()
	logf := filepath.Join(dir, "app.log")
	const chunkRecords, inflight = 200, 4
	args := []string{"-path", logf + "*", "-output", "forward://" + rcv.Addr(),
		"-positions-file", filepath.Join(dir, "pos.json"), "-admin-addr", "127.0.0.1:0",
		"-scan-interval", "50ms", "-poll-interval", "10ms", "-checkpoint-interval", "20ms",
		"-forward-chunk-records", strconv.Itoa(chunkRecords), "-forward-max-inflight", strconv.Itoa(inflight),
		"-forward-flush-interval", "20ms", "-rotate-wait", "500ms", "-buffer-bytes", "256Ki"}

	next := 0
	write := func(n int) {
		f, err := os.OpenFile(logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "seq=%d %s\n", next, strings.Repeat("z", 100))
			next++
		}
		f.Write(b.Bytes())
		f.Close()
	}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	const kills = 6
	var stderr bytes.Buffer
	for k := 0; k <= kills; k++ {
		cmd := exec.Command(bin, args...)
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		for time.Now().Before(deadline) {
			write(200)
			time.Sleep(5 * time.Millisecond)
		}
		if k == 3 {
			os.Rename(logf, fmt.Sprintf("%s.%d", logf, k))
		}
		if k < kills {
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			continue
		}
		// Last run: let it catch up, then stop it cleanly.
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		err := waitUnique(ctx, rcv, next)
		cancel()
		cmd.Process.Signal(syscall.SIGTERM)
		if werr := cmd.Wait(); werr != nil {
			t.Errorf("exit after SIGTERM: %v", werr)
		}
		if err != nil {
			t.Fatalf("%v\n%s", err, tailOf(stderr.String()))
		}
	}
	seen := map[int]int{}
	for _, r := range rcv.Records() {
		msg, _ := r.Fields["message"].(string)
		n, err := strconv.Atoi(strings.TrimPrefix(strings.Fields(msg)[0], "seq="))
		if err != nil {
			t.Fatalf("garbled record %q", msg)
		}
		seen[n]++
	}
	dups := 0
	for i := 0; i < next; i++ {
		if seen[i] == 0 {
			t.Fatalf("line %d lost", i)
		}
		dups += seen[i] - 1
	}
	// Per kill, what comes again is what was unacknowledged or acknowledged
	// after the last checkpoint write: the chunks in flight, queued within
	// -buffer-bytes (256 KiB, about 10 chunks here) and being built.
	bound := kills * (inflight + 2 + 10) * chunkRecords
	t.Logf("%d lines, %d kills, %d duplicates", next, kills, dups)
	if dups > bound {
		t.Fatalf("%d duplicates, more than %d", dups, bound)
	}
}

func waitUnique(ctx context.Context, rcv *forwardtest.Receiver, n int) error {
	for {
		seen := map[string]bool{}
		for _, r := range rcv.Records() {
			msg, _ := r.Fields["message"].(string)
			seen[msg] = true
		}
		if len(seen) >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d distinct lines arrived", len(seen), n)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func tailOf(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}
