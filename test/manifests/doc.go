// Package manifests holds the offline tests of the example manifests under
// examples/: strict decoding into Kubernetes types and checks of what the
// containers of a pod share (ports, probes, configs, Downward API, flags).
package manifests
