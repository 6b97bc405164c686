package tail

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// collector is a Handler factory that records every line per file and
// acknowledges at once.
type collector struct {
	mu    sync.Mutex
	lines map[FileID][]string
	flags map[string]Line
	order []FileID
}

func newCollector() *collector {
	return &collector{lines: map[FileID][]string{}, flags: map[string]Line{}}
}

type collectHandler struct {
	c  *collector
	id FileID
}

func (c *collector) NewHandler(fi FileInfo) Handler {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.lines[fi.ID]; !ok {
		c.order = append(c.order, fi.ID)
		c.lines[fi.ID] = nil
	}
	return &collectHandler{c: c, id: fi.ID}
}

func (h *collectHandler) Lines(_ context.Context, b *Batch) error {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	for _, l := range b.Lines {
		s := string(l.Data)
		h.c.lines[h.id] = append(h.c.lines[h.id], s)
		if l.Truncated || l.Partial {
			h.c.flags[s] = Line{Truncated: l.Truncated, Partial: l.Partial}
		}
	}
	return nil
}
func (h *collectHandler) Idle(context.Context, time.Time) error { return nil }
func (h *collectHandler) Close(context.Context) error           { return nil }

func (c *collector) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, id := range c.order {
		out = append(out, c.lines[id]...)
	}
	return out
}

func (c *collector) count() int { return len(c.all()) }

func fastConfig(dir string, c *collector) Config {
	return Config{
		Paths:              []string{filepath.Join(dir, "*.log*")},
		ScanInterval:       20 * time.Millisecond,
		PollInterval:       5 * time.Millisecond,
		RotateWait:         300 * time.Millisecond,
		FlushTimeout:       200 * time.Millisecond,
		CheckpointInterval: 20 * time.Millisecond,
		PositionsFile:      filepath.Join(dir, "positions.json"),
		NewHandler:         c.NewHandler,
	}
}

type runningTailer struct {
	t      *Tailer
	cancel context.CancelFunc
	done   chan error
}

func startTailer(t *testing.T, cfg Config) *runningTailer {
	t.Helper()
	tl, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &runningTailer{t: tl, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- tl.Run(ctx, t.Context()) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *runningTailer) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	r.done <- nil
	if err := r.t.Checkpoint(); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestFollowBasics(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := newCollector()
	cfg := fastConfig(dir, c)
	cfg.MaxLineBytes = 16
	log := filepath.Join(dir, "app.log")
	appendFile(t, log, "one\r\ntwo\n")
	r := startTailer(t, cfg)
	waitFor(t, "two lines", func() bool { return c.count() == 2 })
	appendFile(t, log, strings.Repeat("x", 40)+"\nthree\npart")
	waitFor(t, "truncated line, three and the partial line", func() bool { return c.count() == 5 })
	r.stop(t)
	got := c.all()
	want := []string{"one", "two", strings.Repeat("x", 16), "three", "part"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if !c.flags[strings.Repeat("x", 16)].Truncated || !c.flags["part"].Partial {
		t.Fatalf("flags %v", c.flags)
	}
}

// TestLateFileAndSymlink: files appearing later are found, symlinks followed.
func TestLateFileAndSymlink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	real := t.TempDir()
	c := newCollector()
	cfg := fastConfig(dir, c)
	startTailer(t, cfg)
	appendFile(t, filepath.Join(real, "target"), "via link\n")
	if err := os.Symlink(filepath.Join(real, "target"), filepath.Join(dir, "c.log")); err != nil {
		t.Fatal(err)
	}
	appendFile(t, filepath.Join(dir, "late.log"), "late\n")
	waitFor(t, "two files", func() bool { return c.count() == 2 })
}

// TestRestartResumesAtCheckpoint: after a stop, reading resumes exactly at
// the acknowledged offset; a file replaced meanwhile (same name, new
// content) is read from its start.
func TestRestartResumesAtCheckpoint(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := filepath.Join(dir, "app.log")
	appendFile(t, log, "a1\na2\n")
	c1 := newCollector()
	r := startTailer(t, fastConfig(dir, c1))
	waitFor(t, "first lines", func() bool { return c1.count() == 2 })
	r.stop(t)

	appendFile(t, log, "a3\n")
	c2 := newCollector()
	r = startTailer(t, fastConfig(dir, c2))
	waitFor(t, "a3", func() bool { return c2.count() == 1 })
	r.stop(t)
	if got := c2.all(); got[0] != "a3" {
		t.Fatalf("after restart got %q", got)
	}

	// copytruncate while stopped: size below the offset.
	if err := os.Truncate(log, 0); err != nil {
		t.Fatal(err)
	}
	appendFile(t, log, "b1\n")
	c3 := newCollector()
	r = startTailer(t, fastConfig(dir, c3))
	waitFor(t, "b1", func() bool { return c3.count() == 1 })
	r.stop(t)

	// Same inode, same size, other content: the fingerprint tells.
	f, _ := os.OpenFile(log, os.O_WRONLY, 0)
	f.WriteAt([]byte("c1\n"), 0)
	f.Close()
	c4 := newCollector()
	r = startTailer(t, fastConfig(dir, c4))
	waitFor(t, "c1", func() bool { return c4.count() == 1 })
	r.stop(t)
	if got := c4.all(); got[0] != "c1" {
		t.Fatalf("got %q", got)
	}
}

// TestUnacknowledgedIsReadAgain: a checkpoint never passes data the handler
// has not released.
func TestUnacknowledgedIsReadAgain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := filepath.Join(dir, "app.log")
	appendFile(t, log, "x1\nx2\n")
	h := &holdingFactory{}
	cfg := fastConfig(dir, nil)
	cfg.NewHandler = h.NewHandler
	r := startTailer(t, cfg)
	waitFor(t, "held tokens", func() bool { return h.n() > 0 })
	r.stop(t)
	if off := r.t.Files()[log]; off != 0 {
		t.Fatalf("checkpoint %d with nothing acknowledged", off)
	}
	h.releaseAll()
	if off := r.t.Files()[log]; off != 6 {
		t.Fatalf("checkpoint %d after acks, want 6", off)
	}
}

