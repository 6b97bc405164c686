package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/testserver"

	"github.com/podkit/podkit/internal/forwardtest"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

type running struct {
	cancel context.CancelFunc
	done   chan int
	stdout *testserver.Buffer
	stderr *testserver.Buffer
}

func startRun(t *testing.T, args []string, e map[string]string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{cancel: cancel, done: make(chan int, 1), stdout: &testserver.Buffer{}, stderr: &testserver.Buffer{}}
	go func() { r.done <- run(ctx, args, env(e), r.stdout, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("run did not return")
		}
	})
	return r
}

func (r *running) stop(t *testing.T) int {
	t.Helper()
	r.cancel()
	select {
	case code := <-r.done:
		r.done <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
		return -1
	}
}

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no path", []string{"-output", "stdout"}, "-path is empty"},
		{"no output", []string{"-path", "/x/*.log"}, "-output is empty"},
		{"bad output", []string{"-path", "/x/*.log", "-output", "kafka://x"}, "-output"},
		{"bad parser", []string{"-path", "/x/*.log", "-output", "stdout", "-parser", "xml"}, "unknown parser"},
		{"bad field", []string{"-path", "/x/*.log", "-output", "stdout", "-field", "novalue"}, "key=value"},
		{"bad forward addr", []string{"-path", "/x/*.log", "-output", "forward://nohost"}, "host:port"},
		{"regex without start", []string{"-path", "/x/*.log", "-output", "stdout", "-multiline", "regex"}, "-multiline-start"},
		{"bad bytes", []string{"-path", "/x/*.log", "-output", "stdout", "-buffer-bytes", "lots"}, "buffer-bytes"},
		{"positions dir missing", []string{"-path", "/x/*.log", "-output", "stdout", "-positions-file", "/nonexistent/dir/pos.json"}, "-positions-file"},
		{"web config missing", []string{"-path", "/x/*.log", "-output", "stdout", "-web-config", "/nonexistent/web.yml"}, "-web-config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errb bytes.Buffer
			code := run(t.Context(), tt.args, env(nil), &out, &errb)
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("stderr %q does not mention %q", errb.String(), tt.want)
			}
		})
	}
}

func writeLines(t *testing.T, path string, from, to int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b bytes.Buffer
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, `127.0.0.1 - - [26/Nov/2026:10:00:00 +0000] "GET /item/%d HTTP/1.1" 200 %d "-" "curl/8"`+"\n", i, i)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
}

