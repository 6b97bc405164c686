package ship

import (
	"bytes"
	"compress/gzip"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/tinylib/msgp/msgp"
	"golang.org/x/sync/semaphore"
)

// Forward modes.
const (
	ModePacked     = "packed"     // PackedForward: entries as one msgpack bin
	ModeCompressed = "compressed" // CompressedPackedForward: gzip of the entries
	ModeForward    = "forward"    // Forward: an array of entries, integer-second times
)

// ForwardConfig configures the forward output.
type ForwardConfig struct {
	Addrs []string // host:port, tried in order on failure
	Mode  string

	ChunkRecords  int
	ChunkBytes    int
	FlushInterval time.Duration
	MaxInflight   int   // chunks written and not yet acknowledged
	BufferBytes   int64 // bound on sealed chunks not yet acknowledged

	ConnectTimeout time.Duration
	WriteTimeout   time.Duration
	AckTimeout     time.Duration
	NoAck          bool // acknowledge on write (for receivers without acks): at-most-once

	TLS        *tls.Config // nil: plain TCP
	SharedKey  string      // non-empty: the shared_key handshake
	Hostname   string      // self hostname in the handshake
	Username   string
	Password   string
	BackoffMin time.Duration
	BackoffMax time.Duration

	Log     *slog.Logger
	Metrics *Metrics
}

func (c *ForwardConfig) defaults() error {
	if len(c.Addrs) == 0 {
		return errors.New("forward output has no address")
	}
	for _, a := range c.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("forward address %q: want host:port", a)
		}
	}
	switch c.Mode {
	case "":
		c.Mode = ModePacked
	case ModePacked, ModeCompressed, ModeForward:
	default:
		return fmt.Errorf("forward mode %q: want packed, compressed or forward", c.Mode)
	}
	setInt := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	setDur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	setInt(&c.ChunkRecords, 8192)
	setInt(&c.ChunkBytes, 256<<10)
	setInt(&c.MaxInflight, 8)
	if c.BufferBytes <= 0 {
		c.BufferBytes = 16 << 20
	}
	setDur(&c.FlushInterval, 200*time.Millisecond)
	setDur(&c.ConnectTimeout, 5*time.Second)
	setDur(&c.WriteTimeout, 10*time.Second)
	setDur(&c.AckTimeout, 30*time.Second)
	setDur(&c.BackoffMin, 100*time.Millisecond)
	setDur(&c.BackoffMax, 30*time.Second)
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

type chunk struct {
	seq     uint64
	id      string
	n       int
	head    []byte // array header, tag, entries header
	entries []byte
	tail    []byte // option map
	acks    []Ack
	cost    int64 // bytes taken from the buffer budget
	sentAt  time.Time
	sent    bool
}

type builder struct {
	entries []byte
	n       int
	acks    []Ack
	first   time.Time
}

// Forward ships chunks over the Fluentd forward protocol: several chunks
// in flight on one connection, each acknowledged by its chunk id, sent
// again after a failure until acknowledged.
type Forward struct {
	cfg ForwardConfig
	log *slog.Logger
	m   outMetrics

	mu       sync.Mutex // builders and the order chunks enter queue
	builders map[string]*builder
	seq      uint64

	queue       chan *chunk
	budget      *semaphore.Weighted
	outstanding atomic.Int64 // chunks sealed and not yet acknowledged
	idPrefix    [8]byte

	connected atomic.Bool
	inflight  atomic.Int64 // chunks awaiting an ack on the current connection
	lastAck   atomic.Int64 // unix ns of the last ack, or of the send that started a wait
	lastErr   atomic.Pointer[string]
	free      chan []byte
}

// NewForward checks cfg and returns the output; Run connects.
func NewForward(cfg ForwardConfig) (*Forward, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	f := &Forward{
		cfg: cfg, log: cfg.Log, m: cfg.Metrics.For("forward"),
		builders: map[string]*builder{},
		// Sealed chunks wait here for a send slot. A short queue is enough
		// to keep the connection busy; beyond it readers pause, because the
		// files, not memory, are the buffer.
		queue:  make(chan *chunk, cfg.MaxInflight),
		budget: semaphore.NewWeighted(cfg.BufferBytes),
		free:   make(chan []byte, 4),
	}
	crand.Read(f.idPrefix[:])
	msg := "not connected yet"
	f.lastErr.Store(&msg)
	return f, nil
}

// Name implements Output.
func (f *Forward) Name() string { return "forward" }

// NewEncoder implements Output.
func (f *Forward) NewEncoder() Encoder {
	if f.cfg.Mode == ModeForward {
		return &fluentEntryEncoder{}
	}
	return entryEncoder{eventTime: true}
}

