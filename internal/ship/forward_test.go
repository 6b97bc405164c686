package ship

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/forwardtest"
	"github.com/podkit/podkit/internal/logrecord"
)

// counterAck counts acknowledged batches.
type counterAck struct {
	refs     atomic.Int32
	released atomic.Int32
	failed   atomic.Bool
}

func (c *counterAck) Fail() { c.failed.Store(true) }

func (c *counterAck) Retain() { c.refs.Add(1) }
func (c *counterAck) Release() {
	if c.refs.Add(-1) < 0 {
		panic("released more than retained")
	}
	c.released.Add(1)
}

type fwdHarness struct {
	t    *testing.T
	out  *Forward
	rcv  *forwardtest.Receiver
	done chan error
	acks []*counterAck
	seq  int
}

func newHarness(t *testing.T, ropts forwardtest.Options, mod func(*ForwardConfig)) *fwdHarness {
	t.Helper()
	rcv, err := forwardtest.Start("127.0.0.1:0", ropts)
	if err != nil {
		t.Fatal(err)
	}
	cfg := ForwardConfig{Addrs: []string{rcv.Addr()}, ChunkRecords: 100, FlushInterval: 20 * time.Millisecond,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond, AckTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	out, err := NewForward(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &fwdHarness{t: t, out: out, rcv: rcv, done: make(chan error, 1)}
	go func() { h.done <- out.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-h.done; rcv.Close() })
	return h
}

// submit sends n records numbered from h.seq, in batches of 10.
func (h *fwdHarness) submit(ctx context.Context, n int) error {
	enc := h.out.NewEncoder()
	var rec logrecord.Record
	var buf []byte
	for i := 0; i < n; i += 10 {
		buf = buf[:0]
		k := min(10, n-i)
		for j := 0; j < k; j++ {
			rec.Reset()
			rec.Int("seq", int64(h.seq))
			rec.Str("message", []byte(fmt.Sprintf("line %d", h.seq)))
			h.seq++
			buf = enc.Append(buf, &Event{Rec: &rec, Time: time.Unix(1700000000, int64(h.seq))})
		}
		a := &counterAck{}
		a.Retain()
		h.acks = append(h.acks, a)
		err := h.out.Submit(ctx, "test.tag", buf, k, []Ack{a})
		a.Release()
		if err != nil {
			return err
		}
	}
	return nil
}

// check asserts every record arrived at least once and every batch was
// acknowledged exactly once.
func (h *fwdHarness) check() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), 30*time.Second)
	defer cancel()
	if err := h.out.Drain(ctx); err != nil {
		h.t.Fatal(err)
	}
	seen := map[int64]bool{}
	for _, r := range h.rcv.Records() {
		seen[r.Fields["seq"].(int64)] = true
	}
	for i := 0; i < h.seq; i++ {
		if !seen[int64(i)] {
			h.t.Fatalf("record %d lost (received %d records)", i, len(h.rcv.Records()))
		}
	}
	for i, a := range h.acks {
		if a.failed.Load() {
			h.t.Fatalf("batch %d marked failed", i)
		}
		if a.refs.Load() != 0 {
			h.t.Fatalf("batch %d still held (%d refs)", i, a.refs.Load())
		}
	}
}

func TestForwardModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{ModePacked, ModeCompressed, ModeForward} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, forwardtest.Options{}, func(c *ForwardConfig) { c.Mode = mode })
			if err := h.submit(t.Context(), 1000); err != nil {
				t.Fatal(err)
			}
			h.check()
			recs := h.rcv.Records()
			if len(recs) != 1000 {
				t.Fatalf("%d records, want 1000 (no duplicates without faults)", len(recs))
			}
			if recs[0].Mode != mode || recs[0].Tag != "test.tag" {
				t.Fatalf("record %+v", recs[0])
			}
			if mode != ModeForward && recs[5].Time.Nanosecond() != 6 {
				t.Fatalf("EventTime nanoseconds lost: %v", recs[5].Time)
			}
			for i := 1; i < len(recs); i++ {
				if recs[i].Fields["seq"].(int64) != recs[i-1].Fields["seq"].(int64)+1 {
					t.Fatalf("out of order at %d", i)
				}
			}
		})
	}
}

