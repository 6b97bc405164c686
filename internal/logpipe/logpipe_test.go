package logpipe

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/logrecord"
	"github.com/podkit/podkit/internal/ship"
	"github.com/podkit/podkit/internal/tail"
)

// capture is an output that keeps JSON events and acknowledges only when
// told to.
type capture struct {
	mu     sync.Mutex
	events []map[string]any
	held   []ship.Ack
}

func (c *capture) Name() string             { return "capture" }
func (c *capture) NewEncoder() ship.Encoder { return ship.JSONEncoder{} }
func (c *capture) Submit(_ context.Context, tag string, data []byte, n int, acks []ship.Ack) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			panic(err)
		}
		m["_tag"] = tag
		c.events = append(c.events, m)
	}
	for _, a := range acks {
		a.Retain()
		c.held = append(c.held, a)
	}
	return nil
}
func (c *capture) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (c *capture) Drain(context.Context) error   { return nil }
func (c *capture) Ready(context.Context) error   { return nil }
func (c *capture) ack() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range c.held {
		a.Release()
	}
	c.held = nil
}
func (c *capture) get() []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]map[string]any(nil), c.events...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCRIMultilineCheckpoint: CRI split lines and a Go panic are joined
// into one event each, fields and time come through, and the checkpoint
// never passes the first line of an event that is not yet shipped.
func TestCRIMultilineCheckpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logf := filepath.Join(dir, "c.log")
	out := &capture{}
	rule, _ := logrecord.NewRule("go", "")
	p := New(Config{
		NewParser: func() logrecord.Parser { return logrecord.Raw{} },
		CRI:       true,
		NewJoiner: func() *logrecord.Joiner {
			return &logrecord.Joiner{Rule: rule, MaxLines: 100, MaxBytes: 1 << 20, Timeout: time.Hour}
		},
		MaxLineBytes: 1 << 20,
		Fields:       [][2]string{{"pod_name", "web-0"}},
		PathKey:      "file",
		Tag:          "k.{pod_name}.{file}",
		Outputs:      []ship.Output{out},
	})
	tl, err := tail.New(tail.Config{Paths: []string{logf}, ScanInterval: 10 * time.Millisecond, PollInterval: 5 * time.Millisecond,
		NewHandler: p.NewHandler}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := "2026-11-26T10:00:00.000000001Z stdout F hello\n" +
		"2026-11-26T10:00:01.000000002Z stderr P panic: bo\n" +
		"2026-11-26T10:00:01.000000003Z stderr F om\n" +
		"2026-11-26T10:00:01.000000004Z stderr F \n" +
		"2026-11-26T10:00:01.000000005Z stderr F goroutine 1 [running]:\n"
	os.WriteFile(logf, []byte(first), 0o644)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- tl.Run(ctx, t.Context()) }()
	waitFor(t, "hello", func() bool { return len(out.get()) == 1 })
	out.ack()
	// The panic is still being joined: the checkpoint stays at or before
	// its start (tokens are per read, so here before "hello" too).
	time.Sleep(50 * time.Millisecond)
	if off := tl.Files()[logf]; off > int64(len("2026-11-26T10:00:00.000000001Z stdout F hello\n")) {
		t.Fatalf("checkpoint %d passed the pending event", off)
	}
	f, _ := os.OpenFile(logf, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("2026-11-26T10:00:01.000000006Z stderr F main.main()\n2026-11-26T10:00:02Z stdout F next\n")
	f.Close()
	waitFor(t, "the panic", func() bool { return len(out.get()) == 2 })
	cancel()
	<-done
	out.ack()
	evs := out.get()
	if len(evs) != 3 {
		t.Fatalf("%d events: %v", len(evs), evs)
	}
	if evs[0]["message"] != "hello" || evs[0]["stream"] != "stdout" || evs[0]["time"] != "2026-11-26T10:00:00.000000001Z" ||
		evs[0]["pod_name"] != "web-0" || evs[0]["file"] != logf || evs[0]["_tag"] != "k.web-0.c.log" {
		t.Fatalf("event 0: %v", evs[0])
	}
	if evs[1]["message"] != "panic: boom\n\ngoroutine 1 [running]:\nmain.main()" || evs[1]["time"] != "2026-11-26T10:00:01.000000002Z" || evs[1]["stream"] != "stderr" {
		t.Fatalf("event 1: %q", evs[1])
	}
	if evs[2]["message"] != "next" {
		t.Fatalf("event 2: %v", evs[2])
	}
	fi, _ := os.Stat(logf)
	if off := tl.Files()[logf]; off != fi.Size() {
		t.Fatalf("checkpoint %d after all acks, want %d", off, fi.Size())
	}
}