type holdingFactory struct {
	mu   sync.Mutex
	toks []*Token
}

func (h *holdingFactory) NewHandler(FileInfo) Handler { return h }
func (h *holdingFactory) Lines(_ context.Context, b *Batch) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	b.Token.Retain()
	h.toks = append(h.toks, b.Token)
	return nil
}
func (h *holdingFactory) Idle(context.Context, time.Time) error { return nil }
func (h *holdingFactory) Close(context.Context) error           { return nil }
func (h *holdingFactory) n() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.toks)
}
func (h *holdingFactory) releaseAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.toks) - 1; i >= 0; i-- { // out of order on purpose
		h.toks[i].Release()
	}
	h.toks = nil
}

// writer appends numbered lines as fast as it can and rotates the file.
type rotWriter struct {
	t    *testing.T
	path string
	f    *os.File
	next int
	w    *bytes.Buffer
}

func (w *rotWriter) open() {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	w.f = f
}

func (w *rotWriter) write(n int) {
	w.w.Reset()
	for i := 0; i < n; i++ {
		fmt.Fprintf(w.w, "line %08d %s\n", w.next, strings.Repeat("p", w.next%50))
		w.next++
	}
	if _, err := w.f.Write(w.w.Bytes()); err != nil {
		w.t.Fatal(err)
	}
}

func checkSequence(t *testing.T, c *collector, total int) {
	t.Helper()
	seen := make([]bool, total)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range c.order {
		last := -1
		for _, l := range c.lines[id] {
			f := strings.Fields(l)
			if len(f) < 2 {
				t.Fatalf("garbled line %q", l)
			}
			n, err := strconv.Atoi(f[1])
			if err != nil || n >= total {
				t.Fatalf("garbled line %q", l)
			}
			if seen[n] {
				t.Fatalf("line %d delivered twice", n)
			}
			if n <= last {
				t.Fatalf("line %d after %d in one file", n, last)
			}
			seen[n], last = true, n
		}
	}
	for i, s := range seen {
		if !s {
			t.Fatalf("line %d lost", i)
		}
	}
}

// TestRotationTortureRename: the writer appends while the file is renamed
// away and recreated many times; every line arrives once, in order per file.
func TestRotationTortureRename(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := newCollector()
	startTailer(t, fastConfig(dir, c))
	w := &rotWriter{t: t, path: filepath.Join(dir, "app.log"), w: &bytes.Buffer{}}
	w.open()
	for rot := 0; rot < 40; rot++ {
		for i := 0; i < 20; i++ {
			w.write(50)
		}
		// logrotate's default: rename, then the writer reopens (create).
		if err := os.Rename(w.path, fmt.Sprintf("%s.%d", w.path, rot)); err != nil {
			t.Fatal(err)
		}
		w.write(10) // late writes to the renamed file before the reopen
		w.f.Close()
		w.open()
	}
	w.write(100)
	w.f.Close()
	total := w.next
	waitFor(t, "every line", func() bool { return c.count() >= total })
	time.Sleep(50 * time.Millisecond) // a duplicate would arrive now
	checkSequence(t, c, total)
}

