package statsd

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podkit/podkit/internal/adapter/exposition"
)

func TestParseLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line    string
		name    string
		value   float64
		kind    Kind
		rate    float64
		rel     bool
		tags    string
		wantErr bool
	}{
		{line: "a.b:1|c", name: "a.b", value: 1, kind: KindCounter, rate: 1},
		{line: "a:2|c|@0.1", name: "a", value: 2, kind: KindCounter, rate: 0.1},
		{line: "g:-3|g", name: "g", value: -3, kind: KindGauge, rate: 1, rel: true},
		{line: "g:3|g", name: "g", value: 3, kind: KindGauge, rate: 1},
		{line: "t:320|ms", name: "t", value: 320, kind: KindTimer, rate: 1},
		{line: "h:0.5|h", name: "h", value: 0.5, kind: KindDistribution, rate: 1},
		{line: "d:7|d|#env:prod,az:a", name: "d", value: 7, kind: KindDistribution, rate: 1, tags: "env=prod,az=a"},
		{line: "s:user1|s", name: "s", kind: KindSet, rate: 1},
		{line: "dog:1|c|@0.5|#t1:v1,novalue|c:abc123|T1700000000", name: "dog", value: 1, kind: KindCounter, rate: 0.5, tags: "t1=v1"},
		{line: "influx,host=a,region=b:4|c", name: "influx", value: 4, kind: KindCounter, rate: 1, tags: "host=a,region=b"},
		{line: "librato#host=a:4|g", name: "librato", value: 4, kind: KindGauge, rate: 1, tags: "host=a"},
		{line: "tag.key:1|c|#my.tag:x", name: "tag.key", value: 1, kind: KindCounter, rate: 1, tags: "my_tag=x"},
		{line: "multi:1:2.5:3|d|#a:b", name: "multi", value: 1, kind: KindDistribution, rate: 1, tags: "a=b"},
		{line: "multi:1::3|d", wantErr: true},
		{line: "mixed,a=b:1|c|#c:d", wantErr: true},
		{line: "novalue", wantErr: true},
		{line: ":1|c", wantErr: true},
		{line: "a:1", wantErr: true},
		{line: "a:x|c", wantErr: true},
		{line: "a:1|zz", wantErr: true},
		{line: "a:1|c|@2", wantErr: true},
		{line: "a:-1|c", wantErr: true},
		{line: "a:|g", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			t.Parallel()
			var ev Event
			err := ParseLine([]byte(tc.line), &ev)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			var tags []string
			for _, l := range ev.Tags {
				tags = append(tags, l.Name+"="+l.Value)
			}
			if string(ev.Name) != tc.name || ev.Value != tc.value || ev.Kind != tc.kind || ev.Rate != tc.rate ||
				ev.Relative != tc.rel || strings.Join(tags, ",") != tc.tags {
				t.Errorf("got %s %v kind %d rate %v rel %v tags %v", ev.Name, ev.Value, ev.Kind, ev.Rate, ev.Relative, tags)
			}
		})
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"a.b:1|c", "a:2|c|@0.1", "g:-3|g", "d:7|d|#env:prod,az:a", "influx,host=a:4|c",
		"librato#host=a:4|g", "s:u|s", "t:1|ms|@0.5|#a:b|c:xyz"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var ev Event
		if err := ParseLine(line, &ev); err != nil {
			return
		}
		if len(ev.Name) == 0 || ev.Rate <= 0 || ev.Rate > 1 {
			t.Fatalf("accepted %q with name %q rate %v", line, ev.Name, ev.Rate)
		}
		for _, l := range ev.Tags {
			if !exposition.ValidLabelName(l.Name) {
				t.Fatalf("tag name %q is not a valid label name", l.Name)
			}
		}
		// Whatever parses can be stored and exposed without panicking.
		s := testStore(t, &Mapping{})
		s.handle(&ev)
		var b exposition.Batch
		s.snapshot(&b)
	})
}

