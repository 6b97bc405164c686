package backend

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Pending is a client request whose reply is on its way.
type Pending interface {
	// WriteReply waits for the request's calls, writes its reply to w (a
	// failed w swallows it) and releases the calls.
	WriteReply(w *bufio.Writer)
}

// NextFunc reads one request from the client and sends it on. It returns
// the pending reply (nil for none), whether the client quit, and an error
// that ends the connection (after the replies read so far are written).
type NextFunc func(b *Batch) (p Pending, quit bool, err error)

// clientWriteTimeout drops a client that stops reading its replies; reads
// have no deadline, as an idle client may keep its connection.
const clientWriteTimeout = 60 * time.Second

// ClientLimits bound what one client connection holds at a time.
type ClientLimits struct {
	Depth int   // requests read before their replies are written
	Bytes int64 // request bytes read before the replies are written
}

// countingReader counts the bytes read from a connection.
type countingReader struct {
	r net.Conn
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ServeClient runs one client connection. One goroutine reads the
// client's requests and sends each to its server at once, batching the
// writes of everything the client has already sent (within limits); it
// does not wait for the replies. Whoever completes the request at the head
// of the client's queue (usually the goroutine reading a server's replies)
// writes the replies that are ready, in request order, and flushes them
// once the queue is empty: a request costs no goroutine wake-up besides the
// reads, as on nutcracker's event loop. When done closes, the requests
// already read are answered and the connection closes. start receives the
// connection's reader and returns the protocol's request reader.
func ServeClient(nc net.Conn, limits ClientLimits, done <-chan struct{}, start func(br *bufio.Reader) NextFunc) {
	cr := &countingReader{r: nc}
	br := bufio.NewReaderSize(cr, 64<<10)
	cl := newClient(nc)
	next := start(br)
	stop := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case <-done:
			// Wake a blocked read; what was read still gets its reply.
			if cr, ok := nc.(interface{ CloseRead() error }); ok {
				_ = cr.CloseRead()
			} else {
				nc.Close()
			}
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		<-exited
		cl.finish()
		nc.Close()
		cl.wg.Wait()
	}()
	var out Batch
	var last, batchStart int64
	inBatch := 0
	for {
		s := slotPool.Get().(*slot)
		s.cl = cl
		s.left.Store(1) // held until the request is queued
		out.slot = s
		p, quit, err := next(&out)
		out.slot = nil
		if p == nil && s.left.Load() != 1 {
			// Calls were sent without a reply to write them: they still
			// hold the slot, which must stay queued until they are done.
			p = noReply{}
		}
		if p != nil {
			inBatch++
			cl.enqueue(s, p, cr.n-last)
			last = cr.n
		} else {
			s.cl = nil
			slotPool.Put(s)
		}
		end := err != nil || quit
		if end || br.Buffered() == 0 || inBatch >= limits.Depth || cr.n-batchStart >= limits.Bytes {
			batchStart, inBatch = cr.n, 0
			out.Flush()
			if !cl.endBatch(end, limits) {
				return
			}
		}
	}
}

// noReply is a request that gets no reply.
type noReply struct{}

func (noReply) WriteReply(*bufio.Writer) {}

// backlogLimit bounds the reply bytes a client has not read yet before the
// ambassador stops reading its requests.
const backlogLimit = 4 << 20

// client is the reply side of one client connection: its requests in the
// order they came and the writer their replies go out through.
type client struct {
	nc    net.Conn
	rc    syscall.RawConn // nil: every write goes through the flusher
	rawFn func(fd uintptr) bool

	mu      sync.Mutex
	cond    sync.Cond     // the queue shrank or the flusher stopped
	bw      *bufio.Writer // writes to the socket without blocking (sockWriter)
	q       []*slot       // requests whose replies are not written yet
	head    int
	qbytes  int64 // request bytes of q
	holding bool  // the reading goroutine is mid-batch and flushes at its end
	backlog []byte
	spare   []byte
	flusher bool  // a goroutine is writing backlog
	err     error // the connection failed: replies are dropped
	wb      []byte
	wn      int
	werr    error

	wg sync.WaitGroup // the flusher
}

// slot is one client request: its reply and the calls it still waits for.
type slot struct {
	cl   *client
	p    Pending
	left atomic.Int32
	done bool // guarded by cl.mu
	size int64
}

var slotPool = sync.Pool{New: func() any { return new(slot) }}

func newClient(nc net.Conn) *client {
	cl := &client{nc: nc}
	cl.cond.L = &cl.mu
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			cl.rc = rc
		}
	}
	cl.rawFn = cl.rawWrite
	cl.bw = bufio.NewWriterSize(sockWriter{cl}, 64<<10)
	return cl
}

func (s *slot) callDone() {
	if s.left.Add(-1) == 0 {
		cl := s.cl
		cl.mu.Lock()
		s.done = true
		cl.drain()
		cl.mu.Unlock()
	}
}

