package tail

import (
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// watchDirs starts inotify on the directories of the globs (those without
// wildcards in the directory part): a file created there is found at once
// instead of at the next scan, and writes wake the followers instead of
// waiting for the poll. Polling stays as the fallback, for symlink targets
// elsewhere and for queue overflows. It returns a stop function.
func (t *Tailer) watchDirs() func() {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.log.Info("inotify unavailable: polling only", "err", err)
		return func() {}
	}
	watched := 0
	seen := map[string]bool{}
	for _, g := range t.cfg.Paths {
		dir := filepath.Dir(g)
		if strings.ContainsAny(dir, "*?[\\") || seen[dir] {
			continue
		}
		seen[dir] = true
		const mask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MODIFY | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_CLOSE_WRITE
		if _, err := unix.InotifyAddWatch(fd, dir, mask); err == nil {
			watched++
		}
	}
	if watched == 0 {
		unix.Close(fd)
		return func() {}
	}
	// A non-blocking fd in an os.File goes through the runtime poller, so
	// Close wakes the blocked Read.
	f := os.NewFile(uintptr(fd), "inotify")
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			created := false
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafePointer(buf[off:]))
				if ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_Q_OVERFLOW) != 0 {
					created = true
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
			if created {
				select {
				case t.scanNow <- struct{}{}:
				default:
				}
			}
			t.wake.kick()
		}
	}()
	return func() { f.Close(); <-done }
}
