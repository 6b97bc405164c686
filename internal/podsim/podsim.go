// Package podsim builds a pod the way the kubelet does, on one machine: pause
// as PID 1 of new PID, network, UTS and IPC namespaces, containers joined to
// its namespaces, and a veth pair that gives the pod an address the host can
// reach. make demo and the end-to-end test run the example pod with it.
package podsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tools are the programs podsim needs, with the Debian package of each.
var Tools = map[string]string{"nsenter": "util-linux", "ip": "iproute2"}

// Options describe a pod.
type Options struct {
	Name     string    // pod name, also its hostname
	PauseBin string    // path of podkit's pause
	Stdout   io.Writer // where containers' output goes unless a container says otherwise
	Stderr   io.Writer
}

// Pod is a running pod.
type Pod struct {
	Name    string
	PID     int    // host PID of the pod's PID 1 (pause)
	IP      string // the pod's address, on its end of the veth pair
	HostIP  string // the host's end of the veth pair: servers "outside" the pod listen here
	hostDev string
	pause   *exec.Cmd
	done    chan struct{}
	waitErr error
	opts    Options
	started []*Container
}

// Container is a process joined to the pod's namespaces.
type Container struct {
	Name    string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// Start creates the pod: pause in fresh namespaces, loopback up, a veth pair
// to the host. Stop undoes all of it.
func Start(ctx context.Context, opts Options) (*Pod, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("a pod needs root for its namespaces: run as root (sudo)")
	}
	for tool, pkg := range Tools {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found: apt-get install -y %s", tool, pkg)
		}
	}
	cmd := exec.Command(opts.PauseBin)
	cmd.Stdout, cmd.Stderr = opts.Stdout, opts.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pause %s: %w", opts.PauseBin, err)
	}
	p := &Pod{Name: opts.Name, PID: cmd.Process.Pid, pause: cmd, done: make(chan struct{}), opts: opts}
	go func() { p.waitErr = cmd.Wait(); close(p.done) }()
	if err := p.setup(ctx); err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}

// setup brings up the pod's network: loopback, a /30 on a veth pair whose
// numbers derive from pause's PID so that concurrent pods do not collide.
func (p *Pod) setup(ctx context.Context) error {
	n := p.PID % 16384
	p.HostIP = fmt.Sprintf("10.233.%d.%d", n/64, (n%64)*4+1)
	p.IP = fmt.Sprintf("10.233.%d.%d", n/64, (n%64)*4+2)
	p.hostDev = "pk" + strconv.Itoa(p.PID) + "h"
	podDev := "eth0"
	pid := strconv.Itoa(p.PID)
	steps := [][]string{
		{"nsenter", "-t", pid, "-u", "hostname", p.Name},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", p.hostDev, "type", "veth", "peer", "name", podDev, "netns", pid},
		{"ip", "addr", "add", p.HostIP + "/30", "dev", p.hostDev},
		{"ip", "link", "set", p.hostDev, "up"},
		{"nsenter", "-t", pid, "-n", "ip", "addr", "add", p.IP + "/30", "dev", podDev},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", podDev, "up"},
	}
	for _, s := range steps {
		if s[0] == "nsenter" && s[3] == "-u" {
			if _, err := exec.LookPath("hostname"); err != nil {
				continue // the pod keeps an empty hostname; nothing depends on it
			}
		}
		if out, err := exec.CommandContext(ctx, s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("pod network: %s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// Exec is how a container is started.
type Exec struct {
	Name   string
	Argv   []string
	Env    []string // added to the pod's Downward API environment
	Dir    string
	Stdout io.Writer // defaults to the pod's
	Stderr io.Writer
}

// Env is the Downward API environment the kubelet would give a container.
func (p *Pod) Env(container string) []string {
	return []string{
		"POD_NAME=" + p.Name, "POD_NAMESPACE=default", "POD_UID=" + fmt.Sprintf("podsim-%d", p.PID),
		"NODE_NAME=" + hostname(), "POD_IP=" + p.IP, "CONTAINER_NAME=" + container,
	}
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// Run starts a container in the pod's network, UTS and IPC namespaces.
func (p *Pod) Run(e Exec) (*Container, error) {
	args := append([]string{"-t", strconv.Itoa(p.PID), "-n", "-u", "-i", "--"}, e.Argv...)
	cmd := exec.Command("nsenter", args...)
	cmd.Env = append(append(os.Environ(), p.Env(e.Name)...), e.Env...)
	cmd.Dir = e.Dir
	cmd.Stdout, cmd.Stderr = p.opts.Stdout, p.opts.Stderr
	if e.Stdout != nil {
		cmd.Stdout = e.Stdout
	}
	if e.Stderr != nil {
		cmd.Stderr = e.Stderr
	}
	// Its own process group, so a Ctrl-C meant for the demo reaches the
	// containers only through Stop, in the kubelet's order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start container %s: %w", e.Name, err)
	}
	c := &Container{Name: e.Name, cmd: cmd, done: make(chan struct{})}
	go func() { c.waitErr = cmd.Wait(); close(c.done) }()
	p.started = append(p.started, c)
	return c, nil
}

// PID is the container's host PID (nsenter execs it in place).
func (c *Container) PID() int { return c.cmd.Process.Pid }

// Done is closed when the container has exited.
func (c *Container) Done() <-chan struct{} { return c.done }

// Stop sends SIGTERM, waits up to grace, then SIGKILL, as the kubelet does.
// It returns the exit code (128+N for a signal).
func (c *Container) Stop(grace time.Duration) int {
	select {
	case <-c.done:
		return exitCode(c.cmd)
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	return exitCode(c.cmd)
}

func exitCode(cmd *exec.Cmd) int {
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return -1
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Stop stops every container still running, last started first, then pause,
// and removes the veth pair. It returns pause's exit code.
func (p *Pod) Stop(grace time.Duration) int {
	for i := len(p.started) - 1; i >= 0; i-- {
		p.started[i].Stop(grace)
	}
	_ = p.pause.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.pause.Process.Kill()
		<-p.done
	}
	if p.hostDev != "" {
		// The kernel removes the pair with the pod's network namespace; this
		// covers a namespace still held open by a stray process.
		_ = exec.Command("ip", "link", "del", p.hostDev).Run()
	}
	return exitCode(p.pause)
}