// TestRotationTortureCopytruncate: copytruncate with the writer paused
// around copy+truncate, as logrotate's copytruncate users must accept
// (lines written between the copy and the truncate are lost by every
// tool). The copy is not followed (its name is excluded), so every line
// must arrive once, from the original file.
func TestRotationTortureCopytruncate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := newCollector()
	cfg := fastConfig(dir, c)
	cfg.Exclude = []string{"*.copy*"}
	r := startTailer(t, cfg)
	w := &rotWriter{t: t, path: filepath.Join(dir, "app.log"), w: &bytes.Buffer{}}
	w.open()
	for rot := 0; rot < 20; rot++ {
		for i := 0; i < 10; i++ {
			w.write(50)
		}
		// Let the tailer reach the end before the truncate, as a writer
		// paused for the copy gives it time to: what was not read when
		// the file shrinks is gone for any tailer.
		target := w.next
		waitFor(t, "tailer at end before truncate", func() bool { return c.count() >= target })
		data, err := os.ReadFile(w.path)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(fmt.Sprintf("%s.copy%d", w.path, rot), data, 0o644)
		if err := os.Truncate(w.path, 0); err != nil {
			t.Fatal(err)
		}
		// The writer resumes after the truncate; since the file was
		// opened O_APPEND it writes from 0.
	}
	w.write(100)
	w.f.Close()
	total := w.next
	waitFor(t, "every line", func() bool { return c.count() >= total })
	time.Sleep(50 * time.Millisecond)
	checkSequenceLoose(t, c, total)
	if got := testutilCount(r.t); got < 1 {
		t.Fatalf("no truncation counted")
	}
}

// checkSequenceLoose: with copytruncate, one file's numbers restart after a
// truncation, so order is checked between truncations only through the
// global count: all lines, none twice.
func checkSequenceLoose(t *testing.T, c *collector, total int) {
	t.Helper()
	seen := make([]bool, total)
	for _, l := range c.all() {
		f := strings.Fields(l)
		n, err := strconv.Atoi(f[1])
		if err != nil || n >= total {
			t.Fatalf("garbled line %q", l)
		}
		if seen[n] {
			t.Fatalf("line %d delivered twice", n)
		}
		seen[n] = true
	}
	for i, s := range seen {
		if !s {
			t.Fatalf("line %d lost", i)
		}
	}
}

// TestRotationOnlyLiveNameGlobbed: the glob names only app.log, as most
// configurations do, and the scan interval is an hour: inotify alone finds
// each new file, and the follower of a renamed file reads it to its end.
// (With polling only, a file renamed away before the next scan is never
// seen: glob the rotated names too, or keep inotify available.) The writer
// renames once the new file's lines have been read, so the test does not
// depend on scheduling delays on a loaded machine.
func TestRotationOnlyLiveNameGlobbed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := newCollector()
	cfg := fastConfig(dir, c)
	cfg.Paths = []string{filepath.Join(dir, "app.log")}
	cfg.ScanInterval = time.Hour
	cfg.PollInterval = time.Hour // reads are woken by inotify too
	startTailer(t, cfg)
	w := &rotWriter{t: t, path: filepath.Join(dir, "app.log"), w: &bytes.Buffer{}}
	w.open()
	for rot := 0; rot < 15; rot++ {
		w.write(100)
		target := w.next
		waitFor(t, "the new file's lines", func() bool { return c.count() >= target })
		w.write(100) // not read yet when renamed, most of the time
		os.Rename(w.path, fmt.Sprintf("%s.%d", w.path, rot))
		w.write(10) // the writer's last lines before its reopen
		w.f.Close()
		w.open()
	}
	w.write(100)
	w.f.Close()
	total := w.next
	waitFor(t, "every line", func() bool { return c.count() >= total })
	time.Sleep(50 * time.Millisecond)
	checkSequence(t, c, total)
}

// TestFailedTokenHoldsCheckpoint: data marked failed (cut off by shutdown)
// is never checkpointed past, even once released.
func TestFailedTokenHoldsCheckpoint(t *testing.T) {
	t.Parallel()
	f := &fileState{}
	a, b, c := f.newToken(10), f.newToken(20), f.newToken(30)
	a.Release()
	b.Fail()
	b.Release()
	c.Release()
	if f.acked != 10 {
		t.Fatalf("acked %d, want 10 (stop before the failed token)", f.acked)
	}
	if !f.inflight() {
		t.Fatal("failed token not reported as outstanding")
	}
}
