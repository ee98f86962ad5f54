#!/usr/bin/env bash
# Builds tokenkeeper's images FROM scratch (nothing pulled), loads them into the kind
# cluster and deploys config/default with kubectl, the same manifests users apply.
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
log "Loading $img_manager $img_sidecar $img_tokencheck into $cluster"
go tool kind load docker-image --name "$cluster" "$img_manager" "$img_sidecar" "$img_tokencheck" >&2

"$kubectl" apply -k config/default >&2
# A reused cluster may run an older image under the same tag: restart onto the loaded one.
"$kubectl" -n tokenkeeper-system rollout restart deploy/tokenkeeper-manager >/dev/null
"$kubectl" -n tokenkeeper-system rollout status deploy/tokenkeeper-manager --timeout=180s >&2
