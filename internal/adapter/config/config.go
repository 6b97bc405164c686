// Package config turns the adapter's -source flags and YAML file into
// configured sources, rejecting bad entries and name collisions at start-up.
package config

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/podkit/podkit/internal/adapter/collect"
	"github.com/podkit/podkit/internal/adapter/exposition"
	"github.com/podkit/podkit/internal/adapter/fetch"
	"github.com/podkit/podkit/internal/adapter/jsonmap"
	"github.com/podkit/podkit/internal/adapter/memcached"
	"github.com/podkit/podkit/internal/adapter/promtext"
	"github.com/podkit/podkit/internal/adapter/redisinfo"
	"github.com/podkit/podkit/internal/adapter/statsd"
	"github.com/podkit/podkit/internal/adapter/stubstatus"
)

// Kinds lists the source kinds.
var Kinds = []string{"nginx", "memcached", "redis", "json", "prometheus", "statsd"}

// File is the -config YAML file.
type File struct {
	Sources []Source `yaml:"sources"`
}

// Source is one entry of sources:.
type Source struct {
	Name      string `yaml:"name"`      // default: the kind
	Kind      string `yaml:"kind"`      // one of Kinds
	Address   string `yaml:"address"`   // URL (nginx, json, prometheus) or host:port
	Namespace string `yaml:"namespace"` // prefix of <ns>_up; default: the name
	Optional  bool   `yaml:"optional"`  // not part of /readyz

	Naming string `yaml:"naming"` // nginx: compat (default) or standard

	Password string `yaml:"password"` // redis AUTH; prefer password_env
	// PasswordEnv names an environment variable holding the Redis password,
	// so the password stays out of a ConfigMap.
	PasswordEnv string `yaml:"password_env"`

	MaxBodyBytes int64 `yaml:"max_body_bytes"` // json, prometheus: default 16 MiB

	Rules *Rules `yaml:"rules"` // prometheus

	Headers map[string]string `yaml:"headers"` // json, prometheus
	Metrics []jsonmap.Metric  `yaml:"metrics"` // json

	TCP         string          `yaml:"tcp"`          // statsd: "" = same as address, "-" = off
	Mapping     *statsd.Mapping `yaml:"mapping"`      // statsd, inline
	MappingFile string          `yaml:"mapping_file"` // statsd, statsd_exporter's file
}

// Rules is the YAML form of promtext.Rules.
type Rules struct {
	Prefix string `yaml:"prefix"`
	Rename []struct {
		Match       string `yaml:"match"`
		Replacement string `yaml:"replacement"`
	} `yaml:"rename"`
	Keep       []string `yaml:"keep"`
	Drop       []string `yaml:"drop"`
	KeepSeries []struct {
		Label string `yaml:"label"`
		Regex string `yaml:"regex"`
	} `yaml:"keep_series"`
	DropSeries []struct {
		Label string `yaml:"label"`
		Regex string `yaml:"regex"`
	} `yaml:"drop_series"`
	AddLabels  map[string]string `yaml:"add_labels"`
	DropLabels []string          `yaml:"drop_labels"`
}

// DefaultStatsdAddress is where `-source statsd` listens, UDP and TCP.
const DefaultStatsdAddress = "127.0.0.1:9125"

// ParseFlag reads -source KIND=ADDRESS (or -source statsd, on
// DefaultStatsdAddress).
func ParseFlag(v string) (Source, error) {
	if strings.TrimSpace(v) == "statsd" {
		return Source{Kind: "statsd", Address: DefaultStatsdAddress}, nil
	}
	kind, addr, ok := strings.Cut(v, "=")
	if !ok || addr == "" {
		return Source{}, fmt.Errorf("-source %q: want KIND=ADDRESS, KIND one of %s", v, strings.Join(Kinds, ", "))
	}
	return Source{Kind: strings.TrimSpace(kind), Address: strings.TrimSpace(addr)}, nil
}

// Load reads a -config file strictly: an unknown key is an error naming its line.
func Load(path string) (File, error) {
	var f File
	data, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("-config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return f, fmt.Errorf("-config %s: %w", path, err)
	}
	return f, nil
}

// Options are the settings shared by every source.
type Options struct {
	Naming    stubstatus.Naming
	UserAgent string
	Getenv    func(string) string
	Statsd    statsd.Options
}

// Built is the result of Build.
type Built struct {
	Specs []collect.Spec
	// Listeners are the StatsD listeners, bound already; run them with Run.
	Listeners []*statsd.Source
}

