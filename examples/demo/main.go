// Command demo runs podkit's example pod on this machine: pause as PID 1 of
// fresh namespaces and nginx joined to its network namespace, reachable from
// the host over a veth pair. Ctrl-C or SIGTERM tears the pod down.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/podkit/podkit/internal/podsim"
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
	port := fs.Int("port", 8080, "nginx's port in the pod")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := ensureTools(ctx, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	if err := demo(ctx, *bin, *port, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	return 0
}

// needed maps each program the demo runs to its Debian package.
var needed = map[string]string{"nginx": "nginx", "nsenter": "util-linux", "ip": "iproute2", "hostname": "hostname"}

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

func demo(ctx context.Context, bin string, port int, stdout, stderr io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("the demo pod needs root for its namespaces: run sudo make demo")
	}
	pauseBin, err := filepath.Abs(filepath.Join(bin, "pause"))
	if err != nil || !isFile(pauseBin) {
		return fmt.Errorf("%s not found: run make build first", filepath.Join(bin, "pause"))
	}
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	dir, err := os.MkdirTemp("", "podkit-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	pod, err := podsim.Start(ctx, podsim.Options{Name: "web", PauseBin: pauseBin, Stdout: stdout, Stderr: stderr})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stdout, "stopping the pod: nginx, then pause")
		code := pod.Stop(10 * time.Second)
		fmt.Fprintf(stdout, "pod stopped (pause exited %d); namespaces and veth removed\n", code)
	}()

	logs := filepath.Join(dir, "logs") // the pod's emptyDir for logs
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(nginxConf(dir, logs, port)), 0o644); err != nil {
		return err
	}
	nginx, _ := lookPath("nginx")
	web, err := pod.Run(podsim.Exec{Name: "nginx", Argv: []string{nginx, "-c", conf, "-p", dir, "-e", filepath.Join(logs, "error.log")}})
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://%s:%d/", pod.IP, port)
	if err := waitHTTP(ctx, url, web.Done()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `
podkit demo pod %q is up (pause is PID 1 of its namespaces; host PID %d)

  curl %s                                   # nginx, from the host over the pod's veth
  nsenter -t %d -n curl -s http://127.0.0.1:8081/stub_status   # stub_status, bound to the pod's loopback
  tail -f %s                 # the access log on the pod's emptyDir

Ctrl-C stops the pod.
`, pod.Name, pod.PID, url, pod.PID, filepath.Join(logs, "access.log"))

	select {
	case <-ctx.Done():
		return nil
	case <-web.Done():
		return errors.New("nginx exited; see its error log above")
	}
}

func nginxConf(dir, logs string, port int) string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	return fmt.Sprintf(`%s
daemon off;
worker_processes 1;
pid %[2]s/nginx.pid;
events { worker_connections 256; }
http {
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    access_log %[3]s/access.log combined;
    server {
        listen %[4]d;
        location / { default_type text/plain; return 200 "hello from the podkit demo pod\n"; }
    }
    server {
        listen 127.0.0.1:8081;
        location = /stub_status { stub_status; }
    }
}
`, user, dir, logs, port)
}

func waitHTTP(ctx context.Context, url string, exited <-chan struct{}) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nginx not answering at %s after 15s: %v", url, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("nginx exited before it answered; see its error log above")
		case <-time.After(100 * time.Millisecond):
		}
	}
}
