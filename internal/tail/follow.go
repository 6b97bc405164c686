package tail

import (
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// follower reads one open file. off is the file offset of buf[0]; buf[:carry]
// holds an unfinished line.
type follower struct {
	t      *Tailer
	f      *fileState
	fd     *os.File
	path   string
	h      Handler
	framer *Framer
	buf    []byte
	carry  int
	off    int64
	lines  []Line

	lastData  time.Time // last time bytes arrived
	detached  time.Time // when the path stopped naming this file
	lastCheck time.Time
}

// run follows until the file is rotated away and drained, or ctx ends; it
// returns the offset read up to.
func (fo *follower) run(ctx, drain context.Context) int64 {
	fo.lastData = time.Now()
	poll := time.NewTimer(0)
	defer poll.Stop()
	for {
		wake := fo.t.wake.wait()
		n, err := fo.readAll(drain)
		if err != nil {
			return fo.abort(drain, err)
		}
		now := time.Now()
		if n > 0 {
			fo.lastData = now
		}
		if ctx.Err() != nil {
			// Shutdown: everything written so far has been read.
			return fo.finish(drain)
		}
		if n == 0 {
			if fo.carry > 0 && now.Sub(fo.lastData) >= fo.t.cfg.FlushTimeout {
				if err := fo.flushPartial(drain); err != nil {
					return fo.abort(drain, err)
				}
			}
			if err := fo.h.Idle(drain, now); err != nil {
				return fo.abort(drain, err)
			}
			if fo.checkRotation(now) {
				return fo.finish(drain)
			}
		}
		if n > 0 && ctx.Err() == nil {
			continue // more may be waiting; read until EOF before sleeping
		}
		poll.Reset(fo.t.cfg.PollInterval)
		select {
		case <-ctx.Done():
		case <-poll.C:
		case <-wake:
			poll.Stop() // Go 1.23+ timers: no stale tick to drain
		}
	}
}

func (fo *follower) abort(drain context.Context, err error) int64 {
	if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		fo.t.log.Error("read", "path", fo.path, "err", err)
	}
	fo.h.Close(drain)
	return fo.off + int64(fo.carry)
}

func (fo *follower) finish(drain context.Context) int64 {
	if fo.carry > 0 {
		if err := fo.flushPartial(drain); err != nil {
			return fo.abort(drain, err)
		}
	}
	if err := fo.h.Close(drain); err != nil {
		fo.t.log.Warn("flush at close", "path", fo.path, "err", err)
	}
	return fo.off
}

// checkRotation looks for truncation and for the path naming another file.
// It returns true when the file is done: rotated away or deleted, and no
// data came for RotateWait.
func (fo *follower) checkRotation(now time.Time) bool {
	fi, err := fo.fd.Stat()
	if err != nil {
		return true
	}
	fo.f.size.Store(fi.Size())
	if fo.truncated(fi.Size()) {
		return fo.resetTruncated() != nil
	}
	if fp := fo.f.fp.Load(); fp.Len < fpMax && fi.Size() > int64(fp.Len) && fo.off > int64(fp.Len) {
		if nfp, err := readFingerprint(fo.fd, fpMax); err == nil {
			fo.f.fp.Store(&nfp)
		}
	}
	if now.Sub(fo.lastCheck) < fo.t.cfg.PollInterval {
		return false
	}
	fo.lastCheck = now
	st, err := os.Stat(fo.path)
	same := false
	if err == nil {
		id, ok := fileID(st)
		same = ok && id == fo.f.id
	}
	if same {
		fo.detached = time.Time{}
		return false
	}
	if fo.detached.IsZero() {
		fo.detached = now
	}
	return now.Sub(fo.detached) >= fo.t.cfg.RotateWait && now.Sub(fo.lastData) >= fo.t.cfg.RotateWait
}

// truncated reports whether the file was truncated under us: smaller than
// what was read, or, when a copytruncate writer has already refilled it past
// our offset, with other leading bytes than those fingerprinted.
func (fo *follower) truncated(size int64) bool {
	if size < fo.off+int64(fo.carry) {
		return true
	}
	fp := fo.f.fp.Load()
	if fp.Len == 0 {
		return false
	}
	now, err := readFingerprint(fo.fd, fp.Len)
	return err == nil && now != *fp
}

func (fo *follower) resetTruncated() error {
	fo.t.truncs.Inc()
	fo.t.log.Info("file truncated: reading again from the start", "path", fo.path, "offset", fo.off+int64(fo.carry))
	if _, err := fo.fd.Seek(0, io.SeekStart); err != nil {
		return err
	}
	fo.off, fo.carry = 0, 0
	fo.framer.Reset()
	empty := fingerprint{}
	fo.f.fp.Store(&empty)
	return nil
}

// readAll reads until EOF, handing complete lines to the handler.
func (fo *follower) readAll(ctx context.Context) (int, error) {
	total := 0
	// An idle file holds no read buffer: with many files, only those being
	// read cost memory.
	if fo.buf == nil {
		fo.buf = fo.t.getBuf()
	}
	defer func() {
		if fo.carry == 0 {
			fo.t.putBuf(fo.buf)
			fo.buf = nil
		}
	}()
	if fi, err := fo.fd.Stat(); err == nil && fo.off+int64(fo.carry) > 0 && fo.truncated(fi.Size()) {
		if err := fo.resetTruncated(); err != nil {
			return 0, err
		}
	}
	for {
		n, err := fo.fd.Read(fo.buf[fo.carry:])
		if n > 0 {
			total += n
			fo.t.bytesRead.Add(float64(n))
			if herr := fo.frame(ctx, fo.carry+n); herr != nil {
				return total, herr
			}
		}
		if errors.Is(err, io.EOF) || (n == 0 && err == nil) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
}

func (fo *follower) frame(ctx context.Context, n int) error {
	dropped := fo.framer.Dropped
	lines, consumed, rest := fo.framer.Frame(fo.buf[:n], fo.lines[:0])
	fo.lines = lines
	for _, l := range lines {
		if l.Truncated {
			fo.t.cfg.Drop("line_truncated", 1)
			fo.t.log.Warn("line longer than -max-line-bytes truncated", "path", fo.path, "offset", fo.off)
		}
	}
	_ = dropped
	end := fo.off + int64(consumed)
	err := fo.deliver(ctx, lines, end)
	fo.t.linesRead.Add(float64(len(lines)))
	copy(fo.buf, fo.buf[consumed:n])
	fo.carry = rest
	fo.off = end
	return err
}

func (fo *follower) deliver(ctx context.Context, lines []Line, end int64) error {
	tok := fo.f.newToken(end)
	b := Batch{Lines: lines, ReadTime: time.Now(), Token: tok}
	err := fo.h.Lines(ctx, &b)
	tok.Release()
	return err
}

func (fo *follower) flushPartial(ctx context.Context) error {
	line := fo.framer.Flush(fo.buf[:fo.carry])
	end := fo.off + int64(fo.carry)
	fo.lines = append(fo.lines[:0], line)
	err := fo.deliver(ctx, fo.lines, end)
	fo.t.linesRead.Inc()
	fo.off, fo.carry = end, 0
	return err
}
