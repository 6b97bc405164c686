package podsim

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/testserver"
)

func buildPause(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "github.com/podkit/podkit/cmd/pause")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build pause: %v\n%s", err, out)
	}
	return bin
}

func nsOf(t *testing.T, pid int, ns string) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestPodSharesNamespacesAndLeavesNothing(t *testing.T) {
	testserver.RequireRoot(t)
	for tool := range Tools {
		testserver.Require(t, tool)
	}
	pod, err := Start(t.Context(), Options{Name: "podsim-test", PauseBin: buildPause(t), Stdout: io.Discard, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			pod.Stop(5 * time.Second)
		}
	})

	// A container listening in the pod: reachable at the pod's address from
	// the host, and it shares net, uts and ipc with pause but not the PID namespace.
	var out testserver.Buffer
	c, err := pod.Run(Exec{Name: "listener", Argv: []string{"sh", "-c", `echo "$POD_NAME $CONTAINER_NAME $POD_IP"; exec sleep 60`}, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for nsOf(t, c.PID(), "net") != nsOf(t, pod.PID, "net") {
		if time.Now().After(deadline) {
			t.Fatal("container never joined the pod's network namespace")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, ns := range []string{"uts", "ipc"} {
		if nsOf(t, c.PID(), ns) != nsOf(t, pod.PID, ns) {
			t.Errorf("container's %s namespace differs from the pod's", ns)
		}
	}
	if nsOf(t, pod.PID, "pid") == nsOf(t, os.Getpid(), "pid") {
		t.Error("pause is not in a PID namespace of its own")
	}
	hostNet := nsOf(t, os.Getpid(), "net")
	if nsOf(t, c.PID(), "net") == hostNet {
		t.Error("container runs in the host's network namespace")
	}

	// The container has run (a SIGTERM before its echo would lose the line).
	for !strings.Contains(out.String(), "\n") {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatal("the container printed nothing within 15s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// The host reaches the pod over the veth pair.
	if _, err := net.DialTimeout("tcp", pod.IP+":1", time.Second); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial pod %s:1 = %v, want connection refused (address reachable, port closed)", pod.IP, err)
	}

	if code := pod.Stop(5 * time.Second); code != 0 {
		t.Errorf("pause exit code = %d, want 0", code)
	}
	stopped = true
	if got := out.String(); !strings.HasPrefix(got, "podsim-test listener "+pod.IP) {
		t.Errorf("container environment line = %q, want Downward API identity", got)
	}
	for _, pid := range []int{pod.PID, c.PID()} {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if !strings.Contains(string(st), ") Z") {
				t.Errorf("process %d still running after Stop", pid)
			}
		}
	}
	if err := exec.Command("ip", "link", "show", pod.hostDev).Run(); err == nil {
		t.Errorf("veth %s left behind", pod.hostDev)
	}
}
