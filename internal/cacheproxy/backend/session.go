package backend

import (
	"bufio"
	"fmt"
	"io"
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

// FrameFunc measures the request at the start of b without reading it. n
// > 0 is its length once all of it is in b; n == 0 asks for more bytes,
// and need > len(b), when known, is how many the request takes in all.
// skip is how many bytes after the request to drop unread (a value too
// large to take). A request that could never fit is an error, which ends
// the connection. Frame must never call a request whole that NextFunc
// would read past: the reader NextFunc gets holds exactly the n bytes.
type FrameFunc func(b []byte) (n, need, skip int, err error)

// Protocol reads one client connection's requests.
type Protocol struct {
	Frame FrameFunc
	Next  NextFunc
	// Refuse is the reply to a request Frame rejects; nil for none.
	Refuse func(err error) []byte
}

// rawReply is a reply made before any call.
type rawReply []byte

func (r rawReply) WriteReply(w *bufio.Writer) { w.Write(r) }

// clientWriteTimeout drops a client that stops reading its replies; reads
// have no deadline, as an idle client may keep its connection.
const clientWriteTimeout = 60 * time.Second

// ClientLimits bound what one client connection holds at a time.
type ClientLimits struct {
	Depth int   // requests read before their replies are written
	Bytes int64 // request bytes read before the replies are written
}

// ServeClient runs one client connection until it ends. An event loop
// (see loop) reads the client's requests once they are whole and sends
// each to its server at once; it does not wait for the replies. Whoever
// completes the request at the head of the client's queue (usually the
// goroutine reading a server's replies) writes the replies that are ready,
// in request order, and flushes them once the queue is empty. When done
// closes, the requests already read are answered and the connection
// closes. start receives the reader the requests are read from and returns
// the protocol.
func ServeClient(nc net.Conn, limits ClientLimits, done <-chan struct{}, start func(br *bufio.Reader) Protocol) {
	defer nc.Close()
	cl := newClient(nc)
	if cl.rc == nil {
		return // not a socket: nothing here makes one
	}
	cl.limits = limits
	cl.br = bufio.NewReaderSize(&cl.src, 16<<10)
	cl.proto = start(cl.br)
	cl.ended = make(chan struct{})
	l, err := pickLoop()
	if err != nil {
		return
	}
	// The loop reads and the reply writers write the descriptor itself:
	// it stays open until the loop has let go and every reply is written
	// (see below), so nothing can close it under them.
	_ = cl.rc.Control(func(fd uintptr) { cl.fd = int(fd) })
	if err := l.add(cl); err != nil {
		return
	}
	select {
	case <-done:
		// Ends the reading; what was read still gets its reply.
		cl.shutdown(syscall.SHUT_RD)
		<-cl.ended
	case <-cl.ended:
	}
	cl.finish()
	cl.wg.Wait()
}

// sliceReader is the source of a client's bufio.Reader: the whole
// requests the loop found in the client's input.
type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// readSize is the least free space a read from a client is given.
const readSize = 16 << 10

// readable reads what the client sent and handles its whole requests; the
// loop's or a helper's, one at a time. read is false for a client resumed with input
// still held.
func (cl *client) readable(read bool, b *Batch) {
	if read && !cl.eof {
		if cap(cl.in)-len(cl.in) < readSize || cl.need > cap(cl.in)-cl.off {
			cl.in, cl.off = makeRoom(cl.in, cl.off, readSize, cl.need), 0
		}
		cl.in, cl.eof = readFD(cl.fd, cl.in)
	}
	l := cl.loop
	cl.mu.Lock()
	cl.holding = true
	cl.mu.Unlock()
	end, full := false, false
	for !end {
		if cl.skip > 0 {
			k := min(cl.skip, len(cl.in)-cl.off)
			cl.skip -= k
			cl.off += k
			if cl.skip > 0 {
				break
			}
		}
		rest := cl.in[cl.off:]
		if len(rest) == 0 || len(rest) < cl.need {
			break
		}
		n, need, skip, err := cl.proto.Frame(rest)
		if err != nil {
			// Answered with the protocol's error reply, then closed: what
			// follows cannot be told apart from the request's rest.
			if cl.proto.Refuse != nil {
				cl.enqueue(cl.newSlot(), rawReply(cl.proto.Refuse(err)), 0)
			}
			end = true
			break
		}
		if n == 0 {
			cl.need = need
			break
		}
		cl.need = 0
		cl.src.b = rest[:n]
		s := cl.newSlot()
		b.slot = s
		p, quit, err := cl.proto.Next(b)
		b.slot = nil
		if left := len(cl.src.b) + cl.br.Buffered(); left != 0 && err == nil {
			// Read less than was framed: frame the rest anew.
			n -= left
			cl.br.Reset(&cl.src)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = fmt.Errorf("request framed at %d bytes read past its end", n)
		}
		cl.src.b = nil
		cl.off += n
		cl.skip = skip
		if p == nil && s.left.Load() != 1 {
			// Calls were sent without a reply to write them: they still
			// hold the slot, which must stay queued until they are done.
			p = noReply{}
		}
		over := false
		if p != nil {
			over = cl.enqueue(s, p, int64(n+skip))
		} else {
			s.cl = nil
			slotPool.Put(s)
		}
		end = err != nil || quit
		if !end && over {
			full = true
			break
		}
	}
	cl.in, cl.off = consume(cl.in, cl.off), 0
	cl.mu.Lock()
	cl.holding = false
	if cl.head == len(cl.q) && cl.bw.Buffered() > 0 {
		_ = cl.bw.Flush()
	}
	if !end && cl.err != nil {
		end = true
	}
	if !end && cl.eof && !full && !cl.over() {
		// Every whole request is read: what is left never will be one.
		end = true
	}
	switch {
	case end:
	case cl.over():
		if !cl.paused {
			cl.paused = true
			l.watch(cl, false)
		}
	case full:
		// Replies went out since the limit stopped the reading: the
		// requests still held are read in the loop's next round.
		l.schedule(cl)
	}
	cl.mu.Unlock()
	if end {
		l.remove(cl)
		close(cl.ended)
	}
}

// over reports whether the client holds as much unanswered as it may;
// cl.mu held.
func (cl *client) over() bool {
	return len(cl.q)-cl.head >= cl.limits.Depth || cl.qbytes >= cl.limits.Bytes || len(cl.backlog) >= backlogLimit
}

// resume restarts reading a paused client once it is under its limits, or
// failed (so that the loop sees the end); cl.mu held.
func (cl *client) resume() {
	if !cl.paused || (cl.err == nil && cl.over()) {
		return
	}
	cl.paused = false
	cl.loop.watch(cl, true)
	cl.loop.schedule(cl)
}

// shutdown shuts the socket down in direction how.
func (cl *client) shutdown(how int) {
	_ = cl.rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), how) })
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
	nc net.Conn
	fd int

	// The reading side: the loop's or a helper's, one at a time.
	watch
	limits ClientLimits
	proto  Protocol
	br     *bufio.Reader // reads src
	src    sliceReader
	in     []byte // bytes read from the socket
	off    int    // in[:off] is handled
	need   int    // the request at off needs this many bytes in all
	skip   int    // bytes to drop unread
	eof    bool   // the socket read its end (or failed)
	ended  chan struct{}

	mu      sync.Mutex
	cond    sync.Cond     // the queue shrank or the flusher stopped
	bw      *bufio.Writer // writes to the socket without blocking (sockWriter)
	q       []*slot       // requests whose replies are not written yet
	head    int
	qbytes  int64 // request bytes of q
	holding bool  // the loop is reading the client's requests, and flushes after
	paused  bool  // reading stopped until the client is under its limits
	backlog []byte
	spare   []byte
	flusher bool  // a goroutine is writing backlog
	err     error // the connection failed: replies are dropped

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

