// Package tail follows log files named by globs through rename and
// copytruncate rotation, deletion and inode reuse, and checkpoints only the
// offsets whose data downstream has acknowledged.
package tail

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config says what to follow and how.
type Config struct {
	Paths   []string // globs
	Exclude []string // patterns matched against the path and its base name

	ScanInterval       time.Duration // re-glob for new files
	PollInterval       time.Duration // look for new data at EOF
	RotateWait         time.Duration // after EOF on a rotated or deleted file, wait this long for late writes
	FlushTimeout       time.Duration // emit an unfinished last line after this long without new data
	CheckpointInterval time.Duration
	PositionsFile      string // "" keeps no checkpoints
	FromTail           bool   // files found at start-up without a checkpoint start at their end
	MaxLineBytes       int
	ReadBytes          int // read size per call

	Log *slog.Logger
	// NewHandler is called once per followed file, in its own goroutine's
	// order of events; see Handler.
	NewHandler func(FileInfo) Handler
	// Drop is told of every loss that cannot be avoided (reason, lines).
	Drop func(reason string, n int)
}

// FileInfo describes a followed file.
type FileInfo struct {
	Path string
	ID   FileID
}

// Batch is the lines of one read. Lines point into a buffer reused once
// Lines returns: copy what must outlive the call, and Retain Token for as
// long as that copy is not acknowledged.
type Batch struct {
	Lines    []Line
	ReadTime time.Time
	Token    *Token
}

// Handler receives a file's lines; all calls for one file come from one
// goroutine. An error (its context ended) stops the file.
type Handler interface {
	Lines(ctx context.Context, b *Batch) error
	// Idle is called when a read found nothing new, for time-outs.
	Idle(ctx context.Context, now time.Time) error
	// Close flushes what the handler still holds; the file is done.
	Close(ctx context.Context) error
}

// fileState is what the tailer knows of one file (device+inode), followed
// or not.
type fileState struct {
	id   FileID
	path atomic.Pointer[string]
	fp   atomic.Pointer[fingerprint]
	size atomic.Int64

	tracker

	// guarded by Tailer.mu
	active   bool  // a follower goroutine runs
	seen     bool  // matched by the latest scan
	resumeAt int64 // where a follower restarts (read offset at close)
}

func (f *fileState) position() position {
	f.mu.Lock()
	off := f.acked
	f.mu.Unlock()
	return position{Path: *f.path.Load(), FileID: f.id, fingerprint: *f.fp.Load(), Offset: off}
}

// Tailer discovers and follows files.
type Tailer struct {
	cfg Config
	log *slog.Logger

	scanNow chan struct{}
	wake    waker
	ckptMu  sync.Mutex // one positions write at a time
	bufs    sync.Pool  // *[]byte read buffers

	mu       sync.Mutex
	files    map[FileID]*fileState
	restored map[FileID]position
	wg       sync.WaitGroup

	linesRead prometheus.Counter
	bytesRead prometheus.Counter
	truncs    prometheus.Counter
	watched   prometheus.Gauge
	lagDesc   *prometheus.Desc
	ckptErrs  prometheus.Counter
}

