package backend

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/podkit/podkit/internal/cacheproxy/config"
)

// Codec is what a protocol tells the backend layer.
type Codec interface {
	// ReadReply reads the reply to c from r and appends its raw bytes to
	// c.Reply. An error means the connection is unusable.
	ReadReply(r *bufio.Reader, c *Call) error
	// Handshake runs on every new connection before it carries calls
	// (redis AUTH and SELECT); nil for none.
	Handshake(conn net.Conn, r *bufio.Reader) error
	// Probe checks on a fresh connection that the server answers.
	Probe(conn net.Conn, r *bufio.Reader) error
}

// serverOpts are the pool settings a server's connections follow.
type serverOpts struct {
	timeout      time.Duration
	conns        int
	failureLimit int
	retry        time.Duration
	policy       config.FailurePolicy
	autoEject    bool
	preconnect   bool
}

// defaultTimeout bounds a reply when the pool sets no timeout: nutcracker
// would wait forever, which turns a frozen server into a frozen client.
const defaultTimeout = 10 * time.Second

func optsOf(p *config.Pool) serverOpts {
	o := serverOpts{
		timeout:      p.Timeout,
		conns:        p.ServerConnections,
		failureLimit: p.ServerFailureLimit,
		retry:        p.ServerRetryTimeout,
		policy:       p.FailurePolicy,
		autoEject:    p.AutoEjectHosts,
		preconnect:   p.Preconnect,
	}
	if o.timeout <= 0 {
		o.timeout = defaultTimeout
	}
	if o.conns < 1 {
		o.conns = 1
	}
	if o.failureLimit < 1 {
		o.failureLimit = 1
	}
	if o.retry <= 0 {
		o.retry = time.Second
	}
	return o
}

// Server is one cache server of a pool.
type Server struct {
	Addr string // dialled by name on every connect, so a moved pod is found
	Name string // ketama name and metrics label

	opts  serverOpts
	codec Codec
	pool  *Pool
	m     *serverMetrics
	conns []*conn

	failures atomic.Int32
	down     atomic.Bool // ejected (twemproxy) or marked down (mcrouter)
	probing  atomic.Bool

	quit chan struct{}
	wg   sync.WaitGroup // probe goroutine
}

func newServer(p *Pool, s config.Server, opts serverOpts) *Server {
	srv := &Server{Addr: s.Addr, Name: s.Name, opts: opts, codec: p.codec, pool: p, quit: make(chan struct{})}
	srv.m = p.metrics.server(p.name, s.Name)
	for range opts.conns {
		srv.conns = append(srv.conns, &conn{srv: srv})
	}
	if opts.preconnect {
		srv.wg.Add(1)
		go func() {
			defer srv.wg.Done()
			for _, c := range srv.conns {
				c.preconnect()
			}
		}()
	}
	return srv
}

// Live reports whether the server takes requests.
func (s *Server) Live() bool { return !s.down.Load() }

// Do queues c for the server in batch b; it goes out when b is flushed,
// and completes asynchronously (c.Wait). The key's hash picks one of the
// server's connections, so one key's requests stay in order even with
// server_connections > 1.
func (s *Server) Do(c *Call, hash uint32, b *Batch) {
	w := b.hold()
	c.slot, c.group = w.slot, w.wg
	c.Server = s
	c.hash = hash
	c.start = b.time()
	s.m.inflight.Inc()
	if s.down.Load() && s.opts.policy == config.Mcrouter {
		s.failCall(c, ErrDown)
		return
	}
	cn := s.conns[int(hash%uint32(len(s.conns)))]
	if cn.add(c) {
		b.mark(cn)
	}
}

// Batch collects the connections a client's requests were queued on, so
// that each gets one write per batch of requests, and counts the calls
// still in flight. It is reused batch after batch by one client.
type Batch struct {
	conns []*conn
	wg    sync.WaitGroup
	slot  *slot     // the request being read, under ServeClient
	now   time.Time // when a loop read the batch's requests; zero: ask the clock
}

