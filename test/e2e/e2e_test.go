package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podkit/podkit/internal/examplepod"
	"github.com/podkit/podkit/internal/forwardtest"
	"github.com/podkit/podkit/internal/testserver"
)

// helperEnv, when set, makes the test binary a memcached client inside the
// pod (started with nsenter): it sets each key of the value (space-separated)
// through the ambassador on 127.0.0.1:11211 and exits.
const helperEnv = "PODKIT_E2E_SET_THROUGH_AMBASSADOR"

func TestMain(m *testing.M) {
	if keys := os.Getenv(helperEnv); keys != "" {
		for _, k := range strings.Fields(keys) {
			if err := examplepod.MemcachedSet("127.0.0.1:11211", k, "through the ambassador: "+k); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// setThroughAmbassador runs this test binary in the pod's network namespace
// as a client of the ambassador.
func setThroughAmbassador(ctx context.Context, podPID int, keys []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(podPID), "-n", "--", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+strings.Join(keys, " "))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("set through the ambassador, inside the pod: %w: %s", err, out)
	}
	return nil
}

// buildBinaries builds podkit's binaries as make build does (static), into
// a temporary directory: never a stale ./bin.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	args := []string{"build", "-trimpath", "-o", dir + "/"}
	for _, b := range []string{"pause", "waitfor", "logsidecar", "ambassador", "adapter"} {
		args = append(args, "github.com/podkit/podkit/cmd/"+b)
	}
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

func nsOf(pid int, ns string) string {
	l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
	return l
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(st), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

func TestExamplePod(t *testing.T) {
	testserver.RequireRoot(t)
	tools := map[string]string{}
	for _, b := range []string{"nsenter", "ip", "nginx", "memcached", "prometheus"} {
		tools[b] = testserver.Require(t, b)
	}
	t0 := time.Now()
	bin := buildBinaries(t)
	t.Logf("built the binaries in %v", time.Since(t0).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 110*time.Second)
	defer cancel()

	started := time.Now()
	pod, err := examplepod.Start(ctx, examplepod.Options{
		Base:          "../../examples/k8s/base",
		Bin:           bin,
		Dir:           t.TempDir(),
		MemcachedBin:  tools["memcached"],
		PrometheusBin: tools["prometheus"],
		LookPath: func(name string) (string, error) {
			if p, ok := tools[name]; ok {
				return p, nil
			}
			return exec.LookPath(name)
		},
	})
	if err != nil {
		t.Fatalf("start the example pod: %v", err)
	}
	t.Cleanup(func() { pod.Stop() }) // also on failure: no process, namespace or veth left
	t.Logf("pod %s up in %v: IP %s, host %s, shards %v, receiver %s, Prometheus %s",
		pod.Name, time.Since(started).Round(time.Millisecond), pod.IP, pod.HostIP, pod.Addresses.Shards, pod.Addresses.Forward, pod.PrometheusURL)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+"\n\ncontainers' output:\n%s", append(args, pod.Logs(30))...)
	}

	// Every container shares pause's network, UTS and IPC namespaces.
	podNS := map[string]string{}
	for _, ns := range []string{"net", "uts", "ipc", "pid"} {
		podNS[ns] = nsOf(pod.PID, ns)
	}
	for _, pid := range pod.PIDs()[1:] {
		if !alive(pid) {
			continue // the waitfor init container has finished
		}
		for _, ns := range []string{"net", "uts", "ipc"} {
			if got := nsOf(pid, ns); got != podNS[ns] {
				fail("container PID %d: %s namespace %s, want the pod's %s", pid, ns, got, podNS[ns])
			}
		}
	}

	prom := &promClient{url: pod.PrometheusURL, pod: pod.Name}
	base, err := prom.waitSample(ctx, time.Time{}, 30*time.Second)
	if err != nil {
		fail("Prometheus has no sample of the adapter's metrics: %v", err)
	}

	client := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + net.JoinHostPort(pod.IP, "8080") + path)
		if err != nil {
			fail("GET %s from the pod: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	requests := 0

	// nginx answers at the pod's address, from the host.
	const plain = 5
	for range plain {
		if code, body := get("/"); code != 200 || body != "hello from "+pod.Name+"\n" {
			fail("GET / = %d %q, want 200 %q", code, body, "hello from "+pod.Name+"\n")
		}
		requests++
	}

	// The cache route: nginx -> ambassador (127.0.0.1:11211 in the pod) ->
	// the shard ambassador -locate names. Each key is set on that shard
	// only, so a hit proves the ambassador routed to it.
	var keys []string
	for i := range 12 {
		keys = append(keys, fmt.Sprintf("/cache/key-%d", i))
	}
	where, err := pod.Locate(ctx, keys)
	if err != nil {
		fail("%v", err)
	}
	shardsUsed := map[string]bool{}
	for _, k := range keys {
		shardsUsed[where[k]] = true
		if !contains(pod.Addresses.Shards, where[k]) {
			fail("ambassador -locate put %s on %s, which is none of the shards %v", k, where[k], pod.Addresses.Shards)
		}
		if err := examplepod.MemcachedSet(where[k], k, "value of "+k); err != nil {
			fail("set %s on shard %s: %v", k, where[k], err)
		}
	}
	if len(shardsUsed) < 2 {
		t.Errorf("12 keys all on one shard (%v): the ambassador's distribution looks broken", shardsUsed)
	}
	for _, k := range keys {
		if code, body := get(k); code != 200 || body != "value of "+k {
			fail("GET %s through nginx's memcached route = %d %q, want 200 %q (set on shard %s)\nthe ambassador's metrics:\n%s",
				k, code, body, "value of "+k, where[k], metricsOf("http://"+net.JoinHostPort(pod.IP, "9101")+"/metrics", "ambassador_"))
		}
		requests++
	}
	// And the other way: keys set through the ambassador, from inside the
	// pod, land on the shard -locate names and on no other.
	var inKeys []string
	for i := range 12 {
		inKeys = append(inKeys, fmt.Sprintf("/cache/through-%d", i))
	}
	inWhere, err := pod.Locate(ctx, inKeys)
	if err != nil {
		fail("%v", err)
	}
	if err := setThroughAmbassador(ctx, pod.PID, inKeys); err != nil {
		fail("%v", err)
	}
	for _, k := range inKeys {
		for _, shard := range pod.Addresses.Shards {
			v, found, err := examplepod.MemcachedGet(shard, k)
			if err != nil {
				fail("get %s from shard %s: %v", k, shard, err)
			}
			if want := shard == inWhere[k]; found != want || found && v != "through the ambassador: "+k {
				fail("key %s on shard %s: found=%v value %q; ambassador -locate names %s", k, shard, found, v, inWhere[k])
			}
		}
	}

	if code, body := get("/cache/never-set"); code != 404 || body != "not cached\n" {
		fail("GET /cache/never-set = %d %q, want the @miss answer 404 %q", code, body, "not cached\n")
	}
	requests++
	sent := time.Now()

	// Prometheus's nginx_http_requests_total (from the adapter's reading of
	// stub_status) grew by exactly the requests made, plus the adapter's own
	// stub_status fetches (nginx counts those too) between the two samples.
	last, err := prom.waitSample(ctx, sent, 30*time.Second)
	if err != nil {
		fail("Prometheus has no sample after the requests: %v", err)
	}
	gotReq := last.requests - base.requests
	fetches := last.fetches - base.fetches
	// A fetch that failed (a scrape timeout on a loaded machine) may or may
	// not have reached nginx: only then is the count allowed below.
	failed := last.errors - base.errors
	if got := gotReq - fetches; got > float64(requests) || got < float64(requests)-failed {
		fail("nginx_http_requests_total grew by %v between samples at %v and %v, with %v stub_status fetches between (%v failed): %v requests, want the %d made",
			gotReq, base.at, last.at, fetches, failed, got, requests)
	}
	t.Logf("Prometheus: nginx_http_requests_total %v -> %v (%d requests + %v stub_status fetches)", base.requests, last.requests, requests, fetches)

	// Each request made an access-log record at the receiver, with the
	// pod's identity.
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	err = pod.Receiver.WaitCount(wctx, int64(requests))
	wcancel()
	if err != nil {
		fail("log records at the receiver: %v", err)
	}
	rec := findRecord(pod.Receiver.Records(), "/")
	if rec == nil {
		fail("no record of GET / at the receiver; got %d records", len(pod.Receiver.Records()))
	}
	want := map[string]any{
		"pod_name": pod.Name, "namespace_name": "default", "pod_ip": pod.IP,
		"pod_uid": fmt.Sprintf("podsim-%d", pod.PID), "app": "web", "method": "GET",
	}
	for k, v := range want {
		if fmt.Sprint(rec.Fields[k]) != fmt.Sprint(v) {
			t.Errorf("record of GET /: %s = %v, want %v (record %v)", k, rec.Fields[k], v, rec.Fields)
		}
	}
	if fmt.Sprint(rec.Fields["status"]) != "200" {
		t.Errorf("record of GET /: status = %v, want 200 (record %v)", rec.Fields["status"], rec.Fields)
	}

	// Lines logged just before the shutdown are shipped too: logsidecar
	// drains after nginx has exited.
	for i := range 3 {
		if code, _ := get(fmt.Sprintf("/?before-shutdown=%d", i)); code != 200 {
			fail("GET / before the shutdown = %d", code)
		}
		requests++
	}

	// Shutdown in the kubelet's order: nginx, then the sidecars in reverse.
	pids := append(pod.PIDs(), pod.ServerPIDs()...)
	members := processesIn(podNS) // nginx's workers too
	if len(members) < 5 {
		t.Errorf("only %d processes in the pod's namespaces before the shutdown, want pause, nginx (+ workers) and 3 sidecars: %v", len(members), members)
	}
	report := pod.Stop()
	t.Logf("stopped in %v: %+v", report.Elapsed.Round(time.Millisecond), report)
	var order []string
	for _, e := range report.Containers {
		order = append(order, e.Name)
		if e.Code != 0 {
			t.Errorf("container %s exited %d, want 0\n%s", e.Name, e.Code, pod.Logs(30))
		}
	}
	if got, want := strings.Join(order, ","), "nginx,adapter,ambassador,logsidecar"; got != want {
		t.Errorf("stop order %s, want %s", got, want)
	}
	if report.Pause != 0 {
		t.Errorf("pause exited %d, want 0", report.Pause)
	}

	// Every line nginx logged was shipped.
	accessLog := filepath.Join(pod.Dir, "volumes", "nginx-logs", "access.log")
	lines := countLines(t, accessLog)
	if lines != requests {
		t.Errorf("access.log has %d lines, want one per request (%d)", lines, requests)
	}
	shipped := 0
	for _, r := range pod.Receiver.Records() {
		if fmt.Sprint(r.Fields["file"]) == accessLog {
			shipped++
		}
	}
	if shipped != lines {
		t.Errorf("receiver got %d records of %s, which has %d lines: every line must be shipped exactly once", shipped, accessLog, lines)
	}

	// Nothing left running, no namespace left.
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d still running after Stop", pid)
		}
	}
	// A process that shared the pod's namespaces and still runs (same PID,
	// same start time) keeps them alive. (Namespace inode numbers are
	// reused at once, so the inodes alone would also match a pod that
	// another test starts meanwhile.)
	for _, m := range members {
		if alive(m.pid) && startTime(m.pid) == m.start {
			t.Errorf("process %d (%s) of the pod still running after Stop", m.pid, m.comm)
		}
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, link := range podNS {
			if strings.Contains(string(mi), link) {
				t.Errorf("namespace %s is still bind-mounted:\n%s", link, mi)
			}
		}
	}
	if out, err := exec.Command(tools["ip"], "-o", "addr", "show").CombinedOutput(); err == nil && strings.Contains(string(out), " "+pod.HostIP+"/") {
		t.Errorf("the host end of the veth (%s) is left behind:\n%s", pod.HostIP, out)
	}
}

