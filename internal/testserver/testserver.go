// Package testserver starts real servers (memcached, redis-server, nginx,
// nutcracker, prometheus) from PATH on 127.0.0.1 for tests, and stops them by
// PID when the test ends. Outside CI a missing server skips the test; with
// CI=true it fails it.
package testserver

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Packages maps each server binary to the Debian package that provides it.
var Packages = map[string]string{
	"memcached":       "memcached",
	"redis-server":    "redis-server",
	"redis-benchmark": "redis-tools",
	"redis-cli":       "redis-tools",
	"nginx":           "nginx",
	"nutcracker":      "nutcracker",
	"prometheus":      "prometheus",
	"promtool":        "prometheus",
	"unshare":         "util-linux",
	"nsenter":         "util-linux",
	"ip":              "iproute2",
}

// Require returns the path of bin, or skips (fails under CI=true) the test
// with the package to install.
func Require(t testing.TB, bin string) string {
	t.Helper()
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, bin)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found: apt-get install -y %s", bin, Packages[bin])
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// RequireRoot skips (fails under CI=true) a test that needs root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (namespaces)")
	}
	t.Skip("this test needs root (namespaces)")
}

var (
	portsMu sync.Mutex
	given   = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// that no other caller in this process has been given: the kernel may hand
// out a just-closed port again before the first taker binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !given[port] {
			given[port] = true
			return port
		}
	}
	t.Fatal("no fresh free port after 100 tries")
	return 0
}

// Server is a running server process.
type Server struct {
	Addr     string // host:port it listens on
	Port     int
	Dir      string // its scratch directory
	cmd      *exec.Cmd
	logf     *os.File
	exited   chan struct{}
	stopOnce sync.Once
}

// PID is the server's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Signal sends sig to the server (SIGSTOP freezes it, SIGCONT thaws it).
func (s *Server) Signal(sig syscall.Signal) error { return syscall.Kill(s.cmd.Process.Pid, sig) }

// Stop stops the server and every process it started (nginx's workers):
// SIGTERM, then SIGKILL to its process group after 5 s. Only the first call
// acts: the group is signalled while the server's zombie still holds its
// PID, so a PID reused by another process is never signalled.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		pid := s.cmd.Process.Pid
		select {
		case <-s.exited:
		default:
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = syscall.Kill(pid, syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(5 * time.Second):
			}
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL) // its own group: Setpgid at start
		<-s.exited
		_ = s.cmd.Wait()
		s.logf.Close()
	})
}

// Kill ends the server at once with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.stopOnce.Do(func() {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
		_ = s.cmd.Wait()
		s.logf.Close()
	})
}

// waitExit closes exited when the server has exited, without reaping it, so
// that its PID (and so its process group ID) stays reserved until Stop.
func (s *Server) waitExit() {
	defer close(s.exited)
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, s.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// Start runs bin with args (in dir, its scratch directory) and waits until
// addr accepts TCP connections. The server is stopped when the test ends.
func Start(t testing.TB, dir, addr string, bin string, args ...string) *Server {
	t.Helper()
	path := Require(t, bin)
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	logf, err := os.Create(filepath.Join(dir, filepath.Base(bin)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	_, port, _ := net.SplitHostPort(addr)
	s := &Server{Addr: addr, Dir: dir, cmd: cmd, logf: logf, exited: make(chan struct{})}
	s.Port, _ = strconv.Atoi(port)
	go s.waitExit()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case <-s.exited:
			out, _ := os.ReadFile(logf.Name())
			t.Fatalf("%s exited before listening on %s:\n%s", bin, addr, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s after 15s", bin, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Memcached starts memcached on a free port of 127.0.0.1.
func Memcached(t testing.TB, extra ...string) *Server {
	t.Helper()
	port := FreePort(t)
	args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", "64", "-t", "2"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // memcached refuses to run as root without it
	}
	args = append(args, extra...)
	return Start(t, t.TempDir(), fmt.Sprintf("127.0.0.1:%d", port), "memcached", args...)
}

// Redis starts redis-server on a free port of 127.0.0.1, without persistence.
func Redis(t testing.TB, extra ...string) *Server {
	t.Helper()
	port := FreePort(t)
	dir := t.TempDir()
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--daemonize", "no", "--dir", dir}, extra...)
	return Start(t, dir, fmt.Sprintf("127.0.0.1:%d", port), "redis-server", args...)
}

// Nginx starts nginx with the configuration conf returns for its scratch
// directory and a free port; conf must make nginx listen on 127.0.0.1:port,
// run in the foreground ("daemon off;") and keep its pid and temp files in dir.
func Nginx(t testing.TB, conf func(dir string, port int) string) *Server {
	t.Helper()
	dir := t.TempDir()
	port := FreePort(t)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf(dir, port)), 0o644); err != nil {
		t.Fatal(err)
	}
	return Start(t, dir, fmt.Sprintf("127.0.0.1:%d", port), "nginx", "-c", path, "-p", dir, "-e", filepath.Join(dir, "error.log"))
}

// NginxPrelude is the common head of a test nginx.conf: foreground, one
// worker, every path inside dir, runnable as root or not.
func NginxPrelude(dir string) string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	return fmt.Sprintf(`%sdaemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log;
events { worker_connections 1024; }
`, user, dir)
}

// NginxHTTPPrelude is the common head of a test http block: temp paths in dir.
func NginxHTTPPrelude(dir string) string {
	return fmt.Sprintf(`client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
`, dir)
}

// Prometheus starts a Prometheus server with the given prometheus.yml
// contents, storage in a scratch directory and a fast look-back.
func Prometheus(t testing.TB, config string) *Server {
	t.Helper()
	dir := t.TempDir()
	port := FreePort(t)
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return Start(t, dir, addr, "prometheus", "--config.file="+path, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-lifecycle")
}
