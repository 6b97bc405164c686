package examplepod

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const base = "../../examples/k8s/base"

var testAddrs = Addresses{
	Shards:  []string{"10.9.0.1:1000", "10.9.0.1:1001", "10.9.0.1:1002"},
	Forward: "10.9.0.1:2000",
	Health:  "10.9.0.1:3000",
}

func fakeLookPath(name string) (string, error) { return "/usr/sbin/" + name, nil }

func envOf(s Spec, key string) (string, bool) {
	v := ""
	found := false
	for _, e := range s.Env { // the last one wins, as in exec
		if k, val, _ := strings.Cut(e, "="); k == key {
			v, found = val, true
		}
	}
	return v, found
}

// The manifests render into runnable containers: order, binaries, args,
// env and mounted files with this machine's addresses and directories, and
// nothing of the cluster left.
func TestRenderExampleManifest(t *testing.T) {
	t.Parallel()
	m, err := Load(base)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.ShardCount(); got != 3 {
		t.Errorf("ShardCount = %d, want 3 (memcached-0..2 in nutcracker.yml and waitfor's args)", got)
	}
	dir := t.TempDir()
	inits, mains, err := m.Render(testAddrs, "/bin-dir", dir, fakeLookPath)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range inits {
		kind := "init"
		if s.Sidecar() {
			kind = "sidecar"
		}
		names = append(names, kind+":"+s.Name)
	}
	for _, s := range mains {
		names = append(names, "main:"+s.Name)
	}
	if got, want := strings.Join(names, " "), "init:waitfor sidecar:logsidecar sidecar:ambassador sidecar:adapter main:nginx"; got != want {
		t.Fatalf("containers = %s, want %s", got, want)
	}
	waitfor, logsidecar, ambassador, adapter, nginx := inits[0], inits[1], inits[2], inits[3], mains[0]

	wantArgv := []string{"/bin-dir/waitfor", "-timeout=5m", "tcp://10.9.0.1:1000", "tcp://10.9.0.1:1001", "tcp://10.9.0.1:1002", "http://10.9.0.1:3000/api/v1/health"}
	if !slices.Equal(waitfor.Argv, wantArgv) {
		t.Errorf("waitfor argv = %q, want %q", waitfor.Argv, wantArgv)
	}
	for key, want := range map[string]string{
		"LOGSIDECAR_PATH":           filepath.Join(dir, "volumes", "nginx-logs") + "/*.log",
		"LOGSIDECAR_OUTPUT":         "forward://10.9.0.1:2000 stdout",
		"LOGSIDECAR_POSITIONS_FILE": filepath.Join(dir, "volumes", "logsidecar-state", "positions.json"),
		"LOGSIDECAR_FIELD":          "app=web",
		"CONTAINER_NAME":            "logsidecar",
		"MEMORY_LIMIT":              "67108864",
	} {
		if got, _ := envOf(logsidecar, key); got != want {
			t.Errorf("logsidecar %s = %q, want %q", key, got, want)
		}
	}
	if _, ok := envOf(logsidecar, "POD_NAME"); ok {
		t.Error("POD_NAME rendered from the manifest; it comes from podsim's Downward API environment")
	}
	if got, _ := envOf(adapter, "ADAPTER_SOURCE"); got != "nginx=http://127.0.0.1:8081/stub_status statsd=127.0.0.1:9125" {
		t.Errorf("adapter ADAPTER_SOURCE = %q", got)
	}

	cfg := filepath.Join(dir, "configmaps", "ambassador", "ambassador-config", "nutcracker.yml")
	if !slices.Contains(ambassador.Argv, "-config="+cfg) {
		t.Errorf("ambassador argv = %q, want -config=%s", ambassador.Argv, cfg)
	}
	yml, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"- 10.9.0.1:1000:1 memcached-0", "- 10.9.0.1:1002:1 memcached-2", "listen: 127.0.0.1:11211"} {
		if !strings.Contains(string(yml), want) {
			t.Errorf("rendered nutcracker.yml lacks %q:\n%s", want, yml)
		}
	}

	conf := filepath.Join(dir, "configmaps", "nginx", "nginx-config", "nginx.conf")
	if want := []string{"/usr/sbin/nginx", "-c", conf, "-e", "stderr"}; !slices.Equal(nginx.Argv, want) {
		t.Errorf("nginx argv = %q, want %q", nginx.Argv, want)
	}
	nc, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"pid " + filepath.Join(dir, "volumes", "tmp", "nginx.pid") + ";",
		"access_log " + filepath.Join(dir, "volumes", "nginx-logs", "access.log") + " combined;",
		"include /etc/nginx/mime.types;", // not a mount: the host's file
		"memcached_pass 127.0.0.1:11211;",
	} {
		if !strings.Contains(string(nc), want) {
			t.Errorf("rendered nginx.conf lacks %q", want)
		}
	}
	for _, line := range strings.Split(string(nc), "\n") {
		if line = strings.ReplaceAll(strings.TrimSpace(line), dir, "<dir>"); !strings.HasPrefix(line, "#") && (strings.Contains(line, " /tmp/") || strings.Contains(line, "/var/log/nginx")) {
			t.Errorf("rendered nginx.conf still names a mount path: %s", line)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "volumes", "nginx-logs")); err != nil || !st.IsDir() {
		t.Errorf("the nginx-logs emptyDir was not created: %v", err)
	}
}

