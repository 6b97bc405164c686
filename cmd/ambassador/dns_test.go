package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/testserver"
)

// TestServerNameResolvedOnReconnect: a StatefulSet pod keeps its name but
// not its address. The ambassador runs in a mount namespace of its own
// whose /etc/hosts the test rewrites: while the name points at one
// memcached, keys land there; once it points at another and the first
// is gone, the next connection finds the second, with no reload.
func TestServerNameResolvedOnReconnect(t *testing.T) {
	testserver.RequireRoot(t)
	testserver.Require(t, "unshare")
	dir := t.TempDir()
	port := testserver.FreePort(t)
	mc := func(ip string) *testserver.Server {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		return testserver.Start(t, t.TempDir(), addr, "memcached",
			"-l", ip, "-p", strconv.Itoa(port), "-U", "0", "-m", "16", "-u", "nobody")
	}
	first, second := mc("127.0.0.2"), mc("127.0.0.3")

	hosts := filepath.Join(dir, "hosts")
	point := func(ip string) {
		// Rewritten in place: the bind mount follows the file, not its name.
		if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"+ip+" cache.test\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	point("127.0.0.2")
	bin := filepath.Join(dir, "ambassador")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", testserver.FreePort(t))
	script := fmt.Sprintf("mount --bind %s /etc/hosts && exec %s -listen %s -servers cache.test:%d -admin-addr %s",
		hosts, bin, listen, port, admin)
	testserver.Start(t, dir, listen, "unshare", "--mount", "--propagation", "private", "sh", "-c", script)

	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	do := func(req string) string {
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return line
	}
	if got := do("set one 0 0 1\r\n1\r\n"); got != "STORED\r\n" {
		t.Fatalf("set through the ambassador: %q", got)
	}
	if !holds(t, first.Addr, "one") || holds(t, second.Addr, "one") {
		t.Fatal("the key did not land on the address the name had")
	}

	point("127.0.0.3")
	first.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for do("set two 0 0 1\r\n2\r\n") != "STORED\r\n" {
		if time.Now().After(deadline) {
			t.Fatal("the ambassador never reached the name's new address")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !holds(t, second.Addr, "two") {
		t.Fatal("the key did not land on the name's new address")
	}
}

// holds reports whether the memcached at addr has key.
func holds(t *testing.T, addr, key string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "get %s\r\n", key); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.HasPrefix(line, "VALUE ")
}
