package examplepod

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/testserver"
)

// A container that fails its start makes Start fail with the containers'
// output, after stopping everything it started: no process of the pod or
// of the outside servers, no veth left.
func TestStartFailureLeavesNothing(t *testing.T) {
	testserver.RequireRoot(t)
	memcached := testserver.Require(t, "memcached")
	for _, b := range []string{"nsenter", "ip"} {
		testserver.Require(t, b)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "pause"), "github.com/podkit/podkit/cmd/pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	scripts := map[string]string{
		"waitfor":    "exit 0",
		"logsidecar": "echo 'logsidecar: cannot start: disk on fire' >&2; exit 3",
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	start := time.Now()
	p, err := Start(t.Context(), Options{Base: base, Bin: bin, Dir: dir, MemcachedBin: memcached})
	if err == nil {
		p.Stop()
		t.Fatal("Start succeeded with a logsidecar that exits 3")
	}
	for _, want := range []string{"sidecar logsidecar exited before its startupProbe", "disk on fire"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Start error lacks %q:\n%v", want, err)
		}
	}
	t.Logf("failed in %v as wanted", time.Since(start).Round(time.Millisecond))

	// Nothing started from this test's directories is alive.
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if strings.HasPrefix(cwd, dir) || strings.HasPrefix(exe, bin) {
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(st), ") Z") {
				t.Errorf("process %d (%s, in %s) left running", pid, exe, cwd)
			}
		}
	}
	// No veth whose pod (pause, PID in its name) is gone. A pod another
	// test is stopping meanwhile has such a veth for a moment, so only one
	// still there a second later counts.
	orphans := func() map[string]bool {
		out, err := exec.Command("ip", "-o", "link", "show").CombinedOutput()
		if err != nil {
			t.Fatalf("ip link show: %v: %s", err, out)
		}
		found := map[string]bool{}
		for _, m := range regexp.MustCompile(`\bpk(\d+)h\b`).FindAllStringSubmatch(string(out), -1) {
			if _, err := os.Stat("/proc/" + m[1]); err != nil {
				found[m[0]] = true
			}
		}
		return found
	}
	if first := orphans(); len(first) > 0 {
		time.Sleep(time.Second)
		for dev := range orphans() {
			if first[dev] {
				t.Errorf("veth %s left behind by a stopped pod", dev)
			}
		}
	}
}
