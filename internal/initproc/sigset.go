package initproc

import (
	"errors"
	"os"
	"syscall"
)

// Sigset is a set of signals 1..64, bit N-1 for signal N: the layout of the
// kernel's sigset_t and of the Sig* lines of /proc/PID/status.
type Sigset uint64

// SigsetOf returns the set holding sigs.
func SigsetOf(sigs ...syscall.Signal) Sigset {
	var s Sigset
	for _, sig := range sigs {
		if sig >= 1 && sig <= 64 {
			s |= 1 << (sig - 1)
		}
	}
	return s
}

// Has reports whether sig is in s.
func (s Sigset) Has(sig syscall.Signal) bool {
	return sig >= 1 && sig <= 64 && s&(1<<(sig-1)) != 0
}

// ReadSigset reads one signal mask line of a /proc/PID/status file: key is
// SigIgn, SigBlk, SigCgt or SigPnd.
func ReadSigset(path, key string) (Sigset, error) {
	// Plain syscalls: os.ReadFile would link in os.FileInfo and the time
	// formatting behind it, about 85 kB of a binary that must stay small.
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	// One read: procfs renders a status file whole, about 1.5 kB of it.
	buf := make([]byte, 4096)
	n, err := syscall.Read(fd, buf)
	syscall.Close(fd)
	if err != nil {
		return 0, &os.PathError{Op: "read", Path: path, Err: err}
	}
	set, ok := sigField(string(buf[:n]), key)
	if !ok {
		return 0, errors.New(path + ": no valid " + key + " line")
	}
	return set, nil
}

// sigField parses the hexadecimal mask on the "key:" line of text.
func sigField(text, key string) (Sigset, bool) {
	key += ":"
	for more := true; more; {
		var line string
		line, text, more = cut(text, '\n')
		if len(line) < len(key) || line[:len(key)] != key {
			continue
		}
		hex := line[len(key):]
		for hex != "" && (hex[0] == ' ' || hex[0] == '\t') {
			hex = hex[1:]
		}
		var v Sigset
		digits := 0
		for _, c := range []byte(hex) {
			switch {
			case '0' <= c && c <= '9':
				v = v<<4 | Sigset(c-'0')
			case 'a' <= c && c <= 'f':
				v = v<<4 | Sigset(c-'a'+10)
			default:
				return 0, false
			}
			digits++
		}
		return v, digits > 0 && digits <= 16
	}
	return 0, false
}

// cut is strings.Cut for one byte. The package does without strings and
// strconv: each would add about 15 kB to a binary that must stay under 1.5 MB.
func cut(s string, sep byte) (before, after string, found bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// catchable lists every signal a process can catch except those in skip, with
// SIGTSTP last. The Go runtime never installs a handler for SIGTSTP on its own,
// so its bit appearing in SigCgt of /proc/PID/status tells an observer (a test,
// an orchestrator) that every signal in the list is already being caught.
func catchable(skip Sigset) []os.Signal {
	var sigs []os.Signal
	for sig := syscall.Signal(1); sig <= 64; sig++ {
		if !skip.Has(sig) && sig != syscall.SIGKILL && sig != syscall.SIGSTOP && sig != syscall.SIGTSTP {
			sigs = append(sigs, sig)
		}
	}
	if !skip.Has(syscall.SIGTSTP) {
		sigs = append(sigs, syscall.SIGTSTP)
	}
	return sigs
}
