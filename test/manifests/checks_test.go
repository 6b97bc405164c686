package manifests

import (
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// role says how a container runs in its pod.
type role int

const (
	initRole    role = iota // plain init container: runs alone, to completion
	sidecarRole             // native sidecar: init container with restartPolicy Always
	mainRole
)

func (r role) String() string {
	return [...]string{"init container", "sidecar", "container"}[r]
}

type member struct {
	c    *corev1.Container
	role role
}

func members(spec *corev1.PodSpec) []member {
	var out []member
	for i := range spec.InitContainers {
		c := &spec.InitContainers[i]
		r := initRole
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			r = sidecarRole
		}
		out = append(out, member{c, r})
	}
	for i := range spec.Containers {
		out = append(out, member{&spec.Containers[i], mainRole})
	}
	return out
}

// check is one property of a pod; it returns every violation it finds.
type check struct {
	name string
	fn   func(p *pod, b *bundle) []error
}

var checks = []check{
	{"ports", checkPorts},
	{"probes", checkProbes},
	{"resources", checkResources},
	{"downward", checkDownwardAPI},
	{"configs", checkConfigs},
	{"security", checkSecurity},
	{"images", checkImages},
	{"prometheus", checkPrometheus},
}

func runChecks(p *pod, b *bundle) map[string][]error {
	out := map[string][]error{}
	for _, c := range checks {
		if errs := c.fn(p, b); len(errs) > 0 {
			out[c.name] = errs
		}
	}
	return out
}

func protocolOf(p corev1.ContainerPort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}

// listenFlags are the podkit flags (and their environment twins) that name
// an address the container listens on.
var listenFlags = []string{"admin-addr", "listen", "web.listen-address"}

// configListenREs find listen addresses in the configuration files a
// container reads: nginx's listen directive, nutcracker's listen key and
// Fluent Bit's Port/HTTP_Port.
var configListenREs = []*regexp.Regexp{
	regexp.MustCompile(`(?m)(?:^|[\s{;])listen\s+([^;\s]+)[^;]*;`),
	regexp.MustCompile(`(?m)^\s*listen:\s*(\S+)\s*$`),
	regexp.MustCompile(`(?m)^\s*(?:Port|HTTP_Port)\s+(\d+)\s*$`),
}

// configListens returns the TCP ports the configuration files a container
// reads make it listen on.
func configListens(c *corev1.Container, b *bundle, volumes map[string]*corev1.Volume) map[int32]string {
	out := map[int32]string{}
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.MountPath] = vm
	}
	for _, pth := range filePaths(c, b) {
		content, ok := fileContent(pth, mounts, volumes, b)
		if !ok {
			continue
		}
		for _, re := range configListenREs {
			for _, m := range re.FindAllStringSubmatch(content, -1) {
				addr := m[1]
				if !strings.Contains(addr, ":") {
					addr = ":" + addr // nginx "listen 8080", Fluent Bit "Port 24224"
				}
				if _, port, err := net.SplitHostPort(addr); err == nil {
					if n, err := strconv.ParseUint(port, 10, 16); err == nil {
						out[int32(n)] = path.Base(pth)
					}
				}
			}
		}
	}
	return out
}

// fileContent returns what a container finds at pth, when a ConfigMap or a
// repository directory mounted from the node provides it.
func fileContent(pth string, mounts map[string]corev1.VolumeMount, volumes map[string]*corev1.Volume, b *bundle) (string, bool) {
	best := ""
	for mp := range mounts {
		if strings.HasPrefix(pth, strings.TrimSuffix(mp, "/")+"/") && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		return "", false
	}
	vm := mounts[best]
	v, ok := volumes[vm.Name]
	if !ok {
		return "", false
	}
	rel := path.Join(vm.SubPath, strings.TrimPrefix(pth, strings.TrimSuffix(best, "/")+"/"))
	switch {
	case v.ConfigMap != nil:
		key := rel
		for _, it := range v.ConfigMap.Items {
			if it.Path == rel {
				key = it.Key
			}
		}
		content, ok := b.configMaps[v.ConfigMap.Name][key]
		return content, ok
	case v.HostPath != nil:
		dir, ok := b.hostPaths[v.HostPath.Path]
		if !ok {
			return "", false
		}
		data, err := os.ReadFile(filepath.Join(dir, rel))
		return string(data), err == nil
	}
	return "", false
}