// metricsOf returns the samples of an admin endpoint whose names start
// with prefix, for failure messages.
func metricsOf(url, prefix string) string {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func findRecord(recs []forwardtest.Record, path string) *forwardtest.Record {
	for i := range recs {
		if fmt.Sprint(recs[i].Fields["path"]) == path {
			return &recs[i]
		}
	}
	return nil
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

type member struct {
	pid   int
	start string // /proc/PID/stat starttime: tells a reused PID apart
	comm  string
	ns    string
}

func startTime(pid int) string {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	_, rest, _ := strings.Cut(string(st), ") ")
	if f := strings.Fields(rest); len(f) > 19 {
		return f[19]
	}
	return ""
}

// processesIn lists the running processes that share any of the
// namespaces ns (kind -> /proc/PID/ns link).
func processesIn(ns map[string]string) []member {
	entries, _ := os.ReadDir("/proc")
	var in []member
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		for kind, link := range ns {
			if link != "" && nsOf(pid, kind) == link {
				comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
				in = append(in, member{pid, startTime(pid), strings.TrimSpace(string(comm)), kind})
				break
			}
		}
	}
	return in
}

// promClient reads the pod's series from Prometheus's HTTP API.
type promClient struct {
	url, pod string
}

type sample struct {
	at                time.Time
	requests, fetches float64
	errors            float64 // failed fetches
}

// waitSample waits for a scrape of the pod that started after `after` and
// has both nginx_http_requests_total and the adapter's nginx fetch count.
func (p *promClient) waitSample(ctx context.Context, after time.Time, timeout time.Duration) (sample, error) {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		s, err := p.latest(ctx)
		if err == nil && s.at.After(after) {
			return s, nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("newest sample at %v, not after %v", s.at, after)
		}
		if time.Now().After(deadline) {
			return sample{}, fmt.Errorf("after %v: %v", timeout, last)
		}
		select {
		case <-ctx.Done():
			return sample{}, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// latest returns the newest scrape that has both series.
func (p *promClient) latest(ctx context.Context) (sample, error) {
	sel := fmt.Sprintf(`{job="kubernetes-pods",pod=%q}`, p.pod)
	req, err := p.series(ctx, `nginx_http_requests_total`+sel+`[1m]`)
	if err != nil {
		return sample{}, err
	}
	fetch, err := p.series(ctx, `adapter_source_fetches_total`+strings.TrimSuffix(sel, "}")+`,source="nginx"}[1m]`)
	if err != nil {
		return sample{}, err
	}
	// Absent until the first failure.
	errs, err := p.series(ctx, `adapter_source_fetch_errors_total`+strings.TrimSuffix(sel, "}")+`,source="nginx"}[1m]`)
	if err != nil {
		errs = nil
	}
	var best sample
	for ts, v := range req {
		f, ok := fetch[ts]
		if ok && ts.After(best.at) {
			best = sample{at: ts, requests: v, fetches: f, errors: errs[ts]}
		}
	}
	if best.at.IsZero() {
		return sample{}, fmt.Errorf("no scrape with both nginx_http_requests_total (%d samples) and adapter_source_fetches_total{source=\"nginx\"} (%d samples)", len(req), len(fetch))
	}
	return best, nil
}

// series evaluates a range selector that must match one series and returns
// its samples by timestamp.
func (p *promClient) series(ctx context.Context, query string) (map[time.Time]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/api/v1/query?query="+url.QueryEscape(query), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %s: %w", query, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %s: %s", query, body.Error)
	}
	if len(body.Data.Result) != 1 {
		return nil, fmt.Errorf("query %s: %d series, want 1", query, len(body.Data.Result))
	}
	out := map[time.Time]float64{}
	for _, v := range body.Data.Result[0].Values {
		ts, _ := v[0].(float64)
		s, _ := v[1].(string)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", query, v[1], err)
		}
		out[time.UnixMilli(int64(ts*1000+0.5))] = f
	}
	return out, nil
}
