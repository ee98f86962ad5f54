#!/usr/bin/env bash
# Builds tokenkeeper's images FROM scratch (nothing pulled), loads them into the kind
# cluster and deploys config/default with kubectl, the same manifests users apply. It also
# deploys the cluster's NetworkPolicy enforcer (hack/kind/netpol), which the source-built
# node's CNI lacks.
#
#   KUBECONFIG=... hack/kind/deploy.sh <cluster>
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cluster=${1:?cluster name}
kubectl="$(hack/kube-binaries.sh kubectl)/kubectl"
log() { echo "[deploy] $*" >&2; }

make -s build
img_manager=${IMG_MANAGER:-tokenkeeper/manager:dev}
img_sidecar=${IMG_SIDECAR:-tokenkeeper/sidecar:dev}
img_tokencheck=${IMG_TOKENCHECK:-tokenkeeper/e2e-tokencheck:dev}
docker build -q -f Dockerfile.prebuilt --target manager -t "$img_manager" . >/dev/null
docker build -q -f Dockerfile.prebuilt --target sidecar -t "$img_sidecar" . >/dev/null
ctx=$(mktemp -d)
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/tokencheck" ./test/e2e/tokencheck
printf 'FROM scratch\nCOPY tokencheck /tokencheck\nUSER 65532:65532\nENTRYPOINT ["/tokencheck"]\n' > "$ctx/Dockerfile"
docker build -q -t "$img_tokencheck" "$ctx" >/dev/null
rm -rf "$ctx"
# Tagged by a key of its inputs: a changed enforcer rolls out by itself, an unchanged one stays.
img_netpol=$(hack/kind/netpol.sh)
log "Loading $img_manager $img_sidecar $img_tokencheck $img_netpol into $cluster"
go tool kind load docker-image --name "$cluster" "$img_manager" "$img_sidecar" "$img_tokencheck" "$img_netpol" >&2

t_netpol=$(date +%s)
sed "s#image: IMAGE#image: $img_netpol#" hack/kind/netpol/daemonset.yaml | "$kubectl" apply -f - >&2
"$kubectl" apply -k config/default >&2
# A reused cluster may run an older image under the same tag: restart onto the loaded one.
"$kubectl" -n tokenkeeper-system rollout restart deploy/tokenkeeper-manager >/dev/null
"$kubectl" -n kube-system rollout status ds/tokenkeeper-netpol --timeout=120s >&2
log "NetworkPolicy enforcer ready $(( $(date +%s) - t_netpol ))s after it was applied"
"$kubectl" -n tokenkeeper-system rollout status deploy/tokenkeeper-manager --timeout=180s >&2
