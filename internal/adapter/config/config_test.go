package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podkit/podkit/internal/adapter/statsd"
)

func TestParseFlag(t *testing.T) {
	t.Parallel()
	s, err := ParseFlag("nginx=http://127.0.0.1:8081/stub_status")
	if err != nil || s.Kind != "nginx" || s.Address != "http://127.0.0.1:8081/stub_status" {
		t.Errorf("got %+v, %v", s, err)
	}
	if s, err := ParseFlag("statsd"); err != nil || s.Address != DefaultStatsdAddress {
		t.Errorf("statsd alone: %+v, %v", s, err)
	}
	for _, bad := range []string{"nginx", "nginx=", ""} {
		if _, err := ParseFlag(bad); err == nil {
			t.Errorf("ParseFlag(%q) accepted", bad)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		srcs []Source
		want string
	}{
		{"unknown kind", []Source{{Kind: "apache", Address: "x"}}, `unknown kind "apache"`},
		{"nginx not a url", []Source{{Kind: "nginx", Address: "127.0.0.1:80"}}, `want an http:// or https:// URL`},
		{"memcached not host:port", []Source{{Kind: "memcached", Address: "http://x/"}}, `want host:port`},
		{"same name", []Source{{Kind: "redis", Address: "127.0.0.1:1"}, {Kind: "redis", Address: "127.0.0.1:2"}}, `"redis": the name is used twice`},
		{"bad naming", []Source{{Kind: "nginx", Address: "http://x/", Naming: "fancy"}}, `naming "fancy"`},
		{"bad namespace", []Source{{Kind: "nginx", Name: "web", Namespace: "9x", Address: "http://x/"}}, `source "web": namespace "9x"`},
		{"bad rule regex", []Source{{Kind: "prometheus", Address: "http://x/", Rules: &Rules{Keep: []string{"("}}}}, `rules.keep "("`},
		{"bad add label", []Source{{Kind: "prometheus", Address: "http://x/", Rules: &Rules{AddLabels: map[string]string{"a-b": "x"}}}}, `rules.add_labels`},
		{"json without metrics", []Source{{Kind: "json", Address: "http://x/"}}, `none configured`},
		{"statsd mapping twice", []Source{{Kind: "statsd", Address: "127.0.0.1:0", Mapping: &statsd.Mapping{}, MappingFile: "m.yml"}}, `not both`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Build(tc.srcs, Options{Statsd: statsd.Options{Reg: prometheus.NewRegistry()}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	t.Parallel()
	env := map[string]string{"REDIS_PW": "secret"}
	b, err := Build([]Source{
		{Kind: "nginx", Address: "http://127.0.0.1:1/stub_status"},
		{Kind: "redis", Name: "sessions", Address: "redis://127.0.0.1:1", PasswordEnv: "REDIS_PW", Optional: true},
		{Kind: "statsd", Address: "127.0.0.1:0", TCP: "-"},
	}, Options{Getenv: func(k string) string { return env[k] }, Statsd: statsd.Options{Reg: prometheus.NewRegistry()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(b.Specs) != 3 || b.Specs[1].Name != "sessions" || b.Specs[1].Namespace != "sessions" || !b.Specs[1].Optional {
		t.Errorf("specs %+v", b.Specs)
	}
	if len(b.Listeners) != 1 || b.Listeners[0].TCPAddr() != nil {
		t.Errorf("want one UDP-only StatsD listener")
	}
}

func TestLoadStrict(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	if err := os.WriteFile(good, []byte("sources:\n  - kind: memcached\n    address: 127.0.0.1:11211\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(good)
	if err != nil || len(f.Sources) != 1 || f.Sources[0].Kind != "memcached" {
		t.Errorf("Load = %+v, %v", f, err)
	}
	empty := filepath.Join(dir, "empty.yml")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(empty); err != nil {
		t.Errorf("empty file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yml")
	if err := os.WriteFile(bad, []byte("sources:\n  - kind: memcached\n    adress: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("unknown key: err = %v, want one naming line 3", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yml")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestExampleConfig(t *testing.T) {
	t.Parallel()
	f, err := Load("testdata/example.yml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(f.Sources, Options{Getenv: func(string) string { return "" }, Statsd: statsd.Options{Reg: prometheus.NewRegistry()}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var kinds []string
	for _, s := range f.Sources {
		kinds = append(kinds, s.Kind)
	}
	if got := strings.Join(kinds, ","); got != strings.Join(Kinds, ",") {
		t.Errorf("example covers %s, want every kind %s", got, strings.Join(Kinds, ","))
	}
}
