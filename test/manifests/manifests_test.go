package manifests

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kindv1alpha4 "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"

	"github.com/podkit/podkit/internal/testserver"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podkit-manifests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binsDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The test runs in test/manifests.
var root = filepath.Join("..", "..")

func repo(parts ...string) string {
	return filepath.Join(append([]string{root}, parts...)...)
}

const (
	kindConfig = "examples/kind/cluster.yaml"
	staticPod  = "examples/k8s/static/podkit-static-pod.yaml"
)

// exampleSets are the ways the examples are applied, each loaded without
// kubectl.
func exampleSets(t *testing.T) map[string]*bundle {
	t.Helper()
	sets := map[string]*bundle{}
	for _, dir := range []string{"examples/k8s/base", "examples/k8s/classic"} {
		b, err := loadKustomization(repo(dir))
		if err != nil {
			t.Fatal(err)
		}
		sets[dir] = b
	}
	b, err := loadFiles(repo(staticPod))
	if err != nil {
		t.Fatal(err)
	}
	b.hostPaths = kindHostPaths(t, loadKindConfig(t, repo(kindConfig)))
	sets[staticPod] = b
	return sets
}

func TestExamples(t *testing.T) {
	t.Parallel()
	for name, b := range exampleSets(t) {
		pods := b.pods()
		if len(pods) == 0 {
			t.Errorf("%s: no pod found", name)
		}
		for _, p := range pods {
			t.Run(p.where, func(t *testing.T) {
				t.Parallel()
				for check, errs := range runChecks(&p, b) {
					for _, err := range errs {
						t.Errorf("%s: %v", check, err)
					}
				}
			})
		}
	}
}

// TestExamplesShape pins what the examples promise beyond the generic
// checks: the web pod's sidecars, its init container and its Downward API.
func TestExamplesShape(t *testing.T) {
	t.Parallel()
	sets := exampleSets(t)
	for _, name := range []string{"examples/k8s/base", staticPod} {
		var web *pod
		for _, p := range sets[name].pods() {
			if p.meta.Labels["app.kubernetes.io/part-of"] == "podkit-example" && len(p.spec.InitContainers) > 0 {
				web = &p
			}
		}
		if web == nil {
			t.Fatalf("%s: no web pod", name)
		}
		var order []string
		for _, m := range members(&web.spec) {
			order = append(order, m.role.String()+" "+m.c.Name)
			bin, ok := podkitBinary(m.c.Image)
			if !ok {
				continue
			}
			env := map[string]*corev1.EnvVar{}
			for i := range m.c.Env {
				env[m.c.Env[i].Name] = &m.c.Env[i]
			}
			for _, want := range []string{"POD_NAME", "POD_NAMESPACE", "POD_UID", "NODE_NAME", "POD_IP"} {
				if e := env[want]; e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
					t.Errorf("%s %s: no %s from a fieldRef", name, m.c.Name, want)
				}
			}
			if e := env["CONTAINER_NAME"]; e == nil || e.Value != m.c.Name {
				t.Errorf("%s %s: CONTAINER_NAME is not the literal %q", name, m.c.Name, m.c.Name)
			}
			if e := env["MEMORY_LIMIT"]; e == nil || e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil {
				t.Errorf("%s %s (%s): no MEMORY_LIMIT from resourceFieldRef", name, m.c.Name, bin)
			}
		}
		want := []string{"init container waitfor", "sidecar logsidecar", "sidecar ambassador", "sidecar adapter", "container nginx"}
		if !slices.Equal(order, want) {
			t.Errorf("%s: containers %q, want %q", name, order, want)
		}
	}
}

