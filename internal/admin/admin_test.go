package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func start(t *testing.T) (*Server, string, context.CancelFunc, chan struct{}, chan error) {
	t.Helper()
	reg := NewRegistry("testd", "v0.0.1")
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "testd_things_total", Help: "Things done."})
	reg.MustRegister(c)
	c.Add(3)
	s := New(reg, slog.New(slog.DiscardHandler))
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	drained := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, drained, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-drained:
		default:
			close(drained)
		}
		<-done
	})
	return s, "http://" + s.Addr().String(), cancel, drained, done
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	s, base, cancel, drained, done := start(t)

	if code, body := get(t, base+"/readyz"); code != 200 || body != "ok\n" {
		t.Fatalf("readyz with no checks = %d %q", code, body)
	}
	var backendErr atomic.Pointer[error]
	failing := errors.New("pool web: no live server\nsecond line")
	backendErr.Store(&failing)
	s.AddCheck("ambassador", func(context.Context) error {
		if p := backendErr.Load(); p != nil {
			return *p
		}
		return nil
	})
	if code, body := get(t, base+"/readyz"); code != 503 || body != "ambassador: pool web: no live server\n" {
		t.Fatalf("readyz failing = %d %q, want 503 with one-line reason", code, body)
	}
	backendErr.Store(nil)
	if code, _ := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("readyz recovered = %d", code)
	}
	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz = %d %q", code, body)
	}

	// Shutdown starts: readiness fails at once while the server still answers.
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body := get(t, base+"/readyz")
		if code == 503 && body == "shutting down\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz after shutdown began = %d %q", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("healthz while draining = %d", code)
	}
	close(drained)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
		done <- nil
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after drain")
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("server still answering after Run returned")
	}
}

func TestRunGivesUpWaitingAfterTimeout(t *testing.T) {
	t.Parallel()
	s := New(NewRegistry("testd", "v"), slog.New(slog.DiscardHandler))
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	if err := s.Run(ctx, make(chan struct{}), 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Run took %v with a 100ms drain deadline", d)
	}
}

func TestListenBadAddress(t *testing.T) {
	t.Parallel()
	s := New(NewRegistry("testd", "v"), slog.New(slog.DiscardHandler))
	err := s.Listen("127.0.0.1:notaport")
	if err == nil || !strings.Contains(err.Error(), "admin listen 127.0.0.1:notaport") {
		t.Fatalf("Listen = %v", err)
	}
}

func TestMetricsPassPromtool(t *testing.T) {
	t.Parallel()
	_, base, _, _, _ := start(t)
	code, body := get(t, base+"/metrics")
	if code != 200 {
		t.Fatalf("metrics = %d", code)
	}
	for _, want := range []string{"testd_things_total 3", `testd_build_info{goversion=`, "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not on PATH (apt-get install prometheus)")
		}
		t.Skip("promtool not on PATH; apt-get install prometheus")
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
