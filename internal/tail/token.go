package tail

import (
	"sync"
	"sync/atomic"
)

// Token stands for one read of a file. Whoever holds data from it calls
// Retain, and Release once that data is acknowledged downstream. When every
// holder has released it, and every earlier token of the same file too, the
// file's checkpoint advances to the token's end offset.
type Token struct {
	f      *fileState
	end    int64
	refs   atomic.Int32
	done   bool // guarded by f.mu
	failed bool // guarded by f.mu
}

// Retain adds a holder.
func (t *Token) Retain() { t.refs.Add(1) }

// Release drops a holder.
func (t *Token) Release() {
	if n := t.refs.Add(-1); n == 0 {
		t.f.complete(t)
	} else if n < 0 {
		panic("tail: token released more often than retained")
	}
}

// Fail marks the token's data as not delivered in this run: the checkpoint
// stops before it for good, so a restart reads it again.
func (t *Token) Fail() {
	t.f.mu.Lock()
	t.failed = true
	t.f.mu.Unlock()
}

// tracker keeps a file's tokens in read order and the acknowledged offset.
type tracker struct {
	mu      sync.Mutex
	pending []*Token
	head    int
	acked   int64
	dirty   bool
}

func (f *fileState) newToken(end int64) *Token {
	t := &Token{f: f, end: end}
	t.refs.Store(1)
	f.mu.Lock()
	f.pending = append(f.pending, t)
	f.mu.Unlock()
	return t
}

func (f *fileState) complete(t *Token) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t.done = true
	for f.head < len(f.pending) && f.pending[f.head].done && !f.pending[f.head].failed {
		f.acked = f.pending[f.head].end
		f.pending[f.head] = nil
		f.head++
		f.dirty = true
	}
	if f.head == len(f.pending) {
		f.pending, f.head = f.pending[:0], 0
	} else if f.head > 1024 && f.head*2 > len(f.pending) {
		n := copy(f.pending, f.pending[f.head:])
		clear(f.pending[n:])
		f.pending, f.head = f.pending[:n], 0
	}
}

// inflight reports whether tokens are still waiting for acknowledgement.
func (f *fileState) inflight() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.head < len(f.pending)
}
