// Package config reads nutcracker's (twemproxy's) YAML pool configuration
// as nutcracker 0.5.0 reads it, plus the ambassador's own failure_policy key.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/podkit/podkit/internal/cacheproxy/ring"
)

// FailurePolicy is what happens to a server's keys while it is down.
type FailurePolicy int

const (
	// Twemproxy ejects a server after server_failure_limit consecutive
	// failures (when auto_eject_hosts is true) and rehashes its keys onto
	// the others until it is back.
	Twemproxy FailurePolicy = iota
	// Mcrouter never rehashes: requests for a down server fail fast with an
	// error reply until a background probe finds it up again.
	Mcrouter
)

func (p FailurePolicy) String() string {
	if p == Mcrouter {
		return "mcrouter"
	}
	return "twemproxy"
}

// Server is one `servers:` entry.
type Server struct {
	Host   string
	Port   int
	Addr   string // host:port, what is dialled (re-resolved on every dial)
	Weight int
	Alias  string // the optional name after the weight
	// Name is the ketama input and the metrics label: the alias, else
	// host:port, else host alone when the port is 11211 (libmemcached's rule).
	Name string
}

// Pool is one named pool.
type Pool struct {
	Name               string
	Line               int
	Listen             string // host:port, or a unix socket path
	ListenUnix         bool
	ListenPerm         os.FileMode
	Hash               string
	HashFunc           ring.HashFunc
	HashTag            string
	Distribution       ring.Distribution
	Timeout            time.Duration // 0: wait forever
	Backlog            int
	ClientConnections  int
	Redis              bool
	RedisAuth          string
	RedisDB            int
	Preconnect         bool
	AutoEjectHosts     bool
	TCPKeepalive       bool
	ServerConnections  int
	ServerRetryTimeout time.Duration
	ServerFailureLimit int
	FailurePolicy      FailurePolicy
	// Servers in nutcracker's order (see sortServers), not file order.
	Servers []Server
}

// RingServers is the pool's servers as the ring sees them.
func (p *Pool) RingServers() []ring.Server {
	out := make([]ring.Server, len(p.Servers))
	for i, s := range p.Servers {
		out[i] = ring.Server{Name: s.Name, Weight: s.Weight}
	}
	return out
}

// Ring builds the pool's ring with every server live.
func (p *Pool) Ring() *ring.Ring {
	return ring.New(p.Distribution, p.HashFunc, p.HashTag, p.RingServers(), nil)
}

// Config is a whole file: pools in file order.
type Config struct {
	Pools []*Pool
}