// fluentEntryEncoder writes fluent.Entry values (integer-second time), the
// form every Fluentd since v0.12 reads.
type fluentEntryEncoder struct{ rec []byte }

func (e *fluentEntryEncoder) Append(dst []byte, ev *Event) []byte {
	e.rec = appendRecord(e.rec[:0], ev.Rec)
	out, err := fluent.Entry{Time: ev.Time.Unix(), Record: msgp.Raw(e.rec)}.MarshalMsg(dst)
	if err != nil {
		return dst
	}
	return out
}

// getEntries returns a chunk buffer, reusing one an acknowledged chunk gave
// back: a bounded free list rather than a sync.Pool, which the GC empties.
func (f *Forward) getEntries() []byte {
	select {
	case b := <-f.free:
		return b[:0]
	default:
		return make([]byte, 0, f.cfg.ChunkBytes)
	}
}

func (f *Forward) putEntries(b []byte) {
	if cap(b) < f.cfg.ChunkBytes || cap(b) > 2*f.cfg.ChunkBytes {
		return
	}
	select {
	case f.free <- b[:0]:
	default:
	}
}

// Submit implements Output.
func (f *Forward) Submit(ctx context.Context, tag string, data []byte, n int, acks []Ack) error {
	if n == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b := f.builders[tag]
	if b == nil {
		b = &builder{}
		f.builders[tag] = b
	}
	if b.n > 0 && (b.n+n > f.cfg.ChunkRecords || len(b.entries)+len(data) > f.cfg.ChunkBytes) {
		if err := f.sealLocked(ctx, tag, b, true); err != nil {
			for _, a := range acks {
				a.Fail()
			}
			return err
		}
	}
	if b.n == 0 {
		b.first = time.Now()
		if b.entries == nil {
			// Full size at once: growing by append would leave a trail of
			// half-size buffers for the GC on every chunk.
			b.entries = f.getEntries()
		}
	}
	b.entries = append(b.entries, data...)
	b.n += n
	for _, a := range acks {
		if k := len(b.acks); k > 0 && b.acks[k-1] == a {
			continue
		}
		a.Retain()
		b.acks = append(b.acks, a)
	}
	if b.n >= f.cfg.ChunkRecords || len(b.entries) >= f.cfg.ChunkBytes {
		return f.sealLocked(ctx, tag, b, true)
	}
	return nil
}

// sealLocked turns the builder into a chunk and queues it, waiting for
// buffer room: this is where a slow output pauses the readers. With wait
// false (the flush timer) it leaves the builder as it is when the buffer or
// the queue is full, so the timer never blocks while holding f.mu.
func (f *Forward) sealLocked(ctx context.Context, tag string, b *builder, wait bool) error {
	if b.n == 0 {
		return nil
	}
	// An upper bound of the chunk's size (gzip only shrinks it), taken
	// from the budget before anything is built.
	cost := min(int64(len(b.entries)+len(tag)+128), f.cfg.BufferBytes)
	if !wait {
		if len(f.queue) == cap(f.queue) || !f.budget.TryAcquire(cost) {
			return nil
		}
	} else if err := f.budget.Acquire(ctx, cost); err != nil {
		// The data stays unacknowledged: its checkpoint does not advance
		// and it is read again after a restart.
		for _, a := range b.acks {
			a.Fail()
			a.Release()
		}
		f.putEntries(b.entries)
		*b = builder{}
		return fmt.Errorf("forward buffer full: %w", err)
	}
	f.seq++
	c := &chunk{seq: f.seq, n: b.n, acks: b.acks, cost: cost}
	var id [16]byte
	copy(id[:8], f.idPrefix[:])
	binary.BigEndian.PutUint64(id[8:], f.seq)
	c.id = base64.StdEncoding.EncodeToString(id[:])
	entries := b.entries
	if f.cfg.Mode == ModeCompressed {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		zw.Write(entries)
		zw.Close()
		f.putEntries(entries)
		entries = buf.Bytes()
	}
	c.head = msgp.AppendArrayHeader(c.head, 3)
	c.head = msgp.AppendString(c.head, tag)
	if f.cfg.Mode == ModeForward {
		c.head = msgp.AppendArrayHeader(c.head, uint32(b.n))
	} else {
		c.head = msgp.AppendBytesHeader(c.head, uint32(len(entries)))
	}
	c.entries = entries
	opts := 2
	if f.cfg.Mode == ModeCompressed {
		opts = 3
	}
	c.tail = msgp.AppendMapHeader(c.tail, uint32(opts))
	c.tail = msgp.AppendString(c.tail, "size")
	c.tail = msgp.AppendInt(c.tail, b.n)
	c.tail = msgp.AppendString(c.tail, "chunk")
	c.tail = msgp.AppendString(c.tail, c.id)
	if f.cfg.Mode == ModeCompressed {
		c.tail = msgp.AppendString(c.tail, "compressed")
		c.tail = msgp.AppendString(c.tail, "gzip")
	}
	*b = builder{}
	f.outstanding.Add(1)
	f.m.pending.Add(float64(c.cost))
	// Only sealers, under f.mu, send on the queue: with wait false the
	// length check above guarantees room.
	select {
	case f.queue <- c:
		return nil
	case <-ctx.Done():
		f.finish(c, false)
		return ctx.Err()
	}
}

