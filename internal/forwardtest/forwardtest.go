// Package forwardtest is a Fluentd forward-protocol receiver for tests: it
// reads the Message, Forward, PackedForward and CompressedPackedForward
// modes, integer, EventTime and [EventTime, metadata] times, answers chunk
// acks, runs the shared_key handshake, and injects faults on request.
package forwardtest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
	"github.com/tinylib/msgp/msgp"
)

// Options configure a receiver.
type Options struct {
	SharedKey      string // non-empty: HELO/PING/PONG before data
	ServerHostname string // in PONG; default "forwardtest"
	// Users, if set with SharedKey, turns on user authentication:
	// username -> password.
	Users map[string]string
	TLS   *tls.Config // non-nil: listen with TLS
	// CountOnly counts entries without keeping them, for benchmarks.
	CountOnly bool
}

// Record is one received event.
type Record struct {
	Tag    string
	Time   time.Time
	Meta   any // the metadata of an [EventTime, metadata] time, else nil
	Fields map[string]any
	Mode   string // message, forward, packed, compressed
	Chunk  string // the chunk id, "" when none was given
}

// Receiver is a running test receiver.
type Receiver struct {
	opts Options
	addr string

	mu      sync.Mutex
	ln      net.Listener
	conns   map[net.Conn]struct{}
	records []Record
	chunks  map[string]int // chunk id -> times received
	wg      sync.WaitGroup

	count      atomic.Int64
	ackDelay   atomic.Int64 // nanoseconds
	noAck      atomic.Bool
	closeAfter atomic.Int64 // fault: close a connection after this many bytes; 0 = off
	conns2     atomic.Int64
	notify     chan struct{}
}

// Start listens on addr (use "127.0.0.1:0") and serves until Close.
func Start(addr string, opts Options) (*Receiver, error) {
	if opts.ServerHostname == "" {
		opts.ServerHostname = "forwardtest"
	}
	r := &Receiver{opts: opts, conns: map[net.Conn]struct{}{}, chunks: map[string]int{}, notify: make(chan struct{}, 1)}
	if err := r.listen(addr); err != nil {
		return nil, err
	}
	r.addr = r.ln.Addr().String()
	return r, nil
}

func (r *Receiver) listen(addr string) error {
	var ln net.Listener
	var err error
	if r.opts.TLS != nil {
		ln, err = tls.Listen("tcp", addr, r.opts.TLS)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.ln = ln
	r.mu.Unlock()
	r.wg.Add(1)
	go r.accept(ln)
	return nil
}

// Addr is host:port of the receiver; it stays the same across Restart.
func (r *Receiver) Addr() string { return r.addr }

// Count is the number of entries received so far (duplicates included).
func (r *Receiver) Count() int64 { return r.count.Load() }

// Connections is the number of connections accepted so far.
func (r *Receiver) Connections() int64 { return r.conns2.Load() }

// Records returns a copy of the records received (empty with CountOnly).
func (r *Receiver) Records() []Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Record(nil), r.records...)
}

// ChunkDeliveries returns how many times each chunk id arrived.
func (r *Receiver) ChunkDeliveries() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.chunks))
	for k, v := range r.chunks {
		out[k] = v
	}
	return out
}

// WaitCount waits until at least n entries have arrived.
func (r *Receiver) WaitCount(ctx context.Context, n int64) error {
	for r.count.Load() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("received %d of %d entries: %w", r.count.Load(), n, ctx.Err())
		case <-r.notify:
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// SetAckDelay delays every ack by d.
func (r *Receiver) SetAckDelay(d time.Duration) { r.ackDelay.Store(int64(d)) }

// SetNoAck stops (true) or resumes acks; data is still received.
func (r *Receiver) SetNoAck(v bool) { r.noAck.Store(v) }

// CloseAfterBytes makes each new connection close after reading n bytes,
// usually in the middle of a chunk; the partial chunk is discarded. 0
// turns the fault off.
func (r *Receiver) CloseAfterBytes(n int64) { r.closeAfter.Store(n) }

// DropConnections closes every open connection, as a crash would.
func (r *Receiver) DropConnections() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
}

// Stop closes the listener and every connection: the receiver is down.
func (r *Receiver) Stop() {
	r.mu.Lock()
	if r.ln != nil {
		r.ln.Close()
		r.ln = nil
	}
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// Restart listens again on the same address after Stop.
func (r *Receiver) Restart() error {
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly
		if err = r.listen(r.addr); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Close stops the receiver for good.
func (r *Receiver) Close() { r.Stop() }

func (r *Receiver) accept(ln net.Listener) {
	defer r.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns[c] = struct{}{}
		r.mu.Unlock()
		r.conns2.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serve(c)
			c.Close()
			r.mu.Lock()
			delete(r.conns, c)
			r.mu.Unlock()
		}()
	}
}

