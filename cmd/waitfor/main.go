// Command waitfor is an init container: it waits until every condition given
// as an argument holds (tcp://host:port, http(s)://..., dns://name), with
// exponential backoff and jitter, then exits 0; at -timeout it exits 1
// naming each condition still failing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/podkit/podkit/internal/cli"
	"github.com/podkit/podkit/internal/podenv"
	"github.com/podkit/podkit/internal/waitfor"
)

var version = "dev"

const conditionHelp = `Waits until every CONDITION holds, checking them concurrently; exits 0
then, 1 at -timeout naming each condition still failing, 2 on bad usage.
A condition that held once counts as held.
  tcp://host:port             a TCP connection succeeds
  http://host[:port]/path     a GET answers 2xx (redirects are not followed)
  http://...#status=200-399   ... answers a status in the range (or #status=204)
  https://...                 the same over TLS, verified with the system roots
  dns://name                  name resolves to at least one address
Each failed check waits -initial-interval, doubled per failure up to
-max-interval, less a random share of up to -jitter.

`

func main() { cli.Main(run) }

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := cli.New("waitfor", getenv)
	timeout := fs.Duration("timeout", 5*time.Minute, "give up when the conditions do not all hold within this time (0: wait forever)")
	attemptTimeout := fs.Duration("attempt-timeout", 5*time.Second, "bound on each single check")
	initial := fs.Duration("initial-interval", 250*time.Millisecond, "pause after a condition's first failed check; doubled per failure")
	maxInterval := fs.Duration("max-interval", 5*time.Second, "longest pause between two checks of one condition")
	jitter := fs.Float64("jitter", 0.2, "largest share (0-1) of each pause removed at random")
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, "Usage: waitfor [flags] CONDITION...")
		fmt.Fprint(stdout, conditionHelp)
	}
	if code, ok := fs.HandleParseError(err, version, stdout, stderr); !ok {
		return code
	}
	switch {
	case fs.NArg() == 0:
		return fs.Usagef(stderr, "no condition given: waitfor [flags] tcp://host:port http://host/path dns://name ...")
	case *timeout < 0:
		return fs.Usagef(stderr, "-timeout %v is negative: give 0 to wait forever or a positive duration", *timeout)
	case *attemptTimeout <= 0:
		return fs.Usagef(stderr, "-attempt-timeout %v: want a positive duration", *attemptTimeout)
	case *initial <= 0:
		return fs.Usagef(stderr, "-initial-interval %v: want a positive duration", *initial)
	case *maxInterval < *initial:
		return fs.Usagef(stderr, "-max-interval %v is shorter than -initial-interval %v", *maxInterval, *initial)
	case !(*jitter >= 0 && *jitter <= 1): // also NaN
		return fs.Usagef(stderr, "-jitter %v: want a share from 0 to 1", *jitter)
	}
	conds := make([]waitfor.Condition, 0, fs.NArg())
	for _, a := range fs.Args() {
		c, err := waitfor.Parse(a)
		if err != nil {
			return fs.Usagef(stderr, "%v", err)
		}
		conds = append(conds, c)
	}
	if _, err := podenv.ApplyMemoryLimit(getenv); err != nil {
		return fs.Usagef(stderr, "%v", err)
	}
	log := fs.Logger(stderr)
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	start := time.Now()
	log.Info("waiting", "conditions", fs.Args(), "timeout", timeout.String())
	results := waitfor.Wait(ctx, conds, waitfor.Options{
		AttemptTimeout: *attemptTimeout,
		Backoff:        waitfor.Backoff{Initial: *initial, Max: *maxInterval, Jitter: *jitter},
		Log:            log,
	})
	failing := 0
	for _, r := range results {
		if !r.OK {
			failing++
			log.Error("condition still failing", "condition", r.Condition.String(), "attempts", r.Attempts, "error", errText(r.Err))
		}
	}
	elapsed := time.Since(start).Round(time.Millisecond)
	if failing > 0 {
		reason := "timed out"
		if errors.Is(ctx.Err(), context.Canceled) {
			reason = "interrupted"
		}
		log.Error(fmt.Sprintf("%s: %d of %d conditions still failing", reason, failing, len(conds)), "elapsed", elapsed.String())
		return cli.ExitFailure
	}
	log.Info("all conditions hold", "conditions", len(conds), "elapsed", elapsed.String())
	return cli.ExitOK
}

func errText(err error) string {
	if err == nil {
		return "no attempt finished"
	}
	return err.Error()
}