// Run serves every StatsD listener until ctx ends.
func (b *Built) Run(ctx context.Context) error {
	errc := make(chan error, len(b.Listeners))
	for _, l := range b.Listeners {
		go func() { errc <- l.Run(ctx) }()
	}
	var first error
	for range b.Listeners {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Close releases the StatsD listeners (after a failed start-up).
func (b *Built) Close() {
	for _, l := range b.Listeners {
		l.Close()
	}
}

// Build validates the sources and makes them. StatsD listeners are bound
// here, so a port in use fails start-up.
func Build(srcs []Source, opt Options) (*Built, error) {
	client := fetch.New(opt.UserAgent)
	b := &Built{}
	names := map[string]bool{}
	for i, s := range srcs {
		where := fmt.Sprintf("source %d (%s)", i+1, s.Kind)
		if s.Name == "" {
			s.Name = s.Kind
		}
		if s.Name != "" {
			where = fmt.Sprintf("source %q", s.Name)
		}
		if names[s.Name] {
			b.Close()
			return nil, fmt.Errorf("%s: the name is used twice: give each source of one kind its own name (name: in -config)", where)
		}
		names[s.Name] = true
		if s.Namespace == "" {
			s.Namespace = s.Name
		}
		if !exposition.ValidLabelName(s.Namespace) {
			b.Close()
			return nil, fmt.Errorf("%s: namespace %q is not a valid metric name prefix", where, s.Namespace)
		}
		src, err := build(s, opt, client, b)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		b.Specs = append(b.Specs, collect.Spec{Name: s.Name, Namespace: s.Namespace, Source: src, Optional: s.Optional})
	}
	return b, nil
}

func build(s Source, opt Options, client *fetch.Client, b *Built) (collect.Source, error) {
	const defaultMaxBody = 16 << 20
	if s.MaxBodyBytes <= 0 {
		s.MaxBodyBytes = defaultMaxBody
	}
	switch s.Kind {
	case "nginx":
		if err := checkURL(s.Address); err != nil {
			return nil, err
		}
		naming := opt.Naming
		switch s.Naming {
		case "":
		case "compat":
			naming = stubstatus.Compat
		case "standard":
			naming = stubstatus.Standard
		default:
			return nil, fmt.Errorf("naming %q: want compat or standard", s.Naming)
		}
		return stubstatus.New(s.Address, client, s.Namespace, naming), nil
	case "memcached":
		if err := checkHostPort(s.Address); err != nil {
			return nil, err
		}
		return memcached.New(s.Address, s.Namespace, opt.Naming == stubstatus.Standard), nil
	case "redis":
		addr := strings.TrimPrefix(s.Address, "redis://")
		if err := checkHostPort(addr); err != nil {
			return nil, err
		}
		pw := s.Password
		if s.PasswordEnv != "" && opt.Getenv != nil {
			pw = opt.Getenv(s.PasswordEnv)
		}
		return redisinfo.New(addr, pw, s.Namespace), nil
	case "prometheus":
		if err := checkURL(s.Address); err != nil {
			return nil, err
		}
		rules, err := s.Rules.compile()
		if err != nil {
			return nil, err
		}
		return promtext.New(s.Address, client, rules, s.MaxBodyBytes), nil
	case "json":
		if err := checkURL(s.Address); err != nil {
			return nil, err
		}
		return jsonmap.New(s.Address, client, s.Headers, s.Metrics, s.MaxBodyBytes)
	case "statsd":
		if err := checkHostPort(s.Address); err != nil {
			return nil, err
		}
		tcp := s.TCP
		switch tcp {
		case "":
			tcp = s.Address
		case "-":
			tcp = ""
		}
		mapping := s.Mapping
		if s.MappingFile != "" {
			if mapping != nil {
				return nil, errors.New("give mapping or mapping_file, not both")
			}
			m, err := statsd.LoadMapping(s.MappingFile)
			if err != nil {
				return nil, fmt.Errorf("mapping_file: %w", err)
			}
			mapping = m
		}
		if mapping == nil {
			mapping = &statsd.Mapping{}
		}
		so := opt.Statsd
		so.Name = s.Name
		so.Standard = opt.Naming == stubstatus.Standard
		l, err := statsd.Listen(s.Address, tcp, mapping, so)
		if err != nil {
			return nil, err
		}
		b.Listeners = append(b.Listeners, l)
		return l, nil
	}
	return nil, fmt.Errorf("unknown kind %q: want one of %s", s.Kind, strings.Join(Kinds, ", "))
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("address %q: want an http:// or https:// URL", s)
	}
	return nil
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil || strings.Contains(s, "/") {
		return fmt.Errorf("address %q: want host:port", s)
	}
	return nil
}

func (r *Rules) compile() (*promtext.Rules, error) {
	if r == nil {
		return nil, nil
	}
	anchored := func(field, s string) (*regexp.Regexp, error) {
		re, err := regexp.Compile("^(?:" + s + ")$")
		if err != nil {
			return nil, fmt.Errorf("rules.%s %q: %w", field, s, err)
		}
		return re, nil
	}
	out := &promtext.Rules{Prefix: r.Prefix, DropLabels: r.DropLabels}
	if r.Prefix != "" && !exposition.ValidMetricName(r.Prefix) {
		return nil, fmt.Errorf("rules.prefix %q is not a valid metric name prefix", r.Prefix)
	}
	for _, rn := range r.Rename {
		re, err := anchored("rename.match", rn.Match)
		if err != nil {
			return nil, err
		}
		out.Rename = append(out.Rename, promtext.Rename{Match: re, Replacement: rn.Replacement})
	}
	for _, k := range r.Keep {
		re, err := anchored("keep", k)
		if err != nil {
			return nil, err
		}
		out.Keep = append(out.Keep, re)
	}
	for _, k := range r.Drop {
		re, err := anchored("drop", k)
		if err != nil {
			return nil, err
		}
		out.Drop = append(out.Drop, re)
	}
	for _, m := range r.KeepSeries {
		re, err := anchored("keep_series.regex", m.Regex)
		if err != nil {
			return nil, err
		}
		out.KeepSeries = append(out.KeepSeries, promtext.LabelMatch{Name: m.Label, Regex: re})
	}
	for _, m := range r.DropSeries {
		re, err := anchored("drop_series.regex", m.Regex)
		if err != nil {
			return nil, err
		}
		out.DropSeries = append(out.DropSeries, promtext.LabelMatch{Name: m.Label, Regex: re})
	}
	keys := make([]string, 0, len(r.AddLabels))
	for k := range r.AddLabels {
		if !exposition.ValidLabelName(k) {
			return nil, fmt.Errorf("rules.add_labels: %q is not a valid label name", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out.AddLabels = append(out.AddLabels, exposition.Label{Name: k, Value: r.AddLabels[k]})
	}
	return out, nil
}