type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errors.New("forwardtest: connection closed by fault injection")
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

func (r *Receiver) serve(c net.Conn) {
	var src io.Reader = c
	if n := r.closeAfter.Load(); n > 0 {
		src = &limitReader{r: c, left: n}
	}
	rd := msgp.NewReaderSize(src, 64<<10)
	if r.opts.SharedKey != "" {
		if err := r.serverHandshake(c, rd); err != nil {
			return
		}
	}
	acks := make(chan pendingAck, 1024)
	ackDone := make(chan struct{})
	go ackWriter(c, acks, ackDone)
	defer func() { close(acks); <-ackDone }()
	var batch []Record
	for {
		batch = batch[:0]
		chunk, n, err := r.readMessage(rd, &batch)
		if err != nil {
			return
		}
		r.mu.Lock()
		if !r.opts.CountOnly {
			r.records = append(r.records, batch...)
		}
		if chunk != "" {
			r.chunks[chunk]++
		}
		r.mu.Unlock()
		r.count.Add(int64(n))
		select {
		case r.notify <- struct{}{}:
		default:
		}
		if chunk != "" && !r.noAck.Load() {
			// Acks leave from their own goroutine after the delay, so a
			// delay adds latency without throttling reads, like a distant
			// aggregator.
			select {
			case acks <- pendingAck{chunk, time.Now().Add(time.Duration(r.ackDelay.Load()))}:
			case <-ackDone:
				return
			}
		}
	}
}

type pendingAck struct {
	id  string
	due time.Time
}

func ackWriter(c net.Conn, acks <-chan pendingAck, done chan<- struct{}) {
	defer close(done)
	var b []byte
	for a := range acks {
		if d := time.Until(a.due); d > 0 {
			time.Sleep(d)
		}
		b, _ = fluent.AckResp{Ack: a.id}.MarshalMsg(b[:0])
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(b); err != nil {
			c.Close()
			for range acks {
			}
			return
		}
	}
}

// readMessage reads one forward-protocol message; the records are added to
// batch only when the whole message was read.
func (r *Receiver) readMessage(rd *msgp.Reader, batch *[]Record) (chunk string, n int, err error) {
	t, err := rd.NextType()
	if err != nil {
		return "", 0, err
	}
	if t == msgp.NilType { // heartbeat placeholder
		return "", 0, rd.ReadNil()
	}
	sz, err := rd.ReadArrayHeader()
	if err != nil {
		return "", 0, err
	}
	if sz < 2 || sz > 4 {
		return "", 0, fmt.Errorf("message array of %d elements", sz)
	}
	tag, err := rd.ReadString()
	if err != nil {
		return "", 0, err
	}
	t, err = rd.NextType()
	if err != nil {
		return "", 0, err
	}
	var opts map[string]any
	readOpts := func(left uint32) error {
		if left == 0 {
			return nil
		}
		v, err := rd.ReadIntf()
		if err != nil {
			return err
		}
		opts, _ = v.(map[string]any)
		return nil
	}
	switch t {
	case msgp.ArrayType: // Forward
		m, err := rd.ReadArrayHeader()
		if err != nil {
			return "", 0, err
		}
		for i := uint32(0); i < m; i++ {
			if err := r.readEntry(rd, tag, "forward", batch); err != nil {
				return "", 0, err
			}
		}
		if err := readOpts(sz - 2); err != nil {
			return "", 0, err
		}
	case msgp.BinType, msgp.StrType: // PackedForward
		var packed []byte
		if t == msgp.BinType {
			packed, err = rd.ReadBytes(nil)
		} else {
			packed, err = rd.ReadStringAsBytes(nil)
		}
		if err != nil {
			return "", 0, err
		}
		if err := readOpts(sz - 2); err != nil {
			return "", 0, err
		}
		mode := "packed"
		if opts["compressed"] == "gzip" {
			mode = "compressed"
			if packed, err = gunzip(packed); err != nil {
				return "", 0, err
			}
		}
		pr := msgp.NewReader(bytes.NewReader(packed))
		for {
			if _, err := pr.NextType(); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return "", 0, err
			}
			if err := r.readEntry(pr, tag, mode, batch); err != nil {
				return "", 0, err
			}
		}
	default: // Message: [tag, time, record, option?]
		if sz < 3 {
			return "", 0, fmt.Errorf("message mode with %d elements", sz)
		}
		rec, err := r.readTimeRecord(rd, tag, "message")
		if err != nil {
			return "", 0, err
		}
		if err := readOpts(sz - 3); err != nil {
			return "", 0, err
		}
		*batch = append(*batch, rec)
	}
	chunk, _ = opts["chunk"].(string)
	for i := range *batch {
		(*batch)[i].Chunk = chunk
	}
	return chunk, len(*batch), nil
}

