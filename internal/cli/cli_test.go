package cli

import (
	"bytes"
	"flag"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseEnvTwins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		addr    string
		paths   []string
		timeout time.Duration
		level   slog.Level
		wantErr string
	}{
		{name: "defaults", addr: ":9101", timeout: 20 * time.Second, level: slog.LevelInfo},
		{name: "env twin fills", env: map[string]string{"MY_DAEMON_ADMIN_ADDR": ":1", "MY_DAEMON_LOG_LEVEL": "debug"},
			addr: ":1", timeout: 20 * time.Second, level: slog.LevelDebug},
		{name: "command line wins", args: []string{"-admin-addr", ":2"}, env: map[string]string{"MY_DAEMON_ADMIN_ADDR": ":1"},
			addr: ":2", timeout: 20 * time.Second, level: slog.LevelInfo},
		{name: "repeatable from env", env: map[string]string{"MY_DAEMON_PATH": "/a/*.log  /b/*.log"},
			addr: ":9101", paths: []string{"/a/*.log", "/b/*.log"}, timeout: 20 * time.Second},
		{name: "repeatable flags win", args: []string{"-path", "/c"}, env: map[string]string{"MY_DAEMON_PATH": "/a /b"},
			addr: ":9101", paths: []string{"/c"}, timeout: 20 * time.Second},
		{name: "bad duration names flag", args: []string{"-shutdown-timeout", "soon"}, wantErr: "-shutdown-timeout"},
		{name: "bad env names variable", env: map[string]string{"MY_DAEMON_SHUTDOWN_TIMEOUT": "soon"},
			wantErr: "MY_DAEMON_SHUTDOWN_TIMEOUT (twin of -shutdown-timeout)"},
		{name: "bad level", args: []string{"-log-level", "loud"}, wantErr: "-log-level"},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: "-nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := New("my-daemon", env(tt.env))
			addr := fs.String("admin-addr", ":9101", "admin address")
			paths := fs.Strings("path", "glob")
			err := fs.Parse(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *addr != tt.addr {
				t.Errorf("admin-addr = %q, want %q", *addr, tt.addr)
			}
			if strings.Join(*paths, "|") != strings.Join(tt.paths, "|") {
				t.Errorf("path = %q, want %q", *paths, tt.paths)
			}
			if fs.ShutdownTimeout != tt.timeout {
				t.Errorf("shutdown-timeout = %v, want %v", fs.ShutdownTimeout, tt.timeout)
			}
			if fs.LogLevel != tt.level {
				t.Errorf("log-level = %v, want %v", fs.LogLevel, tt.level)
			}
		})
	}
}

func TestHandleParseError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		code       int
		ok         bool
		stdout     string
		stderr     string
		stderrNot  string
		stdoutNone bool
	}{
		{name: "ok", code: 0, ok: true, stdoutNone: true},
		{name: "version", args: []string{"-version"}, code: 0, stdout: "my-daemon v1.2.3\n"},
		{name: "help lists env twins", args: []string{"-h"}, code: 0, stdout: "[$MY_DAEMON_ADMIN_ADDR]"},
		{name: "usage error is one line exit 2", args: []string{"-admin-addr"}, code: 2,
			stderr: "my-daemon: flag needs an argument: -admin-addr (see -h)\n", stdoutNone: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fs := New("my-daemon", env(nil))
			fs.String("admin-addr", ":9101", "admin address")
			var out, errOut bytes.Buffer
			code, ok := fs.HandleParseError(fs.Parse(tt.args), "v1.2.3", &out, &errOut)
			if code != tt.code || ok != tt.ok {
				t.Fatalf("code, ok = %d, %v; want %d, %v", code, ok, tt.code, tt.ok)
			}
			if tt.stdout != "" && !strings.Contains(out.String(), tt.stdout) {
				t.Errorf("stdout = %q, want it to contain %q", out.String(), tt.stdout)
			}
			if tt.stdoutNone && out.Len() > 0 {
				t.Errorf("stdout = %q, want nothing", out.String())
			}
			if tt.stderr != "" && errOut.String() != tt.stderr {
				t.Errorf("stderr = %q, want %q", errOut.String(), tt.stderr)
			}
		})
	}
}

func TestLoggerIsJSONAtLevel(t *testing.T) {
	t.Parallel()
	fs := New("d", env(map[string]string{"D_LOG_LEVEL": "warn"}))
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := fs.Logger(&buf)
	log.Info("hidden")
	log.Warn("shown", "k", 1)
	got := buf.String()
	if strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown"`) || !strings.Contains(got, `"k":1`) {
		t.Fatalf("log output = %q", got)
	}
}

func TestEnvName(t *testing.T) {
	t.Parallel()
	fs := New("ambassador", env(nil))
	if got := fs.EnvName("admin-addr"); got != "AMBASSADOR_ADMIN_ADDR" {
		t.Fatalf("EnvName = %q", got)
	}
	var _ flag.Value = new(StringList)
}
