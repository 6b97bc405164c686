package initproc

import (
	"errors"
	"os"
	"syscall"
	"unsafe"
)

// defaultPath is searched when PATH is unset, as in most container images.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// start runs argv (looked up in PATH when it has no slash) with env, this
// process's stdio and cwd, in a process group of its own. The child inherits
// the signal mask this process was started with and every SIG_IGN it holds;
// the signals it catches start at SIG_DFL there.
//
// It uses syscall.ForkExec rather than os/exec so that nothing but the
// caller's Reap ever waits for the child: exec.Cmd.Wait and a wait4(-1) reaper
// steal each other's children. ForkExec reports a failed exec itself (and
// reaps that child), so ENOENT and EACCES come back as errors here.
func start(argv, env []string) (int, error) {
	name, err := lookPath(argv[0], os.Getenv("PATH"))
	if err != nil {
		return 0, &os.PathError{Op: "exec", Path: argv[0], Err: err}
	}
	// The child takes the terminal's foreground only if this process holds it,
	// so that a backgrounded pause does not steal the terminal from its shell.
	pid, err := syscall.ForkExec(name, argv, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Foreground: foreground(), Ctty: 0},
	})
	if err != nil {
		return 0, &os.PathError{Op: "exec", Path: argv[0], Err: err}
	}
	return pid, nil
}

// foreground reports whether stdin is a terminal whose foreground process
// group is this process's.
func foreground() bool {
	var pgrp int32
	_, _, e := syscall.RawSyscall(syscall.SYS_IOCTL, 0, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp)))
	return e == 0 && int(pgrp) == syscall.Getpgrp()
}

// lookPath finds file as execvp(3) does: names with a slash are used as they
// are, others are searched in path; a match that is not executable is skipped
// but turns the final error into EACCES, so the caller exits 126, not 127.
func lookPath(file, path string) (string, error) {
	if file == "" {
		return "", syscall.ENOENT
	}
	if _, _, slash := cut(file, '/'); slash {
		return file, nil
	}
	if path == "" {
		path = defaultPath
	}
	var err error = syscall.ENOENT
	for more := true; more; {
		var dir string
		dir, path, more = cut(path, ':')
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + file
		var st syscall.Stat_t
		if syscall.Stat(p, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
			continue
		}
		if syscall.Access(p, 1) == nil { // X_OK
			return p, nil
		}
		err = syscall.EACCES
	}
	return "", err
}

// StartFailureCode is the exit status for a command that could not be started,
// as shells report it: 127 when it was not found, 126 when it could not run.
func StartFailureCode(err error) int {
	if errors.Is(err, syscall.ENOENT) {
		return 127
	}
	return 126
}