// hold counts one more call or merged call that the request being read
// (or, outside ServeClient, the batch) waits for.
func (b *Batch) hold() waiter {
	if b.slot != nil {
		b.slot.left.Add(1)
		return waiter{slot: b.slot}
	}
	b.wg.Add(1)
	return waiter{wg: &b.wg}
}

// time is when the batch's requests were read: one clock reading per
// loop round, not one per request.
func (b *Batch) time() time.Time {
	if b.now.IsZero() {
		return time.Now()
	}
	return b.now
}

// Wait blocks until every call of the batch is done.
func (b *Batch) Wait() { b.wg.Wait() }

func (b *Batch) mark(c *conn) {
	for _, x := range b.conns {
		if x == c {
			return
		}
	}
	b.conns = append(b.conns, c)
}

// Flush writes every connection of the batch.
func (b *Batch) Flush() {
	for i, c := range b.conns {
		c.flush()
		b.conns[i] = nil
	}
	b.conns = b.conns[:0]
}

// failCall finishes c with err and accounts for it; answered finishes the
// calls that got their replies.
func (s *Server) failCall(c *Call, err error) {
	s.m.inflight.Dec()
	s.m.requests.Inc()
	s.m.errors(errKind(err)).Inc()
	c.finish(fmt.Errorf("%s: %w", s.Name, err))
}

// answered completes calls answered by one read at now, counting them
// together.
func (s *Server) answered(calls []*Call, now time.Time) {
	s.m.inflight.Sub(float64(len(calls)))
	s.m.requests.Add(float64(len(calls)))
	// Calls sent in one round share their start, and so their latency.
	var start time.Time
	var lat float64
	for _, c := range calls {
		if c.start != start {
			start, lat = c.start, now.Sub(c.start).Seconds()
		}
		s.m.latency.Observe(lat)
		c.finish(nil)
	}
}

func (s *Server) ok() {
	if s.failures.Load() != 0 {
		s.failures.Store(0)
	}
}

// failure counts a connection failure and takes the server out when the
// policy says so.
func (s *Server) failure() {
	n := s.failures.Add(1)
	if int(n) < s.opts.failureLimit {
		return
	}
	if s.opts.policy == config.Twemproxy && !s.opts.autoEject {
		return
	}
	if !s.down.CompareAndSwap(false, true) {
		return
	}
	// The ring first, then the metrics: whoever sees them has the new ring.
	s.pool.rebuild()
	s.m.ejections.Inc()
	s.m.live.Set(0)
	s.pool.log.Warn("server down", "pool", s.pool.name, "server", s.Name, "addr", s.Addr,
		"policy", s.opts.policy.String(), "retry_in", s.opts.retry)
	s.startProbe()
}

// startProbe checks the server in the background every retry timeout and
// puts it back only once it answers: unlike nutcracker, no client request
// is spent finding out that it is still dead.
func (s *Server) startProbe() {
	if !s.probing.CompareAndSwap(false, true) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer s.probing.Store(false)
		t := time.NewTimer(s.opts.retry)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-t.C:
			}
			if err := s.probe(); err != nil {
				s.pool.log.Debug("probe failed", "pool", s.pool.name, "server", s.Name, "err", err)
				t.Reset(s.opts.retry)
				continue
			}
			s.failures.Store(0)
			s.down.Store(false)
			s.pool.rebuild()
			s.m.live.Set(1)
			s.pool.log.Info("server back", "pool", s.pool.name, "server", s.Name)
			return
		}
	}()
}

func (s *Server) probe() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.timeout)
	defer cancel()
	nc, err := s.dial(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(s.opts.timeout))
	br := bufio.NewReaderSize(nc, 4096)
	if err := s.codec.Handshake(nc, br); err != nil {
		return err
	}
	return s.codec.Probe(nc, br)
}

func (s *Server) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: s.opts.timeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return nil, dialError{err}
	}
	return nc, nil
}

// close stops the server's connections after their queued calls are done.
func (s *Server) close() {
	close(s.quit)
	for _, c := range s.conns {
		c.close()
	}
	s.wg.Wait()
}

