package backend

import (
	"sync"

	"github.com/podkit/podkit/internal/cacheproxy/config"
)

// A Merger makes one request out of single-key requests of one kind bound
// for the same server connection at about the same time: memcached gets
// become one multi-get, which costs the server far less than as many gets.
// A merged call collects keys until something else is queued on its
// connection or the connection is flushed, so the order of requests on a
// connection is the order they were sent in.
type Merger interface {
	Begin(c *Call)           // start c.Req
	Add(c *Call, key []byte) // append one key to c.Req
	End(c *Call, keys int)   // finish c.Req, which has this many keys
	// Split runs once the reply is in, before any part of it is used: it
	// fills c.Parts with where each key's answer lies in c.Reply.
	Split(c *Call)
}

// maxMerge bounds the keys of one merged call.
const maxMerge = 256

// waiter is a request a merged call answers.
type waiter struct {
	slot *slot
	wg   *sync.WaitGroup
}

// Join queues keys for the server as parts first, first+1, ... of a call
// merged by m with the other requests for the same connection; the
// answer to key j is part first+j of the call's reply, once m has split
// it. The caller releases the call once, as it would its own.
func (s *Server) Join(keys [][]byte, hash uint32, b *Batch, m Merger) (c *Call, first int) {
	w := b.hold()
	if s.down.Load() && s.opts.policy == config.Mcrouter {
		c = NewCall()
		c.answers(w)
		c.Server, c.hash, c.start = s, hash, b.time()
		s.m.inflight.Inc()
		s.failCall(c, ErrDown)
		return c, 0
	}
	cn := s.conns[int(hash%uint32(len(s.conns)))]
	cn.mu.Lock()
	if cn.open != nil && cn.open.nparts+len(keys) > maxMerge {
		cn.seal() // the keys of one request stay in one call
	}
	c = cn.open
	if c == nil {
		c = NewCall()
		c.Server, c.hash, c.start, c.merger = s, hash, b.time(), m
		m.Begin(c)
		cn.open = c
	} else {
		c.refs.Add(1)
	}
	first = c.nparts
	c.nparts += len(keys)
	for _, k := range keys {
		m.Add(c, k)
	}
	c.answers(w)
	if c.nparts >= maxMerge {
		cn.seal()
	}
	cn.mu.Unlock()
	b.mark(cn)
	return c, first
}

// answers adds w to the requests c answers.
func (c *Call) answers(w waiter) {
	c.waiters = append(c.waiters, w)
	if w.wg != nil {
		c.groups++
	}
}

// seal queues the merged call being built, if any; cn.mu held. The
// connection is in the batch of whoever joined the call, and a flush
// writes it.
func (cn *conn) seal() {
	c := cn.open
	if c == nil {
		return
	}
	cn.open = nil
	c.merger.End(c, c.nparts)
	cn.srv.m.inflight.Inc()
	cn.addLocked(c)
}
