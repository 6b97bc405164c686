package manifests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podkit/podkit/internal/cli"
	"github.com/podkit/podkit/internal/waitfor"
)

// binaries builds podkit's binaries from ./cmd/<name> once per test run.
type binaries struct {
	root string // repository root
	dir  string // where binaries are built

	mu    sync.Mutex
	built map[string]*built
}

type built struct {
	path    string
	missing string          // why the binary cannot be built yet (no cmd/<name>)
	err     error           // the build failed
	envs    map[string]bool // environment twins its -h lists
}

var (
	binsOnce sync.Once
	bins     *binaries
	binsDir  string // removed by TestMain
)

func podkitBinaries(root string) *binaries {
	binsOnce.Do(func() {
		bins = &binaries{root: root, dir: binsDir, built: map[string]*built{}}
	})
	return bins
}

func (bs *binaries) get(name string) *built {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if b, ok := bs.built[name]; ok {
		return b
	}
	b := &built{}
	bs.built[name] = b
	src := filepath.Join(bs.root, "cmd", name)
	goFiles, _ := filepath.Glob(filepath.Join(src, "*.go"))
	if len(goFiles) == 0 {
		b.missing = fmt.Sprintf("cmd/%s has no Go files yet: cannot check the flags of %s", name, name)
		return b
	}
	b.path = filepath.Join(bs.dir, name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.path, "./cmd/"+name)
	cmd.Dir = bs.root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.err = fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, out)
		return b
	}
	b.envs, b.err = envTwins(b.path)
	return b
}

var envTwinRE = regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`)

// envTwins lists the environment variables a binary reads, from its -h.
func envTwins(bin string) (map[string]bool, error) {
	out, _, err := runBinary(bin, []string{"-h"}, nil)
	if err != nil {
		return nil, fmt.Errorf("%s -h: %w", filepath.Base(bin), err)
	}
	envs := map[string]bool{}
	for _, m := range envTwinRE.FindAllStringSubmatch(out, -1) {
		envs[m[1]] = true
	}
	if len(envs) == 0 {
		return nil, fmt.Errorf("%s -h lists no environment twin:\n%s", filepath.Base(bin), out)
	}
	return envs, nil
}

// runBinary runs bin with exactly env (nothing inherited) and a deadline,
// and returns its stdout, stderr and a non-nil error unless it exited 0.
func runBinary(bin string, args, env []string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after 30s: does it handle -version?")
	}
	return stdout.String(), stderr.String(), err
}

// podEnv is the environment a container gets: literals, ConfigMap values,
// placeholders for fieldRefs and resourceFieldRef values computed from the
// pod's resources as the kubelet does (rounded up).
func podEnv(p *pod, c *corev1.Container, b *bundle) ([]string, error) {
	env := containerEnv(c, b)
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		switch {
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = "placeholder-" + strings.ToLower(e.Name)
		case e.ValueFrom.ResourceFieldRef != nil:
			ref := e.ValueFrom.ResourceFieldRef
			target := c
			if ref.ContainerName != "" {
				target = nil
				for _, m := range members(&p.spec) {
					if m.c.Name == ref.ContainerName {
						target = m.c
					}
				}
				if target == nil {
					return nil, fmt.Errorf("env %s: no container %q", e.Name, ref.ContainerName)
				}
			}
			kind, res, _ := strings.Cut(ref.Resource, ".")
			list := target.Resources.Limits
			if kind == "requests" {
				list = target.Resources.Requests
			}
			q, ok := list[corev1.ResourceName(res)]
			if !ok {
				return nil, fmt.Errorf("env %s: container %s sets no %s (the kubelet would give the node's allocatable)", e.Name, target.Name, ref.Resource)
			}
			div := int64(1)
			if !ref.Divisor.IsZero() {
				div = ref.Divisor.Value()
			}
			if res == "cpu" {
				div = max(ref.Divisor.MilliValue(), 1000)
				env[e.Name] = fmt.Sprint((q.MilliValue() + div - 1) / div)
				continue
			}
			env[e.Name] = fmt.Sprint((q.Value() + div - 1) / div)
		}
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out, nil
}

// checkFlags runs every podkit container's binary with the container's args
// and environment plus -version: the cli package parses every flag and env
// twin before it answers -version, so exit 0 means all of them were
// accepted. It also checks that each <BINARY>_* variable is a twin the
// binary knows (a misspelt twin would be ignored silently), and waitfor's
// conditions. missing lists binaries that cannot be built yet.
func checkFlags(p *pod, b *bundle, bs *binaries) (errs []error, missing []string) {
	for _, m := range members(&p.spec) {
		c := m.c
		name, ok := podkitBinary(c.Image)
		if !ok {
			continue
		}
		if len(c.Command) > 0 {
			errs = append(errs, fmt.Errorf("%s: command %q replaces the image's entrypoint /%s: give flags as args", c.Name, c.Command, name))
			continue
		}
		bin := bs.get(name)
		if bin.missing != "" {
			missing = append(missing, bin.missing)
			continue
		}
		if bin.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Name, bin.err))
			continue
		}
		env, err := podEnv(p, c, b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Name, err))
			continue
		}
		prefix := cli.EnvPrefix(name) + "_"
		for _, kv := range env {
			k, _, _ := strings.Cut(kv, "=")
			if strings.HasPrefix(k, prefix) && !bin.envs[k] {
				errs = append(errs, fmt.Errorf("%s: %s is not an environment twin of any %s flag", c.Name, k, name))
			}
		}
		// -version first: flag parsing stops at the first positional
		// argument (waitfor's conditions).
		stdout, stderr, err := runBinary(bin.path, append([]string{"-version"}, c.Args...), env)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s -version %s: %v: %s", c.Name, name, strings.Join(c.Args, " "), err, strings.TrimSpace(stderr)))
		} else if !strings.HasPrefix(stdout, name+" ") {
			errs = append(errs, fmt.Errorf("%s: %s -version printed %q, want %q", c.Name, name, stdout, name+" <version>"))
		}
		if name == "waitfor" {
			errs = append(errs, checkConditions(c)...)
		}
	}
	return errs, missing
}

// checkConditions parses waitfor's positional arguments as waitfor does.
func checkConditions(c *corev1.Container) []error {
	var errs []error
	conds := 0
	for i, a := range c.Args {
		if strings.HasPrefix(a, "-") {
			if conds > 0 {
				errs = append(errs, fmt.Errorf("%s: flag %s after a condition is read as a condition: put flags first", c.Name, a))
			}
			continue
		}
		if i > 0 && strings.HasPrefix(c.Args[i-1], "-") && !strings.Contains(c.Args[i-1], "=") && conds == 0 {
			continue // the value of "-flag value"
		}
		conds++
		if _, err := waitfor.Parse(a); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Name, err))
		}
	}
	if conds == 0 {
		errs = append(errs, fmt.Errorf("%s: waitfor has no condition to wait for", c.Name))
	}
	return errs
}
