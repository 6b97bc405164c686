// Package e2e holds the end-to-end test of the example pod: the pod of
// examples/k8s/base run on this machine as the kubelet builds it
// (internal/examplepod), with real memcached shards, a forward-protocol
// receiver and Prometheus outside it, checking log shipping with the pod's
// identity, the cache ambassador's routing, the adapter's metrics in
// Prometheus, and the shutdown order. It needs root; outside CI it skips.
package e2e