// Pool returns the named pool or nil.
func (c *Config) Pool(name string) *Pool {
	for _, p := range c.Pools {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Load reads and parses a file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse parses nutcracker YAML. Errors name the line.
func Parse(b []byte) (*Config, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty configuration: define at least one pool")
		}
		return nil, fmt.Errorf("yaml: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil, errors.New("empty configuration: define at least one pool")
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the top level must map pool names to pools", root.Line)
	}
	c := &Config{}
	listens := map[string]string{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		p, err := parsePool(k.Value, k.Line, v)
		if err != nil {
			return nil, err
		}
		if other, ok := listens[p.Listen]; ok {
			return nil, fmt.Errorf("line %d: pool %q listens on %s like pool %q: give each pool its own listen address", k.Line, p.Name, p.Listen, other)
		}
		listens[p.Listen] = p.Name
		c.Pools = append(c.Pools, p)
	}
	if len(c.Pools) == 0 {
		return nil, errors.New("no pools: define at least one pool")
	}
	return c, nil
}

// Defaults of nutcracker 0.5.0 (nc_conf.h).
func newPool(name string, line int) *Pool {
	return &Pool{
		Name: name, Line: line,
		Hash: "fnv1a_64", HashFunc: ring.FNV1a_64,
		Distribution:       ring.Ketama,
		Backlog:            512,
		ServerConnections:  1,
		ServerRetryTimeout: 30 * time.Second,
		ServerFailureLimit: 2,
	}
}

func parsePool(name string, line int, n *yaml.Node) (*Pool, error) {
	p := newPool(name, line)
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: pool %q must be a mapping of keys", n.Line, name)
	}
	errf := func(l int, format string, args ...any) error {
		return fmt.Errorf("line %d: pool %q: %s", l, name, fmt.Sprintf(format, args...))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if seen[key] {
			return nil, errf(k.Line, "%s is given twice", key)
		}
		seen[key] = true
		if key == "servers" {
			if v.Kind != yaml.SequenceNode {
				return nil, errf(v.Line, "servers must be a list of \"host:port:weight [name]\"")
			}
			for _, s := range v.Content {
				if s.Kind != yaml.ScalarNode {
					return nil, errf(s.Line, "server must be \"host:port:weight [name]\"")
				}
				srv, err := ParseServer(s.Value)
				if err != nil {
					return nil, errf(s.Line, "%v", err)
				}
				p.Servers = append(p.Servers, srv)
			}
			continue
		}
		if v.Kind != yaml.ScalarNode {
			return nil, errf(v.Line, "%s must be a single value", key)
		}
		val := v.Value
		var err error
		switch key {
		case "listen":
			err = p.setListen(val)
		case "hash":
			p.Hash = val
			p.HashFunc, err = ring.HashByName(val)
		case "hash_tag":
			if len(val) != 2 {
				err = fmt.Errorf("%q is not a valid hash tag string with two characters", val)
			}
			p.HashTag = val
		case "distribution":
			p.Distribution, err = ring.ParseDistribution(val)
		case "timeout":
			var ms int
			ms, err = parseInt(val)
			if err == nil && ms > 0 {
				p.Timeout = time.Duration(ms) * time.Millisecond
			}
		case "backlog":
			p.Backlog, err = parseInt(val)
		case "client_connections":
			p.ClientConnections, err = parseInt(val)
		case "redis":
			p.Redis, err = parseBool(val)
		case "redis_auth":
			p.RedisAuth = val
		case "redis_db":
			p.RedisDB, err = parseInt(val)
		case "preconnect":
			p.Preconnect, err = parseBool(val)
		case "auto_eject_hosts":
			p.AutoEjectHosts, err = parseBool(val)
		case "tcpkeepalive":
			p.TCPKeepalive, err = parseBool(val)
		case "server_connections":
			p.ServerConnections, err = parseInt(val)
			if err == nil && p.ServerConnections < 1 {
				err = errors.New("must be at least 1")
			}
		case "server_retry_timeout":
			var ms int
			ms, err = parseInt(val)
			p.ServerRetryTimeout = time.Duration(ms) * time.Millisecond
		case "server_failure_limit":
			p.ServerFailureLimit, err = parseInt(val)
			if err == nil && p.ServerFailureLimit < 1 {
				err = errors.New("must be at least 1")
			}
		case "failure_policy":
			switch val {
			case "twemproxy":
				p.FailurePolicy = Twemproxy
			case "mcrouter":
				p.FailurePolicy = Mcrouter
			default:
				err = errors.New("use twemproxy (eject and rehash) or mcrouter (fail fast, no rehash)")
			}
		default:
			return nil, errf(k.Line, "unknown key %q", key)
		}
		if err != nil {
			return nil, errf(v.Line, "%s: %v", key, err)
		}
	}
	if p.Listen == "" {
		return nil, errf(line, "listen is missing: give host:port or a unix socket path")
	}
	if len(p.Servers) == 0 {
		return nil, errf(line, "servers is empty: give at least one \"host:port:weight [name]\"")
	}
	if err := checkDuplicates(p.Servers); err != nil {
		return nil, errf(line, "%v", err)
	}
	return p, nil
}