// conn is one of a server's shared connections. Senders append their
// request bytes to the connection's buffer and mark it in their batch;
// flushing the batch writes everything queued, so requests from many
// clients go out in one write. An event loop reads the replies and matches
// them to the calls in order.
type conn struct {
	srv  *Server
	mu   sync.Mutex
	sess *session
	open *Call // a merged call still taking keys (see Merger)
	shut bool
	// A dial in progress and the calls waiting for it.
	dialing bool
	waiting []*Call
	// The last failed dial: for a short while calls fail with its error at
	// once instead of queueing behind one dial timeout after another (an
	// unreachable host drops SYNs; each dial would wait the full timeout).
	dialErr    error
	dialFailAt time.Time
}

// dialBackoff is how long a failed dial answers for the connection.
const dialBackoff = 250 * time.Millisecond

// session is one TCP connection's life.
type session struct {
	watch
	c  *conn
	nc net.Conn
	fd int

	// Guarded by conn.mu.
	q        []*Call // calls written (or about to be), in order; q[head] is the oldest
	head     int
	buf      []byte // bytes not yet handed to a write
	spare    []byte
	flushing bool // a write is in progress
	retired  bool // no more calls: close once the queue is empty
	timer    *time.Timer
	timing   bool // the timer is armed

	broken atomic.Bool
	err    atomic.Value // the first error, for the calls failed after it
	rdone  chan struct{}

	// Used by the goroutine handling the session in a round (the loop or a
	// helper, never two at once).
	in   []byte
	src  sliceReader
	br   *bufio.Reader
	done []*Call // completed by the last read, to finish outside conn.mu
}

// add queues call on the connection, connecting first if needed. It does
// not write: the caller flushes once its whole batch is queued.
func (c *conn) add(call *Call) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seal()
	return c.addLocked(call)
}

// addLocked is add with c.mu held.
func (c *conn) addLocked(call *Call) bool {
	if c.shut {
		c.srv.failCall(call, ErrClosed)
		return false
	}
	s := c.sess
	if s == nil || s.broken.Load() {
		if s != nil {
			s.retire()
		}
		c.sess = nil
		if c.dialErr != nil && time.Since(c.dialFailAt) < dialBackoff {
			// Counted as a failure, as the dial it stands for would be.
			c.srv.failCall(call, c.dialErr)
			c.srv.failure()
			return false
		}
		// Dial in the background: an event loop must not wait for a
		// server that drops SYNs. Calls wait for the dial.
		c.waiting = append(c.waiting, call)
		if !c.dialing {
			c.dialing = true
			c.srv.wg.Add(1)
			go func() {
				defer c.srv.wg.Done()
				c.dial()
			}()
		}
		return false
	}
	s.queue(call, c.srv.opts.timeout)
	return true
}

// queue appends call to the session's queue and bytes; conn.mu held.
func (s *session) queue(call *Call, timeout time.Duration) {
	s.buf = append(s.buf, call.Req...)
	s.q = append(s.q, call)
	if !s.timing {
		s.timing = true
		s.timer.Reset(timeout)
	}
}

// dial connects for the calls waiting and sends them, or fails them with
// the dial's error, which it returns; c.dialing is set.
func (c *conn) dial() error {
	s, err := c.connect()
	c.mu.Lock()
	c.dialing = false
	waiting := c.waiting
	c.waiting = nil
	if err == nil && c.shut {
		s.retire()
		err = ErrClosed
	}
	if err != nil {
		if err != ErrClosed {
			c.dialErr, c.dialFailAt = err, time.Now()
			c.srv.failure()
		}
		c.mu.Unlock()
		for _, call := range waiting {
			c.srv.failCall(call, err)
		}
		return err
	}
	c.dialErr = nil
	c.sess = s
	for _, call := range waiting {
		s.queue(call, c.srv.opts.timeout)
	}
	c.mu.Unlock()
	c.flush()
	return nil
}

