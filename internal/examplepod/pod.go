package examplepod

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/podkit/podkit/internal/forwardtest"
	"github.com/podkit/podkit/internal/podsim"
)

// Options describe how to run the example pod.
type Options struct {
	Base          string // examples/k8s/base
	Bin           string // directory of pause, waitfor, logsidecar, ambassador, adapter
	Dir           string // scratch directory: volumes, rendered config, logs (the caller removes it)
	MemcachedBin  string // memcached's path (required)
	PrometheusBin string // prometheus's path; empty runs no Prometheus
	// LookPath finds the programs of containers that name a command (nginx);
	// default exec.LookPath.
	LookPath func(string) (string, error)
	// Progress, if set, gets one line per step (the demo prints it).
	Progress io.Writer
}

// Pod is the running example pod with the servers around it.
type Pod struct {
	*podsim.Pod
	Manifest  *Manifest
	Addresses Addresses
	Receiver  *forwardtest.Receiver // the log aggregator (fluent-bit.default.svc:24224)
	// PrometheusURL is http://host:port of the Prometheus scraping the pod, or "".
	PrometheusURL string
	Dir           string // the scratch directory
	LogDir        string // each container's and server's output, NAME.log

	opts       Options
	running    []*running // started order (init containers that finished are not here)
	finished   []*running // init containers that ran to completion
	outside    []*proc
	health     *http.Server
	healthDone chan struct{}

	stopOnce sync.Once
	report   StopReport
}

type running struct {
	spec Spec
	c    *podsim.Container
	log  string
}

// Exit is how one container ended.
type Exit struct {
	Name string
	Code int           // 128+N for signal N
	Took time.Duration // from SIGTERM to its exit
}

// StopReport is what Stop saw, in stop order.
type StopReport struct {
	Containers []Exit
	Pause      int
	Elapsed    time.Duration
}

