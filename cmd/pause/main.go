// Command pause is a pod's infrastructure process and, given a command, a
// minimal init for it.
//
//	pause [-v]
//	pause [-g] [-e CODE]... -- CMD [ARG]...
//
// Without a command it keeps the Kubernetes pause contract: it reaps every
// zombie, exits 0 on SIGINT or SIGTERM after printing "Shutting down, got
// signal: Terminated" (or "Interrupt") to stderr, and ignores every other
// signal. When it is not PID 1 it warns "Warning: pause should be the first
// process" and becomes a child subreaper, so orphans below it are still reaped.
//
// With a command it is that command's init, as tini is: it forwards every
// signal it can to the command (-g: to its process group), reaps every zombie,
// and exits with the command's status, 128+N if signal N killed it, 127 if it
// was not found, 126 if it could not be run; usage errors exit 2. It exits as
// soon as the command is reaped and leaves other processes alone: as PID 1 its
// exit makes the kernel kill the rest of the namespace.
//
// Either way pause is ready for signals once SIGTSTP shows in SigCgt of
// /proc/PID/status: it asks for that signal last.
//
// It imports nothing beyond the standard library's core (no fmt, flag,
// strings or strconv) so that the static binary stays under 1.5 MB.
package main

import (
	"errors"
	"io"
	"os"

	"github.com/podkit/podkit/internal/initproc"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: pause [-v]                         hold a pod: reap zombies, exit 0 on SIGINT/SIGTERM
       pause [-g] [-e CODE]... -- CMD ...  run CMD as its init, exit with its status
  -g       forward signals to CMD's whole process group
  -e CODE  exit 0 when CMD exits with CODE (0-255); repeatable
  -v       print the version (also -V, anywhere before --)
`

// config is what the command line asks for.
type config struct {
	version bool
	help    bool
	argv    []string // nil: pause mode
	group   bool
	expect  [256]bool // exit codes reported as 0
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args)
	switch {
	case err != nil:
		io.WriteString(stderr, "pause: "+err.Error()+"\n"+usage)
		return 2
	case cfg.version:
		io.WriteString(stdout, "pause "+version+"\n")
		return 0
	case cfg.help:
		io.WriteString(stdout, usage)
		return 0
	case cfg.argv == nil:
		return initproc.Pause(stderr)
	}

	// Before Supervise's signal.Notify, which changes what it reads.
	ignored, err := initproc.ReadSigset("/proc/self/status", "SigIgn")
	if err != nil {
		io.WriteString(stderr, "pause: ignored signals not handed on to "+cfg.argv[0]+": "+err.Error()+"\n")
	}
	code := initproc.Supervise(initproc.Command{
		Argv:    cfg.argv,
		Env:     os.Environ(),
		Group:   cfg.group,
		Ignored: ignored,
	}, stderr)
	if cfg.expect[code] {
		return 0
	}
	return code
}

// parseArgs reads the command line. Without "--" it is pause mode, where, as
// in pause.c, -v in any case anywhere asks for the version. Everything after
// "--" belongs to the command, -v and -h included.
func parseArgs(args []string) (config, error) {
	var cfg config
	flags, argv, withCmd := args, []string(nil), false
	for i, a := range args {
		if a == "--" {
			flags, argv, withCmd = args[:i], args[i+1:], true
			break
		}
	}
	for _, a := range flags {
		if a == "-v" || a == "-V" {
			cfg.version = true
			return cfg, nil
		}
	}
	for i := 0; i < len(flags); i++ {
		switch a := flags[i]; {
		case a == "-h" || a == "-help" || a == "--help":
			cfg.help = true
			return cfg, nil
		case a == "-g":
			cfg.group = true
		case len(a) >= 2 && a[:2] == "-e":
			v := a[2:] // -e143 and -e=143 as well as -e 143
			switch {
			case v == "" && i+1 < len(flags):
				i++
				v = flags[i]
			case v != "" && v[0] == '=':
				v = v[1:]
			}
			code, ok := exitCode(v)
			if !ok {
				return cfg, errors.New("-e \"" + v + "\": want an exit code from 0 to 255")
			}
			cfg.expect[code] = true
		case !withCmd:
			return cfg, errors.New("unexpected argument \"" + a + "\": to run a command, put it after --")
		default:
			return cfg, errors.New("unknown flag \"" + a + "\"")
		}
	}
	switch {
	case withCmd && len(argv) == 0:
		return cfg, errors.New("no command after --")
	case withCmd:
		cfg.argv = argv
	case len(flags) > 0:
		return cfg, errors.New(flags[0] + " needs a command: pause " + flags[0] + " ... -- CMD [ARG]...")
	}
	return cfg, nil
}

// exitCode parses a decimal exit status from 0 to 255. (No strconv: it would
// add about 15 kB to the binary.)
func exitCode(s string) (int, bool) {
	if s == "" || len(s) > 3 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= 255
}
