package jsonmap

import (
	"os"
	"strings"
	"testing"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

var testMetrics = []Metric{
	{Name: "app_queue_depth", Help: "Depth.", Path: "$.queues.*", Value: "@.depth", Labels: map[string]string{"queue": "key()", "region": "$.region"}},
	{Name: "app_pool_up", Help: "Pool state.", Path: "$.pools[?@.active == true && @.size > 0]", Value: "@.state",
		ValueMap: map[string]float64{"UP": 1, "DOWN": 0}, Labels: map[string]string{"pool": "@.name"}},
	{Name: "app_pool_size", Path: "$.pools[?@.state == 'UP' || @.size >= 3]", Value: "@.size", Labels: map[string]string{"index": "key()"}},
	{Name: "app_requests_total", Type: "counter", Path: "$.requests"},
	{Name: "app_missing", Path: "$.nope"},
	// The same label set twice keeps the first sample.
	{Name: "app_dup", Path: "$.requests"},
	{Name: "app_dup", Path: "$.region"},
}

func expose(t *testing.T, doc string) string {
	t.Helper()
	ms, _, err := Compile(testMetrics)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var b exposition.Batch
	Apply(ms, d, &b)
	var out []byte
	out = b.AppendTo(out, exposition.Text)
	return string(out)
}

func TestApply(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("testdata/status.json")
	if err != nil {
		t.Fatal(err)
	}
	want := `# HELP app_queue_depth Depth.
# TYPE app_queue_depth gauge
app_queue_depth{queue="mail",region="eu"} 0
app_queue_depth{queue="orders",region="eu"} 12
# HELP app_pool_up Pool state.
# TYPE app_pool_up gauge
app_pool_up{pool="a"} 1
app_pool_up{pool="b"} 0
# HELP app_pool_size Value of $.pools[?@.state == 'UP' || @.size >= 3] in the JSON document.
# TYPE app_pool_size gauge
app_pool_size{index="0"} 3
app_pool_size{index="2"} 2
app_pool_size{index="3"} 0
# HELP app_requests_total Value of $.requests in the JSON document.
# TYPE app_requests_total counter
app_requests_total 1234
# HELP app_dup Value of $.requests in the JSON document.
# TYPE app_dup gauge
app_dup 1234
`
	if got := expose(t, string(doc)); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		m    []Metric
		want string
	}{
		{"none", nil, "none configured"},
		{"bad name", []Metric{{Name: "a-b", Path: "$.a"}}, `metrics[0] (a-b): invalid metric name`},
		{"bad path", []Metric{{Name: "a", Path: "$.["}}, `metrics[0] (a): path`},
		{"bad type", []Metric{{Name: "a", Path: "$.a", Type: "histogram"}}, `type "histogram"`},
		{"bad value", []Metric{{Name: "a", Path: "$.a", Value: "$.x"}}, `value "$.x"`},
		{"bad label", []Metric{{Name: "a", Path: "$.a", Labels: map[string]string{"le-x": "1"}}}, `invalid label name`},
		{"bad key level", []Metric{{Name: "a", Path: "$.a", Labels: map[string]string{"k": "key(x)"}}}, `key(N)`},
		{"type clash", []Metric{{Name: "a", Path: "$.a"}, {Name: "a", Path: "$.b", Type: "counter"}}, `metrics[1] (a): metric a is already mapped as a gauge`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, _, err := Compile(tc.m); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "{", `{"a":1} {"b":2}`, "nope"} {
		if _, err := Decode([]byte(in)); err == nil {
			t.Errorf("Decode(%q) accepted", in)
		}
	}
}

func FuzzApply(f *testing.F) {
	doc, _ := os.ReadFile("testdata/status.json")
	f.Add(string(doc))
	f.Add(`{"queues":{"a":{"depth":"x"}},"pools":[{"state":"UP","size":"3"}],"requests":true}`)
	f.Add(`[1,2,{"queues":null}]`)
	ms, _, err := Compile(testMetrics)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		d, err := Decode([]byte(in))
		if err != nil {
			return
		}
		var b exposition.Batch
		Apply(ms, d, &b)
		seen := map[string]bool{}
		for i := range b.Len() {
			if seen[b.Name(i)] {
				t.Fatalf("family %s twice", b.Name(i))
			}
			seen[b.Name(i)] = true
		}
	})
}

func BenchmarkApply(b *testing.B) {
	doc, err := os.ReadFile("testdata/status.json")
	if err != nil {
		b.Fatal(err)
	}
	ms, _, err := Compile(testMetrics)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		d, err := Decode(doc)
		if err != nil {
			b.Fatal(err)
		}
		var batch exposition.Batch
		Apply(ms, d, &batch)
	}
}
