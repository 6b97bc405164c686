// Command demo runs podkit's example pod (examples/k8s/base) on this machine,
// as the kubelet would and as the end-to-end test does (internal/examplepod):
// pause as PID 1 of fresh namespaces; the waitfor init container; the
// logsidecar, ambassador and adapter sidecars and nginx joined to its
// network namespace; three memcached shards, a log receiver that prints
// every record, and Prometheus when installed, outside the pod on the host
// end of its veth pair. Ctrl-C or SIGTERM stops it in the kubelet's order.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/podkit/podkit/internal/examplepod"
	"github.com/podkit/podkit/internal/forwardtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bin := fs.String("bin", "./bin", "directory holding podkit's binaries (make build)")
	base := fs.String("base", "examples/k8s/base", "the example's kustomize base: web.yaml and config/")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := ensureTools(ctx, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	if err := demo(ctx, *bin, *base, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	return 0
}

// needed maps each program the demo runs to its Debian package.
// Prometheus is optional: the demo runs it when it is installed.
var needed = map[string]string{"nginx": "nginx", "memcached": "memcached", "nsenter": "util-linux", "ip": "iproute2", "hostname": "hostname"}

// ensureTools finds the programs the pod needs, installing the missing ones
// with apt-get when it can (root on Debian), else saying what to install.
func ensureTools(ctx context.Context, stdout, stderr io.Writer) error {
	var pkgs []string
	for prog, pkg := range needed {
		if _, err := lookPath(prog); err != nil {
			pkgs = append(pkgs, pkg)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	install := "apt-get install -y " + strings.Join(pkgs, " ")
	if _, err := os.Stat("/etc/debian_version"); err != nil || os.Geteuid() != 0 {
		return fmt.Errorf("missing %s: install them first (%s)", strings.Join(pkgs, ", "), install)
	}
	fmt.Fprintf(stdout, "installing %s\n", strings.Join(pkgs, " "))
	for _, argv := range [][]string{{"apt-get", "update"}, append([]string{"apt-get", "install", "-y"}, pkgs...)} {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = stderr, stderr
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
	}
	return nil
}

func lookPath(prog string) (string, error) {
	if p, err := exec.LookPath(prog); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(dir, prog); isFile(p) {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// binaries are the podkit programs the pod runs, from make build.
var binaries = []string{"pause", "waitfor", "logsidecar", "ambassador", "adapter"}

func demo(ctx context.Context, bin, base string, stdout, stderr io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("the demo pod needs root for its namespaces: run sudo make demo")
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	for _, b := range binaries {
		if !isFile(filepath.Join(bin, b)) {
			return fmt.Errorf("%s not found: run make build first", filepath.Join(bin, b))
		}
	}
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	memcached, _ := lookPath("memcached")
	prometheus, _ := lookPath("prometheus")
	dir, err := os.MkdirTemp("", "podkit-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	pod, err := examplepod.Start(ctx, examplepod.Options{
		Base: base, Bin: bin, Dir: dir, MemcachedBin: memcached, PrometheusBin: prometheus,
		LookPath: lookPath, Progress: prefixed{stdout, "demo: "},
	})
	if err != nil {
		return err
	}
	stopPrinting := printRecords(pod.Receiver, stdout)
	defer func() {
		fmt.Fprintln(stdout, "\ndemo: stopping the pod as the kubelet does: nginx, then the sidecars in reverse order, then pause")
		r := pod.Stop()
		stopPrinting()
		for _, e := range r.Containers {
			fmt.Fprintf(stdout, "demo:   %-10s exited %d\n", e.Name, e.Code)
		}
		fmt.Fprintf(stdout, "demo:   %-10s exited %d\ndemo: pod stopped in %v; namespaces and veth removed, outside servers stopped\n",
			"pause", r.Pause, r.Elapsed.Round(time.Millisecond))
	}()

	// A cached page: set on the shard the ambassador's hashing names, served
	// by nginx through the ambassador.
	const key = "/cache/hello"
	where, err := pod.Locate(ctx, []string{key})
	if err != nil {
		return err
	}
	shard := "?"
	for i, a := range pod.Addresses.Shards {
		if a == where[key] {
			shard = fmt.Sprintf("memcached-%d", i)
		}
	}
	if err := examplepod.MemcachedSet(where[key], key, "hello from "+shard+"\n"); err != nil {
		return err
	}

	web := "http://" + net.JoinHostPort(pod.IP, "8080")
	fmt.Fprintf(stdout, `
podkit's example pod %q is up: pause is PID 1 of its namespaces (host PID %d),
pod IP %s. Outside it, on the host end of the veth (%s): memcached-0..2
(%s), the log receiver standing for fluent-bit.default.svc:24224 (%s).

Try:
`, pod.Name, pod.PID, pod.IP, pod.HostIP, strings.Join(pod.Addresses.Shards, " "), pod.Addresses.Forward)
	hints := [][2]string{
		{"curl " + web + "/", "nginx; its access-log record arrives below"},
		{"curl " + web + "/cache/hello", "from " + shard + ", through the ambassador (127.0.0.1:11211 in the pod)"},
		{"curl " + web + "/cache/nothing", "a cache miss: nginx's fallback"},
		{"curl " + pod.MetricsURL(), "the adapter: nginx_* from stub_status"},
		{"curl http://" + net.JoinHostPort(pod.IP, "9101") + "/metrics", "the ambassador's admin port (logsidecar's: 9102)"},
		{fmt.Sprintf("nsenter -t %d -n -u -i sh", pod.PID), "a shell in the pod's namespaces"},
	}
	if pod.PrometheusURL != "" {
		hints = append(hints,
			[2]string{"curl -s '" + pod.PrometheusURL + "/api/v1/query?query=nginx_http_requests_total'", "Prometheus, scraping the adapter every second"},
			[2]string{"open " + pod.PrometheusURL + "/graph", "its UI; try rate(nginx_http_requests_total[1m])"})
	}
	for _, h := range hints {
		fmt.Fprintf(stdout, "  %-68s # %s\n", h[0], h[1])
	}
	if pod.PrometheusURL == "" {
		fmt.Fprintln(stdout, "  (Prometheus is not installed; after apt-get install -y prometheus the demo runs one scraping the pod)")
	}
	fmt.Fprintf(stdout, `
Containers' output: %s/*.log. Log records shipped by logsidecar print below as
"[fluent-bit] TIME TAG JSON". Ctrl-C stops the pod.

`, pod.LogDir)
	return pod.Wait(ctx)
}

// printRecords prints the receiver's records as they arrive, until the
// returned function is called (which prints the last ones first).
func printRecords(r *forwardtest.Receiver, w io.Writer) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	n := 0
	flush := func() {
		recs := r.Records()
		for _, rec := range recs[n:] {
			b, _ := json.Marshal(rec.Fields)
			fmt.Fprintf(w, "[fluent-bit] %s %s %s\n", rec.Time.Format(time.RFC3339), rec.Tag, b)
		}
		n = len(recs)
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				flush()
				return
			case <-t.C:
				flush()
			}
		}
	}()
	return func() { close(done); <-finished }
}

// prefixed writes each line with a prefix.
type prefixed struct {
	w      io.Writer
	prefix string
}

func (p prefixed) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix+string(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}
