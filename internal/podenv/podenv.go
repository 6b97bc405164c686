// Package podenv reads the pod's identity and memory limit from the
// environment the Downward API fills, never from the Kubernetes API.
package podenv

import (
	"fmt"
	"math"
	"runtime/debug"
	"strconv"
	"strings"
)

// Identity is what the Downward API tells a container about its pod.
type Identity struct {
	PodName       string
	Namespace     string
	PodUID        string
	NodeName      string
	PodIP         string
	ContainerName string
}

// Environment variables read by FromEnv, as the example manifests set them.
const (
	EnvPodName       = "POD_NAME"
	EnvNamespace     = "POD_NAMESPACE"
	EnvPodUID        = "POD_UID"
	EnvNodeName      = "NODE_NAME"
	EnvPodIP         = "POD_IP"
	EnvContainerName = "CONTAINER_NAME"
	// EnvMemoryLimit holds the container's memory limit in bytes
	// (resourceFieldRef: limits.memory).
	EnvMemoryLimit = "MEMORY_LIMIT"
)

// FromEnv reads the identity; unset variables stay empty.
func FromEnv(getenv func(string) string) Identity {
	return Identity{
		PodName:       getenv(EnvPodName),
		Namespace:     getenv(EnvNamespace),
		PodUID:        getenv(EnvPodUID),
		NodeName:      getenv(EnvNodeName),
		PodIP:         getenv(EnvPodIP),
		ContainerName: getenv(EnvContainerName),
	}
}

// Fields returns the identity as record fields, Kubernetes-style names, set
// fields only, in a fixed order.
func (id Identity) Fields() [][2]string {
	all := [][2]string{
		{"pod_name", id.PodName},
		{"namespace_name", id.Namespace},
		{"pod_uid", id.PodUID},
		{"node_name", id.NodeName},
		{"pod_ip", id.PodIP},
		{"container_name", id.ContainerName},
	}
	out := all[:0]
	for _, f := range all {
		if f[1] != "" {
			out = append(out, f)
		}
	}
	return out
}

// headroom is the share of the container limit given to the Go heap: the
// rest covers stacks, runtime overhead and memory the GC does not see.
const headroom = 0.9

// MemoryLimit returns the GOMEMLIMIT podkit would set from the memory limit in
// MEMORY_LIMIT: about 90% of it. It returns 0 when GOMEMLIMIT is already set
// (the runtime honours it) or no limit is given.
func MemoryLimit(getenv func(string) string) (int64, error) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	v := strings.TrimSpace(getenv(EnvMemoryLimit))
	if v == "" {
		return 0, nil
	}
	n, err := ParseBytes(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q: %w", EnvMemoryLimit, v, err)
	}
	if n <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive number of bytes", EnvMemoryLimit, v)
	}
	return int64(float64(n) * headroom), nil
}

// ApplyMemoryLimit sets the runtime's soft memory limit from MEMORY_LIMIT
// when GOMEMLIMIT is unset, and returns what it set (0 for nothing).
func ApplyMemoryLimit(getenv func(string) string) (int64, error) {
	n, err := MemoryLimit(getenv)
	if err != nil || n == 0 {
		return 0, err
	}
	debug.SetMemoryLimit(n)
	return n, nil
}

var suffixes = []struct {
	s string
	m int64
}{
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
}

// ParseBytes reads a byte count: a plain integer as the Downward API gives
// it, or a Kubernetes quantity such as 64Mi or 1G.
func ParseBytes(v string) (int64, error) {
	mult := int64(1)
	for _, s := range suffixes {
		if strings.HasSuffix(v, s.s) {
			v, mult = strings.TrimSuffix(v, s.s), s.m
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("want bytes as an integer, optionally with Ki, Mi, Gi, K, M or G")
	}
	if n < 0 || (n > 0 && mult > math.MaxInt64/n) {
		return 0, fmt.Errorf("byte count out of range")
	}
	return n * mult, nil
}
