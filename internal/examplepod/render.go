package examplepod

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Addresses are the cluster addresses of the manifests and what replaces
// them on one machine.
type Addresses struct {
	Shards     []string // host:port of memcached-N.memcached:11211, by N
	Forward    string   // host:port of fluent-bit.default.svc:24224
	Health     string   // host:port of fluent-bit:2020 (the aggregator's health endpoint)
	Prometheus string   // host:port of Prometheus, for the demo's hints; may be empty
}

var shardRE = regexp.MustCompile(`memcached-(\d+)\.memcached:11211`)

// ShardCount is how many memcached shards the manifests name
// (memcached-N.memcached:11211 anywhere in the containers' args and
// the ConfigMaps).
func (m *Manifest) ShardCount() int {
	max := -1
	see := func(s string) {
		for _, g := range shardRE.FindAllStringSubmatch(s, -1) {
			if n, _ := strconv.Atoi(g[1]); n > max {
				max = n
			}
		}
	}
	for _, c := range m.all() {
		for _, a := range append(append([]string(nil), c.Command...), c.Args...) {
			see(a)
		}
	}
	for _, cm := range m.ConfigMaps {
		for _, f := range cm.Files {
			see(f)
		}
		for _, e := range cm.Env {
			see(e.Value)
		}
	}
	return max + 1
}

func (m *Manifest) all() []Container {
	return append(append([]Container(nil), m.InitContainers...), m.Containers...)
}

// substitute replaces the cluster's addresses; leftover cluster names are
// reported by unresolved.
func (a Addresses) substitute(s string) string {
	s = shardRE.ReplaceAllStringFunc(s, func(m string) string {
		n, _ := strconv.Atoi(shardRE.FindStringSubmatch(m)[1])
		if n < len(a.Shards) {
			return a.Shards[n]
		}
		return m
	})
	s = strings.ReplaceAll(s, "fluent-bit.default.svc:24224", a.Forward)
	s = strings.ReplaceAll(s, "fluent-bit:2020", a.Health)
	return s
}

// clusterNameRE matches what substitute should have replaced: a service
// name the host cannot resolve.
var clusterNameRE = regexp.MustCompile(`[a-z0-9-]+\.(memcached|svc)[:.]|fluent-bit[.:]|\.svc\.cluster\.local`)

func unresolved(where, s string) error {
	if m := clusterNameRE.FindString(s); m != "" {
		return fmt.Errorf("%s: cluster address %q has no substitute on this machine: teach examplepod.Addresses about it", where, m)
	}
	return nil
}

// mount maps a container's mount path to the host directory standing for it.
type mount struct{ path, host string }