// finish releases a chunk's budget and its acks, as delivered or not.
func (f *Forward) finish(c *chunk, acked bool) {
	if acked {
		f.m.acked.Add(float64(c.n))
	}
	for _, a := range c.acks {
		if !acked {
			a.Fail()
		}
		a.Release()
	}
	if f.cfg.Mode != ModeCompressed {
		f.putEntries(c.entries)
	}
	c.entries = nil
	f.budget.Release(c.cost)
	f.m.pending.Sub(float64(c.cost))
	f.outstanding.Add(-1)
}

// flush seals every builder older than age; wait says whether to block
// for buffer room.
func (f *Forward) flush(ctx context.Context, age time.Duration, wait bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for tag, b := range f.builders {
		if b.n > 0 && now.Sub(b.first) >= age {
			if err := f.sealLocked(ctx, tag, b, wait); err != nil {
				return err
			}
		}
	}
	return nil
}

// Drain implements Output.
func (f *Forward) Drain(ctx context.Context) error {
	if err := f.flush(ctx, 0, true); err != nil {
		return err
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for f.outstanding.Load() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("forward: %d chunks not acknowledged: %w", f.outstanding.Load(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Ready implements Output.
func (f *Forward) Ready(context.Context) error {
	if f.connected.Load() {
		// Connected but not accepting: chunks wait for acks that do not come.
		if f.inflight.Load() > 0 {
			if idle := time.Since(time.Unix(0, f.lastAck.Load())); idle > f.cfg.AckTimeout/2 {
				return fmt.Errorf("no ack for %s", idle.Round(time.Second))
			}
		}
		return nil
	}
	return errors.New(*f.lastErr.Load())
}

func (f *Forward) setErr(err error) {
	msg := err.Error()
	f.lastErr.Store(&msg)
	f.connected.Store(false)
}

// Run implements Output: it connects, sends and resends until ctx ends.
func (f *Forward) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(max(f.cfg.FlushInterval/4, 5*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f.flush(ctx, f.cfg.FlushInterval, false)
			}
		}
	}()
	defer wg.Wait()

	var retry []*chunk // sent, not acknowledged, in seq order
	backoff := f.cfg.BackoffMin
	addr := 0
	for ctx.Err() == nil {
		conn, err := f.connect(ctx, f.cfg.Addrs[addr])
		if err == nil {
			var progressed bool
			retry, progressed, err = f.session(ctx, conn, retry)
			conn.Close()
			if progressed {
				backoff = f.cfg.BackoffMin
			}
		}
		if ctx.Err() != nil {
			break
		}
		f.m.errors.Inc()
		f.setErr(fmt.Errorf("%s: %w", f.cfg.Addrs[addr], err))
		f.log.Warn("forward output", "addr", f.cfg.Addrs[addr], "err", err, "retry_in", backoff)
		addr = (addr + 1) % len(f.cfg.Addrs)
		// Full jitter over the upper half keeps many sidecars from
		// reconnecting in step after an aggregator restart.
		sleep := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
		case <-time.After(sleep):
		}
		backoff = min(backoff*2, f.cfg.BackoffMax)
	}
	f.connected.Store(false)
	for _, c := range retry {
		f.finish(c, false)
	}
	for {
		select {
		case c := <-f.queue:
			f.finish(c, false)
		default:
			return nil
		}
	}
}

func (f *Forward) connect(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: f.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	var conn net.Conn
	var err error
	if f.cfg.TLS != nil {
		td := tls.Dialer{NetDialer: &d, Config: f.cfg.TLS}
		conn, err = td.DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	if f.cfg.SharedKey != "" {
		conn.SetDeadline(time.Now().Add(f.cfg.ConnectTimeout))
		if err := clientHandshake(conn, f.cfg.Hostname, f.cfg.SharedKey, f.cfg.Username, f.cfg.Password); err != nil {
			conn.Close()
			return nil, fmt.Errorf("handshake: %w", err)
		}
		conn.SetDeadline(time.Time{})
	}
	return conn, nil
}

type ackOrErr struct {
	id  string
	err error
}

// session sends chunks on one connection until it fails or ctx ends. It
// returns the chunks sent but not acknowledged, to send again.
func (f *Forward) session(ctx context.Context, conn net.Conn, retry []*chunk) (rest []*chunk, progressed bool, err error) {
	done := make(chan struct{})
	acks := make(chan ackOrErr, 64)
	var wg sync.WaitGroup
	defer func() {
		close(done)
		conn.Close()
		wg.Wait()
	}()
	if !f.cfg.NoAck {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := msgp.NewReaderSize(conn, 4096)
			for {
				var a fluent.AckResp
				err := a.DecodeMsg(r)
				select {
				case acks <- ackOrErr{a.Ack, err}:
				case <-done:
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	f.connected.Store(true)
	f.lastAck.Store(time.Now().UnixNano())
	defer f.inflight.Store(0)
	inflight := map[string]*chunk{}
	var order []*chunk // inflight in send order
	requeue := func() []*chunk {
		out := retry
		for _, c := range order {
			if inflight[c.id] != nil {
				out = append(out, c)
			}
		}
		// keep seq order: resent chunks first were sent first
		return sortChunks(out)
	}
	send := func(c *chunk) error {
		if c.sent {
			f.m.retries.Inc()
		}
		c.sent = true
		conn.SetWriteDeadline(time.Now().Add(f.cfg.WriteTimeout))
		bufs := net.Buffers{c.head, c.entries, c.tail}
		if _, err := bufs.WriteTo(conn); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		f.m.shipped.Add(float64(c.n))
		c.sentAt = time.Now()
		if f.cfg.NoAck {
			f.finish(c, true)
			return nil
		}
		if len(inflight) == 0 {
			f.lastAck.Store(time.Now().UnixNano()) // the wait starts now
		}
		inflight[c.id] = c
		order = append(order, c)
		f.inflight.Store(int64(len(inflight)))
		return nil
	}
	ackCheck := time.NewTicker(min(f.cfg.AckTimeout/4, time.Second))
	defer ackCheck.Stop()
	for {
		for len(retry) > 0 && len(inflight) < f.cfg.MaxInflight {
			c := retry[0]
			retry = retry[1:]
			if err := send(c); err != nil {
				retry = append([]*chunk{c}, retry...)
				return requeue(), progressed, err
			}
		}
		var queue chan *chunk
		if len(retry) == 0 && len(inflight) < f.cfg.MaxInflight {
			queue = f.queue
		}
		select {
		case <-ctx.Done():
			return requeue(), progressed, ctx.Err()
		case c := <-queue:
			if err := send(c); err != nil {
				retry = append(retry, c)
				return requeue(), progressed, err
			}
		case a := <-acks:
			if a.err != nil {
				return requeue(), progressed, fmt.Errorf("read ack: %w", a.err)
			}
			c := inflight[a.id]
			if c == nil {
				continue // an ack for a chunk already given up on this connection
			}
			delete(inflight, a.id)
			for len(order) > 0 && inflight[order[0].id] == nil {
				order = order[1:]
			}
			f.m.rtt.Observe(time.Since(c.sentAt).Seconds())
			f.finish(c, true)
			progressed = true
			f.lastAck.Store(time.Now().UnixNano())
			f.inflight.Store(int64(len(inflight)))
		case now := <-ackCheck.C:
			for _, c := range order {
				if inflight[c.id] != nil && now.Sub(c.sentAt) > f.cfg.AckTimeout {
					return requeue(), progressed, fmt.Errorf("no ack for chunk %s within %s", c.id, f.cfg.AckTimeout)
				}
			}
		}
	}
}

func sortChunks(cs []*chunk) []*chunk {
	// insertion sort: the list is short and nearly sorted
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].seq < cs[j-1].seq; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
	return cs
}

// TagTemplate expands {name} placeholders from vars; empty values become "_".
func TagTemplate(tmpl string, vars map[string]string) string {
	var sb strings.Builder
	for {
		i := strings.IndexByte(tmpl, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(tmpl[i:], '}')
		if j < 0 {
			break
		}
		sb.WriteString(tmpl[:i])
		v := vars[tmpl[i+1:i+j]]
		if v == "" {
			v = "_"
		}
		sb.WriteString(v)
		tmpl = tmpl[i+j+1:]
	}
	sb.WriteString(tmpl)
	return sb.String()
}