// New checks cfg, loads the positions file and registers the tailer's
// metrics on reg.
func New(cfg Config, reg prometheus.Registerer) (*Tailer, error) {
	if len(cfg.Paths) == 0 {
		return nil, errors.New("no path to follow")
	}
	for _, p := range append(append([]string(nil), cfg.Paths...), cfg.Exclude...) {
		if _, err := filepath.Match(p, ""); err != nil {
			return nil, fmt.Errorf("bad glob %q: %w", p, err)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.ScanInterval, time.Second)
	def(&cfg.PollInterval, 100*time.Millisecond)
	def(&cfg.RotateWait, 5*time.Second)
	def(&cfg.FlushTimeout, 5*time.Second)
	def(&cfg.CheckpointInterval, time.Second)
	if cfg.MaxLineBytes <= 0 {
		cfg.MaxLineBytes = 64 << 10
	}
	if cfg.ReadBytes <= 0 {
		cfg.ReadBytes = 64 << 10
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Drop == nil {
		cfg.Drop = func(string, int) {}
	}
	t := &Tailer{cfg: cfg, log: cfg.Log, files: map[FileID]*fileState{}, restored: map[FileID]position{}, scanNow: make(chan struct{}, 1)}
	if cfg.PositionsFile != "" {
		ps, err := loadPositions(cfg.PositionsFile)
		if err != nil {
			return nil, err
		}
		for _, p := range ps {
			t.restored[p.FileID] = p
		}
	}
	t.linesRead = prometheus.NewCounter(prometheus.CounterOpts{Name: "logsidecar_lines_read_total", Help: "Lines read from the followed files."})
	t.bytesRead = prometheus.NewCounter(prometheus.CounterOpts{Name: "logsidecar_read_bytes_total", Help: "Bytes read from the followed files."})
	t.truncs = prometheus.NewCounter(prometheus.CounterOpts{Name: "logsidecar_file_truncations_total", Help: "Files found shorter than the read offset (copytruncate) and read again from 0."})
	t.watched = prometheus.NewGauge(prometheus.GaugeOpts{Name: "logsidecar_files_watched", Help: "Files being followed."})
	t.ckptErrs = prometheus.NewCounter(prometheus.CounterOpts{Name: "logsidecar_checkpoint_errors_total", Help: "Failed writes of the positions file."})
	t.lagDesc = prometheus.NewDesc("logsidecar_file_lag_bytes", "File size minus the acknowledged offset, per followed file.", []string{"path"}, nil)
	if reg != nil {
		for _, c := range []prometheus.Collector{t.linesRead, t.bytesRead, t.truncs, t.watched, t.ckptErrs, lagCollector{t}} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

type lagCollector struct{ t *Tailer }

func (c lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.t.lagDesc }
func (c lagCollector) Collect(ch chan<- prometheus.Metric) {
	// A rotated file keeps the name it was found under; when two share a
	// path, the one being followed speaks for it.
	lag := map[string]int64{}
	active := map[string]bool{}
	for _, f := range c.t.snapshot() {
		p := f.position()
		c.t.mu.Lock()
		act := f.active && f.seen
		c.t.mu.Unlock()
		if _, ok := lag[p.Path]; ok && (active[p.Path] || !act) {
			continue
		}
		lag[p.Path], active[p.Path] = max(f.size.Load()-p.Offset, 0), act
	}
	for path, v := range lag {
		ch <- prometheus.MustNewConstMetric(c.t.lagDesc, prometheus.GaugeValue, float64(v), path)
	}
}

func (t *Tailer) snapshot() []*fileState {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*fileState, 0, len(t.files))
	for _, f := range t.files {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return *out[i].path.Load() < *out[j].path.Load() })
	return out
}

// Run follows files until ctx ends, then stops discovering, reads every
// file to its current end, hands the rest to the handlers and returns.
// drain bounds that last phase: handlers blocked by a slow output give up
// when it ends. Checkpoints are written every CheckpointInterval while it
// runs; call Checkpoint once more after the outputs have drained.
func (t *Tailer) Run(ctx, drain context.Context) error {
	stopWatch := t.watchDirs()
	defer stopWatch()
	// Checkpoints have their own goroutine: an fsync on a busy disk must
	// not delay the discovery of a new file.
	ckptDone := make(chan struct{})
	stopCkpt := make(chan struct{})
	go func() {
		defer close(ckptDone)
		tick := time.NewTicker(t.cfg.CheckpointInterval)
		defer tick.Stop()
		for {
			select {
			case <-stopCkpt:
				return
			case <-tick.C:
				t.checkpoint(false)
			}
		}
	}()
	defer func() { close(stopCkpt); <-ckptDone }()

	t.scan(ctx, drain, true)
	scan := time.NewTicker(t.cfg.ScanInterval)
	defer scan.Stop()
	for {
		select {
		case <-ctx.Done():
			// One last look, so a file created since the last scan (the
			// web server's newest log after a rotation) is read too.
			t.scan(ctx, drain, false)
			t.wg.Wait()
			return nil
		case <-scan.C:
			t.scan(ctx, drain, false)
		case <-t.scanNow:
			t.scan(ctx, drain, false)
		}
	}
}

func (t *Tailer) getBuf() []byte {
	if b, ok := t.bufs.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, t.cfg.MaxLineBytes+2+t.cfg.ReadBytes)
}

func (t *Tailer) putBuf(b []byte) { t.bufs.Put(&b) }

// Checkpoint writes the positions file with the acknowledged offsets.
func (t *Tailer) Checkpoint() error { return t.checkpoint(true) }

func (t *Tailer) checkpoint(force bool) error {
	if t.cfg.PositionsFile == "" {
		return nil
	}
	t.ckptMu.Lock()
	defer t.ckptMu.Unlock()
	files := t.snapshot()
	dirty := force
	ps := make([]position, 0, len(files))
	for _, f := range files {
		f.mu.Lock()
		if f.dirty {
			dirty = true
			f.dirty = false
		}
		f.mu.Unlock()
		ps = append(ps, f.position())
	}
	t.mu.Lock()
	for _, p := range t.restored {
		ps = append(ps, p) // not seen yet: keep until a scan decides
	}
	t.mu.Unlock()
	if !dirty {
		return nil
	}
	if err := writePositions(t.cfg.PositionsFile, ps); err != nil {
		t.ckptErrs.Inc()
		t.log.Error("checkpoint", "err", err)
		return err
	}
	return nil
}

// Files returns the acknowledged offset of every known file, by path.
func (t *Tailer) Files() map[string]int64 {
	out := map[string]int64{}
	for _, f := range t.snapshot() {
		p := f.position()
		out[p.Path] = p.Offset
	}
	return out
}

func (t *Tailer) excluded(path string) bool {
	for _, e := range t.cfg.Exclude {
		if ok, _ := filepath.Match(e, path); ok {
			return true
		}
		if ok, _ := filepath.Match(e, filepath.Base(path)); ok {
			return true
		}
	}
	return false
}

func (t *Tailer) scan(ctx, drain context.Context, initial bool) {
	var paths []string
	for _, g := range t.cfg.Paths {
		m, _ := filepath.Glob(g)
		paths = append(paths, m...)
	}
	sort.Strings(paths)
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.files {
		f.seen = false
	}
	for _, p := range paths {
		if t.excluded(p) {
			continue
		}
		// Open first, then ask the descriptor who it is: whatever a
		// rotation does to the name meanwhile, the file opened is the
		// file followed.
		fd, err := os.Open(p) // follows symlinks, as in /var/log/containers
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				t.cfg.Drop("deleted_before_read", 1)
				t.log.Warn("file gone before it could be opened", "path", p)
			}
			continue
		}
		fi, err := fd.Stat()
		id, ok := FileID{}, false
		if err == nil && fi.Mode().IsRegular() {
			id, ok = fileID(fi)
		}
		if !ok {
			fd.Close()
			continue
		}
		if f := t.files[id]; f != nil {
			f.seen = true
			if f.active {
				fd.Close()
				continue
			}
			// A file closed after rotation that a glob still matches
			// (app.log.1): resume where its follower stopped, unless the
			// inode now holds another file.
			fp, err := readFingerprint(fd, f.fp.Load().Len)
			if err == nil && fp == *f.fp.Load() && fi.Size() >= f.resumeAt {
				if fi.Size() > f.resumeAt {
					t.start(ctx, drain, f, p, fd, f.resumeAt)
				} else {
					fd.Close()
				}
				continue
			}
			delete(t.files, id) // inode reused: a new file
		}
		t.log.Debug("following a new file", "path", p, "ino", id.Ino)
		f := &fileState{id: id}
		f.path.Store(&p)
		f.seen = true
		start := int64(0)
		fpNow, err := readFingerprint(fd, fpMax)
		if err != nil {
			fd.Close()
			continue
		}
		if r, ok := t.restored[id]; ok {
			delete(t.restored, id)
			fpOld, err := readFingerprint(fd, r.Len)
			if err == nil && fpOld == r.fingerprint && r.Offset <= fi.Size() {
				start = r.Offset
			} else {
				t.log.Info("checkpoint does not match the file (truncated or inode reused): reading from the start", "path", p, "offset", r.Offset)
			}
		} else if initial && t.cfg.FromTail {
			start = fi.Size()
		}
		f.fp.Store(&fpNow)
		f.acked = start
		f.dirty = true
		f.size.Store(fi.Size())
		t.files[id] = f
		t.start(ctx, drain, f, p, fd, start)
	}
	if !initial {
		// Checkpoints of files that no longer exist are dropped after the
		// first scan has had its chance to match them.
		clear(t.restored)
	}
	for id, f := range t.files {
		if !f.seen && !f.active && !f.inflight() {
			delete(t.files, id)
		}
	}
}

// start launches a follower on fd, which it then owns; t.mu is held.
func (t *Tailer) start(ctx, drain context.Context, f *fileState, path string, fd *os.File, offset int64) {
	if _, err := fd.Seek(offset, 0); err != nil {
		fd.Close()
		return
	}
	f.active = true
	t.watched.Inc()
	fo := &follower{t: t, f: f, fd: fd, off: offset, path: path,
		framer: NewFramer(t.cfg.MaxLineBytes),
		h:      t.cfg.NewHandler(FileInfo{Path: path, ID: f.id}),
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		end := fo.run(ctx, drain)
		fd.Close()
		t.watched.Dec()
		t.mu.Lock()
		f.active = false
		f.resumeAt = end
		t.mu.Unlock()
	}()
}
