package initproc

import (
	"io"
	"os"
	"os/signal"
	"syscall"
)

// notForwarded are caught but never passed to the workload. SIGCHLD is init's
// own business. SIGTTIN and SIGTTOU are what the terminal sends init when init
// itself touches it from the background; they are ignored once the child runs.
const notForwarded = Sigset(1<<(syscall.SIGCHLD-1) | 1<<(syscall.SIGTTIN-1) | 1<<(syscall.SIGTTOU-1))

// SIGURG is left to the runtime: Go sends it to its own threads to preempt
// goroutines, and catching it would wake init for nothing.
const runtimeOwned = Sigset(1 << (syscall.SIGURG - 1))

// Pause is the pod infrastructure container's whole job, after Kubernetes'
// pause.c: hold the namespaces, reap every zombie, exit 0 on SIGINT or
// SIGTERM with one line on stderr, ignore every other signal. It never wakes
// up unless a signal arrives.
func Pause(stderr io.Writer) int {
	notPID1 := os.Getpid() != 1
	var subreaperErr error
	if notPID1 {
		// Before Notify, so that once pause looks ready orphans already come here.
		subreaperErr = BecomeSubreaper()
	}

	// stop is separate so that a burst of other signals filling sigs can
	// never drop the one that ends pause.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	// Every signal, not just SIGCHLD: left to the Go runtime, SIGHUP, SIGQUIT
	// and friends end the process with status 2 even as namespace PID 1, where
	// pause.c's default dispositions are dropped by the kernel.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, catchable(runtimeOwned|SigsetOf(syscall.SIGTTIN, syscall.SIGTTOU))...)
	// A caught SIGTTOU would make a background write to a TOSTOP terminal
	// restart forever; ignoring lets the shutdown line through.
	signal.Ignore(syscall.SIGTTIN, syscall.SIGTTOU)

	if notPID1 {
		io.WriteString(stderr, "Warning: pause should be the first process\n")
		if subreaperErr != nil {
			io.WriteString(stderr, "Warning: cannot become child subreaper, orphans will not be reaped here: "+subreaperErr.Error()+"\n")
		}
	}
	// Not having to pin a directory lets the mount it lives on go away.
	syscall.Chdir("/")

	// Children that exited before Notify sent their SIGCHLD to no one.
	Reap(0)
	for {
		var sig os.Signal
		select {
		case sig = <-stop:
		case sig = <-sigs:
		}
		if sig == syscall.SIGINT || sig == syscall.SIGTERM {
			io.WriteString(stderr, "Shutting down, got signal: "+describe(sig)+"\n")
			return 0
		}
		// Reap on any wake-up, not only SIGCHLD: a SIGCHLD that found sigs
		// full was dropped, and this pass stands in for it.
		Reap(0)
	}
}

// describe names the two signals pause reports in psignal(3)'s words, which
// pause.c prints and which operators grep for.
func describe(sig os.Signal) string {
	if sig == syscall.SIGINT {
		return "Interrupt"
	}
	return "Terminated"
}

// Command is the workload init mode starts and watches.
type Command struct {
	Argv []string
	Env  []string
	// Group sends forwarded signals to the workload's whole process group
	// rather than to the workload alone.
	Group bool
	// Ignored are the signals the launcher left ignored (SigIgn of
	// /proc/self/status, read before any signal.Notify). They stay ignored in
	// init, which does not forward them, and in the workload, as with tini.
	//
	// The Go runtime has rewritten some dispositions before main runs: it
	// installs its own handler over an inherited SIG_IGN for every signal but
	// SIGHUP, SIGINT and the job-control ones, so a launcher's ignoring of,
	// say, SIGUSR1 or SIGTERM cannot be seen and is not handed on. The blocked
	// mask needs no help: the runtime hands the launcher's mask to every child
	// (os/signal documents it), except for the signals it unblocks for itself
	// (SIGHUP, SIGINT, SIGQUIT, SIGTERM and the synchronous ones).
	Ignored Sigset
}

// Supervise runs c as init: it starts the workload, forwards it every signal
// it can, reaps every zombie and returns the exit status init should leave
// with: the workload's exit code, 128+N if signal N killed it, 127 or 126 if
// it could not be started.
//
// Init returns as soon as the workload has been reaped. Its other
// descendants are left alone, as tini does: when init is PID 1 its exit makes
// the kernel kill the rest of the namespace; when it is not, they are
// re-parented to the next subreaper or init and go on running.
func Supervise(c Command, stderr io.Writer) int {
	if os.Getpid() != 1 {
		// Without this, orphans of the workload's descendants would bypass
		// init and go to a PID 1 that may not reap.
		if err := BecomeSubreaper(); err != nil {
			io.WriteString(stderr, "pause: cannot become child subreaper, orphans will not be reaped here: "+err.Error()+"\n")
		}
	}

	// Signals the launcher ignored stay ignored here and in the child: catching
	// them would reset them to SIG_DFL in the child across fork.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, catchable(c.Ignored|runtimeOwned)...)

	pid, err := start(c.Argv, c.Env)
	if err != nil {
		io.WriteString(stderr, "pause: "+err.Error()+"\n")
		return StartFailureCode(err)
	}
	// Only now: SIG_IGN set before the fork would have been inherited.
	signal.Ignore(syscall.SIGTTIN, syscall.SIGTTOU)
	syscall.Chdir("/") // the child has its cwd; init need not pin one

	target := pid
	if c.Group {
		target = -pid
	}
	for {
		// Reap first: the workload may have exited before its SIGCHLD was
		// caught, and a SIGCHLD dropped on a full channel is covered too.
		if ws, exited := Reap(pid); exited {
			return ExitCode(ws)
		}
		sig := (<-sigs).(syscall.Signal)
		if !notForwarded.Has(sig) {
			// ESRCH only means the workload is already gone; its SIGCHLD follows.
			syscall.Kill(target, sig)
		}
	}
}
