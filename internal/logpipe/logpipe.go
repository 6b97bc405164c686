// Package logpipe turns the lines the tailer reads into records (CRI
// reassembly, multiline joining, parsing, enrichment) and hands them,
// encoded, to every output, carrying the tailer's acknowledgement tokens.
package logpipe

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/podkit/podkit/internal/logrecord"
	"github.com/podkit/podkit/internal/ship"
	"github.com/podkit/podkit/internal/tail"
)

// Config describes the processing of every file.
type Config struct {
	// NewParser returns a parser for one file (parsers keep scratch state).
	NewParser func() logrecord.Parser
	CRI       bool
	// NewJoiner returns a multiline joiner for one file, nil for none.
	NewJoiner    func() *logrecord.Joiner
	MaxLineBytes int

	// Fields are added to every record: pod identity and static fields.
	Fields  [][2]string
	PathKey string // the key of the file path field, "" for none
	// Tag is the forward tag template; {file}, {path} and the keys of
	// Fields are replaced.
	Tag     string
	Outputs []ship.Output
	Drop    func(reason string, n int)
}

// Pipeline makes one tail.Handler per file.
type Pipeline struct {
	cfg Config
}

// New returns a pipeline.
func New(cfg Config) *Pipeline {
	if cfg.Drop == nil {
		cfg.Drop = func(string, int) {}
	}
	return &Pipeline{cfg: cfg}
}

// NewHandler implements tail.Config.NewHandler.
func (p *Pipeline) NewHandler(fi tail.FileInfo) tail.Handler {
	vars := map[string]string{
		"file": filepath.Base(fi.Path),
		"path": strings.ReplaceAll(strings.TrimPrefix(fi.Path, "/"), "/", "."),
	}
	h := &handler{p: p, parser: p.cfg.NewParser()}
	for _, f := range p.cfg.Fields {
		vars[f[0]] = f[1]
		h.static = append(h.static, logrecord.Field{Key: f[0], Kind: logrecord.String, Bytes: []byte(f[1])})
	}
	if p.cfg.PathKey != "" {
		h.static = append(h.static, logrecord.Field{Key: p.cfg.PathKey, Kind: logrecord.String, Bytes: []byte(fi.Path)})
	}
	h.tag = ship.TagTemplate(p.cfg.Tag, vars)
	if p.cfg.CRI {
		h.cri = &logrecord.CRI{MaxBytes: p.cfg.MaxLineBytes}
	}
	if p.cfg.NewJoiner != nil {
		h.joiner = p.cfg.NewJoiner()
	}
	for _, o := range p.cfg.Outputs {
		h.encs = append(h.encs, o.NewEncoder())
	}
	h.bufs = make([][]byte, len(h.encs))
	return h
}

type handler struct {
	p      *Pipeline
	tag    string
	parser logrecord.Parser
	cri    *logrecord.CRI
	joiner *logrecord.Joiner
	static []logrecord.Field
	rec    logrecord.Record
	ev     ship.Event // here, not on the stack: passed to an interface it would escape
	encs   []ship.Encoder
	bufs   [][]byte
	n      int

	held []ship.Ack // tokens of lines a pending event holds
	acks []ship.Ack

	criTime   time.Time
	criStream []byte
	emitted   bool // the joiner emitted during this batch
	criOpen   bool // a split CRI line waits for its end
	completed bool // CRI completed a line during this batch
}

func (h *handler) begin() {
	h.n = 0
	for i := range h.bufs {
		h.bufs[i] = h.bufs[i][:0]
	}
	h.emitted, h.completed = false, false
}

// Lines implements tail.Handler.
func (h *handler) Lines(ctx context.Context, b *tail.Batch) error {
	h.begin()
	for _, l := range b.Lines {
		h.line(l.Data, l.Truncated, b.ReadTime)
	}
	h.acks = append(append(h.acks[:0], h.held...), b.Token)
	err := h.submit(ctx)
	pending := (h.cri != nil && h.criPending()) || (h.joiner != nil && h.joiner.Pending())
	// Lines of an unfinished event keep their token, so the checkpoint
	// does not pass the event's first line before the event is shipped.
	switch {
	case !pending:
		h.releaseHeld()
	case (h.joiner != nil && h.emitted) || (h.joiner == nil && h.completed):
		h.releaseHeld()
		b.Token.Retain()
		h.held = append(h.held, b.Token)
	default:
		b.Token.Retain()
		h.held = append(h.held, b.Token)
	}
	return err
}

