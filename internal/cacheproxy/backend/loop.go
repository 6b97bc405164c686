package backend

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// The loop reads the requests of every client connection and the replies
// of every server connection: an epoll instance of its own reports which
// sockets have bytes to read, and the loop's goroutine reads, frames and
// sends the requests of all of them before it writes to the servers once.
// The epoll descriptor itself waits in the Go runtime's poller, so a round
// of ready sockets costs one goroutine wake-up instead of one per socket,
// and requests from many clients share each write to a server, as on
// nutcracker's event loop.
//
// A round with many ready sockets is shared with helper goroutines, one
// per further core GOMAXPROCS gives: under load the ambassador uses every
// core, and when one core keeps up, it alone does the work. (One loop per
// core would split the clients in fixed shares: each loop's rounds would
// be smaller, each would wait and wake more often, and each would write to
// every server, which costs more per request on a box whose cores the
// clients and servers share too.)
type loop struct {
	epfd int
	ep   *os.File
	rc   syscall.RawConn
	wake [2]int // a pipe: a byte on wake[1] makes the loop look at ready

	mu    sync.Mutex
	conns []member // by id; nil when free
	free  []int32
	ready []member // to process without a socket event (resumed with input held)
	woken bool

	batch   Batch
	helpers []*helper
}

// helper handles a share of a round's ready sockets.
type helper struct {
	batch Batch
	share []member // the members handed over, reused
	work  chan []member
	done  chan struct{}
}

func (h *helper) run() {
	for share := range h.work {
		for _, m := range share {
			m.readable(true, &h.batch)
		}
		// A share is large: its requests go to the servers at once, in
		// parallel with the loop's own.
		h.batch.Flush()
		h.done <- struct{}{}
	}
}

// minShare is the fewest ready sockets worth handing to a helper: fewer
// cost less to handle than the helper's wake-up.
const minShare = 16

// A member is a socket a loop reads: a client's, or a server connection's.
type member interface {
	// readable handles what the socket has; read is false when the loop
	// was asked to look at what the member already holds.
	readable(read bool, b *Batch)
	// watched is where the loop keeps the member's registration.
	watched() *watch
}

// watch is a member's registration with its loop.
type watch struct {
	loop *loop
	id   int32
	rc   syscall.RawConn
	gone bool // the loop let go of it (set by whoever handles it, read between rounds)
}

func (w *watch) watched() *watch { return w }

// wakeID is the epoll id of the loop's wake-up pipe.
const wakeID = -1

var (
	loopOnce sync.Once
	theLoop  *loop
	loopErr  error
)

// pickLoop returns the loop, started on first use.
func pickLoop() (*loop, error) {
	loopOnce.Do(func() {
		theLoop, loopErr = newLoop()
		if loopErr != nil {
			return
		}
		for range runtime.GOMAXPROCS(0) - 1 {
			h := &helper{work: make(chan []member), done: make(chan struct{})}
			theLoop.helpers = append(theLoop.helpers, h)
			go h.run()
		}
		go theLoop.run()
	})
	return theLoop, loopErr
}

func newLoop() (*loop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	// Non-blocking, so that os.NewFile hands it to the runtime's poller.
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	l := &loop{epfd: epfd, ep: os.NewFile(uintptr(epfd), "epoll")}
	if l.rc, err = l.ep.SyscallConn(); err != nil {
		l.ep.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	if err := syscall.Pipe2(l.wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		l.ep.Close()
		return nil, fmt.Errorf("pipe: %w", err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: wakeID}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, l.wake[0], &ev); err != nil {
		l.ep.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return l, nil
}

// add registers m and starts watching its socket.
func (l *loop) add(m member) error {
	w := m.watched()
	l.mu.Lock()
	w.loop = l
	if n := len(l.free); n > 0 {
		w.id, l.free = l.free[n-1], l.free[:n-1]
		l.conns[w.id] = m
	} else {
		w.id = int32(len(l.conns))
		l.conns = append(l.conns, m)
	}
	l.mu.Unlock()
	var err error
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: w.id}
	cerr := w.rc.Control(func(fd uintptr) {
		err = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		l.remove(m)
		return fmt.Errorf("epoll: %w", err)
	}
	return nil
}

// watch turns reading of m's socket on or off.
func (l *loop) watch(m member, on bool) {
	w := m.watched()
	ev := syscall.EpollEvent{Fd: w.id}
	if on {
		ev.Events = syscall.EPOLLIN | syscall.EPOLLRDHUP
	}
	_ = w.rc.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
	})
}

// remove stops watching m; by whoever handles m in a round, or by add.
func (l *loop) remove(m member) {
	w := m.watched()
	w.gone = true
	_ = w.rc.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	l.mu.Lock()
	l.conns[w.id] = nil
	l.free = append(l.free, w.id)
	l.mu.Unlock()
}

// schedule has the loop call m.readable(false) without a socket event.
func (l *loop) schedule(m member) {
	l.mu.Lock()
	l.ready = append(l.ready, m)
	wake := !l.woken
	l.woken = true
	l.mu.Unlock()
	if wake {
		_, _ = syscall.Write(l.wake[1], []byte{1})
	}
}

