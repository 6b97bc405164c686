// Package cli gives every podkit daemon the same command line: flags with
// environment twins, -version, -log-level, exit codes and a JSON logger.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit codes shared by every binary.
const (
	ExitOK      = 0
	ExitFailure = 1 // the daemon could not do its job
	ExitUsage   = 2 // bad flags, environment or configuration
)

// Run is a daemon's body: it serves until ctx ends (SIGINT or SIGTERM)
// and returns the exit code.
type Run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int

// Main runs a daemon's body with the process's arguments, environment and
// output, cancelling its context on SIGINT or SIGTERM, and exits with the
// code it returns.
func Main(run Run) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// ErrVersion is returned by Parse when -version was given; the caller prints
// the version and exits 0.
var ErrVersion = errors.New("version requested")

// FlagSet is a flag.FlagSet whose every flag has an environment twin: flag
// -admin-addr of binary "ambassador" is also read from AMBASSADOR_ADMIN_ADDR.
// A flag given on the command line wins over its twin.
type FlagSet struct {
	*flag.FlagSet
	prefix  string
	getenv  func(string) string
	version bool

	LogLevel        slog.Level
	ShutdownTimeout time.Duration
}

// New returns a flag set for the named binary with the flags every daemon
// shares: -version, -log-level and -shutdown-timeout.
func New(name string, getenv func(string) string) *FlagSet {
	fs := &FlagSet{
		FlagSet: flag.NewFlagSet(name, flag.ContinueOnError),
		prefix:  EnvPrefix(name),
		getenv:  getenv,
	}
	fs.SetOutput(io.Discard)
	fs.BoolVar(&fs.version, "version", false, "print the version and exit")
	fs.TextVar(&fs.LogLevel, "log-level", slog.LevelInfo, "log level: debug, info, warn or error")
	fs.DurationVar(&fs.ShutdownTimeout, "shutdown-timeout", 20*time.Second,
		"how long to drain in-flight work after SIGTERM (keep it under the pod's grace period)")
	return fs
}

// EnvPrefix is the environment prefix of a binary's flags: "log-sidecar" gives "LOG_SIDECAR".
func EnvPrefix(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// EnvName is the environment twin of a flag.
func (fs *FlagSet) EnvName(flagName string) string {
	return fs.prefix + "_" + EnvPrefix(flagName)
}

// Parse parses the command line, then fills every flag not given there from
// its environment twin. Errors name the flag or variable at fault. It returns
// flag.ErrHelp for -h and ErrVersion for -version.
func (fs *FlagSet) Parse(args []string) error {
	if err := fs.FlagSet.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		env := fs.EnvName(f.Name)
		v := fs.getenv(env)
		if v == "" {
			return
		}
		if l, ok := f.Value.(envLister); ok {
			for _, item := range strings.Fields(v) {
				if err = l.Set(item); err != nil {
					break
				}
			}
		} else {
			err = f.Value.Set(v)
		}
		if err != nil {
			err = fmt.Errorf("invalid value %q for %s (twin of -%s): %v", v, env, f.Name, err)
		}
	})
	if err != nil {
		return err
	}
	if fs.version {
		return ErrVersion
	}
	return nil
}

// Usage writes the flag defaults, each with its environment twin.
func (fs *FlagSet) Usage(w io.Writer) {
	fmt.Fprintf(w, "Usage of %s:\n", fs.Name())
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  -%s", f.Name)
		if name != "" {
			fmt.Fprintf(w, " %s", name)
		}
		fmt.Fprintf(w, "\n    \t%s", strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		}
		fmt.Fprintf(w, " [$%s]\n", fs.EnvName(f.Name))
	})
}

// HandleParseError turns a Parse error into the process's exit code, printing
// what the user needs: usage for -h, the version for -version, one line naming
// the fault otherwise. ok is false when the caller must return code.
func (fs *FlagSet) HandleParseError(err error, version string, stdout, stderr io.Writer) (code int, ok bool) {
	switch {
	case err == nil:
		return ExitOK, true
	case errors.Is(err, flag.ErrHelp):
		fs.Usage(stdout)
		return ExitOK, false
	case errors.Is(err, ErrVersion):
		fmt.Fprintf(stdout, "%s %s\n", fs.Name(), version)
		return ExitOK, false
	default:
		fmt.Fprintf(stderr, "%s: %v (see -h)\n", fs.Name(), err)
		return ExitUsage, false
	}
}

// Usagef reports a usage error found after parsing (a missing flag, a bad
// combination) the same way Parse errors are reported, and returns ExitUsage.
func (fs *FlagSet) Usagef(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s (see -h)\n", fs.Name(), fmt.Sprintf(format, args...))
	return ExitUsage
}

// Logger returns the JSON logger on w at the level given by -log-level.
func (fs *FlagSet) Logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: fs.LogLevel}))
}

// envLister marks repeatable flags: their environment twin holds several
// values separated by white space.
type envLister interface {
	flag.Value
	repeatable()
}

// StringList is a repeatable string flag. Its environment twin holds the
// values separated by white space.
type StringList []string

func (l *StringList) String() string     { return strings.Join(*l, ",") }
func (l *StringList) Set(v string) error { *l = append(*l, v); return nil }
func (l *StringList) repeatable()        {}

// Strings registers a repeatable string flag.
func (fs *FlagSet) Strings(name, usage string) *StringList {
	l := new(StringList)
	fs.Var(l, name, usage+" (repeatable)")
	return l
}