func (h *handler) criPending() bool { return h.criOpen }

func (h *handler) releaseHeld() {
	for _, a := range h.held {
		a.Release()
	}
	clear(h.held)
	h.held = h.held[:0]
}

// Idle implements tail.Handler: a multiline event waiting too long is sent.
func (h *handler) Idle(ctx context.Context, now time.Time) error {
	if h.joiner == nil {
		return nil
	}
	ev, trunc, ok := h.joiner.Expired(now)
	if !ok {
		return nil
	}
	h.begin()
	h.emit(ev, trunc, now)
	h.acks = append(h.acks[:0], h.held...)
	err := h.submit(ctx)
	if !h.criOpen {
		h.releaseHeld()
	}
	return err
}

// Close implements tail.Handler.
func (h *handler) Close(ctx context.Context) error {
	h.begin()
	now := time.Now()
	if h.cri != nil {
		if out, ok := h.cri.Flush(); ok {
			h.criOpen = false
			h.content(out.Message, out.Truncated, out.Time, out.Stream, now)
		}
	}
	if h.joiner != nil {
		if ev, trunc, ok := h.joiner.Flush(); ok {
			h.emit(ev, trunc, now)
		}
	}
	h.acks = append(h.acks[:0], h.held...)
	err := h.submit(ctx)
	h.releaseHeld()
	return err
}

func (h *handler) submit(ctx context.Context) error {
	for i, o := range h.p.cfg.Outputs {
		if err := o.Submit(ctx, h.tag, h.bufs[i], h.n, h.acks); err != nil {
			// Not every output took the data: hold the checkpoint before it.
			for _, a := range h.acks {
				a.Fail()
			}
			return err
		}
	}
	return nil
}

func (h *handler) line(data []byte, truncated bool, now time.Time) {
	if h.cri == nil {
		h.content(data, truncated, time.Time{}, nil, now)
		return
	}
	out, ok, bad := h.cri.Add(data)
	if bad {
		h.content(data, truncated, time.Time{}, nil, now)
		return
	}
	if !ok {
		h.criOpen = true
		return
	}
	h.criOpen = false
	h.completed = true
	if out.Truncated {
		h.p.cfg.Drop("line_truncated", 1)
	}
	h.content(out.Message, truncated || out.Truncated, out.Time, out.Stream, now)
}

// content is one complete line's text, with the CRI time and stream if any.
func (h *handler) content(msg []byte, truncated bool, t time.Time, stream []byte, now time.Time) {
	if h.joiner == nil {
		h.criTime, h.criStream = t, stream
		h.emit(msg, truncated, now)
		return
	}
	if ev, trunc, ok := h.joiner.Add(msg, now); ok {
		h.emitted = true
		h.emit(ev, trunc, now)
	}
	if h.joiner.Lines() == 1 {
		// The event that just started takes this line's CRI time.
		h.criTime, h.criStream = t, append(h.criStream[:0:0], stream...)
	}
	_ = truncated
}

func (h *handler) emit(text []byte, truncated bool, now time.Time) {
	r := &h.rec
	r.Reset()
	h.parser.Parse(text, r)
	if r.Time.IsZero() {
		r.Time = h.criTime
	}
	if len(h.criStream) > 0 {
		r.Str("stream", h.criStream)
	}
	if truncated {
		r.Bool("truncated", true)
		if h.joiner != nil {
			h.p.cfg.Drop("multiline_truncated", 1)
		}
	}
	r.Fields = append(r.Fields, h.static...)
	t := r.Time
	if t.IsZero() {
		t = now
	}
	h.ev = ship.Event{Rec: r, Time: t, Raw: text}
	for i, enc := range h.encs {
		h.bufs[i] = enc.Append(h.bufs[i], &h.ev)
	}
	h.n++
}
