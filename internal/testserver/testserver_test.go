package testserver

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func roundTrip(t *testing.T, addr, req string, lines int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	var b strings.Builder
	for range lines {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(l)
	}
	return b.String()
}

func TestServersAnswer(t *testing.T) {
	t.Parallel()
	t.Run("memcached", func(t *testing.T) {
		t.Parallel()
		s := Memcached(t)
		if got := roundTrip(t, s.Addr, "version\r\n", 1); !strings.HasPrefix(got, "VERSION ") {
			t.Fatalf("memcached version = %q", got)
		}
		s.Stop()
		if _, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			t.Fatal("memcached still listening after Stop")
		}
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		s := Redis(t)
		if got := roundTrip(t, s.Addr, "PING\r\n", 1); got != "+PONG\r\n" {
			t.Fatalf("redis PING = %q", got)
		}
	})
	t.Run("nginx", func(t *testing.T) {
		t.Parallel()
		s := Nginx(t, func(dir string, port int) string {
			return NginxPrelude(dir) + fmt.Sprintf(`http {
    %s
    access_log off;
    server { listen 127.0.0.1:%d; location = /stub_status { stub_status; } }
}
`, NginxHTTPPrelude(dir), port)
		})
		resp, err := http.Get("http://" + s.Addr + "/stub_status")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "Active connections:") {
			t.Fatalf("stub_status = %q", body)
		}
		// Stopping takes nginx's workers too, and a second Stop or Kill
		// does nothing (the PID may belong to someone else by then).
		s.Stop()
		if left := groupMembers(t, s.PID()); len(left) > 0 {
			t.Fatalf("processes of nginx's group left after Stop: %v", left)
		}
		s.Stop()
		s.Kill()
	})
}

func TestFreePortNeverRepeats(t *testing.T) {
	t.Parallel()
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("FreePort gave %d twice", p)
		}
		seen[p] = true
	}
}

// groupMembers lists the PIDs whose process group is pgid.
func groupMembers(t *testing.T, pgid int) []string {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, st := range stats {
		b, err := os.ReadFile(st)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
		rest := b[bytes.LastIndexByte(b, ')')+2:]
		f := strings.Fields(string(rest))
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			left = append(left, st)
		}
	}
	return left
}
