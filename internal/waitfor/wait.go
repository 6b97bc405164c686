package waitfor

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Backoff computes the pause before each retry: Initial doubled per failed
// attempt up to Max, then shortened by a random share of up to Jitter so
// that many pods started together do not retry in lock-step.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Jitter  float64 // 0..1: the largest share of the pause removed at random

	// Rand returns a number in [0, 1); nil means math/rand/v2.
	Rand func() float64
}

// Delay returns the pause after the given failed attempt (1 for the first).
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		if d > b.Max/2 {
			d = b.Max // doubling could overflow
		} else {
			d *= 2
		}
	}
	d = min(d, b.Max)
	if b.Jitter > 0 {
		r := b.Rand
		if r == nil {
			r = rand.Float64
		}
		d -= time.Duration(float64(d) * b.Jitter * r())
	}
	return d
}

// Options tune Wait.
type Options struct {
	// AttemptTimeout bounds each single check.
	AttemptTimeout time.Duration
	Backoff        Backoff
	// Log receives one line per change of a condition's state.
	Log *slog.Logger
}

// Result is the final state of one condition.
type Result struct {
	Condition Condition
	OK        bool
	Attempts  int
	Err       error // the last error when !OK; ctx's error if no attempt finished
}

// Wait checks every condition concurrently, retrying each failed one after
// its backoff, until all hold or ctx is done. A condition that held once
// counts as held. It returns one result per condition, in order; all are OK
// when it returns before ctx is done.
func Wait(ctx context.Context, conds []Condition, opts Options) []Result {
	results := make([]Result, len(conds))
	var wg sync.WaitGroup
	for i, c := range conds {
		wg.Go(func() { results[i] = waitOne(ctx, c, opts) })
	}
	wg.Wait()
	return results
}

func waitOne(ctx context.Context, c Condition, opts Options) Result {
	res := Result{Condition: c}
	lastMsg := ""
	for {
		actx, cancel := context.WithTimeout(ctx, opts.AttemptTimeout)
		err := c.Check(actx)
		cancel()
		if ctx.Err() != nil && err != nil {
			// The overall deadline cut this attempt short; its error says
			// nothing about the condition, so keep the previous one.
			if res.Err == nil {
				res.Err = err
			}
			return res
		}
		res.Attempts++
		if err == nil {
			res.OK, res.Err = true, nil
			opts.Log.Info("condition holds", "condition", c.String(), "attempts", res.Attempts)
			return res
		}
		res.Err = err
		if msg := err.Error(); msg != lastMsg {
			lastMsg = msg
			opts.Log.Info("condition not met", "condition", c.String(), "attempts", res.Attempts, "error", msg)
		}
		t := time.NewTimer(opts.Backoff.Delay(res.Attempts))
		select {
		case <-ctx.Done():
			t.Stop()
			return res
		case <-t.C:
		}
	}
}