func testStore(t testing.TB, m *Mapping) *Store {
	t.Helper()
	rules, err := m.compile()
	if err != nil {
		t.Fatal(err)
	}
	def, err := (&Mapping{Defaults: m.Defaults, Mappings: []Rule{{Match: "unused", Name: "unused"}}}).compile()
	if err != nil {
		t.Fatal(err)
	}
	return newStore(rules, def[0], false, prometheus.NewCounter(prometheus.CounterOpts{Name: "c", Help: "c"}))
}

func feed(t testing.TB, s *Store, lines ...string) {
	t.Helper()
	var ev Event
	for _, l := range lines {
		if err := ParseLine([]byte(l), &ev); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		s.handle(&ev)
	}
}

func expose(s *Store) string {
	var b exposition.Batch
	s.snapshot(&b)
	var out []byte
	out = b.AppendTo(out, exposition.Text)
	return string(out)
}

func TestMapping(t *testing.T) {
	t.Parallel()
	m := &Mapping{Mappings: []Rule{
		{Match: `^api\.(\w+)\.calls$`, MatchType: "regex", Name: "regex_won"},
		{Match: "api.*.calls", Name: "api_calls_total", Labels: map[string]string{"endpoint": "$1", "team": "core"}, Help: "API calls."},
		{Match: "job.*", MatchMetricType: "gauge", Name: "job_state", Labels: map[string]string{"job": "${1}"}},
		{Match: "job.*", Name: "job_other"},
		{Match: "secret.*", Action: "drop"},
		{Match: "tagged.*", Name: "tagged", Labels: map[string]string{"env": "mapping"}, HonorLabels: true},
	}}
	s := testStore(t, m)
	feed(t, s, "api.users.calls:1|c", "api.users.calls:1|c|@0.5", "job.backup:3|g", "job.backup:1|c",
		"secret.x:1|c", "tagged.a:1|g|#env:prod", "un.mapped-name:5|g")
	got := expose(s)
	for _, want := range []string{
		"# HELP api_calls_total API calls.\n# TYPE api_calls_total counter\napi_calls_total{endpoint=\"users\",team=\"core\"} 3\n",
		"job_state{job=\"backup\"} 3\n",
		"job_other 1\n",
		"tagged{env=\"prod\"} 1\n",
		"un_mapped_name 5\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	// Globs are tried before regexes, as in statsd_exporter.
	if strings.Contains(got, "regex_won") || strings.Contains(got, "secret") {
		t.Errorf("unexpected output:\n%s", got)
	}
}

func TestMappingErrors(t *testing.T) {
	t.Parallel()
	for name, m := range map[string]Mapping{
		"bad regex":        {Mappings: []Rule{{Match: "(", MatchType: "regex", Name: "x"}}},
		"no name":          {Mappings: []Rule{{Match: "a.*"}}},
		"bad name":         {Mappings: []Rule{{Match: "a.*", Name: "a-b"}}},
		"bad label":        {Mappings: []Rule{{Match: "a.*", Name: "a", Labels: map[string]string{"a-b": "x"}}}},
		"bad observer":     {Mappings: []Rule{{Match: "a.*", Name: "a", ObserverType: "gauge"}}},
		"bad action":       {Mappings: []Rule{{Match: "a.*", Name: "a", Action: "keep"}}},
		"unsorted buckets": {Mappings: []Rule{{Match: "a.*", Name: "a", Buckets: []float64{2, 1}}}},
		"glob with regex":  {Mappings: []Rule{{Match: "a.(b|c)", Name: "a"}}},
	} {
		if _, err := m.compile(); err == nil || !strings.Contains(err.Error(), "mappings[0]") {
			t.Errorf("%s: err = %v, want one naming mappings[0]", name, err)
		}
	}
}

func TestObserversAndConflicts(t *testing.T) {
	t.Parallel()
	m := &Mapping{
		Defaults: Defaults{ObserverType: "histogram", HistogramOptions: &HistogramOptions{Buckets: []float64{0.1, 1}}},
		Mappings: []Rule{{Match: "lat.*", Name: "latency_seconds", ObserverType: "summary", Labels: map[string]string{"op": "$1"}}},
	}
	s := testStore(t, m)
	feed(t, s, "lat.read:100:300|ms", "size:0.5|h", "size:5|h|@0.5",
		"latency_seconds_count:1|g", // taken by the summary
		"size:1|g",                  // size is a histogram already
	)
	got := expose(s)
	for _, want := range []string{
		"latency_seconds{op=\"read\",quantile=\"0.5\"} 0.1\n",
		"latency_seconds_sum{op=\"read\"} 0.4\n",
		"latency_seconds_count{op=\"read\"} 2\n",
		"size_bucket{le=\"0.1\"} 0\n", "size_bucket{le=\"1\"} 1\n", "size_bucket{le=\"+Inf\"} 3\n", "size_count 3\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	if strings.Contains(got, "# TYPE latency_seconds_count") || strings.Contains(got, "# TYPE size gauge") {
		t.Errorf("conflicting metric exposed:\n%s", got)
	}
}

func TestTTLAndSets(t *testing.T) {
	t.Parallel()
	ttl := time.Minute
	m := &Mapping{Mappings: []Rule{{Match: "short.*", Name: "short", TTL: &ttl, Labels: map[string]string{"k": "$1"}}}}
	s := testStore(t, m)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	feed(t, s, "short.a:1|g", "short.b:2|g", "forever:1|g", "visitors:a|s", "visitors:b|s", "visitors:a|s")
	now = now.Add(30 * time.Second)
	feed(t, s, "short.b:3|g")
	now = now.Add(45 * time.Second) // a is 75 s old, b 45 s
	got := expose(s)
	if strings.Contains(got, `short{k="a"}`) || !strings.Contains(got, "short{k=\"b\"} 3\n") || !strings.Contains(got, "forever 1\n") {
		t.Errorf("ttl: got\n%s", got)
	}
	if !strings.Contains(got, "visitors 2\n") {
		t.Errorf("set: want 2 distinct members:\n%s", got)
	}
}

func TestListenUDPAndTCP(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	src, err := Listen("127.0.0.1:0", "127.0.0.1:0", &Mapping{}, Options{Name: "s", Reg: reg, Standard: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- src.Run(t.Context()) }()
	u, err := net.Dial("udp", src.UDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for i := range 100 {
		fmt.Fprintf(u, "udp.hits:1|c\nudp.last:%d|g", i)
	}
	c, err := net.Dial("tcp", src.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		fmt.Fprint(c, "tcp.hits:2|c\n")
	}
	c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var b exposition.Batch
		_ = src.Scrape(t.Context(), &b)
		var out []byte
		out = b.AppendTo(out, exposition.Text)
		got := string(out)
		if strings.Contains(got, "udp_hits_total 100\n") && strings.Contains(got, "tcp_hits_total 200\n") && strings.Contains(got, "udp_last 99\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all samples after 20s:\n%s", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	src.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

func BenchmarkHandlePacket(b *testing.B) {
	m := &Mapping{Mappings: []Rule{{Match: "app.*.*.requests", Name: "app_requests_total", Labels: map[string]string{"svc": "$1", "code": "$2"}}}}
	s := testStore(b, m)
	src := &Source{store: s, lines: prometheus.NewCounter(prometheus.CounterOpts{Name: "l", Help: "l"}),
		lineErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "e", Help: "e"})}
	var pkt []byte
	for i := range 20 {
		pkt = fmt.Appendf(pkt, "app.svc%d.200.requests:1|c\n", i%5)
	}
	var ev Event
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		src.handlePacket(pkt, &ev)
	}
}
