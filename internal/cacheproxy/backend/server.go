package backend

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
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
	if b.slot != nil {
		c.slot = b.slot
		b.slot.left.Add(1)
	} else {
		c.group = &b.wg
		b.wg.Add(1)
	}
	c.Server = s
	c.hash = hash
	c.start = time.Now()
	s.m.inflight.Inc()
	if s.down.Load() && s.opts.policy == config.Mcrouter {
		s.complete(c, ErrDown)
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
	slot  *slot // the request being read, under ServeClient
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

// complete finishes c and accounts for it.
func (s *Server) complete(c *Call, err error) {
	var now time.Time
	if err == nil {
		now = time.Now()
	}
	s.completeAt(c, err, now)
}

// completeAt is complete with the time the reply was read (unused for an
// error), so that a reader takes one clock reading per read from the socket,
// not one per reply.
func (s *Server) completeAt(c *Call, err error, now time.Time) {
	s.m.inflight.Dec()
	s.m.requests.Inc()
	if err != nil {
		s.m.errors(errKind(err)).Inc()
		err = fmt.Errorf("%s: %w", s.Name, err)
	} else {
		s.m.latency.Observe(now.Sub(c.start).Seconds())
	}
	c.finish(err)
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
	s.m.ejections.Inc()
	s.m.live.Set(0)
	s.pool.log.Warn("server down", "pool", s.pool.name, "server", s.Name, "addr", s.Addr,
		"policy", s.opts.policy.String(), "retry_in", s.opts.retry)
	s.pool.rebuild()
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
			s.m.live.Set(1)
			s.pool.log.Info("server back", "pool", s.pool.name, "server", s.Name)
			s.pool.rebuild()
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
// request bytes to the connection's buffer; whoever finds no write in
// progress becomes the writer and keeps writing until the buffer stays
// empty, so requests that arrive during a write go out together in the next
// one (one syscall per batch, no writer goroutine to wake). A reader
// goroutine per connection matches replies to calls in order.
type conn struct {
	srv  *Server
	mu   sync.Mutex
	sess *session
	shut bool
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
	nc       net.Conn
	pending  chan *Call // calls written (or about to be), in order
	buf      []byte     // bytes not yet handed to a write; guarded by conn.mu
	spare    []byte
	flushing bool // a sender is writing; guarded by conn.mu
	broken   atomic.Bool
	err      atomic.Value // the first error, for the calls failed after it
	rdone    chan struct{}
	inflight atomic.Int32 // calls queued and not yet answered
	// The read and write deadline in force (zero: no read deadline), set
	// only when a call needs a later one than it gives (see deadlineSlack):
	// a deadline update is a runtime timer update, too costly to make
	// three times per request at pipeline depth 1. Guarded by conn.mu.
	dl      time.Time
	retired bool // no more calls; guarded by conn.mu
}

// add queues call on the connection, connecting first if needed. It does
// not write: the caller flushes once its whole batch is queued.
func (c *conn) add(call *Call) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut {
		c.srv.complete(call, ErrClosed)
		return false
	}
	s := c.sess
	if s == nil || s.broken.Load() {
		if s != nil {
			s.retire() // its reader fails what is left and exits
		}
		c.sess = nil
		if c.dialErr != nil && time.Since(c.dialFailAt) < dialBackoff {
			// Counted as a failure, as the dial it stands for would be.
			c.srv.complete(call, c.dialErr)
			c.srv.failure()
			return false
		}
		var err error
		s, err = c.connect()
		if err != nil {
			c.dialErr, c.dialFailAt = err, time.Now()
			c.srv.complete(call, err)
			c.srv.failure()
			return false
		}
		c.dialErr = nil
		c.sess = s
	}
	s.buf = append(s.buf, call.Req...)
	s.pending <- call
	s.inflight.Add(1)
	// The deadlines in force must not come before this call's own (the
	// write of its bytes follows); a later one is fine (the slack), and
	// the reader tells a deadline that passed while idle from a timeout
	// (see idleExpiry).
	if d := call.start.Add(c.srv.opts.timeout); s.dl.IsZero() || d.After(s.dl) {
		s.dl = d.Add(deadlineSlack(c.srv.opts.timeout))
		_ = s.nc.SetDeadline(s.dl)
	}
	return true
}

// flush writes what is queued, unless a write is in progress: that writer
// takes these bytes too before it stops.
func (c *conn) flush() {
	c.mu.Lock()
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
		// The write deadline is set by add.
		_, err := s.nc.Write(b)
		c.mu.Lock()
		if cap(b) <= 1<<20 {
			s.spare = b[:0]
		} else {
			s.spare = nil // it is s.buf's array now: never share one
		}
		if err != nil {
			// The reader sees the closed connection and fails every
			// pending call, these included.
			s.fail(err)
			s.buf = s.buf[:0]
			break
		}
	}
	s.flushing = false
	c.mu.Unlock()
}