func (r *Receiver) readEntry(rd *msgp.Reader, tag, mode string, batch *[]Record) error {
	sz, err := rd.ReadArrayHeader()
	if err != nil {
		return err
	}
	if sz != 2 {
		return fmt.Errorf("entry of %d elements", sz)
	}
	rec, err := r.readTimeRecord(rd, tag, mode)
	if err != nil {
		return err
	}
	*batch = append(*batch, rec)
	return nil
}

func (r *Receiver) readTimeRecord(rd *msgp.Reader, tag, mode string) (Record, error) {
	rec := Record{Tag: tag, Mode: mode}
	t, err := rd.NextType()
	if err != nil {
		return rec, err
	}
	if t == msgp.ArrayType { // [EventTime, metadata], Fluent Bit >= 5.0.4
		n, err := rd.ReadArrayHeader()
		if err != nil || n != 2 {
			return rec, fmt.Errorf("time array of %d elements", n)
		}
		if rec.Time, err = readTime(rd); err != nil {
			return rec, err
		}
		if rec.Meta, err = rd.ReadIntf(); err != nil {
			return rec, err
		}
	} else if rec.Time, err = readTime(rd); err != nil {
		return rec, err
	}
	if r.opts.CountOnly {
		return rec, rd.Skip()
	}
	v, err := rd.ReadIntf()
	if err != nil {
		return rec, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return rec, fmt.Errorf("record is %T, want a map", v)
	}
	rec.Fields = m
	return rec, nil
}

func readTime(rd *msgp.Reader) (time.Time, error) {
	t, err := rd.NextType()
	if err != nil {
		return time.Time{}, err
	}
	switch t {
	case msgp.ExtensionType:
		typ, data, err := rd.ReadExtensionRaw()
		if err != nil {
			return time.Time{}, err
		}
		if typ != 0 || len(data) != 8 {
			return time.Time{}, fmt.Errorf("time extension type %d of %d bytes", typ, len(data))
		}
		var et fluent.EventTime
		if err := et.UnmarshalBinary(data); err != nil {
			return time.Time{}, err
		}
		return time.Time(et), nil
	case msgp.IntType, msgp.UintType:
		s, err := rd.ReadInt64()
		return time.Unix(s, 0), err
	case msgp.Float64Type, msgp.Float32Type:
		f, err := rd.ReadFloat64()
		return time.Unix(0, int64(f*1e9)), err
	}
	return time.Time{}, fmt.Errorf("time of msgpack type %s", t)
}

func gunzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func (r *Receiver) serverHandshake(c net.Conn, rd *msgp.Reader) error {
	var nonce, salt [16]byte
	rand.Read(nonce[:])
	rand.Read(salt[:])
	authSalt := ""
	if len(r.opts.Users) > 0 {
		authSalt = hex.EncodeToString(salt[:])
	}
	var w []byte
	w = msgp.AppendArrayHeader(w, 2)
	w = msgp.AppendString(w, "HELO")
	w = msgp.AppendMapHeader(w, 3)
	w = msgp.AppendString(w, "nonce")
	w = msgp.AppendBytes(w, nonce[:])
	w = msgp.AppendString(w, "auth")
	w = msgp.AppendString(w, authSalt)
	w = msgp.AppendString(w, "keepalive")
	w = msgp.AppendBool(w, true)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(w); err != nil {
		return err
	}
	n, err := rd.ReadArrayHeader()
	if err != nil || n != 6 {
		return fmt.Errorf("PING: %d elements, %v", n, err)
	}
	var f [6]string
	for i := range f {
		if f[i], err = rd.ReadString(); err != nil {
			return err
		}
	}
	ok := f[0] == "PING" && f[3] == digest(f[2], f[1], string(nonce[:]), r.opts.SharedKey)
	reason := ""
	if !ok {
		reason = "shared_key mismatch"
	} else if authSalt != "" {
		pw, known := r.opts.Users[f[4]]
		if !known || f[5] != digest(authSalt, f[4], pw) {
			ok, reason = false, "username/password mismatch"
		}
	}
	w = msgp.AppendArrayHeader(w[:0], 5)
	w = msgp.AppendString(w, "PONG")
	w = msgp.AppendBool(w, ok)
	w = msgp.AppendString(w, reason)
	w = msgp.AppendString(w, r.opts.ServerHostname)
	w = msgp.AppendString(w, digest(f[2], r.opts.ServerHostname, string(nonce[:]), r.opts.SharedKey))
	if _, err := c.Write(w); err != nil {
		return err
	}
	if !ok {
		return errors.New(reason)
	}
	return nil
}

func digest(parts ...string) string {
	h := sha512.New()
	for _, p := range parts {
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}