// TestRunForwardAndStdout ships an nginx log to a forward receiver and to
// stdout at once, then on shutdown ships the last lines written.
func TestRunForwardAndStdout(t *testing.T) {
	t.Parallel()
	rcv, err := forwardtest.Start("127.0.0.1:0", forwardtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	dir := t.TempDir()
	logf := filepath.Join(dir, "access.log")
	writeLines(t, logf, 0, 1000)
	r := startRun(t, []string{
		"-path", filepath.Join(dir, "*.log"), "-parser", "nginx",
		"-output", "forward://" + rcv.Addr(), "-output", "stdout",
		"-positions-file", filepath.Join(dir, "pos.json"), "-admin-addr", "127.0.0.1:0",
		"-field", "cluster=test", "-tag", "web.{pod_name}.{file}",
	}, map[string]string{"POD_NAME": "web-0", "POD_NAMESPACE": "shop"})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := rcv.WaitCount(ctx, 1000); err != nil {
		t.Fatal(err, r.stderr.String())
	}
	writeLines(t, logf, 1000, 1200) // the web server's last lines
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	recs := rcv.Records()
	if len(recs) != 1200 {
		t.Fatalf("received %d records, want 1200", len(recs))
	}
	for i, rec := range recs {
		if rec.Tag != "web.web-0.access.log" {
			t.Fatalf("tag %q", rec.Tag)
		}
		if want := fmt.Sprintf("/item/%d", i); rec.Fields["path"] != want {
			t.Fatalf("record %d path %v, want %s", i, rec.Fields["path"], want)
		}
		if rec.Fields["status"] != int64(200) || rec.Fields["pod_name"] != "web-0" || rec.Fields["namespace_name"] != "shop" || rec.Fields["cluster"] != "test" || rec.Fields["file"] != logf {
			t.Fatalf("record %d fields %v", i, rec.Fields)
		}
		if !rec.Time.Equal(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)) {
			t.Fatalf("time %v", rec.Time)
		}
	}
	if n := strings.Count(r.stdout.String(), "\n"); n != 1200 {
		t.Fatalf("stdout has %d lines, want 1200", n)
	}
	pos, err := os.ReadFile(filepath.Join(dir, "pos.json"))
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(logf)
	if !strings.Contains(string(pos), fmt.Sprintf(`"offset":%d`, fi.Size())) {
		t.Fatalf("positions %s do not hold offset %d", pos, fi.Size())
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

// TestShutdownWithOutputDown: SIGTERM while the aggregator is down ends
// within -shutdown-timeout with exit 0, and the checkpoint does not pass
// what was never acknowledged.
func TestShutdownWithOutputDown(t *testing.T) {
	t.Parallel()
	rcv, err := forwardtest.Start("127.0.0.1:0", forwardtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	addr := rcv.Addr()
	rcv.Close()
	dir := t.TempDir()
	writeLines(t, filepath.Join(dir, "a.log"), 0, 5000)
	// A buffer far smaller than the file: reading blocks on it, and the
	// shutdown deadline cuts a blocked hand-over.
	r := startRun(t, []string{"-path", filepath.Join(dir, "*.log"), "-output", "forward://" + addr,
		"-positions-file", filepath.Join(dir, "pos.json"), "-admin-addr", "127.0.0.1:0", "-shutdown-timeout", "1s",
		"-buffer-bytes", "16Ki", "-forward-chunk-bytes", "4Ki", "-forward-flush-interval", "10ms"}, nil)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit %d: %s", code, r.stderr.String())
	}
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("shutdown took %v with -shutdown-timeout 1s", el)
	}
	pos, _ := os.ReadFile(filepath.Join(dir, "pos.json"))
	if !strings.Contains(string(pos), `"offset":0`) {
		t.Fatalf("positions %s passed unacknowledged data", pos)
	}
}

// TestStdoutRawAndJSON: stdout alone, raw or JSON lines with the json parser.
func TestStdoutRawAndJSON(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"raw", "json"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "app.log"), []byte("{\"level\":\"info\",\"n\":1}\nnot json\n"), 0o644)
			r := startRun(t, []string{"-path", filepath.Join(dir, "*.log"), "-output", "stdout", "-stdout-format", format,
				"-parser", "json", "-admin-addr", "127.0.0.1:0", "-path-key", ""}, nil)
			deadline := time.Now().Add(20 * time.Second)
			for strings.Count(r.stdout.String(), "\n") < 2 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if code := r.stop(t); code != 0 {
				t.Fatalf("exit %d", code)
			}
			lines := strings.Split(strings.TrimSpace(r.stdout.String()), "\n")
			if len(lines) != 2 {
				t.Fatalf("stdout %q", r.stdout.String())
			}
			if format == "raw" {
				if lines[0] != `{"level":"info","n":1}` || lines[1] != "not json" {
					t.Fatalf("raw %q", lines)
				}
				return
			}
			var a, b map[string]any
			if json.Unmarshal([]byte(lines[0]), &a) != nil || json.Unmarshal([]byte(lines[1]), &b) != nil {
				t.Fatalf("not JSON lines: %q", lines)
			}
			if a["level"] != "info" || a["n"] != 1.0 || a["time"] == nil || b["message"] != "not json" || b["parse_error"] != true {
				t.Fatalf("records %v %v", a, b)
			}
		})
	}
}

func TestRunVersionAndHelp(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"-version"}, env(nil), &out, &errb); code != 0 || !strings.Contains(out.String(), "logsidecar dev") {
		t.Fatalf("-version: %d %q", code, out.String())
	}
	out.Reset()
	if code := run(t.Context(), []string{"-h"}, env(nil), &out, &errb); code != 0 || !strings.Contains(out.String(), "LOGSIDECAR_PATH") {
		t.Fatalf("-h: %d %q", code, out.String())
	}
}

// TestEnvTwins: flags come from LOGSIDECAR_* too, repeatable ones
// white-space separated.
func TestEnvTwins(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.log"), []byte("from a\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.txt"), []byte("from b\n"), 0o644)
	r := startRun(t, nil, map[string]string{
		"LOGSIDECAR_PATH":          filepath.Join(dir, "*.log") + " " + filepath.Join(dir, "*.txt"),
		"LOGSIDECAR_OUTPUT":        "stdout",
		"LOGSIDECAR_STDOUT_FORMAT": "raw",
		"LOGSIDECAR_ADMIN_ADDR":    "127.0.0.1:0",
	})
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(r.stdout.String(), "\n") < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r.stop(t)
	if s := r.stdout.String(); !strings.Contains(s, "from a\n") || !strings.Contains(s, "from b\n") {
		t.Fatalf("stdout %q", s)
	}
}
