#!/usr/bin/env bash
# make bench-signingkeys: creates 1000 SigningKeys against a local control plane
# (source-built kube-apiserver + etcd, see hack/localcluster) with bin/manager running as its
# own process, and reports the time until all are Ready, time-to-Ready percentiles per
# algorithm, and the manager's peak RSS and CPU seconds.
#
# Two runs, each on a fresh control plane and a fresh manager:
#   mixed  round robin over RS256/2048 RS384/3072 RS512/4096 PS256/2048 PS384/3072
#          PS512/4096 ES256 ES384 ES512 EdDSA
#   ec     ES256 only: the baseline
# The summary gives ratios mixed/ec. The p99 time-to-Ready of the EC/EdDSA objects of the
# mixed run against the baseline's p99 shows whether RSA-4096 generation stalls other
# reconciles. Figures are ratios against the baseline run side by side, never limits.
#
#   BENCH_COUNT=1000        objects per run
#   BENCH_TIMEOUT=30m       give up on a run after this long
#   BENCH_RUNS="mixed ec"   which runs, in order (the summary needs both)
#   BENCH_QPS=500 BENCH_BURST=1000   the manager's --kube-api-qps / --kube-api-burst
#   BENCH_MANAGER_ARGS=...  extra manager flags (e.g. --concurrency=8)
# Results, logs and metrics go to bin/bench/<run>/. The machine should be otherwise idle: each
# run reports the CPU seconds other processes used meanwhile ("other processes").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
assets=$(hack/kube-binaries.sh)
export KUBEBUILDER_ASSETS=$assets
count=${BENCH_COUNT:-1000}
timeout=${BENCH_TIMEOUT:-30m}
runs=${BENCH_RUNS:-mixed ec}
qps=${BENCH_QPS:-500}
burst=${BENCH_BURST:-1000}
work="$root/bin/bench"
mkdir -p "$work"

SAY_TO_STDERR=1
. hack/lib.sh

[ -x bin/manager ] || { echo "bin/manager is missing: run make build (make bench-signingkeys does)" >&2; exit 1; }
say "Building hack/localcluster and hack/bench/signingkeys"
go build -o "$work/localcluster" ./hack/localcluster
go build -o "$work/signingkeys" ./hack/bench/signingkeys

kube_version=$("$assets/kube-apiserver" --version 2>/dev/null || echo "kube-apiserver $(basename "$assets")")
say "Machine: load average $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) memory, $(go version | cut -d' ' -f3-), $kube_version"

for mix in $runs; do
  dir="$work/$mix"
  rm -rf "$dir"; mkdir -p "$dir"
  export KUBECONFIG="$dir/kubeconfig"

  say "[$mix] Starting a fresh local control plane (logs in ${dir#"$root"/}/localcluster.log)"
  "$work/localcluster" --write-kubeconfig "$KUBECONFIG" > "$dir/localcluster.log" 2>&1 &
  lcpid=$!
  track "$lcpid"
  for _ in $(seq 240); do [ -s "$KUBECONFIG" ] && break; sleep 0.5; done
  [ -s "$KUBECONFIG" ] || { cat "$dir/localcluster.log" >&2; echo "control plane did not start" >&2; exit 1; }
  # kube-apiserver and etcd are the control plane's children; their CPU is reported too.
  cluster_pids=$(pgrep -P "$lcpid" | paste -sd, || true)

  say "[$mix] Starting a fresh manager, --kube-api-qps=$qps --kube-api-burst=$burst (logs in ${dir#"$root"/}/manager.log)"
  metrics=$(port); probe=$(port); disc=$(port)
  # shellcheck disable=SC2086 # BENCH_MANAGER_ARGS is a list of flags
  bin/manager --kube-api-qps="$qps" --kube-api-burst="$burst" \
    --metrics-bind-address="127.0.0.1:$metrics" --health-probe-bind-address="127.0.0.1:$probe" \
    --discovery-bind-address="127.0.0.1:$disc" ${BENCH_MANAGER_ARGS:-} > "$dir/manager.log" 2>&1 &
  mpid=$!
  track "$mpid"
  for _ in $(seq 120); do curl -fs "http://127.0.0.1:$probe/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
  curl -fs "http://127.0.0.1:$probe/readyz" >/dev/null || { tail -20 "$dir/manager.log" >&2; echo "manager did not become ready" >&2; exit 1; }

  say "[$mix] Creating $count SigningKeys in namespace bench-$mix"
  "$work/signingkeys" -kubeconfig "$KUBECONFIG" -count "$count" -mix "$mix" -namespace "bench-$mix" \
    -timeout "$timeout" -json "$dir/result.json" -manager-pid "$mpid" -cluster-pids "$cluster_pids" | tee "$dir/result.md"
  echo "Manager /proc/$mpid/status at the end: $(grep -E '^Vm(HWM|RSS):' "/proc/$mpid/status" | tr -s ' \t' ' ' | paste -sd';')" | tee -a "$dir/result.md"

  curl -fs "http://127.0.0.1:$metrics/metrics" > "$dir/metrics.txt" || true
  {
    echo "Manager reconciles (controller_runtime_reconcile_total):"
    grep -E '^controller_runtime_reconcile_total\{controller="signingkey"' "$dir/metrics.txt" | sed 's/^/  /' || true
    echo "Manager API requests by method and code (rest_client_requests_total):"
    grep -E '^rest_client_requests_total\{' "$dir/metrics.txt" | sed -E 's/.*code="([^"]*)".*method="([^"]*)"\} (.*)/  \2 \1: \3/' | sort || true
    echo "Manager log lines \"Changed key state\": $(grep -c '"msg":"Changed key state"' "$dir/manager.log" || true) (the production logger samples repeats of a message above 100/s)"
    errors=$(grep -ciE '"level":"error"|^[0-9TZ:.+-]+\s+ERROR' "$dir/manager.log" || true)
    echo "Manager log: $(wc -l < "$dir/manager.log") lines, $errors at error level"
    if [ "$errors" -gt 0 ]; then
      echo "Distinct error messages (count, message):"
      grep -iE '"level":"error"|^[0-9TZ:.+-]+\s+ERROR' "$dir/manager.log" \
        | sed -E 's/.*"msg":"([^"]*)".*"error":"([^"]{0,160}).*/\1: \2/; s/.*"msg":"([^"]*)".*/\1/' \
        | sed -E 's/[a-z]+-[0-9]{2,}/<name>/g' | sort | uniq -c | sort -rn | head -10 | sed 's/^/  /'
    fi
  } | tee -a "$dir/result.md"

  say "[$mix] Stopping the manager and the control plane"
  stop_tracked
done

if [[ " $runs " == *" mixed "* && " $runs " == *" ec "* ]]; then
  "$work/signingkeys" -compare "$work/mixed/result.json" -baseline "$work/ec/result.json" | tee "$work/summary.md"
fi
