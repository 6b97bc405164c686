package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // in stderr
	}{
		{name: "no condition", args: nil, want: "no condition given"},
		{name: "unknown scheme", args: []string{"ftp://a"}, want: `unknown scheme "ftp"`},
		{name: "tcp without port", args: []string{"tcp://a"}, want: "tcp://host:port"},
		{name: "negative timeout", args: []string{"-timeout", "-1s", "dns://localhost"}, want: "-timeout"},
		{name: "zero attempt timeout", args: []string{"-attempt-timeout", "0", "dns://localhost"}, want: "-attempt-timeout"},
		{name: "max below initial", args: []string{"-initial-interval", "2s", "-max-interval", "1s", "dns://localhost"}, want: "-max-interval"},
		{name: "jitter above one", args: []string{"-jitter", "1.5", "dns://localhost"}, want: "-jitter"},
		{name: "jitter NaN", args: []string{"-jitter", "NaN", "dns://localhost"}, want: "-jitter"},
		{name: "bad flag", args: []string{"-timeot", "1s"}, want: "-timeot"},
		{name: "bad env twin", args: []string{"dns://localhost"}, env: map[string]string{"WAITFOR_TIMEOUT": "soon"}, want: "WAITFOR_TIMEOUT"},
		{name: "bad memory limit", args: []string{"dns://localhost"}, env: map[string]string{"MEMORY_LIMIT": "lots"}, want: "MEMORY_LIMIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tt.args, env(tt.env), &stdout, &stderr)
			if code != 2 {
				t.Fatalf("exit %d, want 2 (stderr: %s)", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("stderr = %q, want one line naming %q", stderr.String(), tt.want)
			}
		})
	}
}

func TestRunVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"-version", "-timeout", "1m", "tcp://a:1"}, env(nil), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, want 0 (stderr: %s)", code, stderr.String())
	}
	if stdout.String() != "waitfor dev\n" {
		t.Errorf("stdout = %q, want the version", stdout.String())
	}
}

func TestRunAllHold(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	args := []string{"-timeout", "30s", "tcp://" + ln.Addr().String(), srv.URL + "/api/v1/health", "dns://localhost"}
	if code := run(t.Context(), args, env(nil), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr.String())
	}
	if got := strings.Count(stderr.String(), "condition holds"); got != 3 {
		t.Errorf("%d 'condition holds' lines, want 3:\n%s", got, stderr.String())
	}
	if !strings.Contains(stderr.String(), "all conditions hold") {
		t.Errorf("no final line:\n%s", stderr.String())
	}
}

func TestRunTimeoutNamesFailing(t *testing.T) {
	t.Parallel()
	// A port nobody listens on: free a moment ago.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "tcp://" + ln.Addr().String()
	ln.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	down := srv.URL + "/readyz"
	var stdout, stderr bytes.Buffer
	start := time.Now()
	args := []string{"-timeout", "3s", "-initial-interval", "50ms", "-max-interval", "200ms", dead, down, "dns://localhost"}
	code := run(t.Context(), args, env(nil), &stdout, &stderr)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr.String())
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v with -timeout 3s", d)
	}
	out := stderr.String()
	for _, want := range []string{
		`"msg":"condition still failing","condition":"` + dead + `"`,
		`"msg":"condition still failing","condition":"` + down + `"`,
		"status 503, want 200-299",
		"connection refused",
		"timed out: 2 of 3 conditions still failing",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, `"msg":"condition still failing","condition":"dns://localhost"`) {
		t.Errorf("a condition that held is reported failing:\n%s", out)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout = %q, want nothing (logs go to stderr)", stdout.String())
	}
}

func TestRunHelp(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"-h"}, env(nil), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d, want 0 (stderr: %s)", code, stderr.String())
	}
	for _, want := range []string{"tcp://host:port", "#status=200-399", "dns://name", "[$WAITFOR_TIMEOUT]"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("-h output lacks %q:\n%s", want, stdout.String())
		}
	}
}