// flush writes what is queued, unless a write is in progress: that writer
// takes these bytes too before it stops. It never waits for the socket:
// what the socket does not take at once is written by a goroutine of its
// own, so an event loop is never held by a slow server.
func (c *conn) flush() {
	c.mu.Lock()
	c.seal()
	s := c.sess
	if s == nil || s.flushing || len(s.buf) == 0 {
		c.mu.Unlock()
		return
	}
	s.flushing = true
	for len(s.buf) > 0 {
		b := s.buf
		s.buf = s.spare[:0]
		c.mu.Unlock()
		n, err := s.tryWrite(b)
		if err == nil && n < len(b) {
			go c.writeRest(s, b, n)
			return
		}
		c.mu.Lock()
		s.recycle(b, err)
	}
	s.flushing = false
	c.mu.Unlock()
}

// writeRest writes b[n:] and then whatever was queued meanwhile, waiting
// for the socket up to the pool's timeout.
func (c *conn) writeRest(s *session, b []byte, n int) {
	_ = s.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.timeout))
	_, err := s.nc.Write(b[n:])
	c.mu.Lock()
	s.recycle(b, err)
	for err == nil && len(s.buf) > 0 {
		b = s.buf
		s.buf = s.spare[:0]
		c.mu.Unlock()
		_ = s.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.timeout))
		_, err = s.nc.Write(b)
		c.mu.Lock()
		s.recycle(b, err)
	}
	s.flushing = false
	c.mu.Unlock()
}

// recycle keeps a written buffer as the spare and fails the session on a
// write error; conn.mu held.
func (s *session) recycle(b []byte, err error) {
	s.spare = spareOf(b)
	if err != nil {
		// The loop sees the connection end and fails every queued call,
		// these included.
		s.fail(err)
		s.buf = s.buf[:0]
	}
}

// tryWrite writes b as far as the socket takes it without waiting.
func (s *session) tryWrite(b []byte) (int, error) {
	var n int
	var err error
	cerr := s.rc.Write(func(fd uintptr) bool {
		n, err = writeFD(int(fd), b)
		return true
	})
	if err == nil {
		err = cerr
	}
	return n, err
}

// preconnect dials at start, for pools with preconnect: true.
func (c *conn) preconnect() {
	c.mu.Lock()
	if c.sess != nil || c.shut || c.dialing {
		c.mu.Unlock()
		return
	}
	c.dialing = true
	c.mu.Unlock()
	if err := c.dial(); err != nil && err != ErrClosed {
		c.srv.pool.log.Warn("preconnect", "server", c.srv.Name, "err", err)
	}
}

// close stops taking calls and waits until those in flight are answered.
func (c *conn) close() {
	c.mu.Lock()
	c.seal()
	c.shut = true
	s := c.sess
	c.sess = nil
	if s != nil {
		s.retire()
	}
	c.mu.Unlock()
	if s != nil {
		<-s.rdone
	}
}

// connect dials, runs the handshake and hands the connection's replies to
// an event loop.
func (c *conn) connect() (*session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.opts.timeout)
	defer cancel()
	nc, err := c.srv.dial(ctx)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 4096)
	if err := nc.SetDeadline(time.Now().Add(c.srv.opts.timeout)); err == nil {
		if err = c.srv.codec.Handshake(nc, br); err != nil {
			nc.Close()
			return nil, dialError{err}
		}
		_ = nc.SetDeadline(time.Time{})
	}
	s := &session{c: c, nc: nc, rdone: make(chan struct{})}
	if sc, ok := nc.(syscall.Conn); ok {
		s.watch.rc, err = sc.SyscallConn()
	}
	if s.watch.rc == nil {
		nc.Close()
		return nil, dialError{fmt.Errorf("connection has no socket: %v", err)}
	}
	// Only the loop reads the descriptor itself, and only the loop closes
	// it (see end); writes from elsewhere go through the runtime's guard.
	_ = s.rc.Control(func(fd uintptr) { s.fd = int(fd) })
	// Bytes the handshake read past its replies belong to no call: the
	// loop reports them as a protocol error.
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		s.in = append(s.in, b...)
	}
	s.br = bufio.NewReaderSize(&s.src, 16<<10)
	s.timer = time.AfterFunc(time.Hour, s.expire)
	s.timer.Stop()
	leftover := len(s.in) > 0
	l, err := pickLoop()
	if err == nil {
		err = l.add(s)
	}
	if err != nil {
		nc.Close()
		return nil, dialError{err}
	}
	if leftover {
		l.schedule(s)
	}
	return s, nil
}

