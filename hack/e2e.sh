#!/usr/bin/env bash
# make test-e2e: the Ginkgo suite in test/e2e on a real kind cluster.
#  1. prepares the host (Docker; a runtime wrapper only where the VM needs one),
#  2. creates the cluster from a node image built from source (or KIND_NODE_IMAGE),
#  3. builds the manager and test images FROM scratch and loads them with kind,
#  4. deploys config/default with kubectl (the manifests users apply),
#  5. runs the suite, dumping logs, events and pods on failure,
#  6. deletes the cluster (E2E_KEEP_CLUSTER=1 keeps it; E2E_REUSE_CLUSTER=1 reuses one).
# The cluster is E2E_CLUSTER (default tokenkeeper-e2e), not KIND_CLUSTER: e2e deletes its
# cluster, so it must never pick up a name demo-kind or cluster.sh users keep.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cluster=${E2E_CLUSTER:-tokenkeeper-e2e}
t0=$(date +%s)
step() { echo "### e2e: $* (+$(( $(date +%s) - t0 ))s)"; }
# Cleared first: an old run's failure dumps must not look like this run's, even when this
# run fails before the suite.
rm -rf bin/e2e-artifacts; mkdir -p bin/e2e-artifacts

step "host and cluster"
if [ -z "${E2E_REUSE_CLUSTER:-}" ]; then hack/kind/cluster.sh down "$cluster" >/dev/null 2>&1 || true; fi
if [ -z "${E2E_KEEP_CLUSTER:-}" ]; then trap 'step "deleting the cluster"; hack/kind/cluster.sh down "$cluster" >/dev/null 2>&1 || true' EXIT; fi
# Assigned before export: `export X=$(cmd)` would hide cmd's exit status from set -e.
KUBECONFIG=$(hack/kind/cluster.sh up "$cluster"); export KUBECONFIG
KUBECTL="$(hack/kube-binaries.sh kubectl)/kubectl"; export KUBECTL

step "images and deploy"
img_tokencheck=tokenkeeper/e2e-tokencheck:dev
IMG_TOKENCHECK=$img_tokencheck hack/kind/deploy.sh "$cluster"

step "suite"
# The suite takes a few minutes; 20m leaves room without eating CI's 90-minute budget.
E2E_ARTIFACTS="$root/bin/e2e-artifacts" TOKENCHECK_IMAGE="$img_tokencheck" \
  go test -tags e2e -count=1 -timeout 20m ./test/e2e/ -v -ginkgo.v ${E2E_FOCUS:+-ginkgo.focus="$E2E_FOCUS"}
step "passed"