// argListens returns the TCP ports a container's flags or env twins make it
// listen on.
func argListens(c *corev1.Container, b *bundle) (map[int32]string, []error) {
	out := map[int32]string{}
	var errs []error
	add := func(src, addr string) {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v", src, addr, err))
			return
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s %q: port is not a number", src, addr))
			return
		}
		out[int32(n)] = src
	}
	for _, f := range listenFlags {
		if v, ok := flagValue(c.Args, f); ok {
			add("-"+f, v)
		}
	}
	for name, value := range containerEnv(c, b) {
		for _, f := range listenFlags {
			if strings.HasSuffix(name, "_"+strings.ToUpper(strings.ReplaceAll(f, "-", "_"))) {
				add(name, value)
			}
		}
	}
	return out, errs
}

// flagValue finds -name=value, --name=value or -name value in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// containerEnv returns the variables a container sees from literal values
// and ConfigMaps (not from fieldRef or resourceFieldRef).
func containerEnv(c *corev1.Container, b *bundle) map[string]string {
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef != nil {
			for k, v := range b.configMaps[from.ConfigMapRef.Name] {
				env[from.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			if v, ok := b.configMaps[ref.Name][ref.Key]; ok {
				env[e.Name] = v
			}
		}
	}
	return env
}

// checkPorts: the containers of a pod share one port space, so no two that
// run at the same time may listen on one port; every port a flag or a
// configuration file makes a container listen on is declared (so the
// declarations cover the real listeners); port names are unique in the pod.
func checkPorts(p *pod, b *bundle) []error {
	var errs []error
	type key struct {
		port  int32
		proto corev1.Protocol
	}
	owner := map[key]string{}
	names := map[string]string{}
	volumes := map[string]*corev1.Volume{}
	for i := range p.spec.Volumes {
		volumes[p.spec.Volumes[i].Name] = &p.spec.Volumes[i]
	}
	for _, m := range members(&p.spec) {
		declared := map[int32]bool{}
		for _, port := range m.c.Ports {
			if port.Name != "" {
				if prev, dup := names[port.Name]; dup {
					errs = append(errs, fmt.Errorf("port name %q used by %s and %s", port.Name, prev, m.c.Name))
				}
				names[port.Name] = m.c.Name
			}
			if protocolOf(port) == corev1.ProtocolTCP {
				declared[port.ContainerPort] = true
			}
			if m.role == initRole {
				continue // runs before the others, alone
			}
			k := key{port.ContainerPort, protocolOf(port)}
			if prev, dup := owner[k]; dup {
				errs = append(errs, fmt.Errorf("port %d/%s declared by %s and %s: they share one network namespace", k.port, k.proto, prev, m.c.Name))
			}
			owner[k] = m.c.Name
		}
		listens, lerrs := argListens(m.c, b)
		errs = append(errs, prefixed(m.c.Name, lerrs)...)
		for port, src := range configListens(m.c, b, volumes) {
			listens[port] = src
		}
		for port, src := range listens {
			if declared[port] {
				continue
			}
			if other, taken := owner[key{port, corev1.ProtocolTCP}]; taken && other != m.c.Name && m.role != initRole {
				errs = append(errs, fmt.Errorf("%s listens on %d (%s), a port %s declares: they share one network namespace", m.c.Name, port, src, other))
			}
			errs = append(errs, fmt.Errorf("%s listens on %d (%s) but declares no such port", m.c.Name, port, src))
		}
	}
	return errs
}

func prefixed(name string, errs []error) []error {
	for i, err := range errs {
		errs[i] = fmt.Errorf("%s: %w", name, err)
	}
	return errs
}

// checkProbes: every running container has startup, liveness and readiness
// probes that point at a port it declares; plain init containers have none
// (the API rejects them).
func checkProbes(p *pod, _ *bundle) []error {
	var errs []error
	for _, m := range members(&p.spec) {
		probes := []struct {
			kind  string
			probe *corev1.Probe
		}{
			{"startupProbe", m.c.StartupProbe},
			{"livenessProbe", m.c.LivenessProbe},
			{"readinessProbe", m.c.ReadinessProbe},
		}
		for _, pr := range probes {
			if m.role == initRole {
				if pr.probe != nil {
					errs = append(errs, fmt.Errorf("%s %s has a %s: the API allows probes only on sidecars and containers", m.role, m.c.Name, pr.kind))
				}
				continue
			}
			if pr.probe == nil {
				errs = append(errs, fmt.Errorf("%s %s has no %s", m.role, m.c.Name, pr.kind))
				continue
			}
			if err := probePort(m.c, pr.probe); err != nil {
				errs = append(errs, fmt.Errorf("%s %s %s: %w", m.role, m.c.Name, pr.kind, err))
			}
		}
	}
	return errs
}

func probePort(c *corev1.Container, pr *corev1.Probe) error {
	var port intstr.IntOrString
	switch {
	case pr.HTTPGet != nil:
		port = pr.HTTPGet.Port
	case pr.TCPSocket != nil:
		port = pr.TCPSocket.Port
	case pr.GRPC != nil:
		port = intstr.FromInt32(pr.GRPC.Port)
	case pr.Exec != nil:
		return nil
	default:
		return fmt.Errorf("no handler")
	}
	for _, cp := range c.Ports {
		if protocolOf(cp) != corev1.ProtocolTCP {
			continue
		}
		if port.Type == intstr.String && cp.Name == port.StrVal || port.Type == intstr.Int && cp.ContainerPort == port.IntVal {
			return nil
		}
	}
	return fmt.Errorf("port %s is not a TCP port the container declares", port.String())
}

// checkResources: every container has CPU and memory requests and limits,
// and no request exceeds its limit.
func checkResources(p *pod, _ *bundle) []error {
	var errs []error
	for _, m := range members(&p.spec) {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := m.c.Resources.Requests[r]
			lim, hasLim := m.c.Resources.Limits[r]
			if !hasReq {
				errs = append(errs, fmt.Errorf("%s %s has no %s request", m.role, m.c.Name, r))
			}
			if !hasLim {
				errs = append(errs, fmt.Errorf("%s %s has no %s limit", m.role, m.c.Name, r))
			}
			if hasReq && hasLim && req.Cmp(lim) > 0 {
				errs = append(errs, fmt.Errorf("%s %s requests %s %s, above its limit %s", m.role, m.c.Name, req.String(), r, lim.String()))
			}
		}
	}
	return errs
}