// The rendered nginx.conf is one nginx accepts.
func TestRenderedNginxConfParses(t *testing.T) {
	t.Parallel()
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if nginx, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			t.Skip("nginx not installed")
		}
	}
	m, err := Load(base)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, mains, err := m.Render(testAddrs, "/bin-dir", dir, fakeLookPath)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(nginx, append(mains[0].Argv[1:], "-t")...).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t on the rendered nginx.conf: %v\n%s", err, out)
	}
}

func TestRewritePaths(t *testing.T) {
	t.Parallel()
	mounts := []mount{{"/tmp", "/h/tmp"}, {"/var/log/nginx", "/h/logs"}, {"/var/log", "/h/varlog"}}
	for _, tc := range []struct{ in, want string }{
		{"pid /tmp/nginx.pid;", "pid /h/tmp/nginx.pid;"},
		{"/tmp", "/h/tmp"},
		{"-dir=/tmp", "-dir=/h/tmp"},
		{"/var/log/nginx/*.log", "/h/logs/*.log"},            // the longest mount wins
		{"/var/log/syslog", "/h/varlog/syslog"},              // a shorter mount still applies
		{"/var/tmp/x /tmpfoo", "/var/tmp/x /tmpfoo"},         // not a component prefix
		{"a /tmp /tmp;", "a /h/tmp /h/tmp;"},                 // adjacent occurrences
		{`path "/tmp/a",'/tmp'`, `path "/h/tmp/a",'/h/tmp'`}, // quoted
		{"http://127.0.0.1:8081/tmp", "http://127.0.0.1:8081/tmp"},
	} {
		if got := rewritePaths(tc.in, mounts); got != tc.want {
			t.Errorf("rewritePaths(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A cluster address the machine has no substitute for stops the render
// with a message naming it, instead of a container that cannot resolve it.
func TestRenderRejectsUnknownClusterAddress(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"tcp://redis.default.svc:6379", "fluent-bit.logging.svc:24224", "memcached-7.memcached:11211", "db.prod.svc.cluster.local:5432"} {
		m := &Manifest{
			Containers: []Container{{Name: "app", Image: "podkit/waitfor:dev", Args: []string{arg}}},
			ConfigMaps: map[string]ConfigMap{},
		}
		_, _, err := m.Render(testAddrs, "/bin", t.TempDir(), fakeLookPath)
		if err == nil || !strings.Contains(err.Error(), "no substitute") {
			t.Errorf("arg %q: err = %v, want one saying the address has no substitute", arg, err)
		}
	}
}

func TestRenderErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		c    Container
		vols []Volume
		want string
	}{
		{"undeclared volume", Container{Name: "a", Image: "podkit/x:dev", VolumeMounts: []VolumeMount{{Name: "v", MountPath: "/v"}}}, nil, "does not declare"},
		{"missing configmap", Container{Name: "a", Image: "podkit/x:dev", VolumeMounts: []VolumeMount{{Name: "v", MountPath: "/v"}}},
			[]Volume{{Name: "v", ConfigMap: &struct {
				Name string `yaml:"name"`
			}{"nope"}}}, "not generated"},
		{"foreign image without command", Container{Name: "a", Image: "redis:7"}, nil, "no command"},
	} {
		m := &Manifest{Containers: []Container{tc.c}, Volumes: tc.vols, ConfigMaps: map[string]ConfigMap{}}
		if _, _, err := m.Render(testAddrs, "/bin", t.TempDir(), fakeLookPath); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}

func TestQuantity(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"64Mi", 64 << 20, false}, {"1Gi", 1 << 30, false}, {"128974848", 128974848, false},
		{"1G", 1e9, false}, {"500k", 500e3, false}, {"1.5Gi", 0, true}, {"lots", 0, true}, {"-1Mi", 0, true},
	} {
		got, err := quantity(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("quantity(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestParseEnvFile(t *testing.T) {
	t.Parallel()
	got, err := parseEnvFile("# comment\n\nA=1\nB=x y=z\n")
	if err != nil || len(got) != 2 || got[0] != (EnvVar{Name: "A", Value: "1"}) || got[1] != (EnvVar{Name: "B", Value: "x y=z"}) {
		t.Errorf("parseEnvFile = %+v, %v", got, err)
	}
	if _, err := parseEnvFile("A=1\nnot a pair\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad line: err = %v, want one naming line 2", err)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	if _, err := Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "examples/k8s/base") {
		t.Errorf("Load(empty dir) = %v, want an error saying which directory to give", err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "web.yaml"), []byte("kind: Service\n---\nkind: ConfigMap\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "no Deployment") {
		t.Errorf("Load(no Deployment) = %v", err)
	}
}
