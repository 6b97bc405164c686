package logrecord

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readLines(t testing.TB, name string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		out = append(out, s.Text())
	}
	return out
}

func fields(r *Record) map[string]string {
	m := map[string]string{}
	for _, f := range r.Fields {
		switch f.Kind {
		case String:
			m[f.Key] = string(f.Bytes)
		case Int:
			m[f.Key] = fmt.Sprintf("int:%d", f.Int)
		case Bool:
			m[f.Key] = fmt.Sprintf("bool:%v", f.Int != 0)
		case Float:
			m[f.Key] = fmt.Sprintf("float:%v", f.Float)
		case Null:
			m[f.Key] = "null"
		default:
			m[f.Key] = fmt.Sprintf("any:%v", f.Value)
		}
	}
	return m
}

func TestNginx(t *testing.T) {
	t.Parallel()
	lines := readLines(t, "nginx.log")
	tests := []struct {
		want map[string]string
		time time.Time
	}{
		{map[string]string{"remote_addr": "10.0.0.1", "remote_user": "alice", "method": "GET", "path": "/index.html?q=1", "protocol": "HTTP/1.1",
			"status": "int:200", "body_bytes_sent": "int:612", "http_referer": "http://ref/", "http_user_agent": "Mozilla/5.0 (X11)"},
			time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)},
		{map[string]string{"remote_addr": "10.0.0.2", "remote_user": "-", "method": "POST", "path": "/api", "protocol": "HTTP/2.0",
			"status": "int:201", "body_bytes_sent": "int:0", "http_referer": "-", "http_user_agent": "curl/8"},
			time.Date(2026, 11, 26, 10, 0, 1, 0, time.UTC)},
		{map[string]string{"remote_addr": "10.0.0.3", "remote_user": "-", "request": `\x16\x03\x01`,
			"status": "int:400", "body_bytes_sent": "int:150", "http_referer": "-", "http_user_agent": "-"},
			time.Date(2026, 11, 26, 10, 0, 2, 0, time.UTC)},
		{map[string]string{"message": "garbage line", "parse_error": "bool:true"}, time.Time{}},
	}
	for i, tt := range tests {
		var r Record
		(&Nginx{}).Parse([]byte(lines[i]), &r)
		if got := fields(&r); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("line %d:\n got %v\nwant %v", i, got, tt.want)
		}
		if !r.Time.Equal(tt.time) {
			t.Errorf("line %d: time %v, want %v", i, r.Time, tt.time)
		}
	}
}

func TestJSONAndRegex(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		parser Parser
		line   string
		want   map[string]string
		time   time.Time
	}{
		{"json", &JSON{TimeKey: "time"}, `{"time":"2026-11-26T10:00:00.123456789Z","level":"info","n":3,"f":1.5,"ok":true,"z":null,"obj":{"a":[1,"x"]}}`,
			map[string]string{"time": "2026-11-26T10:00:00.123456789Z", "level": "info", "n": "int:3", "f": "float:1.5", "ok": "bool:true", "z": "null", "obj": "any:map[a:[1 x]]"},
			time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)},
		{"json epoch", &JSON{TimeKey: "ts"}, `{"ts":1764151200.5,"msg":"x"}`, map[string]string{"ts": "float:1.7641512005e+09", "msg": "x"}, time.Unix(1764151200, 500000000)},
		{"not json", &JSON{}, `plain text`, map[string]string{"message": "plain text", "parse_error": "bool:true"}, time.Time{}},
		{"broken json", &JSON{}, `{"a":`, map[string]string{"message": `{"a":`, "parse_error": "bool:true"}, time.Time{}},
		{"two objects", &JSON{}, `{"a":1} {"b":2}`, map[string]string{"message": `{"a":1} {"b":2}`, "parse_error": "bool:true"}, time.Time{}},
		{"regex", mustRegex(t, `^(?P<time>\S+) (?P<level>\w+) (?P<msg>.*)$`), `2026-11-26T10:00:00Z WARN disk low`,
			map[string]string{"time": "2026-11-26T10:00:00Z", "level": "WARN", "msg": "disk low"}, time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)},
		{"regex miss", mustRegex(t, `^(?P<a>\d+)$`), `abc`, map[string]string{"message": "abc", "parse_error": "bool:true"}, time.Time{}},
		{"raw", Raw{}, `as is`, map[string]string{"message": "as is"}, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Record
			tt.parser.Parse([]byte(tt.line), &r)
			if got := fields(&r); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v\nwant %v", got, tt.want)
			}
			if !r.Time.Equal(tt.time) {
				t.Errorf("time %v, want %v", r.Time, tt.time)
			}
		})
	}
}