var (
	// Downward API fields, from the Kubernetes "Downward API" page.
	envFieldPaths = []string{
		"metadata.name", "metadata.namespace", "metadata.uid",
		"spec.nodeName", "spec.serviceAccountName",
		"status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs",
	}
	volumeFieldPaths = []string{
		"metadata.name", "metadata.namespace", "metadata.uid", "metadata.labels", "metadata.annotations",
	}
	keyedFieldPath = regexp.MustCompile(`^metadata\.(labels|annotations)\['[^']+'\]$`)
	resourceFields = regexp.MustCompile(`^(limits|requests)\.(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z]+)$`)
)

// checkDownwardAPI: every fieldRef path is one the API serves (env and
// volumes differ), every resourceFieldRef names a known resource and an
// existing container, and MEMORY_LIMIT comes in bytes as podenv expects.
func checkDownwardAPI(p *pod, _ *bundle) []error {
	var errs []error
	containers := map[string]bool{}
	for _, m := range members(&p.spec) {
		containers[m.c.Name] = true
	}
	checkResourceRef := func(where string, ref *corev1.ResourceFieldSelector, needName bool) {
		if !resourceFields.MatchString(ref.Resource) {
			errs = append(errs, fmt.Errorf("%s: resourceFieldRef resource %q is not one of limits/requests.cpu, .memory, .ephemeral-storage, .hugepages-*", where, ref.Resource))
		}
		if ref.ContainerName == "" && needName {
			errs = append(errs, fmt.Errorf("%s: resourceFieldRef in a volume needs containerName", where))
		}
		if ref.ContainerName != "" && !containers[ref.ContainerName] {
			errs = append(errs, fmt.Errorf("%s: resourceFieldRef containerName %q is no container of this pod", where, ref.ContainerName))
		}
	}
	for _, m := range members(&p.spec) {
		for _, e := range m.c.Env {
			where := m.c.Name + " env " + e.Name
			if e.ValueFrom == nil {
				continue
			}
			if f := e.ValueFrom.FieldRef; f != nil && !slices.Contains(envFieldPaths, f.FieldPath) && !keyedFieldPath.MatchString(f.FieldPath) {
				errs = append(errs, fmt.Errorf("%s: fieldRef %q is not a field the Downward API gives as env", where, f.FieldPath))
			}
			if r := e.ValueFrom.ResourceFieldRef; r != nil {
				checkResourceRef(where, r, false)
				if e.Name == "MEMORY_LIMIT" && (r.Resource != "limits.memory" || !r.Divisor.IsZero() && r.Divisor.Cmp(resource.MustParse("1")) != 0) {
					errs = append(errs, fmt.Errorf("%s: want limits.memory in bytes (divisor 1) for podkit's GOMEMLIMIT", where))
				}
			}
		}
	}
	var volItems []corev1.DownwardAPIVolumeFile
	for _, v := range p.spec.Volumes {
		if v.DownwardAPI != nil {
			volItems = append(volItems, v.DownwardAPI.Items...)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.DownwardAPI != nil {
					volItems = append(volItems, s.DownwardAPI.Items...)
				}
			}
		}
	}
	for _, it := range volItems {
		where := "downwardAPI volume item " + it.Path
		if f := it.FieldRef; f != nil && !slices.Contains(volumeFieldPaths, f.FieldPath) && !keyedFieldPath.MatchString(f.FieldPath) {
			errs = append(errs, fmt.Errorf("%s: fieldRef %q is not a field the Downward API gives in a volume", where, f.FieldPath))
		}
		if r := it.ResourceFieldRef; r != nil {
			checkResourceRef(where, r, true)
		}
	}
	return errs
}