func TestForwardHandshake(t *testing.T) {
	t.Parallel()
	h := newHarness(t, forwardtest.Options{SharedKey: "s3cret"}, func(c *ForwardConfig) { c.SharedKey = "s3cret"; c.Hostname = "web-0" })
	if err := h.submit(t.Context(), 50); err != nil {
		t.Fatal(err)
	}
	h.check()

	users := map[string]string{"fluent": "pw"}
	withUser := newHarness(t, forwardtest.Options{SharedKey: "s3cret", Users: users}, func(c *ForwardConfig) {
		c.SharedKey, c.Username, c.Password = "s3cret", "fluent", "pw"
	})
	if err := withUser.submit(t.Context(), 50); err != nil {
		t.Fatal(err)
	}
	withUser.check()

	for name, mod := range map[string]func(*ForwardConfig){
		"wrong key":      func(c *ForwardConfig) { c.SharedKey = "wrong"; c.Username, c.Password = "fluent", "pw" },
		"wrong password": func(c *ForwardConfig) { c.SharedKey = "s3cret"; c.Username, c.Password = "fluent", "nope" },
	} {
		bad := newHarness(t, forwardtest.Options{SharedKey: "s3cret", Users: users}, mod)
		if err := bad.submit(t.Context(), 10); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := bad.out.Ready(t.Context())
			if err != nil && strings.Contains(err.Error(), "handshake") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: ready=%v, want a handshake error", name, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if n := bad.rcv.Count(); n != 0 {
			t.Fatalf("%s: %d records accepted", name, n)
		}
	}
}

func TestForwardTLS(t *testing.T) {
	t.Parallel()
	cert, pool := selfSigned(t)
	h := newHarness(t, forwardtest.Options{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}},
		func(c *ForwardConfig) { c.TLS = &tls.Config{RootCAs: pool, ServerName: "localhost"} })
	if err := h.submit(t.Context(), 50); err != nil {
		t.Fatal(err)
	}
	h.check()
}

func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// TestForwardReceiverFaults: the receiver goes down and comes back, delays
// acks, stops acking, closes connections mid-chunk: nothing is lost, every
// batch is acknowledged once, readiness follows.
func TestForwardReceiverFaults(t *testing.T) {
	t.Parallel()
	h := newHarness(t, forwardtest.Options{}, func(c *ForwardConfig) { c.AckTimeout = 300 * time.Millisecond })
	ctx := t.Context()
	if err := h.submit(ctx, 500); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h.out, true)

	// down, then back
	h.rcv.Stop()
	waitReady(t, h.out, false)
	if err := h.submit(ctx, 500); err != nil {
		t.Fatal(err)
	}
	if err := h.rcv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h.out, true)

	// slow acks
	h.rcv.SetAckDelay(50 * time.Millisecond)
	if err := h.submit(ctx, 500); err != nil {
		t.Fatal(err)
	}
	h.rcv.SetAckDelay(0)

	// no acks for a while: resent after the ack timeout
	h.rcv.SetNoAck(true)
	if err := h.submit(ctx, 300); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	h.rcv.SetNoAck(false)

	// connections cut in the middle of a chunk
	h.rcv.CloseAfterBytes(3000)
	h.rcv.DropConnections()
	done := make(chan error, 1)
	go func() { done <- h.submit(ctx, 300) }()
	time.Sleep(300 * time.Millisecond)
	h.rcv.CloseAfterBytes(0)
	h.rcv.DropConnections()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	h.check()
	if h.rcv.Connections() < 3 {
		t.Fatalf("only %d connections: faults not exercised", h.rcv.Connections())
	}
}

// TestForwardBackpressure: with the receiver down, Submit blocks once the
// buffer is full instead of growing memory.
func TestForwardBackpressure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, forwardtest.Options{}, func(c *ForwardConfig) { c.BufferBytes = 8 << 10; c.ChunkRecords = 10 })
	h.rcv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	err := h.submit(ctx, 100000)
	if err == nil {
		t.Fatal("submit of 100000 records into an 8 KiB buffer with the receiver down did not block")
	}
	if h.seq > 2000 {
		t.Fatalf("%d records accepted into an 8 KiB buffer", h.seq)
	}
	// The batch refused is marked failed: its checkpoint holds.
	if last := h.acks[len(h.acks)-1]; !last.failed.Load() {
		t.Fatal("refused batch not marked failed")
	}
	if err := h.rcv.Restart(); err != nil {
		t.Fatal(err)
	}
	h.seq = 0
	h.acks = nil
	if err := h.submit(t.Context(), 100); err != nil {
		t.Fatal(err)
	}
	h.check()
}

func waitReady(t *testing.T, o Output, want bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := o.Ready(t.Context())
		if (err == nil) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ready=%v never reached (%v)", want, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestForwardFailover: the first address refuses connections; records go
// to the second.
func TestForwardFailover(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	h := newHarness(t, forwardtest.Options{}, func(c *ForwardConfig) { c.Addrs = append([]string{dead}, c.Addrs...) })
	if err := h.submit(t.Context(), 200); err != nil {
		t.Fatal(err)
	}
	h.check()
}

// TestForwardNotReadyWithoutAcks: connected but unacknowledged is not ready.
func TestForwardNotReadyWithoutAcks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, forwardtest.Options{}, func(c *ForwardConfig) { c.AckTimeout = 400 * time.Millisecond })
	h.rcv.SetNoAck(true)
	if err := h.submit(t.Context(), 20); err != nil {
		t.Fatal(err)
	}
	waitReady(t, h.out, false)
	h.rcv.SetNoAck(false)
	waitReady(t, h.out, true)
	h.check()
}
