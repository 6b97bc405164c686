package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/cacheproxy/config"
	"github.com/podkit/podkit/internal/testserver"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLocate(t *testing.T) {
	keys := "key:1\nkey:2\nuser:{7}:a\nuser:{7}:b\n\xe9t\xe9\n"
	stdin = strings.NewReader(keys)
	defer func() { stdin = os.Stdin }()
	var out, errb bytes.Buffer
	code := run(t.Context(), []string{"-config", "testdata/locate.yml", "-pool", "sessions", "-locate"}, env(nil), &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	cfg, err := config.Load("testdata/locate.yml")
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Pool("sessions")
	r := p.Ring()
	var want strings.Builder
	for _, k := range strings.Split(strings.TrimSuffix(keys, "\n"), "\n") {
		fmt.Fprintf(&want, "%s\t%s\n", k, p.Servers[r.Locate([]byte(k))].Addr)
	}
	if out.String() != want.String() {
		t.Fatalf("got\n%s\nwant\n%s", out.String(), want.String())
	}
	lines := strings.Split(out.String(), "\n")
	if a, b := strings.Split(lines[2], "\t")[1], strings.Split(lines[3], "\t")[1]; a != b {
		t.Errorf("hash-tagged keys on %s and %s", a, b)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yml")
	os.WriteFile(bad, []byte("web:\n  listen: 127.0.0.1:1\n  hash: sha1\n  servers:\n   - a:1:1\n"), 0o644)
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"nothing", nil, nil, "-config or -servers is required"},
		{"both", []string{"-config", bad, "-servers", "a:1"}, nil, "not both"},
		{"bad config names line", []string{"-config", bad}, nil, `line 3: pool "web": hash: unknown hash "sha1"`},
		{"missing file", []string{"-config", filepath.Join(dir, "none.yml")}, nil, "no such file"},
		{"locate needs pool", []string{"-config", "testdata/locate.yml", "-locate"}, nil, "-pool is required"},
		{"env twin", nil, map[string]string{"AMBASSADOR_MAX_VALUE_BYTES": "12"}, "-max-value-bytes must be at least 1024"},
		{"bad flag", []string{"-nope"}, nil, "flag provided but not defined"},
		{"web config missing", []string{"-servers", "127.0.0.1:1", "-web-config", filepath.Join(dir, "web.yml")}, nil, "-web-config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(t.Context(), tt.args, env(tt.env), &out, &errb)
			if code != 2 || !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q, want 2 and %q", code, errb.String(), tt.want)
			}
		})
	}
	var out bytes.Buffer
	if code := run(t.Context(), []string{"-version"}, env(nil), &out, io.Discard); code != 0 || !strings.Contains(out.String(), "ambassador dev") {
		t.Fatalf("-version: %d %q", code, out.String())
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func mcDo(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, req)
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", req, err)
	}
	return l
}

// TestDaemon runs the whole binary: serve, readiness, metrics that pass
// promtool, reload on file change and on SIGHUP (a bad file is rejected and
// the running pools stay), graceful exit 0.
func TestDaemon(t *testing.T) {
	mc1, mc2 := testserver.Memcached(t), testserver.Memcached(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "nutcracker.yml")
	used := map[int]bool{}
	free := func() string { // FreePort may hand out a port twice
		for {
			if p := testserver.FreePort(t); !used[p] {
				used[p] = true
				return fmt.Sprintf("127.0.0.1:%d", p)
			}
		}
	}
	listenA, listenB := free(), free()
	write := func(s string) {
		if err := os.WriteFile(cfgPath+".tmp", []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Rename(cfgPath+".tmp", cfgPath)
	}
	write(fmt.Sprintf("a:\n  listen: %s\n  servers:\n   - %s:1\n", listenA, mc1.Addr))
	admin := free()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr testserver.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-config", cfgPath, "-admin-addr", admin, "-watch-interval", "100ms", "-shutdown-timeout", "10s"},
			env(map[string]string{"POD_NAME": "web-0"}), io.Discard, &stderr)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", admin); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("admin not up: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := mcDo(t, listenA, "set k 0 0 1\r\nv\r\n"); got != "STORED\r\n" {
		t.Fatalf("set: %q", got)
	}
	if code, body := get(t, "http://"+admin+"/readyz"); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
	_, metrics := get(t, "http://"+admin+"/metrics")
	for _, m := range []string{"ambassador_server_requests_total", "ambassador_server_request_duration_seconds_bucket",
		"ambassador_commands_total{command=\"set\",pool=\"a\"} 1", "ambassador_build_info"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(metrics)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}

	// A file change adds pool b; pool a keeps serving.
	write(fmt.Sprintf("a:\n  listen: %s\n  servers:\n   - %s:1\nb:\n  listen: %s\n  servers:\n   - %s:1\n", listenA, mc1.Addr, listenB, mc2.Addr))
	deadline = time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", listenB); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool b not started by the reload: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := mcDo(t, listenB, "get k\r\n"); got != "END\r\n" {
		t.Fatalf("pool b: %q", got)
	}
	// A bad file is rejected with its error; SIGHUP makes it happen now.
	write("a:\n  listen: " + listenA + "\n  bogus: 1\n  servers:\n   - " + mc1.Addr + ":1\n")
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(stderr.String(), `unknown key \"bogus\"`) {
		if time.Now().After(deadline) {
			t.Fatalf("bad config not reported: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := mcDo(t, listenA, "get k\r\n"); got != "VALUE k 0 1\r\n" {
		t.Fatalf("pool a after a rejected reload: %q", got)
	}
	if got := mcDo(t, listenB, "version\r\n"); !strings.HasPrefix(got, "VERSION") {
		t.Fatalf("pool b after a rejected reload: %q", got)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after cancel")
	}
	if !strings.Contains(stderr.String(), `"pod_name":"web-0"`) {
		t.Error("logs lack the pod identity")
	}
}