// configExtensions mark a path as a configuration file that must come from
// a ConfigMap (or, for a static pod, from the node).
var configExtensions = []string{".conf", ".yml", ".yaml", ".toml", ".ini", ".cfg"}

// checkConfigs: every ConfigMap a pod names exists with the keys it names,
// and every file path a container is given (flags, env) lies on a mount that
// provides it: a key of the mounted ConfigMap, a file of the repository the
// kind config mounts on the node, or an emptyDir.
func checkConfigs(p *pod, b *bundle) []error {
	var errs []error
	volumes := map[string]*corev1.Volume{}
	for i := range p.spec.Volumes {
		v := &p.spec.Volumes[i]
		volumes[v.Name] = v
		switch {
		case v.ConfigMap != nil:
			data, ok := b.configMaps[v.ConfigMap.Name]
			if !ok {
				if v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional {
					errs = append(errs, fmt.Errorf("volume %s: no ConfigMap %q", v.Name, v.ConfigMap.Name))
				}
				continue
			}
			for _, it := range v.ConfigMap.Items {
				if _, ok := data[it.Key]; !ok {
					errs = append(errs, fmt.Errorf("volume %s: ConfigMap %q has no key %q", v.Name, v.ConfigMap.Name, it.Key))
				}
			}
		case v.HostPath != nil:
			if _, ok := b.hostPaths[v.HostPath.Path]; !ok {
				errs = append(errs, fmt.Errorf("volume %s: hostPath %s is not mounted on the node by the kind config", v.Name, v.HostPath.Path))
			}
		}
	}
	for _, m := range members(&p.spec) {
		c := m.c
		for _, from := range c.EnvFrom {
			if ref := from.ConfigMapRef; ref != nil {
				if _, ok := b.configMaps[ref.Name]; !ok && (ref.Optional == nil || !*ref.Optional) {
					errs = append(errs, fmt.Errorf("%s envFrom: no ConfigMap %q", c.Name, ref.Name))
				}
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				ref := e.ValueFrom.ConfigMapKeyRef
				if _, ok := b.configMaps[ref.Name][ref.Key]; !ok {
					errs = append(errs, fmt.Errorf("%s env %s: no key %q in ConfigMap %q", c.Name, e.Name, ref.Key, ref.Name))
				}
			}
		}
		mounts := map[string]corev1.VolumeMount{}
		for _, vm := range c.VolumeMounts {
			if _, ok := volumes[vm.Name]; !ok {
				errs = append(errs, fmt.Errorf("%s mounts volume %q, which the pod does not define", c.Name, vm.Name))
				continue
			}
			mounts[vm.MountPath] = vm
		}
		for _, pth := range filePaths(c, b) {
			if err := provided(pth, mounts, volumes, b); err != nil {
				errs = append(errs, fmt.Errorf("%s reads %s: %w", c.Name, pth, err))
			}
		}
	}
	return errs
}

