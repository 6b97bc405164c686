package logrecord

import (
	"bytes"
	"fmt"
	"regexp"
	"time"
)

// Rule decides whether a line starts a new event or continues the one
// being joined. state is the rule's own memory, reset with each new event.
type Rule interface {
	Starts(line []byte, state *int) bool
}

// NewRule returns a preset (go, java, python) or, for "regex", a rule where
// lines matching pattern start events.
func NewRule(name, pattern string) (Rule, error) {
	switch name {
	case "go":
		return goRule{}, nil
	case "java":
		return javaRule{}, nil
	case "python":
		return pythonRule{}, nil
	case "regex":
		re, err := regexp.Compile(pattern)
		if err != nil {
			return nil, fmt.Errorf("multiline start pattern %q: %w", pattern, err)
		}
		return startRule{re}, nil
	}
	return nil, fmt.Errorf("unknown multiline mode %q: want go, java, python or regex", name)
}

type startRule struct{ re *regexp.Regexp }

func (r startRule) Starts(line []byte, _ *int) bool { return r.re.Match(line) }

func indented(l []byte) bool { return len(l) > 0 && (l[0] == ' ' || l[0] == '\t') }

// goRule joins a panic or a fatal error with its goroutine dumps:
//
//	panic: boom
//	<blank>
//	goroutine 1 [running]:
//	main.main()
//		/app/main.go:5 +0x25
//	exit status 2
type goRule struct{}

const inPanic = 1

func (goRule) Starts(l []byte, st *int) bool {
	if bytes.HasPrefix(l, []byte("panic: ")) || bytes.HasPrefix(l, []byte("fatal error: ")) {
		*st = inPanic
		return true
	}
	if *st != inPanic {
		return true
	}
	switch {
	case len(l) == 0, indented(l),
		bytes.HasPrefix(l, []byte("goroutine ")),
		bytes.HasPrefix(l, []byte("created by ")),
		bytes.HasPrefix(l, []byte("[recovered]")),
		bytes.HasPrefix(l, []byte("[signal ")),
		bytes.HasPrefix(l, []byte("exit status ")),
		bytes.HasPrefix(l, []byte("runtime stack:")),
		bytes.HasPrefix(l, []byte("...additional frames elided...")),
		goFrame(l):
		return false
	}
	*st = 0
	return true
}

// goFrame matches a function line of a goroutine dump,
// "net/http.(*conn).serve(0xc000123, {0x1, 0x2})" or "main.main()".
func goFrame(l []byte) bool {
	i := bytes.IndexByte(l, '(')
	return i > 0 && l[len(l)-1] == ')' && bytes.IndexByte(l[:i], ' ') < 0
}

// javaException matches "java.lang.IllegalStateException: boom": a
// qualified class name ending in Exception, Error or Throwable.
func javaException(l []byte) bool {
	name := l
	if i := bytes.Index(l, []byte(": ")); i >= 0 {
		name = l[:i]
	}
	if bytes.IndexByte(name, ' ') >= 0 || bytes.IndexByte(name, '.') < 0 {
		return false
	}
	return bytes.HasSuffix(name, []byte("Exception")) || bytes.HasSuffix(name, []byte("Error")) || bytes.HasSuffix(name, []byte("Throwable"))
}

// javaRule joins a stack trace, its exception line included, to the line
// before it.
type javaRule struct{}

func (javaRule) Starts(l []byte, _ *int) bool {
	t := bytes.TrimLeft(l, " \t")
	switch {
	case javaException(l):
		return false
	case len(t) < len(l) && (bytes.HasPrefix(t, []byte("at ")) || bytes.HasPrefix(t, []byte("... ")) || bytes.HasPrefix(t, []byte("Suppressed: ")) || bytes.HasPrefix(t, []byte("Caused by: "))),
		bytes.HasPrefix(l, []byte("Caused by: ")):
		return false
	}
	return true
}

// pythonRule joins "Traceback (most recent call last):", its indented
// frames and the exception line that ends it, chained tracebacks included.
type pythonRule struct{}

const (
	pyIn = 1 + iota
	pyChain
	pyAfter // after the exception line: a chained traceback may follow
)

func (pythonRule) Starts(l []byte, st *int) bool {
	switch {
	case bytes.HasPrefix(l, []byte("Traceback (most recent call last):")):
		if *st == pyChain {
			*st = pyIn
			return false
		}
		*st = pyIn
		return true
	case *st == pyIn && indented(l):
		return false
	case *st == pyIn && len(l) > 0:
		*st = pyAfter // the exception line ends the traceback
		return false
	case *st == pyAfter && (bytes.HasPrefix(l, []byte("During handling of the above exception")) || bytes.HasPrefix(l, []byte("The above exception was the direct cause"))):
		*st = pyChain
		return false
	case (*st == pyChain || *st == pyAfter) && len(l) == 0:
		return false
	}
	*st = 0
	return true
}

// Joiner joins continuation lines to the line that started their event,
// within bounds of lines, bytes and time. Use one per file.
type Joiner struct {
	Rule     Rule
	MaxLines int
	MaxBytes int
	Timeout  time.Duration

	cur, out  []byte
	lines     int
	state     int
	started   time.Time
	truncated bool
	outTrunc  bool
}

// Add takes one line and returns the previous event when this line starts
// a new one or the event reached its bounds. The returned bytes are valid
// until the next call.
func (j *Joiner) Add(line []byte, now time.Time) (event []byte, truncated, ok bool) {
	start := j.Rule.Starts(line, &j.state)
	if j.lines > 0 && (start || j.lines >= j.MaxLines) {
		event, truncated, ok = j.take()
	}
	if j.lines == 0 {
		j.started = now
		j.cur, j.truncated = append(j.cur[:0], line...), false
		if j.MaxBytes > 0 && len(j.cur) > j.MaxBytes {
			j.cur, j.truncated = j.cur[:j.MaxBytes], true
		}
		j.lines = 1
		return
	}
	j.lines++
	if j.MaxBytes > 0 && len(j.cur)+1+len(line) > j.MaxBytes {
		room := j.MaxBytes - len(j.cur) - 1
		if room > 0 {
			j.cur = append(append(j.cur, '\n'), line[:room]...)
		}
		j.truncated = true
		return
	}
	j.cur = append(append(j.cur, '\n'), line...)
	return
}

func (j *Joiner) take() ([]byte, bool, bool) {
	j.out, j.cur = j.cur, j.out
	j.outTrunc = j.truncated
	j.lines = 0
	return j.out, j.outTrunc, true
}

// Pending reports whether an event is being joined.
func (j *Joiner) Pending() bool { return j.lines > 0 }

// Expired returns the pending event if it has waited Timeout.
func (j *Joiner) Expired(now time.Time) ([]byte, bool, bool) {
	if j.lines == 0 || now.Sub(j.started) < j.Timeout {
		return nil, false, false
	}
	j.state = 0
	return j.take()
}

// Flush returns the pending event, if any.
func (j *Joiner) Flush() ([]byte, bool, bool) {
	if j.lines == 0 {
		return nil, false, false
	}
	j.state = 0
	return j.take()
}

// Lines is the number of lines in the pending event.
func (j *Joiner) Lines() int { return j.lines }