// preconnect dials at start, for pools with preconnect: true.
func (c *conn) preconnect() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess != nil || c.shut {
		return
	}
	s, err := c.connect()
	if err != nil {
		c.srv.pool.log.Warn("preconnect", "server", c.srv.Name, "err", err)
		c.srv.failure()
		return
	}
	c.sess = s
}

// close stops taking calls and waits until those in flight are answered.
func (c *conn) close() {
	c.mu.Lock()
	c.shut = true
	s := c.sess
	c.sess = nil
	if s != nil {
		s.retire()
	}
	c.mu.Unlock()
	if s != nil {
		<-s.rdone
		s.nc.Close()
	}
}

// connect dials and runs the handshake; c.mu held, so senders to this
// connection wait for it, as their requests could go nowhere else.
func (c *conn) connect() (*session, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.srv.opts.timeout)
	defer cancel()
	nc, err := c.srv.dial(ctx)
	if err != nil {
		return nil, err
	}
	rc := &readCounter{r: nc}
	br := bufio.NewReaderSize(rc, 64<<10)
	if err := nc.SetDeadline(time.Now().Add(c.srv.opts.timeout)); err == nil {
		if err = c.srv.codec.Handshake(nc, br); err != nil {
			nc.Close()
			return nil, dialError{err}
		}
		_ = nc.SetDeadline(time.Time{})
	}
	s := &session{nc: nc, pending: make(chan *Call, 16384), rdone: make(chan struct{})}
	go s.read(c, br, rc)
	return s, nil
}

// readCounter counts the reads from a server connection, so that its
// reader knows when a reply came from a new read.
type readCounter struct {
	r net.Conn
	n int
}

func (c *readCounter) Read(p []byte) (int, error) {
	c.n++
	return c.r.Read(p)
}

// deadlineSlack is how much later than its timeout a call may time out: a
// sender sets a new deadline only when a call needs a later one than this
// slack gave the last, not once per call (each set is a timer update).
func deadlineSlack(timeout time.Duration) time.Duration { return timeout / 16 }

// retire ends the session once its calls are answered; conn.mu held.
func (s *session) retire() {
	s.retired = true
	close(s.pending)
	if s.inflight.Load() == 0 {
		// Wake the idle reader out of its wait on the socket.
		_ = s.nc.SetReadDeadline(time.Now())
	}
}

func (s *session) fail(err error) {
	if s.broken.CompareAndSwap(false, true) {
		s.err.Store(err)
		s.nc.Close()
	}
}

func (s *session) firstErr() error {
	if e, ok := s.err.Load().(error); ok {
		return e
	}
	return ErrClosed
}

// read matches replies to calls. While no call is in flight it waits on
// the socket itself, not on the queue: a reply, a close by the server or a
// deadline set by the sender that ends the idle time wakes it, one wake-up
// per batch instead of two, and a server that closes an idle connection is
// noticed at once instead of by the next request. The senders keep the
// read deadline no earlier than any queued call's (see add).
func (s *session) read(c *conn, br *bufio.Reader, rc *readCounter) {
	defer close(s.rdone)
	srv := c.srv
	var now time.Time
	reads := -1
	for {
		var call *Call
		select {
		case next, ok := <-s.pending:
			if !ok {
				return
			}
			call = next
		default:
		}
		if call == nil {
			if _, err := br.Peek(1); err != nil {
				if s.idleExpiry(c, err) {
					continue
				}
				// Idle, this is retire waking us or the server closing an
				// unused connection: neither is a failure of the server.
				idle := s.inflight.Load() == 0
				s.fail(err)
				if !idle {
					srv.failure()
				}
				s.drain(srv)
				return
			}
			next, ok := <-s.pending
			if !ok {
				return
			}
			call = next
		}
		if s.broken.Load() {
			srv.complete(call, s.firstErr())
			s.inflight.Add(-1)
			continue
		}
		if err := srv.codec.ReadReply(br, call); err != nil {
			s.fail(err)
			srv.complete(call, err)
			srv.failure()
			s.inflight.Add(-1)
			s.drain(srv)
			return
		}
		if rc.n != reads {
			reads, now = rc.n, time.Now()
		}
		srv.ok()
		srv.completeAt(call, nil, now)
		s.inflight.Add(-1)
	}
}

// idleExpiry reports whether err, from the reader's wait for a reply, is
// no timeout of a call: the read deadline passed while no call was in
// flight (then it is cleared), or a sender has set a later one since. A
// deadline that passes with a call in flight has passed that call's own.
func (s *session) idleExpiry(c *conn, err error) bool {
	var te interface{ Timeout() bool }
	if !errors.As(err, &te) || !te.Timeout() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case s.retired:
		return false
	case time.Now().Before(s.dl):
		return true
	case s.inflight.Load() == 0:
		s.dl = time.Time{}
		_ = s.nc.SetReadDeadline(time.Time{})
		return true
	}
	return false
}

// drain fails the calls left on a broken session until it is retired.
func (s *session) drain(srv *Server) {
	for call := range s.pending {
		srv.complete(call, s.firstErr())
		s.inflight.Add(-1)
	}
}
