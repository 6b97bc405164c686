package exposition

import (
	"math"
	"testing"
)

func TestAppendFamily(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		f    Family
		ft   Format
		want string
	}{
		{"counter text", Family{Name: "a_total", Help: "A.", Type: Counter, Samples: []Sample{{Name: "a_total", Value: 3}}}, Text,
			"# HELP a_total A.\n# TYPE a_total counter\na_total 3\n"},
		{"counter openmetrics", Family{Name: "a_total", Help: "A.", Type: Counter, Samples: []Sample{{Name: "a_total", Value: 3}}}, OpenMetrics,
			"# HELP a A.\n# TYPE a counter\na_total 3\n"},
		{"counter without _total under openmetrics is unknown", Family{Name: "nginx_connections_accepted", Type: Counter,
			Samples: []Sample{{Name: "nginx_connections_accepted", Value: 1}}}, OpenMetrics,
			"# TYPE nginx_connections_accepted unknown\nnginx_connections_accepted 1\n"},
		{"untyped", Family{Name: "u", Type: Untyped, Samples: []Sample{{Name: "u", Value: 1}}}, Text, "# TYPE u untyped\nu 1\n"},
		{"untyped openmetrics", Family{Name: "u", Type: Untyped, Samples: []Sample{{Name: "u", Value: 1}}}, OpenMetrics, "# TYPE u unknown\nu 1\n"},
		{"escaping", Family{Name: "e", Help: "back\\slash \"q\"\nnl", Type: Gauge, Samples: []Sample{{Name: "e",
			Labels: []Label{{"a", "x\"y\\z\nw"}, {"b", "plain"}}, Value: 0.5}}}, Text,
			"# HELP e back\\\\slash \"q\"\\nnl\n# TYPE e gauge\ne{a=\"x\\\"y\\\\z\\nw\",b=\"plain\"} 0.5\n"},
		{"help quotes openmetrics", Family{Name: "e", Help: `say "hi"`, Type: Gauge, Samples: []Sample{{Name: "e", Value: 1}}}, OpenMetrics,
			"# HELP e say \\\"hi\\\"\n# TYPE e gauge\ne 1\n"},
		{"special floats", Family{Name: "f", Type: Gauge, Samples: []Sample{{Name: "f", Value: math.NaN()}, {Name: "f", Value: math.Inf(1)},
			{Name: "f", Value: math.Inf(-1)}, {Name: "f", Value: 1e20}, {Name: "f", Value: -2}}}, Text,
			"# TYPE f gauge\nf NaN\nf +Inf\nf -Inf\nf 1e+20\nf -2\n"},
		{"empty family writes nothing", Family{Name: "x", Type: Gauge}, Text, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := string(AppendFamily(nil, &tc.f, tc.ft)); got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestBatchLabelsDoNotAlias(t *testing.T) {
	t.Parallel()
	var b Batch
	b.Family("x", "", Gauge)
	scratch := []Label{{"a", "1"}}
	b.Sample("x", 1, scratch...)
	scratch[0].Value = "2"
	b.Sample("x", 2, scratch...)
	if v := b.Get(0).Samples[0].Labels[0].Value; v != "1" {
		t.Errorf("first sample's label changed to %q", v)
	}
}

func TestSanitizeName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"a.b-c": "a_b_c", "9lives": "_9lives", "ok_name": "ok_name", "a:b": "a_b", "": "_"} {
		if got := SanitizeName(in); got != want {
			t.Errorf("SanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBatchMatchesAppendFamily(t *testing.T) {
	t.Parallel()
	var b Batch
	b.Family("h", "Help \"x\".", Histogram)
	b.Sample("h_bucket", 1, Label{"le", "0.5"}, Label{"path", "a\"b"})
	b.Sample("h_bucket", 2, Label{"le", "+Inf"}, Label{"path", "a\"b"})
	b.Sample("h_sum", 0.7, Label{"path", "a\"b"})
	b.Sample("h_count", 2, Label{"path", "a\"b"})
	b.Add("c_total", "", Counter, 3)
	b.Family("empty", "", Gauge)
	for _, ft := range []Format{Text, OpenMetrics} {
		var want []byte
		for i := range b.Len() {
			f := b.Get(i)
			want = AppendFamily(want, &f, ft)
		}
		if got := b.AppendTo(nil, ft); string(got) != string(want) {
			t.Errorf("format %d: batch\n%s\nfamilies\n%s", ft, got, want)
		}
	}
}

func BenchmarkAppendFamily(b *testing.B) {
	f := Family{Name: "x_total", Help: "X.", Type: Counter}
	for i := range 100 {
		f.Samples = append(f.Samples, Sample{Name: "x_total", Labels: []Label{{"path", "/a/b/c"}, {"code", "200"}}, Value: float64(i)})
	}
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFamily(buf[:0], &f, Text)
	}
}
