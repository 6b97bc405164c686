package promtext

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

func render(b *exposition.Batch) string {
	var out []byte
	out = b.AppendTo(out, exposition.Text)
	return string(out)
}

func TestParse(t *testing.T) {
	t.Parallel()
	om, err := os.ReadFile("testdata/openmetrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		in    string
		rules *Rules
		want  string
	}{
		{"text", "# HELP a_total A \\\\ b.\n# TYPE a_total counter\na_total{x=\"1\"} 3\na_total{x=\"q\\\"\\n\"} 4\n\nb 1 1700000000\n",
			nil, "# HELP a_total A \\\\ b.\n# TYPE a_total counter\na_total{x=\"1\"} 3\na_total{x=\"q\\\"\\n\"} 4\n# TYPE b untyped\nb 1\n"},
		{"openmetrics", string(om), nil, `# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{code="200",path="/a"} 10
http_requests_total{code="500",path="/a"} 1
# HELP latency_seconds Latency.
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 2
latency_seconds_bucket{le="+Inf"} 3
latency_seconds_sum 0.4
latency_seconds_count 3
# TYPE build_info untyped
build_info{version="1.2"} 1
# TYPE temp_celsius gauge
temp_celsius 21.5
`},
		{"summary", "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 2\n", nil,
			"# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 3\ns_count 2\n"},
		{"rename, prefix and labels", "# TYPE go_goroutines gauge\ngo_goroutines{instance=\"x\"} 7\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
			&Rules{Prefix: "app_", Rename: []Rename{{Match: regexp.MustCompile(`^go_(.*)$`), Replacement: "runtime_$1"}},
				DropLabels: []string{"instance"}, AddLabels: []exposition.Label{{Name: "pod", Value: "p1"}}},
			"# TYPE app_runtime_goroutines gauge\napp_runtime_goroutines{pod=\"p1\"} 7\n# TYPE app_h histogram\napp_h_bucket{le=\"1\",pod=\"p1\"} 1\napp_h_bucket{le=\"+Inf\",pod=\"p1\"} 1\napp_h_sum{pod=\"p1\"} 1\napp_h_count{pod=\"p1\"} 1\n"},
		{"keep, drop and series filters", "a 1\nb{path=\"/health\"} 1\nb{path=\"/api\"} 2\nc 3\n",
			&Rules{Keep: []*regexp.Regexp{regexp.MustCompile(`^[ab]$`)}, Drop: []*regexp.Regexp{regexp.MustCompile(`^a$`)},
				DropSeries: []LabelMatch{{Name: "path", Regex: regexp.MustCompile(`^/health$`)}}},
			"# TYPE b untyped\nb{path=\"/api\"} 2\n"},
		{"keep series with missing label reads empty", "x{a=\"1\"} 1\nx 2\n",
			&Rules{KeepSeries: []LabelMatch{{Name: "a", Regex: regexp.MustCompile(`^$`)}}}, "# TYPE x untyped\nx 2\n"},
		{"counter renamed keeps _total once", "# TYPE req_total counter\nreq_total 5\n",
			&Rules{Rename: []Rename{{Match: regexp.MustCompile(`^req_total$`), Replacement: "web_requests_total"}}},
			"# TYPE web_requests_total counter\nweb_requests_total 5\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b exposition.Batch
			if err := NewParser(tc.rules).Parse(tc.in, &b); err != nil {
				t.Fatal(err)
			}
			if got := render(&b); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"unterminated labels", "a 1\nb{x=\"1\" 2\n", "line 2"},
		{"unquoted value", "a{x=1} 2\n", "line 1"},
		{"bad value", "a 1\n\nc abc\n", "line 3"},
		{"no value", "a{x=\"y\"}\n", "line 1"},
		{"bad name", "{a=\"b\"} 1\n", "line 1"},
		{"bad type line name", "# TYPE 9x counter\n", "line 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b exposition.Batch
			err := NewParser(nil).Parse(tc.in, &b)
			if err == nil || !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrSyntax at %s", err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	om, _ := os.ReadFile("testdata/openmetrics.txt")
	f.Add(string(om))
	f.Add("# TYPE a counter\na_total{b=\"c\\\"\"} 1\n")
	f.Add("x{a=\"1\",b=\"2\"} +Inf 123\n")
	f.Add("# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n")
	f.Fuzz(func(t *testing.T, in string) {
		var b exposition.Batch
		if err := NewParser(nil).Parse(in, &b); err != nil {
			return
		}
		// What parses renders to text that parses to the same samples.
		out := render(&b)
		var b2 exposition.Batch
		if err := NewParser(nil).Parse(out, &b2); err != nil {
			t.Fatalf("re-parse of\n%s\nfailed: %v", out, err)
		}
		if n1, n2 := count(&b), count(&b2); n1 != n2 {
			t.Fatalf("%d samples, %d after round trip:\n%s", n1, n2, out)
		}
	})
}

func count(b *exposition.Batch) int {
	n := 0
	for i := range b.Len() {
		n += len(b.Get(i).Samples)
	}
	return n
}

// series10k is the anchor's input: 10,000 series of one counter.
func series10k() string {
	var sb strings.Builder
	sb.WriteString("# HELP x_total A counter.\n# TYPE x_total counter\n")
	for i := range 10000 {
		fmt.Fprintf(&sb, "x_total{i=\"%d\",path=\"/a/b/c\"} %d\n", i, i)
	}
	return sb.String()
}

func TestParse10k(t *testing.T) {
	t.Parallel()
	var b exposition.Batch
	if err := NewParser(nil).Parse(series10k(), &b); err != nil {
		t.Fatal(err)
	}
	if b.Len() != 1 || len(b.Get(0).Samples) != 10000 {
		t.Fatalf("got %d families", b.Len())
	}
	if s := b.Get(0).Samples[9999]; s.Value != 9999 || s.Labels[0].Value != "9999" {
		t.Errorf("last sample %+v", s)
	}
}

// BenchmarkReexpose10k parses and renders 10,000 series, the re-exposition
// path's work per scrape (the fetch aside).
func BenchmarkReexpose10k(b *testing.B) {
	in := series10k()
	p := NewParser(&Rules{AddLabels: []exposition.Label{{Name: "pod", Value: "x"}}})
	var batch exposition.Batch
	out := make([]byte, 0, 1<<20)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		batch.Reset()
		if err := p.Parse(in, &batch); err != nil {
			b.Fatal(err)
		}
		out = out[:0]
		out = batch.AppendTo(out, exposition.Text)
	}
}
