// Package initproc does what PID 1 of a container owes the processes under it:
// it reaps every zombie, passes signals on to the workload and turns the
// workload's end into an exit status.
package initproc

import "syscall"

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER from <linux/prctl.h>; package
// syscall does not name it.
const prSetChildSubreaper = 36

// BecomeSubreaper makes orphaned descendants re-parent to this process instead
// of the namespace's init, so a pause or init that is not PID 1 still reaps them.
func BecomeSubreaper() error {
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		return e
	}
	return nil
}

// Reap collects every child that has already exited, without blocking, and
// reports the wait status of the one with PID main if it was among them
// (main <= 0 watches no one).
//
// It loops until the kernel has nothing left because SIGCHLDs coalesce: one
// notification may stand for many exits, among them main's (catatonit#4).
// Stopped and continued children are not reported (no WUNTRACED/WCONTINUED),
// so a SIGSTOP to the workload is never mistaken for its end.
func Reap(main int) (status syscall.WaitStatus, exited bool) {
	for {
		var ws syscall.WaitStatus
		// ECHILD ends the loop, and so does 0 (children left, none exited);
		// WNOHANG never blocks, so there is no EINTR to retry.
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err != nil || pid <= 0 {
			return status, exited
		}
		if pid == main && main > 0 {
			status, exited = ws, true
		}
	}
}

// ExitCode is the status a shell would report for a child that ended with ws:
// its exit code, or 128+N when signal N killed it.
func ExitCode(ws syscall.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1 // Reap reports neither stops nor continues; keep a failure if it ever did
}