// rewritePaths replaces every mount path in s (as a whole path component
// prefix) with its host directory.
func rewritePaths(s string, mounts []mount) string {
	if len(mounts) == 0 {
		return s
	}
	ms := append([]mount(nil), mounts...)
	sort.Slice(ms, func(i, j int) bool { return len(ms[i].path) > len(ms[j].path) })
	var b strings.Builder
	for i := 0; i < len(s); {
		matched := false
		if i == 0 || isPathStart(s[i-1]) {
			for _, m := range ms {
				if strings.HasPrefix(s[i:], m.path) {
					end := i + len(m.path)
					if end == len(s) || isPathEnd(s[end]) {
						b.WriteString(m.host)
						i = end
						matched = true
						break
					}
				}
			}
		}
		if !matched {
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

func isPathStart(c byte) bool { return strings.IndexByte(" \t\n=\"',", c) >= 0 }
func isPathEnd(c byte) bool   { return strings.IndexByte("/ \t\n;\"',", c) >= 0 }

// Spec is a container ready to run on this machine.
type Spec struct {
	Container
	Argv []string
	Env  []string // KEY=VALUE beyond the Downward API identity podsim gives
}

// Render turns the manifest's containers into argvs and environments for
// this machine: images become binaries (podkit/NAME:TAG -> bin/NAME, others
// run their command from PATH), volumes become directories under dir, and
// addresses are substituted in args, env and the ConfigMap files mounted.
// It returns the init containers and the containers, in order.
func (m *Manifest) Render(addr Addresses, bin, dir string, lookPath func(string) (string, error)) (inits, mains []Spec, err error) {
	vols := map[string]Volume{}
	for _, v := range m.Volumes {
		vols[v.Name] = v
	}
	render := func(c Container) (Spec, error) {
		var mounts []mount
		for _, vm := range c.VolumeMounts {
			v, ok := vols[vm.Name]
			if !ok {
				return Spec{}, fmt.Errorf("container %s mounts volume %s, which the pod does not declare", c.Name, vm.Name)
			}
			var host string
			switch {
			case v.EmptyDir != nil:
				// Shared by every container that mounts it, as an emptyDir is.
				host = filepath.Join(dir, "volumes", v.Name)
				if err := os.MkdirAll(host, 0o755); err != nil {
					return Spec{}, err
				}
			case v.ConfigMap != nil:
				host = filepath.Join(dir, "configmaps", c.Name, v.Name)
			default:
				return Spec{}, fmt.Errorf("volume %s: only emptyDir and configMap volumes run here", v.Name)
			}
			mounts = append(mounts, mount{vm.MountPath, host})
		}
		// ConfigMap files are written with this container's paths and the
		// machine's addresses.
		for _, vm := range c.VolumeMounts {
			v := vols[vm.Name]
			if v.ConfigMap == nil {
				continue
			}
			cm, ok := m.ConfigMaps[v.ConfigMap.Name]
			if !ok {
				return Spec{}, fmt.Errorf("volume %s: ConfigMap %s is not generated by config/kustomization.yaml", v.Name, v.ConfigMap.Name)
			}
			host := filepath.Join(dir, "configmaps", c.Name, v.Name)
			if err := os.MkdirAll(host, 0o755); err != nil {
				return Spec{}, err
			}
			for name, body := range cm.Files {
				out := rewritePaths(addr.substitute(body), mounts)
				if err := unresolved("ConfigMap "+v.ConfigMap.Name+" "+name, out); err != nil {
					return Spec{}, err
				}
				if err := os.WriteFile(filepath.Join(host, name), []byte(out), 0o644); err != nil {
					return Spec{}, err
				}
			}
		}
		fix := func(where, s string) (string, error) {
			s = rewritePaths(addr.substitute(s), mounts)
			return s, unresolved("container "+c.Name+" "+where, s)
		}

		s := Spec{Container: c}
		var argv []string
		switch {
		case len(c.Command) > 0:
			p, err := lookPath(c.Command[0])
			if err != nil {
				return Spec{}, fmt.Errorf("container %s runs %s: %w", c.Name, c.Command[0], err)
			}
			argv = append([]string{p}, c.Command[1:]...)
		case strings.HasPrefix(c.Image, "podkit/"):
			name, _, _ := strings.Cut(strings.TrimPrefix(c.Image, "podkit/"), ":")
			argv = []string{filepath.Join(bin, name)}
		default:
			return Spec{}, fmt.Errorf("container %s: image %s has no command to run here", c.Name, c.Image)
		}
		argv = append(argv, c.Args...)
		for i := 1; i < len(argv); i++ {
			if argv[i], err = fix("args", argv[i]); err != nil {
				return Spec{}, err
			}
		}
		s.Argv = argv
		// envFrom first, env after: env wins, as in Kubernetes (exec keeps
		// the last of duplicate keys).
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef == nil {
				continue
			}
			cm, ok := m.ConfigMaps[ef.ConfigMapRef.Name]
			if !ok {
				return Spec{}, fmt.Errorf("container %s: envFrom ConfigMap %s is not generated by config/kustomization.yaml", c.Name, ef.ConfigMapRef.Name)
			}
			for _, e := range cm.Env {
				v, err := fix("env "+e.Name, e.Value)
				if err != nil {
					return Spec{}, err
				}
				s.Env = append(s.Env, e.Name+"="+v)
			}
		}
		for _, e := range c.Env {
			switch {
			case e.ValueFrom == nil:
				v, err := fix("env "+e.Name, e.Value)
				if err != nil {
					return Spec{}, err
				}
				s.Env = append(s.Env, e.Name+"="+v)
			case e.ValueFrom.ResourceFieldRef != nil:
				r := e.ValueFrom.ResourceFieldRef
				target := c
				for _, o := range m.all() {
					if o.Name == r.ContainerName {
						target = o
					}
				}
				res := strings.TrimPrefix(r.Resource, "limits.")
				q, ok := target.Resources.Limits[res]
				if !ok || res == r.Resource {
					continue // no limit: the kubelet gives the node's allocatable; leave it unset
				}
				n, err := quantity(q)
				if err != nil {
					return Spec{}, fmt.Errorf("container %s: %s: %w", c.Name, r.Resource, err)
				}
				s.Env = append(s.Env, fmt.Sprintf("%s=%d", e.Name, n))
			}
			// fieldRef values (pod name, namespace, UID, node, IP) come
			// from podsim's Downward API environment.
		}
		return s, nil
	}
	for _, c := range m.InitContainers {
		s, err := render(c)
		if err != nil {
			return nil, nil, err
		}
		inits = append(inits, s)
	}
	for _, c := range m.Containers {
		s, err := render(c)
		if err != nil {
			return nil, nil, err
		}
		mains = append(mains, s)
	}
	return inits, mains, nil
}

// quantity reads a memory quantity (64Mi, 1G, 1048576) as bytes.
func quantity(q string) (int64, error) {
	n, mult := q, int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}} {
		if v, ok := strings.CutSuffix(q, u.suffix); ok {
			n, mult = v, u.mult
			break
		}
	}
	v, err := strconv.ParseInt(n, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("quantity %q: want a whole number with an optional Ki, Mi, Gi, Ti, k, M, G or T suffix", q)
	}
	return v * mult, nil
}