func TestExamplesFlags(t *testing.T) {
	t.Parallel()
	bs := podkitBinaries(root)
	var missing []string
	for name, b := range exampleSets(t) {
		for _, p := range b.pods() {
			errs, miss := checkFlags(&p, b, bs)
			for _, err := range errs {
				t.Errorf("%s %s: %v", name, p.where, err)
			}
			missing = append(missing, miss...)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		msg := strings.Join(slices.Compact(missing), "\n")
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// TestClassicMatchesBase keeps the pre-1.29 variant in step: the same pod
// with the sidecars moved from initContainers to containers.
func TestClassicMatchesBase(t *testing.T) {
	t.Parallel()
	sets := exampleSets(t)
	web := func(b *bundle) *appsv1.Deployment {
		for _, o := range b.objects {
			if d, ok := o.obj.(*appsv1.Deployment); ok && d.Name == "web" {
				return d
			}
		}
		t.Fatal("no Deployment web")
		return nil
	}
	base, classic := web(sets["examples/k8s/base"]), web(sets["examples/k8s/classic"])
	for _, c := range classic.Spec.Template.Spec.InitContainers {
		if c.RestartPolicy != nil {
			t.Errorf("classic init container %s has a restartPolicy: clusters before 1.29 reject it", c.Name)
		}
	}
	byName := func(spec corev1.PodSpec) map[string]corev1.Container {
		out := map[string]corev1.Container{}
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			c.RestartPolicy = nil
			out[c.Name] = c
		}
		return out
	}
	b, c := byName(base.Spec.Template.Spec), byName(classic.Spec.Template.Spec)
	if len(b) != len(c) {
		t.Errorf("base has %d containers, classic %d", len(b), len(c))
	}
	for name, bc := range b {
		if !reflect.DeepEqual(bc, c[name]) {
			t.Errorf("container %s differs between base and classic", name)
		}
	}
	bs, cs := base.Spec.Template.Spec, classic.Spec.Template.Spec
	bs.InitContainers, bs.Containers, cs.InitContainers, cs.Containers = nil, nil, nil, nil
	if !reflect.DeepEqual(bs, cs) {
		t.Error("pod specs differ beyond the containers")
	}
}

// TestEveryExampleFileIsRead fails when a manifest is added that no test
// loads.
func TestEveryExampleFileIsRead(t *testing.T) {
	t.Parallel()
	read := map[string]bool{filepath.Clean(repo(kindConfig)): true}
	for _, b := range exampleSets(t) {
		for _, f := range b.files {
			read[filepath.Clean(f)] = true
		}
	}
	for _, dir := range []string{"examples/k8s", "examples/kind"} {
		err := filepath.WalkDir(repo(dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			if ext := filepath.Ext(p); (ext == ".yaml" || ext == ".yml") && !read[filepath.Clean(p)] {
				t.Errorf("%s is read by no test: add it to a kustomization or to exampleSets", p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// brokenCases: each file under testdata/broken breaks one check, which must
// report it; testdata/good.yaml passes every check.
var brokenCases = []struct {
	file, check, want string
}{
	{"port-clash.yaml", "ports", "port 9101/TCP declared by ambassador and adapter"},
	{"undeclared-listen.yaml", "ports", "listens on 9102 (-admin-addr) but declares no such port"},
	{"config-listen.yaml", "ports", "ambassador listens on 11212 (nutcracker.yml) but declares no such port"},
	{"hostpath-listen.yaml", "ports", "nginx listens on 8080 (nginx.conf) but declares no such port"},
	{"probe-port.yaml", "probes", "port 9999 is not a TCP port the container declares"},
	{"probe-missing.yaml", "probes", "has no livenessProbe"},
	{"probe-on-init.yaml", "probes", "init container waitfor has a startupProbe"},
	{"requests-above-limits.yaml", "resources", "above its limit"},
	{"no-limits.yaml", "resources", "has no memory limit"},
	{"downward-fieldpath.yaml", "downward", `fieldRef "spec.hostname" is not a field`},
	{"downward-volume-fieldpath.yaml", "downward", `fieldRef "spec.nodeName" is not a field the Downward API gives in a volume`},
	{"downward-container.yaml", "downward", `containerName "nginxx" is no container`},
	{"downward-resource.yaml", "downward", `resource "limits.memroy"`},
	{"memory-divisor.yaml", "downward", "want limits.memory in bytes"},
	{"config-key.yaml", "configs", `has no file "nutcraker.yml"`},
	{"config-unmounted.yaml", "configs", "no volume is mounted there"},
	{"config-missing-configmap.yaml", "configs", `no ConfigMap "ambassador"`},
	{"envfrom-missing.yaml", "configs", `envFrom: no ConfigMap "adapter-settings"`},
	{"hostpath-unmounted.yaml", "configs", "hostPath /etc/elsewhere is not mounted"},
	{"root-user.yaml", "security", "does not run as user 65532"},
	{"writable-root.yaml", "security", "readOnlyRootFilesystem is not true"},
	{"caps.yaml", "security", "capabilities must drop ALL"},
	{"sidecar-no-restart.yaml", "images", "needs restartPolicy: Always"},
	{"pull-always.yaml", "images", "use imagePullPolicy IfNotPresent or Never"},
	{"prometheus-port.yaml", "prometheus", `prometheus.io/port "9999"`},
}

// testdataHostPaths stands in for the kind config in testdata.
func testdataHostPaths() map[string]string {
	return map[string]string{"/etc/podkit/config": filepath.Join("testdata", "hostconfig")}
}

func TestChecksPassOnGood(t *testing.T) {
	t.Parallel()
	b, err := loadFiles(filepath.Join("testdata", "good.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	b.hostPaths = testdataHostPaths()
	for _, p := range b.pods() {
		for check, errs := range runChecks(&p, b) {
			for _, err := range errs {
				t.Errorf("%s: %s: %v", p.where, check, err)
			}
		}
	}
}

func TestChecksCatchBroken(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, tc := range brokenCases {
		seen[tc.check] = true
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			b, err := loadFiles(filepath.Join("testdata", "broken", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			b.hostPaths = testdataHostPaths()
			var fn func(*pod, *bundle) []error
			for _, c := range checks {
				if c.name == tc.check {
					fn = c.fn
				}
			}
			var got []string
			for _, p := range b.pods() {
				for _, err := range fn(&p, b) {
					got = append(got, err.Error())
				}
			}
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("check %s reported %q, want an error containing %q", tc.check, got, tc.want)
			}
		})
	}
	for _, c := range checks {
		if !seen[c.name] {
			t.Errorf("check %s has no broken manifest under testdata/broken", c.name)
		}
	}
}

func TestFlagsCatchBroken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, want string
	}{
		{"flag-unknown.yaml", "flag provided but not defined: -timeot"},
		{"flag-bad-value.yaml", `invalid value "soon" for flag -timeout`},
		{"flag-env-typo.yaml", "WAITFOR_TIMEOUTT is not an environment twin"},
		{"flag-bad-env-value.yaml", "WAITFOR_ATTEMPT_TIMEOUT"},
		{"flag-bad-condition.yaml", `unknown scheme "memcached"`},
		{"flag-after-condition.yaml", "flag -timeout=1m after a condition"},
		{"flag-command.yaml", "replaces the image's entrypoint"},
	}
	bs := podkitBinaries(root)
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			b, err := loadFiles(filepath.Join("testdata", "flags", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range b.pods() {
				errs, missing := checkFlags(&p, b, bs)
				if len(missing) > 0 {
					t.Fatal(missing) // waitfor is in this tree
				}
				for _, err := range errs {
					got = append(got, err.Error())
				}
			}
			if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, tc.want) }) {
				t.Errorf("flag check reported %q, want an error containing %q", got, tc.want)
			}
		})
	}
}

func TestStrictDecode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file, want string
	}{
		{"unknown-field.yaml", `unknown field "restartPolicyy"`},
		{"duplicate-key.yaml", `key "name" already set`},
		{"wrong-type.yaml", "cannot unmarshal string"},
		{"second-document.yaml", "document 2"},
		{"unknown-kind.yaml", `no type for v1 "Pdo"`},
		{"no-name.yaml", "metadata.name is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			_, err := decodeFile(filepath.Join("testdata", "decode", tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decode error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestKustomizationErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		dir, want string
	}{
		{"missing-file", "nginx.conf: no such file"},
		{"unsupported-field", "the test reads only"},
		{"missing-resource", `resource "gone.yaml"`},
		{"duplicate-configmap", `ConfigMap "nginx" defined twice`},
		{"bad-env", "want KEY=VALUE"},
	}
	for _, tc := range tests {
		t.Run(tc.dir, func(t *testing.T) {
			t.Parallel()
			_, err := loadKustomization(filepath.Join("testdata", "kustomize", tc.dir))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func loadKindConfig(t *testing.T, path string) *kindv1alpha4.Cluster {
	t.Helper()
	c, err := decodeKindConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func decodeKindConfig(path string) (*kindv1alpha4.Cluster, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c kindv1alpha4.Cluster
	if err := decodeStrict(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.Kind != "Cluster" || c.APIVersion != "kind.x-k8s.io/v1alpha4" {
		return nil, fmt.Errorf("%s: kind %q apiVersion %q, want Cluster kind.x-k8s.io/v1alpha4", path, c.Kind, c.APIVersion)
	}
	return &c, nil
}

// kindHostPaths maps each directory the kind config mounts on the node to
// its place in the repository (kind resolves hostPath against its working
// directory: the repository root, where demo.sh runs it).
func kindHostPaths(t *testing.T, c *kindv1alpha4.Cluster) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range c.Nodes {
		for _, m := range n.ExtraMounts {
			out[m.ContainerPath] = repo(m.HostPath)
		}
	}
	return out
}

var sandboxRE = regexp.MustCompile(`(?m)^\s*sandbox_image\s*=\s*"([^"]+)"\s*$`)

func TestKindConfig(t *testing.T) {
	t.Parallel()
	c := loadKindConfig(t, repo(kindConfig))
	demo, err := os.ReadFile(repo("examples/kind/demo.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(demo), "CLUSTER=${CLUSTER:-"+c.Name+"}") {
		t.Errorf("demo.sh's default cluster name is not %q, the config's", c.Name)
	}
	staticMounted := false
	for _, n := range c.Nodes {
		for _, m := range n.ExtraMounts {
			st, err := os.Stat(repo(m.HostPath))
			if err != nil {
				t.Errorf("extraMount hostPath %s: %v (paths are relative to the repository root)", m.HostPath, err)
				continue
			}
			if filepath.IsAbs(m.HostPath) {
				t.Errorf("extraMount hostPath %s is absolute: it only works on one machine", m.HostPath)
			}
			if dir, _ := filepath.Split(m.ContainerPath); filepath.Clean(dir) == "/etc/kubernetes/manifests" || filepath.Clean(m.ContainerPath) == "/etc/kubernetes/manifests" {
				if st.IsDir() {
					t.Errorf("%s mounts a directory over the kubelet's staticPodPath: it would hide kubeadm's manifests; mount single files", m.HostPath)
				}
				if strings.HasPrefix(filepath.Base(m.ContainerPath), ".") {
					t.Errorf("%s: the kubelet ignores files starting with a dot", m.ContainerPath)
				}
				if filepath.Clean(m.HostPath) == staticPod {
					staticMounted = true
				}
			}
		}
	}
	if !staticMounted {
		t.Errorf("the static pod %s is not mounted into /etc/kubernetes/manifests", staticPod)
	}
	patches := strings.Join(c.ContainerdConfigPatches, "\n")
	m := sandboxRE.FindStringSubmatch(patches)
	if m == nil {
		t.Fatal("no containerd patch sets sandbox_image")
	}
	sandbox := m[1]
	demoSandbox := regexp.MustCompile(`(?m)^SANDBOX_IMAGE=(\S+)$`).FindStringSubmatch(string(demo))
	if demoSandbox == nil || strings.ReplaceAll(demoSandbox[1], "${VERSION}", "dev") != sandbox {
		t.Errorf("demo.sh's SANDBOX_IMAGE %q does not give the config's sandbox_image %q", demoSandbox, sandbox)
	}
	// The sandbox image is pulled during kubeadm init, so its registry must
	// be configured through a certs.d directory mounted before that.
	host, _, _ := strings.Cut(sandbox, "/")
	if !strings.Contains(patches, `config_path = "/etc/containerd/certs.d"`) {
		t.Error("no containerd patch sets registry config_path to /etc/containerd/certs.d")
	}
	certs, ok := kindHostPaths(t, c)["/etc/containerd/certs.d"]
	if !ok {
		t.Fatal("no extraMount provides /etc/containerd/certs.d")
	}
	if _, err := os.Stat(filepath.Join(certs, host, "hosts.toml")); err != nil {
		t.Errorf("registry %s of the sandbox image has no hosts.toml: %v", host, err)
	}
}

func TestKindConfigStrict(t *testing.T) {
	t.Parallel()
	_, err := decodeKindConfig(filepath.Join("testdata", "kind", "unknown-field.yaml"))
	if err == nil || !strings.Contains(err.Error(), `unknown field "extraMount"`) {
		t.Errorf("error = %v, want the unknown field named", err)
	}
}

// TestConfigFilesParse runs the anchors' own config checks on the files the
// ConfigMaps are generated from.
func TestConfigFilesParse(t *testing.T) {
	t.Parallel()
	config := repo("examples/k8s/base/config")
	t.Run("nutcracker", func(t *testing.T) {
		t.Parallel()
		bin := testserver.Require(t, "nutcracker")
		out, err := exec.CommandContext(t.Context(), bin, "-t", "-c", filepath.Join(config, "nutcracker.yml")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "syntax is ok") {
			t.Errorf("nutcracker -t: %v\n%s", err, out)
		}
	})
	t.Run("nginx", func(t *testing.T) {
		t.Parallel()
		bin := testserver.Require(t, "nginx")
		data, err := os.ReadFile(filepath.Join(config, "nginx.conf"))
		if err != nil {
			t.Fatal(err)
		}
		// Writable paths move into a temporary directory, as the
		// end-to-end test does; nothing else changes.
		dir := t.TempDir()
		conf := strings.NewReplacer("/tmp/", dir+"/", "/var/log/nginx/", dir+"/").Replace(string(data))
		path := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.CommandContext(t.Context(), bin, "-t", "-q", "-p", dir, "-e", "stderr", "-c", path).CombinedOutput()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Errorf("nginx -t: %v\n%s", err, out)
				return
			}
			t.Fatal(err)
		}
	})
}

// TestStaticMatchesBase keeps the static pod in step with the base web pod:
// the same containers with the same ports, probes, resources and security;
// only where the configuration comes from differs.
func TestStaticMatchesBase(t *testing.T) {
	t.Parallel()
	sets := exampleSets(t)
	var base, static *pod
	for _, p := range sets["examples/k8s/base"].pods() {
		if strings.HasSuffix(p.where, "Deployment/web") {
			base = &p
		}
	}
	for _, p := range sets[staticPod].pods() {
		static = &p
	}
	if base == nil || static == nil {
		t.Fatal("no base web Deployment or no static pod")
	}
	bm, sm := members(&base.spec), members(&static.spec)
	if len(bm) != len(sm) {
		t.Fatalf("base has %d containers, the static pod %d", len(bm), len(sm))
	}
	for i := range bm {
		b, s := bm[i].c, sm[i].c
		same := b.Name == s.Name && b.Image == s.Image && bm[i].role == sm[i].role &&
			reflect.DeepEqual(b.Ports, s.Ports) &&
			reflect.DeepEqual(b.StartupProbe, s.StartupProbe) &&
			reflect.DeepEqual(b.LivenessProbe, s.LivenessProbe) &&
			reflect.DeepEqual(b.ReadinessProbe, s.ReadinessProbe) &&
			reflect.DeepEqual(b.Resources, s.Resources) &&
			reflect.DeepEqual(b.SecurityContext, s.SecurityContext) &&
			reflect.DeepEqual(b.Env, s.Env)
		if !same {
			t.Errorf("container %d (%s) differs between base and the static pod beyond its configuration source", i, b.Name)
		}
	}
	if !reflect.DeepEqual(base.meta.Annotations, static.meta.Annotations) {
		t.Error("pod annotations differ")
	}
}
