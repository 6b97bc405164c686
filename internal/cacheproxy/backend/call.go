// Package backend owns a pool's cache servers: key placement over the live
// ones, pipelined and batched connections, failure counting, ejection and
// background probes, and the in-order reply queue of a client connection.
package backend

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Call is one request to one server and, once done, its raw reply.
type Call struct {
	Req   []byte // request bytes, written as they are
	Kind  uint8  // the reply's shape, for the codec
	Reply []byte // raw reply bytes
	Err   error
	// Server is where the call went; the protocol layer reads it to merge
	// multi-server replies.
	Server *Server

	// Parts is where each part of a merged call lies in Reply: start and
	// end offsets, 2 per part, -1 for a part the reply has no answer for.
	Parts []int

	hash  uint32 // picks one of the server's connections
	start time.Time
	done  chan struct{}
	group *sync.WaitGroup // the client batch's, when sent with one
	slot  *slot           // the client request it is part of, under ServeClient
	// A merged call answers several requests, each holding a reference.
	merger  Merger
	waiters []waiter
	nparts  int
	groups  int // waiters with a wait group
	refs    atomic.Int32
}

var callPool = sync.Pool{New: func() any { return &Call{done: make(chan struct{}, 1)} }}

// NewCall returns a cleared call from a pool.
func NewCall() *Call {
	c := callPool.Get().(*Call)
	c.refs.Store(1)
	return c
}

// Release returns c to the pool; c must not be used after.
func (c *Call) Release() {
	if c.refs.Add(-1) > 0 {
		return // another request of a merged call still reads it
	}
	if cap(c.Req) > 1<<16 {
		c.Req = nil
	}
	if cap(c.Reply) > 1<<16 {
		c.Reply = nil
	}
	c.Req, c.Reply = c.Req[:0], c.Reply[:0]
	c.Err, c.Server, c.Kind, c.hash, c.group, c.slot = nil, nil, 0, 0, nil, nil
	clear(c.waiters)
	c.waiters, c.Parts, c.merger, c.nparts, c.groups = c.waiters[:0], c.Parts[:0], nil, 0, 0
	callPool.Put(c)
}

// Wait blocks until the call has its reply or its error. A call sent in
// a client batch waits for the whole batch: one wake-up per batch, not one
// per call. Under ServeClient a reply is written only once all its calls
// are done, so there is nothing to wait for.
func (c *Call) Wait() {
	if c.slot != nil {
		return
	}
	if len(c.waiters) > 0 {
		// Merged: the requests it answers were each sent in a batch; under
		// ServeClient, in none that needs waiting for.
		if c.groups > 0 {
			for _, w := range c.waiters {
				if w.wg != nil {
					w.wg.Wait()
				}
			}
		}
		return
	}
	if c.group != nil {
		c.group.Wait()
		return
	}
	<-c.done
}

func (c *Call) finish(err error) {
	c.Err = err
	if ws := c.waiters; len(ws) > 0 {
		if err == nil && c.merger != nil {
			c.merger.Split(c)
		}
		// c may be released once the last waiter is told.
		for i, n := 0, len(ws); i < n; i++ {
			if w := ws[i]; w.slot != nil {
				w.slot.callDone()
			} else {
				w.wg.Done()
			}
		}
		return
	}
	if s := c.slot; s != nil {
		// c may be released by the time callDone returns.
		s.callDone()
		return
	}
	if c.group != nil {
		c.group.Done()
		return
	}
	c.done <- struct{}{}
}

// Errors a call can end with; each is also a metrics kind.
var (
	ErrDown     = errors.New("server is down")
	ErrNoServer = errors.New("no live server in the pool")
	ErrClosed   = errors.New("server removed from the pool")
	ErrProtocol = errors.New("malformed reply from server")
)

// errKind names an error for the errors_total metric.
func errKind(err error) string {
	var te interface{ Timeout() bool }
	switch {
	case errors.Is(err, ErrDown):
		return "down"
	case errors.Is(err, ErrClosed):
		return "closed"
	case errors.Is(err, ErrProtocol):
		return "protocol"
	case errors.As(err, &te) && te.Timeout():
		return "timeout"
	case errors.Is(err, errDial):
		return "connect"
	}
	return "connection"
}

var errDial = errors.New("connect")

type dialError struct{ err error }

func (e dialError) Error() string   { return e.err.Error() }
func (e dialError) Unwrap() []error { return []error{errDial, e.err} }
