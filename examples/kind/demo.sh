#!/usr/bin/env bash
# Runs the podkit example on a local kind cluster (called by `make kind-demo`):
# builds one image per binary, makes podkit's pause the cluster's sandbox
# image, loads the other images into the node and applies examples/k8s/base.
# Every step is described in examples/kind/README.md.
#
# Environment: CLUSTER (default podkit, must match cluster.yaml's name),
# VERSION (image tag, default dev), SKIP_BUILD=1 to reuse built images,
# REGISTRY_PORT (host port of the local registry, default 5001).
set -euo pipefail

CLUSTER=${CLUSTER:-podkit}
VERSION=${VERSION:-dev}
REGISTRY_PORT=${REGISTRY_PORT:-5001}
REGISTRY_NAME=podkit-registry
# The name containerd on the node pulls the sandbox image by; see cluster.yaml.
SANDBOX_IMAGE=registry.podkit.local/podkit/pause:${VERSION}
BINARIES=(pause logsidecar ambassador adapter waitfor)

# cluster.yaml's paths are relative to the repository root.
cd "$(dirname "$0")/../.."

step() { printf '\n==> %s\n' "$*"; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "demo.sh: $tool not found in PATH" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "demo.sh: no Docker engine answers (docker info failed)" >&2; exit 1; }

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  step "1. build one image per binary (docker build --target <binary>)"
  for b in "${BINARIES[@]}"; do
    docker build --target "$b" --build-arg VERSION="$VERSION" -t "podkit/$b:$VERSION" .
  done
fi

step "2. local registry ${REGISTRY_NAME} on the kind network, 127.0.0.1:${REGISTRY_PORT} on this host"
docker network inspect kind >/dev/null 2>&1 || docker network create kind >/dev/null
if [[ $(docker inspect -f '{{.State.Running}}' "$REGISTRY_NAME" 2>/dev/null || true) != true ]]; then
  docker rm -f "$REGISTRY_NAME" >/dev/null 2>&1 || true
  docker run -d --restart=always --name "$REGISTRY_NAME" --network kind \
    -p "127.0.0.1:${REGISTRY_PORT}:5000" registry:2 >/dev/null
fi

step "3. push podkit's pause so the node can pull it during kubeadm init"
docker tag "podkit/pause:$VERSION" "localhost:${REGISTRY_PORT}/podkit/pause:$VERSION"
docker push "localhost:${REGISTRY_PORT}/podkit/pause:$VERSION"

step "4. create the cluster (sandbox image ${SANDBOX_IMAGE})"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "cluster $CLUSTER exists; keeping it"
else
  kind create cluster --name "$CLUSTER" --config examples/kind/cluster.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "5. load the images into the node (kind load docker-image)"
for b in "${BINARIES[@]}"; do
  kind load docker-image --name "$CLUSTER" "podkit/$b:$VERSION"
done

step "6. apply the example (kubectl apply -k examples/k8s/base)"
kubectl apply -k examples/k8s/base

step "7. wait for the backends, then the web pod"
kubectl rollout status statefulset/memcached --timeout=180s
kubectl rollout status deployment/fluent-bit --timeout=180s
kubectl rollout status deployment/prometheus --timeout=180s
kubectl rollout status deployment/web --timeout=300s
kubectl get pods -o wide

cat <<MSG

The web pod runs. Try:
  kubectl port-forward svc/web 8080:80 &   curl localhost:8080/
  kubectl logs deploy/web -c waitfor       # what it waited for
  kubectl logs deploy/fluent-bit           # nginx's access log, shipped by logsidecar
  kubectl port-forward svc/prometheus 9090 # then query nginx_connections_active
Remove it all with:
  kind delete cluster --name $CLUSTER && docker rm -f $REGISTRY_NAME
MSG
