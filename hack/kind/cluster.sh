#!/usr/bin/env bash
# Creates or deletes the kind cluster the e2e suite and demo-kind run on.
#
#   hack/kind/cluster.sh up [name]     create (or reuse) the cluster; prints the kubeconfig path
#   hack/kind/cluster.sh down [name]   delete it
#
# The node image comes from hack/kind/node-image.sh (built from source and cached) unless
# KIND_NODE_IMAGE names a published one, e.g. kindest/node:v1.37.2 on a machine with a registry.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/versions.sh"
cmd=${1:?up or down}; name=${2:-${KIND_CLUSTER:-tokenkeeper}}
kind() { (cd "$root" && go tool kind "$@"); }
log() { echo "[cluster] $*" >&2; }
kubeconfig="$root/bin/kind/$name.kubeconfig"

case "$cmd" in
down)
  kind delete cluster --name "$name" --kubeconfig "$kubeconfig" >&2
  rm -f "$kubeconfig"
  exit 0 ;;
up) ;;
*) echo "usage: $0 up|down [name]" >&2; exit 2 ;;
esac

"$root/hack/kind/host.sh"
if kind get clusters 2>/dev/null | grep -qx "$name"; then
  log "Reusing cluster $name"
  kind export kubeconfig --name "$name" --kubeconfig "$kubeconfig" >&2
  echo "$kubeconfig"; exit 0
fi

image=$("$root/hack/kind/node-image.sh")
mkdir -p "$root/bin/kind"
config="$root/bin/kind/$name.yaml"
{
  echo "kind: Cluster"
  echo "apiVersion: kind.x-k8s.io/v1alpha4"
  if [ -z "${KIND_NODE_IMAGE:-}" ]; then
    # The source-built node has a static CNI config: kind's default CNI image cannot be pulled.
    echo "networking:"
    echo "  disableDefaultCNI: true"
  fi
  echo "nodes:"
  echo "- role: control-plane"
  echo "kubeadmConfigPatches:"
  echo "- |"
  echo "  apiVersion: kubelet.config.k8s.io/v1beta1"
  echo "  kind: KubeletConfiguration"
  # Mounted Secrets and ConfigMaps refresh within seconds instead of up to a minute, so e2e
  # rotation windows stay short; the product's guidance for real clusters is in docs/.
  echo "  syncFrequency: 5s"
  if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
    echo "  failCgroupV1: false"   # a cgroup v1 (or hybrid) host
  fi
  capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  if [ -n "${KIND_NODE_IMAGE:-}" ] && (( (16#$capbnd >> 24 & 1) == 0 )); then
    # Published node images run containerd 2.x; without CAP_SYS_RESOURCE it must not try to
    # lower oom_score_adj (the source-built image has this baked in).
    echo "containerdConfigPatches:"
    echo "- |-"
    echo "  [plugins.'io.containerd.cri.v1.runtime']"
    echo "    restrict_oom_score_adj = true"
  fi
} > "$config"
log "Creating cluster $name from $image"
t0=$(date +%s)
kind create cluster --name "$name" --image "$image" --config "$config" --kubeconfig "$kubeconfig" --wait 180s >&2
log "Cluster $name ready in $(( $(date +%s) - t0 ))s"
echo "$kubeconfig"