// expire fails the session when its oldest call has waited for its reply
// longer than the pool's timeout, and otherwise checks again when it will
// have.
func (s *session) expire() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.head == len(s.q) {
		s.timing = false
		return
	}
	timeout := c.srv.opts.timeout
	if left := timeout - time.Since(s.q[s.head].start); left > 0 {
		s.timer.Reset(left)
		return
	}
	s.timing = false
	s.fail(fmt.Errorf("no reply within %s: %w", timeout, os.ErrDeadlineExceeded))
}

// serverReadSize is the least free space a read from a server is given.
const serverReadSize = 64 << 10

// readable reads the server's replies and completes their calls; the
// loop's or a helper's, one at a time. A reply that has not all arrived is read again,
// from its start, once more bytes have.
func (s *session) readable(read bool, _ *Batch) {
	c := s.c
	srv := c.srv
	eof := false
	if read {
		if cap(s.in)-len(s.in) < serverReadSize {
			s.in = makeRoom(s.in, 0, serverReadSize, 0)
		}
		s.in, eof = readFD(s.fd, s.in)
	}
	var perr error
	off := 0
	c.mu.Lock()
	s.src.b = s.in
	s.br.Reset(&s.src)
	for s.head < len(s.q) && off < len(s.in) {
		call := s.q[s.head]
		mark := len(call.Reply)
		err := srv.codec.ReadReply(s.br, call)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			call.Reply = call.Reply[:mark]
			break
		}
		if err != nil {
			perr = err
			break
		}
		off = len(s.in) - len(s.src.b) - s.br.Buffered()
		s.q[s.head] = nil
		s.head++
		s.done = append(s.done, call)
	}
	if perr == nil && s.head == len(s.q) && off < len(s.in) && !s.broken.Load() {
		perr = fmt.Errorf("%w: %d bytes no request asked for", ErrProtocol, len(s.in)-off)
	}
	s.q, s.head = compactQueue(s.q, s.head)
	idle := s.head == len(s.q)
	end := eof || perr != nil || (s.retired && idle)
	c.mu.Unlock()
	s.src.b = nil
	s.in = consume(s.in, off)
	if len(s.done) > 0 {
		srv.ok()
		srv.answered(s.done, time.Now())
		clear(s.done)
		s.done = s.done[:0]
	}
	if !end {
		return
	}
	switch {
	case perr != nil:
		s.fail(perr)
		srv.failure()
	case eof && !idle:
		s.fail(io.ErrUnexpectedEOF)
		srv.failure()
	default:
		// Idle: retired, or the server closed an unused connection;
		// neither is a failure of the server.
		s.fail(ErrClosed)
	}
	s.end()
}

// end fails the calls still queued and lets go of the connection; the
// loop's or a helper's, one at a time.
func (s *session) end() {
	c := s.c
	s.loop.remove(s)
	c.mu.Lock()
	s.retired = true
	left := s.q[s.head:]
	s.q, s.head = nil, 0
	s.timer.Stop()
	c.mu.Unlock()
	for _, call := range left {
		c.srv.failCall(call, s.firstErr())
	}
	s.nc.Close()
	close(s.rdone)
}

// retire ends the session once its calls are answered; conn.mu held.
func (s *session) retire() {
	s.retired = true
	if s.head == len(s.q) {
		// Wake the loop to let go of the idle connection.
		s.fail(ErrClosed)
	}
}

// fail marks the session broken and shuts its socket down, which the loop
// sees as its end.
func (s *session) fail(err error) {
	if s.broken.CompareAndSwap(false, true) {
		s.err.Store(err)
		_ = s.rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
	}
}

func (s *session) firstErr() error {
	if e, ok := s.err.Load().(error); ok {
		return e
	}
	return ErrClosed
}
