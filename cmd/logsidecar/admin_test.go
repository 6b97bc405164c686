package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/forwardtest"
	"github.com/podkit/podkit/internal/testserver"
)

func adminAddr(t *testing.T, r *running) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(r.stderr.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "starting" {
				return m["admin"].(string)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no start line: %s", r.stderr.String())
	return ""
}

func waitStatus(t *testing.T, url string, want int) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := httpGet(t, url)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q, want %d", url, code, body, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadinessAndMetrics: /readyz follows the receiver; /metrics has the
// documented series and passes promtool.
func TestReadinessAndMetrics(t *testing.T) {
	t.Parallel()
	rcv, err := forwardtest.Start("127.0.0.1:0", forwardtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rcv.Close()
	dir := t.TempDir()
	writeLines(t, filepath.Join(dir, "a.log"), 0, 100)
	r := startRun(t, []string{"-path", filepath.Join(dir, "*.log"), "-output", "forward://" + rcv.Addr(),
		"-admin-addr", "127.0.0.1:0", "-max-line-bytes", "50", "-forward-backoff-max", "200ms"}, nil)
	base := "http://" + adminAddr(t, r)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := rcv.WaitCount(ctx, 100); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, base+"/readyz", 200)
	rcv.Stop()
	body := waitStatus(t, base+"/readyz", 503)
	if !strings.Contains(body, "output forward") {
		t.Fatalf("readyz reason %q", body)
	}
	if err := rcv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, base+"/readyz", 200)

	_, metrics := httpGet(t, base+"/metrics")
	for _, name := range []string{
		"logsidecar_lines_read_total 100", "logsidecar_read_bytes_total", `logsidecar_records_acknowledged_total{output="forward"} 100`,
		"logsidecar_records_shipped_total", "logsidecar_chunk_retries_total", "logsidecar_output_errors_total",
		`logsidecar_dropped_total{reason="line_truncated"} 100`, "logsidecar_files_watched 1", "logsidecar_file_lag_bytes{path=",
		"logsidecar_chunk_round_trip_seconds_bucket", "logsidecar_build_info",
	} {
		if !strings.Contains(metrics, name) {
			t.Errorf("metrics lack %s", name)
		}
	}
	testserver.Require(t, "promtool")
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(metrics)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool: %v\n%s", err, out.String())
	}
	if code := r.stop(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