// filePaths returns the absolute paths among a container's command, args and
// environment values (the value part of -flag=value; white-space-separated
// items of a value).
func filePaths(c *corev1.Container, b *bundle) []string {
	var tokens []string
	for _, a := range slices.Concat(c.Command, c.Args) {
		if strings.HasPrefix(a, "-") {
			if _, v, ok := strings.Cut(a, "="); ok {
				a = v
			}
		}
		tokens = append(tokens, a)
	}
	for _, v := range containerEnv(c, b) {
		tokens = append(tokens, strings.Fields(v)...)
	}
	var out []string
	for _, t := range tokens {
		if strings.HasPrefix(t, "/") {
			out = append(out, path.Clean(t))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func provided(pth string, mounts map[string]corev1.VolumeMount, volumes map[string]*corev1.Volume, b *bundle) error {
	best := ""
	for mp := range mounts {
		if (pth == mp || strings.HasPrefix(pth, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if best == "" {
		if slices.Contains(configExtensions, path.Ext(pth)) {
			return fmt.Errorf("no volume is mounted there: mount the ConfigMap that holds it")
		}
		return nil // a path inside the image
	}
	vm := mounts[best]
	rel := strings.TrimPrefix(strings.TrimPrefix(pth, best), "/")
	if vm.SubPath != "" {
		rel = path.Join(vm.SubPath, rel)
	}
	v := volumes[vm.Name]
	switch {
	case v.ConfigMap != nil:
		data, ok := b.configMaps[v.ConfigMap.Name]
		if !ok {
			return nil // reported with the volume
		}
		keys := map[string]bool{}
		if len(v.ConfigMap.Items) > 0 {
			for _, it := range v.ConfigMap.Items {
				keys[it.Path] = true
			}
		} else {
			for k := range data {
				keys[k] = true
			}
		}
		if rel == "" || !keys[rel] {
			return fmt.Errorf("ConfigMap %q mounted at %s has no file %q", v.ConfigMap.Name, best, rel)
		}
	case v.HostPath != nil:
		dir, ok := b.hostPaths[v.HostPath.Path]
		if !ok {
			return nil // reported with the volume
		}
		if matches, _ := filepath.Glob(filepath.Join(dir, rel)); len(matches) == 0 {
			return fmt.Errorf("hostPath %s (from %s) has no file %q", v.HostPath.Path, dir, rel)
		}
	case v.EmptyDir != nil:
		// Written at run time (logs, checkpoints).
	default:
		if slices.Contains(configExtensions, path.Ext(pth)) {
			return fmt.Errorf("volume %s is neither a ConfigMap nor an emptyDir", vm.Name)
		}
	}
	return nil
}

// checkSecurity: non-root (65532), no privilege escalation, a read-only root
// filesystem and no capabilities, for every container.
func checkSecurity(p *pod, _ *bundle) []error {
	var errs []error
	psc := p.spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		errs = append(errs, fmt.Errorf("pod securityContext.runAsNonRoot is not true"))
	}
	for _, m := range members(&p.spec) {
		sc := m.c.SecurityContext
		if sc == nil {
			errs = append(errs, fmt.Errorf("%s %s has no securityContext", m.role, m.c.Name))
			continue
		}
		uid := sc.RunAsUser
		if uid == nil && psc != nil {
			uid = psc.RunAsUser
		}
		if uid == nil || *uid != 65532 {
			errs = append(errs, fmt.Errorf("%s %s does not run as user 65532", m.role, m.c.Name))
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			errs = append(errs, fmt.Errorf("%s %s: allowPrivilegeEscalation is not false", m.role, m.c.Name))
		}
		if sc.Privileged != nil && *sc.Privileged {
			errs = append(errs, fmt.Errorf("%s %s is privileged", m.role, m.c.Name))
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			errs = append(errs, fmt.Errorf("%s %s: readOnlyRootFilesystem is not true", m.role, m.c.Name))
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			errs = append(errs, fmt.Errorf("%s %s: capabilities must drop ALL and add none", m.role, m.c.Name))
		}
	}
	return errs
}

// podkitSidecars are the podkit binaries that run for the pod's lifetime;
// waitfor runs to completion.
var podkitSidecars = []string{"logsidecar", "ambassador", "adapter"}

// podkitBinary returns the binary a podkit image runs: podkit/<binary>:tag.
func podkitBinary(image string) (string, bool) {
	rest, ok := strings.CutPrefix(image, "podkit/")
	if !ok {
		return "", false
	}
	name, _, _ := strings.Cut(rest, ":")
	return name, true
}

// checkImages: podkit images are tagged (not latest) and never pulled with
// Always, so `kind load` images are used; podkit's long-running helpers in
// initContainers are native sidecars and waitfor is not.
func checkImages(p *pod, _ *bundle) []error {
	var errs []error
	for _, m := range members(&p.spec) {
		c := m.c
		_, tag, hasTag := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":")
		if !hasTag || tag == "latest" {
			errs = append(errs, fmt.Errorf("%s: image %q needs a fixed tag", c.Name, c.Image))
		}
		bin, ok := podkitBinary(c.Image)
		if !ok {
			continue
		}
		if c.ImagePullPolicy == corev1.PullAlways || c.ImagePullPolicy == "" && tag == "latest" {
			errs = append(errs, fmt.Errorf("%s: podkit images are loaded into the node: use imagePullPolicy IfNotPresent or Never", c.Name))
		}
		switch {
		case m.role == initRole && slices.Contains(podkitSidecars, bin):
			errs = append(errs, fmt.Errorf("%s: %s in initContainers needs restartPolicy: Always (a native sidecar); without it the pod never starts", c.Name, bin))
		case m.role == sidecarRole && bin == "waitfor":
			errs = append(errs, fmt.Errorf("%s: waitfor exits when done: it must not have restartPolicy: Always", c.Name))
		case m.role != initRole && bin == "waitfor":
			errs = append(errs, fmt.Errorf("%s: waitfor belongs in initContainers", c.Name))
		}
	}
	return errs
}

// checkPrometheus: a pod annotated for scraping names a declared port.
func checkPrometheus(p *pod, _ *bundle) []error {
	if p.meta.Annotations["prometheus.io/scrape"] != "true" {
		return nil
	}
	var errs []error
	port := p.meta.Annotations["prometheus.io/port"]
	n, err := strconv.ParseInt(port, 10, 32)
	found := false
	for _, m := range members(&p.spec) {
		for _, cp := range m.c.Ports {
			if err == nil && cp.ContainerPort == int32(n) && protocolOf(cp) == corev1.ProtocolTCP && m.role != initRole {
				found = true
			}
		}
	}
	if !found {
		errs = append(errs, fmt.Errorf("annotation prometheus.io/port %q is not a TCP port a running container declares", port))
	}
	if pth := p.meta.Annotations["prometheus.io/path"]; pth != "" && !strings.HasPrefix(pth, "/") {
		errs = append(errs, fmt.Errorf("annotation prometheus.io/path %q does not start with /", pth))
	}
	return errs
}