// enqueue appends the request read last to the queue and drops its hold.
func (cl *client) enqueue(s *slot, p Pending, size int64) {
	s.p, s.size = p, size
	cl.mu.Lock()
	cl.q = append(cl.q, s)
	cl.qbytes += size
	cl.holding = true
	if s.left.Add(-1) == 0 {
		s.done = true
		cl.drain()
	}
	cl.mu.Unlock()
}

// endBatch ends a batch of requests: it flushes the replies written during
// it and waits while the client has too much unanswered or unread. It
// reports whether to read on.
func (cl *client) endBatch(end bool, limits ClientLimits) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.holding = false
	if cl.head == len(cl.q) && cl.bw.Buffered() > 0 {
		_ = cl.bw.Flush()
	}
	if end {
		return false
	}
	for cl.err == nil && (len(cl.q)-cl.head >= limits.Depth || cl.qbytes >= limits.Bytes || len(cl.backlog) >= backlogLimit) {
		cl.cond.Wait()
	}
	return cl.err == nil
}

// finish waits until every queued reply is written (or dropped).
func (cl *client) finish() {
	cl.mu.Lock()
	for cl.head < len(cl.q) || cl.flusher {
		cl.cond.Wait()
	}
	cl.mu.Unlock()
}

// drain writes the ready replies at the head of the queue; cl.mu held.
func (cl *client) drain() {
	wrote := false
	for cl.head < len(cl.q) && cl.q[cl.head].done {
		s := cl.q[cl.head]
		cl.q[cl.head] = nil
		cl.head++
		s.p.WriteReply(cl.bw)
		cl.qbytes -= s.size
		s.p, s.cl, s.done = nil, nil, false
		slotPool.Put(s)
		wrote = true
	}
	if !wrote {
		return
	}
	switch {
	case cl.head == len(cl.q):
		cl.q, cl.head = cl.q[:0], 0
	case cl.head >= 1024 && 2*cl.head >= len(cl.q):
		n := copy(cl.q, cl.q[cl.head:])
		clear(cl.q[n:])
		cl.q, cl.head = cl.q[:n], 0
	}
	cl.cond.Broadcast()
	// With requests still out, their completion flushes; mid-batch, the
	// reading goroutine does: replies go out in as few writes as they can.
	if cl.head == len(cl.q) && !cl.holding && cl.bw.Buffered() > 0 {
		_ = cl.bw.Flush()
	}
}

// sockWriter writes to the client without blocking (cl.mu held): what the
// socket does not take goes to the backlog, which a flusher goroutine
// writes, so that a client slow to read never stalls a server connection.
type sockWriter struct{ cl *client }

func (w sockWriter) Write(p []byte) (int, error) {
	cl := w.cl
	switch {
	case cl.err != nil:
	case cl.flusher || cl.rc == nil:
		cl.backlog = append(cl.backlog, p...)
		cl.startFlusher()
	default:
		cl.wb, cl.wn, cl.werr = p, 0, nil
		if err := cl.rc.Write(cl.rawFn); err != nil && cl.werr == nil {
			cl.werr = err
		}
		n, err := cl.wn, cl.werr
		cl.wb, cl.werr = nil, nil
		if err != nil {
			cl.fail(err)
			break
		}
		if n < len(p) {
			cl.backlog = append(cl.backlog, p[n:]...)
			cl.startFlusher()
		}
	}
	return len(p), nil
}

// rawWrite is one non-blocking attempt to write cl.wb; it never asks the
// poller to wait.
func (cl *client) rawWrite(fd uintptr) bool {
	for cl.wn < len(cl.wb) {
		n, err := syscall.Write(int(fd), cl.wb[cl.wn:])
		if n > 0 {
			cl.wn += n
		}
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return true
		case err != nil:
			cl.werr = err
			return true
		case n <= 0:
			return true
		}
	}
	return true
}

// fail drops the connection after a write error; cl.mu held.
func (cl *client) fail(err error) {
	if cl.err == nil {
		cl.err = err
		cl.backlog = nil
		cl.nc.Close() // wakes the reading goroutine
		cl.cond.Broadcast()
	}
}

func (cl *client) startFlusher() {
	if cl.flusher {
		return
	}
	cl.flusher = true
	cl.wg.Add(1)
	go cl.flush()
}

// flush writes the backlog with a blocking write, bounded by
// clientWriteTimeout, until it is empty.
func (cl *client) flush() {
	defer cl.wg.Done()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for cl.err == nil && len(cl.backlog) > 0 {
		b := cl.backlog
		cl.backlog = cl.spare[:0]
		cl.mu.Unlock()
		_ = cl.nc.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
		_, err := cl.nc.Write(b)
		// The non-blocking writes that follow must not see a stale deadline.
		_ = cl.nc.SetWriteDeadline(time.Time{})
		cl.mu.Lock()
		if cap(b) <= 1<<20 {
			cl.spare = b[:0]
		} else {
			cl.spare = nil // it is cl.backlog's array now: never share one
		}
		if err != nil {
			cl.fail(err)
		}
	}
	cl.flusher = false
	cl.cond.Broadcast()
}
