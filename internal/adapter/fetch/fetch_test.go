package fetch

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestGet(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(r.Header.Get("User-Agent") + " " + r.Header.Get("Accept")))
		case "/big":
			w.Write(bytes.Repeat([]byte("x"), 2000))
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		default:
			http.Error(w, "nope", http.StatusNotFound)
		}
	}))
	defer srv.Close()
	c := New("podkit-adapter/test")
	var buf bytes.Buffer
	if err := c.Get(t.Context(), srv.URL+"/ok", http.Header{"Accept": {"text/plain"}}, &buf, 1000); err != nil || buf.String() != "podkit-adapter/test text/plain" {
		t.Errorf("ok: %q, %v", buf.String(), err)
	}
	var se *StatusError
	if err := c.Get(t.Context(), srv.URL+"/missing", nil, &buf, 1000); !errors.As(err, &se) || se.Code != 404 {
		t.Errorf("missing: %v, want a StatusError 404", err)
	}
	if err := c.Get(t.Context(), srv.URL+"/big", nil, &buf, 1000); err == nil || !strings.Contains(err.Error(), "larger than 1000 bytes") {
		t.Errorf("big: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Get(ctx, srv.URL+"/slow", nil, &buf, 1000); err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("slow: %v after %v, want a deadline error", err, time.Since(start))
	}
}

func TestDialCancelUnblocksRead(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			time.Sleep(10 * time.Second) // a source that never answers
		}
	}()
	ctx, cancel := context.WithCancel(t.Context())
	conn, stop, err := Dial(ctx, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	defer conn.Close()
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read from a silent source succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("read returned %v after cancel, want at once", d)
	}
	if _, _, err := Dial(t.Context(), "127.0.0.1:1"); err == nil {
		t.Fatal("Dial to a closed port succeeded")
	}
}