func (p *Pool) setListen(val string) error {
	if strings.HasPrefix(val, "/") {
		path, perm, hasPerm := strings.Cut(val, " ")
		p.Listen, p.ListenUnix = path, true
		if hasPerm {
			m, err := strconv.ParseUint(strings.TrimSpace(perm), 8, 32)
			if err != nil {
				return fmt.Errorf("bad socket permission %q: give octal like 0666", perm)
			}
			p.ListenPerm = os.FileMode(m)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(val)
	if err != nil {
		return fmt.Errorf("%q is not host:port", val)
	}
	if _, err := parsePort(port); err != nil {
		return err
	}
	p.Listen = net.JoinHostPort(host, port)
	return nil
}

// ParseServer parses "host:port:weight [name]" from the end, as nutcracker
// does: the last space separates the name, then the last two colons the
// weight and the port (so IPv6 hosts work without brackets).
func ParseServer(s string) (Server, error) {
	var srv Server
	spec := s
	if i := strings.LastIndexByte(s, ' '); i >= 0 {
		spec, srv.Alias = strings.TrimSpace(s[:i]), s[i+1:]
		if srv.Alias == "" {
			return srv, fmt.Errorf("server %q has an empty name", s)
		}
	}
	i := strings.LastIndexByte(spec, ':')
	if i < 0 {
		return srv, fmt.Errorf("server %q is not host:port:weight [name]", s)
	}
	w, err := strconv.Atoi(spec[i+1:])
	if err != nil || w <= 0 {
		return srv, fmt.Errorf("server %q has an invalid weight: give a positive integer", s)
	}
	srv.Weight = w
	hp := spec[:i]
	if strings.HasPrefix(hp, "/") {
		return srv, fmt.Errorf("server %q: unix socket servers are not supported; use host:port", s)
	}
	j := strings.LastIndexByte(hp, ':')
	if j <= 0 {
		return srv, fmt.Errorf("server %q is not host:port:weight [name]", s)
	}
	srv.Host = strings.TrimSuffix(strings.TrimPrefix(hp[:j], "["), "]")
	srv.Port, err = parsePort(hp[j+1:])
	if err != nil {
		return srv, fmt.Errorf("server %q: %v", s, err)
	}
	srv.Addr = net.JoinHostPort(srv.Host, strconv.Itoa(srv.Port))
	switch {
	case srv.Alias != "":
		srv.Name = srv.Alias
	case srv.Port == 11211:
		srv.Name = hp[:j]
	default:
		srv.Name = hp
	}
	return srv, nil
}

// sortServers orders servers as nutcracker does after reading them: by the
// length of the name, then its bytes. Modula and random index this order,
// so keeping config order would move keys.
func sortServers(ss []Server) {
	sort.SliceStable(ss, func(i, j int) bool {
		a, b := ss[i].Name, ss[j].Name
		if len(a) != len(b) {
			return len(a) < len(b)
		}
		return a < b
	})
}

func checkDuplicates(ss []Server) error {
	sortServers(ss)
	seen := map[string]bool{}
	for _, s := range ss {
		if seen[s.Name] {
			return fmt.Errorf("server name %q is given twice: names (or host:port) must be unique in a pool", s.Name)
		}
		seen[s.Name] = true
	}
	return nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 65535 {
		return 0, fmt.Errorf("invalid port %q", s)
	}
	return n, nil
}

func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	return n, nil
}

func parseBool(s string) (bool, error) {
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("%q is not true or false", s)
}

// FromFlags builds a one-pool configuration from -listen and -servers.
func FromFlags(name, listen string, servers []string, redis bool) (*Config, error) {
	p := newPool(name, 0)
	p.Redis = redis
	if err := p.setListen(listen); err != nil {
		return nil, fmt.Errorf("-listen: %w", err)
	}
	for _, s := range servers {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Count(s, ":") == 1 && !strings.Contains(s, " ") {
			s += ":1"
		}
		srv, err := ParseServer(s)
		if err != nil {
			return nil, fmt.Errorf("-servers: %w", err)
		}
		p.Servers = append(p.Servers, srv)
	}
	if len(p.Servers) == 0 {
		return nil, errors.New("-servers is empty: give at least one host:port")
	}
	if err := checkDuplicates(p.Servers); err != nil {
		return nil, fmt.Errorf("-servers: %w", err)
	}
	return &Config{Pools: []*Pool{p}}, nil
}

// Names lists the pools, sorted, for messages.
func (c *Config) Names() []string {
	var n []string
	for _, p := range c.Pools {
		n = append(n, p.Name)
	}
	sort.Strings(n)
	return n
}
