#!/usr/bin/env bash
# make bench-distribution: how fast the manager's snapshot server pushes one RevocationList
# change to N subscribed sidecars (issue 9). Per size, a fresh local control plane
# (hack/localcluster: source-built kube-apiserver + etcd, CRDs installed) and a fresh
# bin/manager process serving snapshots over TLS on loopback (webhooks off; the certificate
# controller runs for distribution alone). hack/bench/distribution creates the objects and N
# projected tokens (TokenRequest), runs N simulated sidecars (goroutines, one TLS connection
# and long-poll loop each) and measures, per subscriber, the time from just before the API
# write to the new snapshot applied. At BENCH_LARGE_AT subscribers it then revokes
# BENCH_LARGE_JTIS jtis and measures again, and reads a standalone bin/sidecar's RSS
# holding that set. Figures are reported, never asserted.
#
#   BENCH_SUBSCRIBERS="1000 10000"  sizes, each a run of its own
#   BENCH_CHANGES=5                 measured changes per run
#   BENCH_LARGE_AT=1000             the size that also runs the large set ("" skips it)
#   BENCH_LARGE_JTIS=100000 BENCH_LARGE_LISTS=20 BENCH_LARGE_CHANGES=3
#   MANAGER=bin/manager             the manager binary under test
#   BENCH_MANAGER_ARGS=...          extra manager flags
#   BENCH_ARGS=...                  extra flags of hack/bench/distribution (e.g. -per-namespace=100)
# Results and logs go to bin/bench/distribution/n<N>/, the summary to
# bin/bench/distribution/summary.txt. The machine should be otherwise idle: each run reports
# the CPU seconds other processes used meanwhile.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
assets=$(hack/kube-binaries.sh)
export KUBEBUILDER_ASSETS=$assets
sizes=${BENCH_SUBSCRIBERS:-1000 10000}
changes=${BENCH_CHANGES:-5}
large_at=${BENCH_LARGE_AT-1000}
large_jtis=${BENCH_LARGE_JTIS:-100000}
large_lists=${BENCH_LARGE_LISTS:-20}
large_changes=${BENCH_LARGE_CHANGES:-3}
manager=${MANAGER:-bin/manager}
manager_ns=tokenkeeper-system
work="$root/bin/bench/distribution"
mkdir -p "$work"
# Every subscriber holds a connection, in this shell's children and in the manager.
ulimit -n "$(ulimit -Hn)"

SAY_TO_STDERR=1
. hack/lib.sh

for b in "$manager" bin/sidecar; do
  [ -x "$b" ] || { echo "$b is missing: run make build (make bench-distribution does)" >&2; exit 1; }
done
say "Building hack/localcluster and hack/bench/distribution"
go build -o "$work/localcluster" ./hack/localcluster
go build -o "$work/distribution" ./hack/bench/distribution

kube_version=$("$assets/kube-apiserver" --version 2>/dev/null || echo "kube-apiserver $(basename "$assets")")
machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) memory, Linux $(uname -r), $(go version | cut -d' ' -f3-), $kube_version, open files limit $(ulimit -n)"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- cmd internal api hack/bench/distribution || echo ' + local changes')"
say "Machine: $machine; load average $(cut -d' ' -f1-3 /proc/loadavg); manager and sidecar of commit $commit"
{
  echo "make bench-distribution, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "Machine: $machine"
  echo "$manager and bin/sidecar of commit $commit"
} > "$work/summary.txt"

for n in $sizes; do
  dir="$work/n$n"
  rm -rf "$dir"; mkdir -p "$dir"
  export KUBECONFIG="$dir/kubeconfig"

  say "[n=$n] Starting a fresh local control plane (logs in ${dir#"$root"/}/localcluster.log)"
  "$work/localcluster" --write-kubeconfig "$KUBECONFIG" > "$dir/localcluster.log" 2>&1 &
  lcpid=$!
  track "$lcpid"
  for _ in $(seq 240); do [ -s "$KUBECONFIG" ] && break; sleep 0.5; done
  [ -s "$KUBECONFIG" ] || { cat "$dir/localcluster.log" >&2; echo "control plane did not start" >&2; exit 1; }
  cluster_pids=$(pgrep -P "$lcpid" | paste -sd, || true)
  "$assets/kubectl" create namespace "$manager_ns" > /dev/null # the manager's certificate Secret lives there

  metrics=$(port); probe=$(port); disc=$(port); dist=$(port)
  say "[n=$n] Starting a fresh manager, snapshot server on 127.0.0.1:$dist (logs in ${dir#"$root"/}/manager.log)"
  # shellcheck disable=SC2086 # BENCH_MANAGER_ARGS and BENCH_ARGS are lists of flags
  "$manager" --namespace="$manager_ns" --webhook-port=0 \
    --distribution-bind-address="127.0.0.1:$dist" --distribution-cert-hosts=127.0.0.1 \
    --kube-api-qps=500 --kube-api-burst=1000 \
    --metrics-bind-address="127.0.0.1:$metrics" --health-probe-bind-address="127.0.0.1:$probe" \
    --discovery-bind-address="127.0.0.1:$disc" ${BENCH_MANAGER_ARGS:-} > "$dir/manager.log" 2>&1 &
  mpid=$!
  track "$mpid"
  for _ in $(seq 120); do curl -fs "http://127.0.0.1:$probe/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
  curl -fs "http://127.0.0.1:$probe/readyz" >/dev/null || { tail -20 "$dir/manager.log" >&2; echo "manager did not become ready" >&2; exit 1; }

  large=()
  if [ "$n" = "$large_at" ] && [ "$large_jtis" -gt 0 ]; then
    large=(-large-jtis "$large_jtis" -large-lists "$large_lists" -large-changes "$large_changes" -sidecar bin/sidecar)
  fi
  say "[n=$n] Running $n subscribers, $changes changes${large:+, then $large_jtis revoked jtis}"
  status=0
  # shellcheck disable=SC2086
  "$work/distribution" -kubeconfig "$KUBECONFIG" -addr "127.0.0.1:$dist" -metrics "http://127.0.0.1:$metrics/metrics" \
    -manager-pid "$mpid" -cluster-pids "$cluster_pids" -manager-namespace "$manager_ns" \
    -subscribers "$n" -changes "$changes" -out "$dir" ${BENCH_ARGS:-} "${large[@]}" > "$dir/result.md" 2> "$dir/bench.log" || status=$?
  cat "$dir/result.md"
  {
    cat "$dir/result.md"
    curl -fs "http://127.0.0.1:$metrics/metrics" > "$dir/metrics.txt" || true
    echo "Manager /proc/$mpid/status at the end: $(grep -E '^Vm(HWM|RSS):' "/proc/$mpid/status" | tr -s ' \t' ' ' | paste -sd';')"
    echo "Manager distribution auth (tokenkeeper_distribution_auth_total):"
    grep -E '^tokenkeeper_distribution_auth_total' "$dir/metrics.txt" | sed 's/^/  /' || true
    errors=$(grep -ciE '"level":"error"|^[0-9TZ:.+-]+\s+ERROR' "$dir/manager.log" || true)
    echo "Manager log: $(wc -l < "$dir/manager.log") lines, $errors at error level"
    if [ "$status" -ne 0 ]; then echo "The benchmark program failed (exit $status); its log: ${dir#"$root"/}/bench.log"; tail -5 "$dir/bench.log"; fi
  } >> "$work/summary.txt"
  say "[n=$n] Stopping the manager and the control plane"
  stop_tracked
done
say "Summary in ${work#"$root"/}/summary.txt"
cat "$work/summary.txt"