func mustRegex(t *testing.T, p string) *Regex {
	r, err := NewRegex(p, "time", "")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParserErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, pattern, want string }{
		{"xml", "", "unknown parser"},
		{"regex", "(", "regex"},
		{"regex", "(a)", "no named group"},
	} {
		if _, err := NewParser(c.name, c.pattern, "time", ""); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %q: %v, want %q", c.name, c.pattern, err, c.want)
		}
	}
	if _, err := NewRule("perl", ""); err == nil {
		t.Error("unknown multiline mode accepted")
	}
}

func TestCRI(t *testing.T) {
	t.Parallel()
	var c CRI
	var got []string
	for _, l := range readLines(t, "cri.log") {
		out, ok, bad := c.Add([]byte(l))
		if !ok {
			continue
		}
		got = append(got, fmt.Sprintf("%s|%s|%s|%v", out.Time.Format(time.RFC3339Nano), out.Stream, out.Message, bad))
	}
	want := []string{
		"2026-11-26T10:00:00.123456789Z|stdout|hello world|false",
		"2026-11-26T10:00:01.000000001Z|stderr|first part second part end|false",
		"0001-01-01T00:00:00Z||not a cri line|true",
		"2026-11-26T10:00:02Z|stdout||false",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	c = CRI{MaxBytes: 8}
	c.Add([]byte("2026-11-26T10:00:01Z stderr P 0123456789"))
	out, ok, _ := c.Add([]byte("2026-11-26T10:00:01Z stderr F abc"))
	if !ok || string(out.Message) != "01234567" || !out.Truncated {
		t.Fatalf("bounded reassembly: %q %v", out.Message, out.Truncated)
	}
}

func join(t *testing.T, rule string, lines []string, maxLines int) []string {
	t.Helper()
	r, err := NewRule(rule, `^\d{4}-`)
	if err != nil {
		t.Fatal(err)
	}
	j := &Joiner{Rule: r, MaxLines: maxLines, MaxBytes: 1 << 20, Timeout: time.Hour}
	var out []string
	now := time.Now()
	for _, l := range lines {
		if ev, _, ok := j.Add([]byte(l), now); ok {
			out = append(out, string(ev))
		}
	}
	if ev, _, ok := j.Flush(); ok {
		out = append(out, string(ev))
	}
	return out
}

func TestMultilinePresets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rule, file string
		events     []int // lines per event
	}{
		{"go", "go_panic.log", []int{1, 10, 1}},
		{"java", "java.log", []int{1, 7, 1}},
		{"regex", "java.log", []int{1, 7, 1}},
		{"python", "python.log", []int{1, 13, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.rule+"/"+tt.file, func(t *testing.T) {
			lines := readLines(t, tt.file)
			evs := join(t, tt.rule, lines, 500)
			var got []int
			total := 0
			for _, e := range evs {
				n := strings.Count(e, "\n") + 1
				got = append(got, n)
				total += n
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.events) {
				t.Fatalf("events of %v lines, want %v:\n%s", got, tt.events, strings.Join(evs, "\n----\n"))
			}
			if total != len(lines) {
				t.Fatalf("%d lines in, %d out", len(lines), total)
			}
		})
	}
}

func TestJoinerBounds(t *testing.T) {
	t.Parallel()
	lines := readLines(t, "java.log")
	evs := join(t, "java", lines, 3)
	total := 0
	for _, e := range evs {
		n := strings.Count(e, "\n") + 1
		if n > 3 {
			t.Fatalf("event of %d lines, max 3", n)
		}
		total += n
	}
	if total != len(lines) {
		t.Fatalf("lines lost: %d of %d", total, len(lines))
	}
	r, _ := NewRule("java", "")
	j := &Joiner{Rule: r, MaxLines: 100, MaxBytes: 10, Timeout: 50 * time.Millisecond}
	now := time.Now()
	j.Add([]byte("start"), now)
	j.Add([]byte("\tat a.very.long.Frame"), now)
	if _, _, ok := j.Expired(now); ok {
		t.Fatal("expired early")
	}
	ev, trunc, ok := j.Expired(now.Add(time.Second))
	if !ok || !trunc || len(ev) != 10 {
		t.Fatalf("expired %q %v %v", ev, trunc, ok)
	}
}
