package redis

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestRequestTooLargeIsRefused: a request larger than the ambassador takes
// gets an error reply saying so, and then the connection closes (what
// follows it cannot be told from the rest of the request).
func TestRequestTooLargeIsRefused(t *testing.T) {
	pool, stats := deadPool(t)
	h := &Handler{Pool: pool, Stats: stats, MaxValue: 1 << 20}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		h.ServeConn(nc, make(chan struct{}))
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	// 63 values of 1 MiB, then the header of one that would pass the
	// 64 MiB bound: the ambassador knows from the header alone.
	value := strings.Repeat("v", 1<<20)
	go func() {
		w := bufio.NewWriterSize(c, 1<<20)
		w.WriteString("*70\r\n")
		for range 63 {
			w.WriteString("$1048576\r\n" + value + "\r\n")
		}
		w.WriteString("$1048576\r\n")
		_ = w.Flush()
	}()
	want := "-ERR request too large (the ambassador takes at most 67108864 bytes in one request)\r\n"
	got, err := io.ReadAll(c)
	if string(got) != want {
		t.Fatalf("got %q (err %v), want %q then the end", got, err, want)
	}
	<-served
}
