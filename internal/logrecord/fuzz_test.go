package logrecord

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func FuzzParsers(f *testing.F) {
	for _, name := range []string{"nginx.log", "cri.log", "java.log"} {
		for _, l := range readLines(f, name) {
			f.Add([]byte(l))
		}
	}
	f.Add([]byte(`{"time":"2026-11-26T10:00:00Z","a":{"b":[1,2.5,null]}}`))
	f.Add([]byte(`{"ts":1e400}`))
	re, err := NewRegex(`^(?P<time>\S+) (?P<msg>.*)$`, "time", "")
	if err != nil {
		f.Fatal(err)
	}
	parsers := []Parser{&Nginx{}, &JSON{TimeKey: "time"}, &JSON{TimeKey: "ts"}, re, Raw{}}
	f.Fuzz(func(t *testing.T, line []byte) {
		for _, p := range parsers {
			var r Record
			p.Parse(line, &r)
			if _, isJSON := p.(*JSON); len(r.Fields) == 0 && !isJSON { // {} is an empty record
				t.Fatalf("%T kept nothing of %q", p, line)
			}
			for _, fl := range r.Fields {
				if fl.Key == KeyMessage && fl.Kind == String && !bytes.Equal(fl.Bytes, line) && fl.Bytes != nil {
					if _, ok := p.(*Regex); !ok {
						t.Fatalf("%T changed the message", p)
					}
				}
			}
		}
		var c CRI
		c.MaxBytes = 64
		if out, ok, _ := c.Add(line); ok && len(out.Message) > len(line) {
			t.Fatalf("CRI message longer than the line")
		}
		c.Flush()
	})
}

func FuzzJoiner(f *testing.F) {
	for _, name := range []string{"go_panic.log", "java.log", "python.log"} {
		f.Add(strings.Join(readLines(f, name), "\n"), uint8(0), uint8(50))
	}
	f.Add("a\n\tb\nc", uint8(3), uint8(2))
	rules := []string{"go", "java", "python", "regex"}
	f.Fuzz(func(t *testing.T, text string, which, maxLines uint8) {
		rule, err := NewRule(rules[int(which)%len(rules)], `^\S`)
		if err != nil {
			t.Fatal(err)
		}
		j := &Joiner{Rule: rule, MaxLines: int(maxLines%20) + 1, MaxBytes: 1 << 20, Timeout: time.Hour}
		lines := strings.Split(text, "\n")
		var out []string
		now := time.Now()
		for _, l := range lines {
			if ev, trunc, ok := j.Add([]byte(l), now); ok {
				if trunc {
					t.Fatal("truncated under the byte bound")
				}
				out = append(out, string(ev))
			}
		}
		if ev, _, ok := j.Flush(); ok {
			out = append(out, string(ev))
		}
		// Joining loses and reorders nothing.
		if got := strings.Join(out, "\n"); got != text {
			t.Fatalf("joined %q, want %q", got, text)
		}
		for _, e := range out {
			if n := strings.Count(e, "\n") + 1; n > j.MaxLines {
				t.Fatalf("event of %d lines, max %d", n, j.MaxLines)
			}
		}
	})
}