// newSlot returns a slot for the client's next request, held until the
// request is queued (enqueue drops the hold).
func (cl *client) newSlot() *slot {
	s := slotPool.Get().(*slot)
	s.cl = cl
	s.left.Store(1)
	return s
}

func newClient(nc net.Conn) *client {
	cl := &client{nc: nc}
	cl.cond.L = &cl.mu
	if sc, ok := nc.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			cl.rc = rc
		}
	}
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
// It reports whether the client is now over its limits.
func (cl *client) enqueue(s *slot, p Pending, size int64) bool {
	s.p, s.size = p, size
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.q = append(cl.q, s)
	cl.qbytes += size
	cl.holding = true
	if s.left.Add(-1) == 0 {
		s.done = true
		cl.drain()
	}
	return cl.over()
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
	cl.q, cl.head = compactQueue(cl.q, cl.head)
	cl.cond.Broadcast()
	cl.resume()
	// With requests still out, their completion flushes; mid-batch, the
	// loop does: replies go out in as few writes as they can.
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
	case cl.flusher:
		cl.backlog = append(cl.backlog, p...)
		cl.startFlusher()
	default:
		n, err := writeFD(cl.fd, p)
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

// fail drops the connection after a write error; cl.mu held.
func (cl *client) fail(err error) {
	if cl.err == nil {
		cl.err = err
		cl.backlog = nil
		// The loop reads the end, and the connection closes once every
		// reply is accounted for.
		cl.shutdown(syscall.SHUT_RDWR)
		cl.cond.Broadcast()
		cl.resume()
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
		cl.spare = spareOf(b)
		if err != nil {
			cl.fail(err)
		}
	}
	cl.flusher = false
	cl.cond.Broadcast()
	cl.resume()
}

// spareOf is what to keep of a written buffer for the next batch of bytes:
// its array, emptied, unless the array is large, which is let go (a burst
// must not pin it, and it must never be shared with the live buffer).
func spareOf(b []byte) []byte {
	if cap(b) <= 1<<20 {
		return b[:0]
	}
	return nil
}
