package backend

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// A loop reads the requests of many client connections: an epoll instance
// of its own reports which clients have bytes to read, and the loop's
// goroutine reads, frames and sends the requests of all of them before it
// flushes the server connections once. The epoll descriptor itself waits in
// the Go runtime's poller, so a batch of ready clients costs one goroutine
// wake-up instead of one per client, and requests from many clients share
// each write to a server, as on nutcracker's event loop. There is one loop
// per GOMAXPROCS, so the ambassador uses every core it is given.
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

	batch Batch
}

// A member is a socket a loop reads: a client's, or a server connection's.
type member interface {
	// readable handles what the socket has; read is false when the loop
	// was asked to look at what the member already holds.
	readable(read bool)
	// watched is where the loop keeps the member's registration.
	watched() *watch
}

// watch is a member's registration with its loop.
type watch struct {
	loop *loop
	id   int32
	rc   syscall.RawConn
	gone bool // the loop let go of it (the loop's goroutine only)
}

func (w *watch) watched() *watch { return w }

// wakeID is the epoll id of the loop's wake-up pipe.
const wakeID = -1

var (
	loopsOnce sync.Once
	loops     []*loop
	loopsErr  error
	nextLoop  atomic.Uint32
)

// pickLoop returns the loop for a new client, round robin.
func pickLoop() (*loop, error) {
	loopsOnce.Do(func() {
		for range runtime.GOMAXPROCS(0) {
			l, err := newLoop()
			if err != nil {
				loopsErr = err
				return
			}
			loops = append(loops, l)
			go l.run()
		}
	})
	if loopsErr != nil {
		return nil, loopsErr
	}
	return loops[int(nextLoop.Add(1)%uint32(len(loops)))], nil
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

// remove stops watching m; the loop's goroutine only, or add.
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
	for {
		n = 0
		if err := l.rc.Read(poll); err != nil || n < 0 {
			panic(fmt.Sprintf("ambassador event loop: epoll_wait: %v", err))
		}
		batch = batch[:0]
		l.batch.now = time.Now()
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
		for _, m := range batch {
			if !m.watched().gone {
				m.readable(true)
			}
		}
		for i, m := range ready {
			if !m.watched().gone {
				m.readable(false)
			}
			ready[i] = nil
		}
		ready = ready[:0]
		clear(batch)
		l.batch.Flush()
	}
}

// readInto reads once from rc into the free space of b, without waiting:
// it returns b grown by what was read, and whether the socket is at its
// end (EOF, an error, or shut down).
func readInto(rc syscall.RawConn, b []byte) ([]byte, bool) {
	var n int
	var err error
	cerr := rc.Read(func(fd uintptr) bool {
		for {
			n, err = nbRead(int(fd), b[len(b):cap(b)])
			if err != syscall.EINTR {
				return true
			}
		}
	})
	switch {
	case cerr != nil:
		return b, true
	case n > 0:
		return b[:len(b)+n], false
	case err == syscall.EAGAIN:
		return b, false
	}
	return b, true
}

// makeRoom compacts b[off:] to the front of b and grows it so that at
// least min(free, ...) bytes are free and want bytes fit in all.
func makeRoom(b []byte, off, free, want int) []byte {
	if off > 0 {
		n := copy(b, b[off:])
		b = b[:n]
	}
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

func nbRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func nbWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
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
