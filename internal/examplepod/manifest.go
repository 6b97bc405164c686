// Package examplepod runs podkit's example pod (examples/k8s/base) on one
// machine, the way the kubelet would: it reads the Deployment in web.yaml and
// the ConfigMap sources of config/, substitutes the cluster's addresses and
// volume paths, starts the servers the pod talks to (memcached shards, a
// forward-protocol receiver, Prometheus) outside the pod on the host end of
// its veth pair, and starts the containers in the kubelet's order with their
// startup probes. The end-to-end test and make demo share it, so both run the
// manifests as written rather than a copy of them.
package examplepod

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Manifest is the part of the example's Deployment and ConfigMap sources
// that a kubelet on one machine needs.
type Manifest struct {
	Name           string            // pod name: the Deployment's
	Labels         map[string]string // the pod template's
	Annotations    map[string]string // the pod template's
	GraceSeconds   int               // terminationGracePeriodSeconds
	InitContainers []Container       // in order; RestartPolicy "Always" marks a sidecar
	Containers     []Container
	Volumes        []Volume
	// ConfigMaps maps a generated ConfigMap's name to its data: file name
	// (or env key) -> contents (or value).
	ConfigMaps map[string]ConfigMap
}

// ConfigMap is a generated ConfigMap: Files from "files:" sources, Env from
// "envs:" sources (in file order).
type ConfigMap struct {
	Files map[string]string
	Env   []EnvVar
}

// Container is a container of the pod template.
type Container struct {
	Name          string        `yaml:"name"`
	Image         string        `yaml:"image"`
	Command       []string      `yaml:"command"`
	Args          []string      `yaml:"args"`
	RestartPolicy string        `yaml:"restartPolicy"`
	Env           []EnvVar      `yaml:"env"`
	EnvFrom       []EnvFrom     `yaml:"envFrom"`
	Ports         []Port        `yaml:"ports"`
	StartupProbe  *Probe        `yaml:"startupProbe"`
	VolumeMounts  []VolumeMount `yaml:"volumeMounts"`
	Resources     struct {
		Limits map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

// Sidecar reports whether c is a native sidecar (an init container that keeps running).
func (c Container) Sidecar() bool { return c.RestartPolicy == "Always" }

// EnvVar is a container's env entry: a Value or a Downward API reference.
type EnvVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
		ResourceFieldRef *struct {
			ContainerName string `yaml:"containerName"`
			Resource      string `yaml:"resource"`
		} `yaml:"resourceFieldRef"`
	} `yaml:"valueFrom"`
}

// EnvFrom names a ConfigMap whose keys become environment variables.
type EnvFrom struct {
	ConfigMapRef *struct {
		Name string `yaml:"name"`
	} `yaml:"configMapRef"`
}

// Port is a declared container port.
type Port struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

// Probe is an httpGet probe; Port is a number or a port name.
type Probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

// VolumeMount mounts a pod volume at MountPath.
type VolumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

// Volume is a pod volume: an emptyDir or a ConfigMap.
type Volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	EmptyDir *struct{} `yaml:"emptyDir"`
}

type deployment struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Template struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				TerminationGracePeriodSeconds *int        `yaml:"terminationGracePeriodSeconds"`
				InitContainers                []Container `yaml:"initContainers"`
				Containers                    []Container `yaml:"containers"`
				Volumes                       []Volume    `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type kustomization struct {
	ConfigMapGenerator []struct {
		Name  string   `yaml:"name"`
		Files []string `yaml:"files"`
		Envs  []string `yaml:"envs"`
	} `yaml:"configMapGenerator"`
}

// Load reads base/web.yaml (the first Deployment in it) and the ConfigMap
// generator of base/config/kustomization.yaml.
func Load(base string) (*Manifest, error) {
	f, err := os.Open(filepath.Join(base, "web.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read the example manifest: %w (give the examples/k8s/base directory)", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var d deployment
	for {
		d = deployment{}
		if err := dec.Decode(&d); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%s: no Deployment found", f.Name())
			}
			return nil, fmt.Errorf("%s: %w", f.Name(), err)
		}
		if d.Kind == "Deployment" {
			break
		}
	}
	ps := d.Spec.Template.Spec
	m := &Manifest{
		Name:           d.Metadata.Name,
		Labels:         d.Spec.Template.Metadata.Labels,
		Annotations:    d.Spec.Template.Metadata.Annotations,
		GraceSeconds:   30, // the API's default
		InitContainers: ps.InitContainers,
		Containers:     ps.Containers,
		Volumes:        ps.Volumes,
		ConfigMaps:     map[string]ConfigMap{},
	}
	if ps.TerminationGracePeriodSeconds != nil {
		m.GraceSeconds = *ps.TerminationGracePeriodSeconds
	}
	if len(m.Containers) == 0 {
		return nil, fmt.Errorf("%s: the Deployment has no containers", f.Name())
	}

	cfgDir := filepath.Join(base, "config")
	b, err := os.ReadFile(filepath.Join(cfgDir, "kustomization.yaml"))
	if err != nil {
		return nil, fmt.Errorf("read the ConfigMap generator: %w", err)
	}
	var k kustomization
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(cfgDir, "kustomization.yaml"), err)
	}
	for _, g := range k.ConfigMapGenerator {
		cm := ConfigMap{Files: map[string]string{}}
		for _, name := range g.Files {
			b, err := os.ReadFile(filepath.Join(cfgDir, name))
			if err != nil {
				return nil, fmt.Errorf("ConfigMap %s: %w", g.Name, err)
			}
			cm.Files[filepath.Base(name)] = string(b)
		}
		for _, name := range g.Envs {
			b, err := os.ReadFile(filepath.Join(cfgDir, name))
			if err != nil {
				return nil, fmt.Errorf("ConfigMap %s: %w", g.Name, err)
			}
			env, err := parseEnvFile(string(b))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", filepath.Join(cfgDir, name), err)
			}
			cm.Env = append(cm.Env, env...)
		}
		m.ConfigMaps[g.Name] = cm
	}
	return m, nil
}

// parseEnvFile reads KEY=VALUE lines as kustomize's envs: source does:
// blank lines and lines starting with # are skipped, the value is the rest
// of the line as written.
func parseEnvFile(s string) ([]EnvVar, error) {
	var out []EnvVar
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("line %d: %q is not KEY=VALUE", i+1, line)
		}
		out = append(out, EnvVar{Name: k, Value: v})
	}
	return out, nil
}

// Port resolves a probe's port (a number or one of c's port names).
func (c Container) Port(p string) (int, error) {
	for _, cp := range c.Ports {
		if cp.Name == p {
			return cp.ContainerPort, nil
		}
	}
	var n int
	if _, err := fmt.Sscanf(p, "%d", &n); err == nil && n > 0 {
		return n, nil
	}
	return 0, fmt.Errorf("container %s: probe port %q is neither a number nor a declared port name", c.Name, p)
}
