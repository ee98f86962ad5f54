#!/usr/bin/env bash
# make test-e2e: the Ginkgo suite in test/e2e on a real kind cluster.
#  1. prepares the host (Docker; a runtime wrapper only where the VM needs one),
#  2. creates the cluster from a node image built from source (or KIND_NODE_IMAGE),
#  3. builds the manager and test images FROM scratch and loads them with kind,
#  4. deploys config/default with kubectl (the manifests users apply),
#  5. runs the suite, dumping logs, events and pods on failure,
#  6. deletes the cluster (E2E_KEEP_CLUSTER=1 keeps it; E2E_REUSE_CLUSTER=1 reuses one).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cluster=${KIND_CLUSTER:-tokenkeeper-e2e}
t0=$(date +%s)
step() { echo "### e2e: $* (+$(( $(date +%s) - t0 ))s)"; }
kind() { go tool kind "$@"; }

step "host and cluster"
if [ -z "${E2E_REUSE_CLUSTER:-}" ]; then hack/kind/cluster.sh down "$cluster" >/dev/null 2>&1 || true; fi
export KUBECONFIG=$(hack/kind/cluster.sh up "$cluster")
if [ -z "${E2E_KEEP_CLUSTER:-}" ]; then trap 'step "deleting the cluster"; hack/kind/cluster.sh down "$cluster" >/dev/null 2>&1 || true' EXIT; fi
export KUBECTL="$(hack/kube-binaries.sh kubectl)/kubectl"

step "images"
make -s build
img_manager=${IMG_MANAGER:-tokenkeeper/manager:dev}
img_sidecar=${IMG_SIDECAR:-tokenkeeper/sidecar:dev}
img_tokencheck=tokenkeeper/e2e-tokencheck:dev
docker build -q -f Dockerfile.prebuilt --target manager -t "$img_manager" . >/dev/null
docker build -q -f Dockerfile.prebuilt --target sidecar -t "$img_sidecar" . >/dev/null
ctx=$(mktemp -d)
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ctx/tokencheck" ./test/e2e/tokencheck
printf 'FROM scratch\nCOPY tokencheck /tokencheck\nUSER 65532:65532\nENTRYPOINT ["/tokencheck"]\n' > "$ctx/Dockerfile"
docker build -q -t "$img_tokencheck" "$ctx" >/dev/null
kind load docker-image --name "$cluster" "$img_manager" "$img_sidecar" "$img_tokencheck"

step "deploy config/default"
"$KUBECTL" apply -k config/default
# A reused cluster may run an older image under the same tag: restart onto the loaded one.
"$KUBECTL" -n tokenkeeper-system rollout restart deploy/tokenkeeper-manager >/dev/null
"$KUBECTL" -n tokenkeeper-system rollout status deploy/tokenkeeper-manager --timeout=180s

step "suite"
mkdir -p bin/e2e-artifacts
E2E_ARTIFACTS="$root/bin/e2e-artifacts" TOKENCHECK_IMAGE="$img_tokencheck" \
  go test -tags e2e -count=1 -timeout 40m ./test/e2e/ -v -ginkgo.v ${E2E_FOCUS:+-ginkgo.focus="$E2E_FOCUS"}
step "passed"
