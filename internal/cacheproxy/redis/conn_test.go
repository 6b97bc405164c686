package redis

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
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

// TestParseIntAgreesWithAtoi: parseInt takes what strconv.Atoi takes, for
// every length a request or reply can carry, and refuses the rest.
func TestParseIntAgreesWithAtoi(t *testing.T) {
	cases := []string{"", "0", "-1", "+7", "-", "+", "007", "12a", " 1", "1 ", "-0", "1_0", "0x10",
		"999999999999999999", "-999999999999999999", "65536", "--1", "+-1", "\x001"}
	rng := rand.New(rand.NewPCG(3, 4))
	const alphabet = "0123456789-+ x"
	for range 20000 {
		b := make([]byte, rng.IntN(20))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		got, gerr := parseInt([]byte(c))
		want, werr := strconv.Atoi(c)
		digits := strings.TrimLeft(c, "+-")
		if len(digits) > 18 && gerr != nil {
			continue // too long to be a length: refused, where Atoi may still parse it
		}
		if (gerr == nil) != (werr == nil) || (gerr == nil && got != want) {
			t.Fatalf("%q: parseInt %d, %v; Atoi %d, %v", c, got, gerr, want, werr)
		}
	}
}