// Start runs the example pod: pause and the veth pair, the outside servers
// on the host end, then the init containers in order (a plain one must exit
// 0; a sidecar must pass its startupProbe), then the containers, each
// passing its startupProbe. On error everything started is stopped again;
// the error carries the containers' recent output.
func Start(ctx context.Context, opts Options) (*Pod, error) {
	if opts.LookPath == nil {
		opts.LookPath = exec.LookPath
	}
	m, err := Load(opts.Base)
	if err != nil {
		return nil, err
	}
	logDir := filepath.Join(opts.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	pauseLog, err := os.Create(filepath.Join(logDir, "pause.log"))
	if err != nil {
		return nil, err
	}
	defer pauseLog.Close() // pause holds its own descriptor
	p := &Pod{Manifest: m, Dir: opts.Dir, LogDir: logDir, opts: opts}
	p.progress("starting pause (PID 1 of new PID, network, UTS and IPC namespaces) and the veth pair")
	sim, err := podsim.Start(ctx, podsim.Options{Name: m.Name, PauseBin: filepath.Join(opts.Bin, "pause"), Stdout: pauseLog, Stderr: pauseLog})
	if err != nil {
		return nil, err
	}
	p.Pod = sim
	if err := p.start(ctx); err != nil {
		p.Stop()
		if logs := p.Logs(20); logs != "" {
			err = fmt.Errorf("%w\n%s", err, logs)
		}
		return nil, err
	}
	return p, nil
}

func (p *Pod) progress(format string, args ...any) {
	if p.opts.Progress != nil {
		fmt.Fprintf(p.opts.Progress, format+"\n", args...)
	}
}

func (p *Pod) start(ctx context.Context) error {
	if err := p.startOutside(ctx); err != nil {
		return err
	}
	inits, mains, err := p.Manifest.Render(p.Addresses, p.opts.Bin, p.Dir, p.opts.LookPath)
	if err != nil {
		return err
	}
	for _, s := range inits {
		if !s.Sidecar() {
			if err := p.runToCompletion(ctx, s); err != nil {
				return err
			}
			continue
		}
		if err := p.runAndProbe(ctx, s); err != nil {
			return err
		}
	}
	for _, s := range mains {
		if err := p.runAndProbe(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// startOutside starts what the pod's cluster would provide, listening on
// the host end of the veth pair: the memcached shards, the log receiver and
// its health endpoint, and Prometheus scraping the pod.
func (p *Pod) startOutside(ctx context.Context) error {
	n := p.Manifest.ShardCount()
	p.progress("starting %d memcached shards, the log receiver and its health endpoint on %s", n, p.HostIP)
	for i := range n {
		port, err := freePort(p.HostIP)
		if err != nil {
			return err
		}
		addr := net.JoinHostPort(p.HostIP, strconv.Itoa(port))
		args := []string{"-l", p.HostIP, "-p", strconv.Itoa(port), "-U", "0", "-m", "64", "-t", "1"}
		if os.Geteuid() == 0 {
			args = append(args, "-u", "nobody") // memcached refuses root without it
		}
		pr, err := p.startProc(ctx, fmt.Sprintf("memcached-%d", i), addr, p.opts.MemcachedBin, args...)
		if err != nil {
			return err
		}
		p.outside = append(p.outside, pr)
		p.Addresses.Shards = append(p.Addresses.Shards, addr)
	}
	rcv, err := forwardtest.Start(net.JoinHostPort(p.HostIP, "0"), forwardtest.Options{ServerHostname: "fluent-bit"})
	if err != nil {
		return fmt.Errorf("log receiver: %w", err)
	}
	p.Receiver = rcv
	p.Addresses.Forward = rcv.Addr()

	// Fluent Bit's health endpoint, which the waitfor init container checks.
	ln, err := net.Listen("tcp", net.JoinHostPort(p.HostIP, "0"))
	if err != nil {
		return fmt.Errorf("receiver health endpoint: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v1/health", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	p.health = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	p.healthDone = make(chan struct{})
	go func() { defer close(p.healthDone); _ = p.health.Serve(ln) }()
	p.Addresses.Health = ln.Addr().String()

	if p.opts.PrometheusBin == "" {
		return nil
	}
	port, err := freePort(p.HostIP)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(p.HostIP, strconv.Itoa(port))
	dir := filepath.Join(p.Dir, "prometheus")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	yml := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(yml, []byte(p.PrometheusConfig()), 0o644); err != nil {
		return err
	}
	p.progress("starting Prometheus on %s, scraping the adapter at %s every second", addr, p.MetricsURL())
	pr, err := p.startProc(ctx, "prometheus", addr, p.opts.PrometheusBin, "--config.file="+yml,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	if err != nil {
		return err
	}
	p.outside = append(p.outside, pr)
	p.PrometheusURL = "http://" + addr
	p.Addresses.Prometheus = addr
	return nil
}

// MetricsURL is where Prometheus scrapes the pod: the prometheus.io/port and
// prometheus.io/path annotations at the pod's address.
func (p *Pod) MetricsURL() string {
	port := p.Manifest.Annotations["prometheus.io/port"]
	path := p.Manifest.Annotations["prometheus.io/path"]
	if path == "" {
		path = "/metrics"
	}
	return "http://" + net.JoinHostPort(p.IP, port) + path
}

// PrometheusConfig is config/prometheus.yml's job for this one pod: the
// kubernetes_sd_configs and relabelling become a static target with the
// labels they would have produced, and the scrape interval is 1s.
func (p *Pod) PrometheusConfig() string {
	port := p.Manifest.Annotations["prometheus.io/port"]
	path := p.Manifest.Annotations["prometheus.io/path"]
	if path == "" {
		path = "/metrics"
	}
	return fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: kubernetes-pods
    metrics_path: %q
    static_configs:
      - targets: [%q]
        labels:
          namespace: default
          pod: %q
          app: %q
`, path, net.JoinHostPort(p.IP, port), p.Name, p.Manifest.Labels["app.kubernetes.io/name"])
}

func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (p *Pod) containerLog(name string) (*os.File, error) {
	return os.Create(filepath.Join(p.LogDir, name+".log"))
}

// run starts a container with its output in LogDir/NAME.log.
func (p *Pod) run(s Spec) (*running, error) {
	f, err := p.containerLog(s.Name)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the container holds its own descriptor
	c, err := p.Pod.Run(podsim.Exec{Name: s.Name, Argv: s.Argv, Env: s.Env, Dir: p.Dir, Stdout: f, Stderr: f})
	if err != nil {
		return nil, err
	}
	return &running{spec: s, c: c, log: f.Name()}, nil
}

func (p *Pod) runToCompletion(ctx context.Context, s Spec) error {
	p.progress("init container %s: %s", s.Name, strings.Join(s.Argv, " "))
	r, err := p.run(s)
	if err != nil {
		return err
	}
	p.finished = append(p.finished, r)
	select {
	case <-r.c.Done():
	case <-ctx.Done():
		r.c.Stop(time.Second)
		return fmt.Errorf("init container %s did not finish: %w", s.Name, ctx.Err())
	}
	if code := r.c.Stop(0); code != 0 {
		return fmt.Errorf("init container %s exited %d", s.Name, code)
	}
	return nil
}

func (p *Pod) runAndProbe(ctx context.Context, s Spec) error {
	kind := "container"
	if s.Sidecar() {
		kind = "sidecar"
	}
	p.progress("%s %s: %s", kind, s.Name, strings.Join(s.Argv, " "))
	r, err := p.run(s)
	if err != nil {
		return err
	}
	p.running = append(p.running, r)
	if s.StartupProbe == nil || s.StartupProbe.HTTPGet == nil {
		return nil
	}
	port, err := s.Port(s.StartupProbe.HTTPGet.Port)
	if err != nil {
		return err
	}
	url := "http://" + net.JoinHostPort(p.IP, strconv.Itoa(port)) + s.StartupProbe.HTTPGet.Path
	period := max(s.StartupProbe.PeriodSeconds, 1)
	threshold := max(s.StartupProbe.FailureThreshold, 3)
	// The kubelet's bound is period x threshold; probing more often than
	// the period only makes the start faster.
	deadline := time.Now().Add(time.Duration(period*threshold) * time.Second)
	client := &http.Client{Timeout: time.Second}
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode >= 200 && resp.StatusCode < 400 {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s: startupProbe %s failing after %ds: %s", kind, s.Name, url, period*threshold, last)
		}
		select {
		case <-r.c.Done():
			return fmt.Errorf("%s %s exited before its startupProbe %s passed", kind, s.Name, url)
		case <-ctx.Done():
			return fmt.Errorf("%s %s: startupProbe %s: %w (last: %s)", kind, s.Name, url, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop shuts the pod down in the kubelet's order: the containers first, then
// the sidecars in reverse order, all within the pod's grace period, then
// pause; the veth pair goes with it; then the outside servers. It is safe to
// call more than once and returns the first call's report.
func (p *Pod) Stop() StopReport {
	p.stopOnce.Do(func() {
		start := time.Now()
		deadline := start.Add(time.Duration(p.Manifest.GraceSeconds) * time.Second)
		var sidecars, mains []*running
		for _, r := range p.running {
			if r.spec.Sidecar() {
				sidecars = append(sidecars, r)
			} else {
				mains = append(mains, r)
			}
		}
		order := make([]*running, 0, len(p.running))
		for i := len(mains) - 1; i >= 0; i-- {
			order = append(order, mains[i])
		}
		for i := len(sidecars) - 1; i >= 0; i-- {
			order = append(order, sidecars[i])
		}
		for _, r := range order {
			// One grace period for the whole pod: what a slow container
			// uses, the next ones lack. Past it, SIGKILL at once.
			p.progress("stopping %s", r.spec.Name)
			t0 := time.Now()
			code := r.c.Stop(max(time.Until(deadline), 0))
			p.report.Containers = append(p.report.Containers, Exit{r.spec.Name, code, time.Since(t0)})
		}
		if p.Pod != nil {
			p.progress("stopping pause")
			p.report.Pause = p.Pod.Stop(5 * time.Second)
		}
		for i := len(p.outside) - 1; i >= 0; i-- {
			p.outside[i].stop(10 * time.Second)
		}
		if p.health != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = p.health.Shutdown(ctx)
			cancel()
			<-p.healthDone
		}
		if p.Receiver != nil {
			p.Receiver.Close()
		}
		p.report.Elapsed = time.Since(start)
	})
	return p.report
}

// PIDs are the host PIDs of pause (first) and every container started,
// init containers included, for checks that nothing is left running.
func (p *Pod) PIDs() []int {
	pids := []int{p.PID}
	for _, r := range append(append([]*running(nil), p.finished...), p.running...) {
		pids = append(pids, r.c.PID())
	}
	return pids
}

// ServerPIDs are the host PIDs of the servers outside the pod (memcached,
// Prometheus).
func (p *Pod) ServerPIDs() []int {
	var pids []int
	for _, pr := range p.outside {
		pids = append(pids, pr.cmd.Process.Pid)
	}
	return pids
}

// Container returns a running container by name.
func (p *Pod) Container(name string) (*podsim.Container, bool) {
	for _, r := range p.running {
		if r.spec.Name == name {
			return r.c, true
		}
	}
	return nil, false
}

// Logs returns the last n lines of each container's and server's output.
func (p *Pod) Logs(n int) string {
	entries, _ := os.ReadDir(p.LogDir)
	var b strings.Builder
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(p.LogDir, e.Name()))
		if err != nil || len(bytes.TrimSpace(data)) == 0 {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(&b, "--- %s (last %d lines)\n%s\n", e.Name(), len(lines), strings.Join(lines, "\n"))
	}
	return b.String()
}

// Locate asks the ambassador, run on the host with the pod's rendered
// configuration and -locate, which shard holds each key: key -> host:port.
func (p *Pod) Locate(ctx context.Context, keys []string) (map[string]string, error) {
	var amb *Spec
	for _, r := range p.running {
		if strings.HasSuffix(r.spec.Argv[0], "/ambassador") {
			amb = &r.spec
		}
	}
	if amb == nil {
		return nil, errors.New("the pod has no ambassador container")
	}
	cmd := exec.CommandContext(ctx, amb.Argv[0], append(append([]string(nil), amb.Argv[1:]...), "-locate")...)
	cmd.Env = append(os.Environ(), amb.Env...)
	cmd.Stdin = strings.NewReader(strings.Join(keys, "\n") + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ambassador -locate: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, addr, ok := strings.Cut(sc.Text(), "\t")
		if !ok {
			return nil, fmt.Errorf("ambassador -locate printed %q, want KEY<TAB>host:port", sc.Text())
		}
		got[k] = addr
	}
	for _, k := range keys {
		if got[k] == "" {
			return nil, fmt.Errorf("ambassador -locate named no shard for %q (output %q)", k, out)
		}
	}
	return got, nil
}

// proc is a server outside the pod, stopped by its PID.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// startProc runs a server with its output in LogDir/NAME.log and waits until
// addr accepts connections (at most 30s).
func (p *Pod) startProc(ctx context.Context, name, addr, bin string, args ...string) (*proc, error) {
	f, err := os.Create(filepath.Join(p.LogDir, name+".log"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = p.Dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	pr := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: f.Name()}
	go func() { _ = cmd.Wait(); close(pr.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
		if err == nil {
			c.Close()
			return pr, nil
		}
		var why string
		select {
		case <-pr.done:
			why = "exited"
		case <-ctx.Done():
			why = ctx.Err().Error()
		default:
			if time.Now().After(deadline) {
				why = "not listening after 30s"
			}
		}
		if why != "" {
			pr.stop(time.Second)
			out, _ := os.ReadFile(pr.log)
			return nil, fmt.Errorf("%s on %s: %s: %s", name, addr, why, strings.TrimSpace(string(out)))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (pr *proc) stop(grace time.Duration) {
	select {
	case <-pr.done:
		return
	default:
	}
	_ = pr.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pr.done:
	case <-time.After(grace):
		_ = pr.cmd.Process.Kill()
		<-pr.done
	}
}

// Wait returns nil when ctx ends, or an error naming the first container
// that exited on its own, with the containers' recent output.
func (p *Pod) Wait(ctx context.Context) error {
	cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())}}
	for _, r := range p.running {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(r.c.Done())})
	}
	i, _, _ := reflect.Select(cases)
	if i == 0 {
		return nil
	}
	r := p.running[i-1]
	return fmt.Errorf("container %s exited (%d) while the pod ran; its output is in %s\n%s", r.spec.Name, r.c.Stop(0), r.log, p.Logs(20))
}