func (l *loop) run() {
	events := make([]syscall.EpollEvent, 512)
	var n int
	poll := func(fd uintptr) bool {
		for {
			var err error
			n, err = epollPoll(int(fd), events)
			if err != syscall.EINTR {
				return n > 0 || err != nil
			}
		}
	}
	var batch, ready []member
	var drainBuf [64]byte
	rounds := 0
	for {
		if rounds == 0 || rounds == maxRounds {
			// The requests read so far go to their servers before the loop
			// waits, or after a few rounds without a pause.
			l.batch.Flush()
			rounds = 0
			n = 0
			if err := l.rc.Read(poll); err != nil || n < 0 {
				panic(fmt.Sprintf("ambassador event loop: epoll_wait: %v", err))
			}
		}
		batch = batch[:0]
		l.batch.now = time.Now()
		for _, h := range l.helpers {
			h.batch.now = l.batch.now
		}
		l.mu.Lock()
		for _, ev := range events[:n] {
			if ev.Fd == wakeID {
				for {
					if k, _ := syscall.Read(l.wake[0], drainBuf[:]); k <= 0 {
						break
					}
				}
				l.woken = false
				ready = append(ready[:0], l.ready...)
				clear(l.ready)
				l.ready = l.ready[:0]
				continue
			}
			if m := l.conns[ev.Fd]; m != nil {
				batch = append(batch, m)
			}
		}
		l.mu.Unlock()
		live := batch[:0]
		for _, m := range batch {
			if !m.watched().gone {
				live = append(live, m)
			}
		}
		l.handle(live)
		for i, m := range ready {
			if !m.watched().gone {
				m.readable(false, &l.batch)
			}
			ready[i] = nil
		}
		ready = ready[:0]
		clear(batch)
		// What became ready meanwhile joins this round's writes to the
		// servers: more requests per write, and not a moment's wait.
		rounds++
		if n = l.pollNow(events); n <= 0 {
			rounds = 0
		}
	}
}

// handle has the ready members read, sharing a large round with the
// helpers: each member is handled by one goroutine, and the round ends
// when all are done.
func (l *loop) handle(ms []member) {
	shares := min(len(l.helpers)+1, len(ms)/minShare)
	if shares < 2 {
		for _, m := range ms {
			m.readable(true, &l.batch)
		}
		return
	}
	// Dealt out in turn, so that the few server connections, each with
	// the replies for many clients, land in different shares.
	for i := 1; i < shares; i++ {
		h := l.helpers[i-1]
		h.share = h.share[:0]
		for j := i; j < len(ms); j += shares {
			h.share = append(h.share, ms[j])
		}
		h.work <- h.share
	}
	for j := 0; j < len(ms); j += shares {
		ms[j].readable(true, &l.batch)
	}
	for i := 1; i < shares; i++ {
		h := l.helpers[i-1]
		<-h.done
		clear(h.share)
	}
}

// maxRounds bounds the rounds of events a loop handles before it writes
// to the servers.
const maxRounds = 4

// pollNow returns the events ready now, without waiting.
func (l *loop) pollNow(events []syscall.EpollEvent) int {
	for {
		n, err := epollPoll(l.epfd, events)
		if err != syscall.EINTR {
			return n
		}
	}
}

// readFD reads once into the free space of b, without waiting, from a
// descriptor the caller knows to be open: it returns b grown by what was
// read, and whether the socket is at its end (EOF, an error, or shut down).
func readFD(fd int, b []byte) ([]byte, bool) {
	for {
		n, err := nbRead(fd, b[len(b):cap(b)])
		switch {
		case n > 0:
			return b[:len(b)+n], false
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return b, false
		}
		return b, true
	}
}

// writeFD writes b as far as the socket takes it without waiting, to a
// descriptor the caller knows to be open.
func writeFD(fd int, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := nbWrite(fd, b[n:])
		if k > 0 {
			n += k
		}
		switch {
		case err == syscall.EINTR:
		case err == syscall.EAGAIN:
			return n, nil
		case err != nil:
			return n, err
		case k <= 0:
			return n, nil
		}
	}
	return n, nil
}

// consume drops the first off bytes of b, the ones handled, moving the
// rest to the front; an emptied buffer that a large request or reply grew
// is let go rather than kept.
func consume(b []byte, off int) []byte {
	n := len(b) - off
	if off > 0 {
		copy(b, b[off:])
	}
	if n == 0 && cap(b) > 1<<20 {
		return nil
	}
	return b[:n]
}

// compactQueue drops the first head entries of a queue (its owner has
// already cleared them) once they are all of it, or most of a long one;
// it returns the queue and its new head.
func compactQueue[T any](q []T, head int) ([]T, int) {
	switch {
	case head == len(q):
		return q[:0], 0
	case head >= 1024 && 2*head >= len(q):
		n := copy(q, q[head:])
		clear(q[n:])
		return q[:n], 0
	}
	return q, head
}

// makeRoom compacts b[off:] to the front of b and grows it so that at
// least min(free, ...) bytes are free and want bytes fit in all.
func makeRoom(b []byte, off, free, want int) []byte {
	b = consume(b, off)
	need := max(len(b)+free, want)
	if cap(b) < need {
		nb := make([]byte, len(b), max(need, 2*cap(b)))
		copy(nb, b)
		b = nb
	}
	return b
}

// The loops' reads, writes and polls are on non-blocking descriptors and
// return at once, so they are made as raw system calls: the runtime does
// not treat them as calls that may block, and so does not hand the
// goroutine's processor to another thread while they run, which at tens of
// thousands of requests a second would cost a thread wake-up each time.

func nbRead(fd int, b []byte) (int, error)  { return rawIO(syscall.SYS_READ, fd, b) }
func nbWrite(fd int, b []byte) (int, error) { return rawIO(syscall.SYS_WRITE, fd, b) }

// rawIO is read or write (trap) of b on fd as a raw system call.
func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func epollPoll(epfd int, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}
