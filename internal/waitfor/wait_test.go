package waitfor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/podkit/podkit/internal/testserver"
)

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	fixed := func(v float64) func() float64 { return func() float64 { return v } }
	tests := []struct {
		name    string
		b       Backoff
		attempt int
		want    time.Duration
	}{
		{name: "first", b: Backoff{Initial: time.Second, Max: time.Minute}, attempt: 1, want: time.Second},
		{name: "doubles", b: Backoff{Initial: time.Second, Max: time.Minute}, attempt: 4, want: 8 * time.Second},
		{name: "caps", b: Backoff{Initial: time.Second, Max: 5 * time.Second}, attempt: 4, want: 5 * time.Second},
		{name: "no overflow", b: Backoff{Initial: time.Second, Max: time.Hour}, attempt: 1000, want: time.Hour},
		{name: "huge max", b: Backoff{Initial: time.Hour, Max: time.Duration(math.MaxInt64)}, attempt: 100, want: time.Duration(math.MaxInt64)},
		{name: "initial above max", b: Backoff{Initial: time.Minute, Max: time.Second}, attempt: 1, want: time.Second},
		{name: "jitter zero draw", b: Backoff{Initial: time.Second, Max: time.Minute, Jitter: 0.5, Rand: fixed(0)}, attempt: 2, want: 2 * time.Second},
		{name: "jitter removes share", b: Backoff{Initial: time.Second, Max: time.Minute, Jitter: 0.5, Rand: fixed(0.5)}, attempt: 2, want: 1500 * time.Millisecond},
		{name: "full jitter near zero", b: Backoff{Initial: time.Second, Max: time.Minute, Jitter: 1, Rand: fixed(0.99)}, attempt: 1, want: 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.b.Delay(tt.attempt); got != tt.want {
				t.Errorf("Delay(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

func TestBackoffJitterBounds(t *testing.T) {
	t.Parallel()
	b := Backoff{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Jitter: 0.2}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := b.Delay(3)
		if d <= 320*time.Millisecond || d > 400*time.Millisecond {
			t.Fatalf("Delay(3) = %v, want within (320ms, 400ms]", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Errorf("1000 draws gave only %d distinct delays: jitter is not random", len(seen))
	}
}

// flaky fails until its n-th check, recording when each check happened.
type flaky struct {
	name  string
	okAt  int // 0: never
	msgs  []string
	mu    sync.Mutex
	times []time.Time
}

func (f *flaky) String() string { return f.name }

func (f *flaky) Check(ctx context.Context) error {
	f.mu.Lock()
	f.times = append(f.times, time.Now())
	n := len(f.times)
	f.mu.Unlock()
	if f.okAt > 0 && n >= f.okAt {
		return nil
	}
	return errors.New(f.msgs[min(n-1, len(f.msgs)-1)])
}

func TestWaitFollowsBackoff(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		f := &flaky{name: "fake://a", okAt: 5, msgs: []string{"refused", "refused", "timeout"}}
		var logBuf testserver.Buffer
		start := time.Now()
		res := Wait(t.Context(), []Condition{f}, Options{
			AttemptTimeout: time.Second,
			Backoff:        Backoff{Initial: time.Second, Max: 4 * time.Second},
			Log:            newLogger(&logBuf),
		})
		if !res[0].OK || res[0].Attempts != 5 {
			t.Fatalf("result = %+v, want OK after 5 attempts", res[0])
		}
		// Pauses 1s, 2s, 4s, 4s (capped) between the five checks.
		want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second, 11 * time.Second}
		for i, at := range f.times {
			if got := at.Sub(start); got != want[i] {
				t.Errorf("check %d at %v, want %v", i+1, got, want[i])
			}
		}
		// One line per change: refused, timeout, holds.
		lines := strings.Split(strings.TrimSpace(logBuf.String()), "\n")
		if len(lines) != 3 || !strings.Contains(lines[0], `"error":"refused"`) ||
			!strings.Contains(lines[1], `"error":"timeout"`) || !strings.Contains(lines[2], "condition holds") {
			t.Errorf("progress lines:\n%s\nwant refused, timeout, holds", logBuf.String())
		}
	})
}

func TestWaitTimeoutNamesFailing(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		good := &flaky{name: "fake://good", okAt: 2, msgs: []string{"not yet"}}
		bad := &flaky{name: "fake://bad", msgs: []string{"connection refused"}}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		start := time.Now()
		res := Wait(ctx, []Condition{good, bad}, Options{
			AttemptTimeout: time.Second,
			Backoff:        Backoff{Initial: time.Second, Max: 2 * time.Second},
			Log:            newLogger(io.Discard),
		})
		if d := time.Since(start); d != 10*time.Second {
			t.Errorf("Wait returned after %v, want at the 10s deadline", d)
		}
		if !res[0].OK {
			t.Errorf("good condition = %+v, want OK", res[0])
		}
		if res[1].OK || res[1].Err == nil || res[1].Err.Error() != "connection refused" {
			t.Errorf("bad condition = %+v, want failing with its last error", res[1])
		}
		// Checks at 0, 1, 3, 5, 7, 9s: six attempts before the deadline.
		if res[1].Attempts != 6 {
			t.Errorf("bad condition attempts = %d, want 6", res[1].Attempts)
		}
	})
}

// slow blocks every check until its context ends.
type slow struct{}

func (slow) String() string { return "fake://slow" }
func (slow) Check(ctx context.Context) error {
	<-ctx.Done()
	return fmt.Errorf("i/o timeout: %w", ctx.Err())
}

func TestWaitAttemptTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		res := Wait(ctx, []Condition{slow{}}, Options{
			AttemptTimeout: 3 * time.Second,
			Backoff:        Backoff{Initial: time.Second, Max: time.Second},
			Log:            newLogger(io.Discard),
		})
		// Attempts end at 3, 7, 11, 15, 19s; the one cut by the overall
		// deadline at 20s does not count.
		if res[0].OK || res[0].Attempts != 5 {
			t.Fatalf("result = %+v, want 5 failed attempts", res[0])
		}
		if !errors.Is(res[0].Err, context.DeadlineExceeded) {
			t.Errorf("last error = %v, want the attempt's deadline", res[0].Err)
		}
	})
}

func TestWaitChecksConcurrently(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		a := &flaky{name: "fake://a", okAt: 3, msgs: []string{"no"}}
		b := &flaky{name: "fake://b", okAt: 3, msgs: []string{"no"}}
		Wait(t.Context(), []Condition{a, b}, Options{
			AttemptTimeout: time.Second,
			Backoff:        Backoff{Initial: time.Second, Max: time.Second},
			Log:            newLogger(io.Discard),
		})
		if d := time.Since(start); d != 2*time.Second {
			t.Errorf("two conditions each needing 2s of retries took %v, want 2s", d)
		}
	})
}

func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		// Drop the time so lines are comparable.
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}
