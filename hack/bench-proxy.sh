#!/usr/bin/env bash
# make bench-proxy: a loopback load test of the same upstream reached, side by side in one
# invocation, through:
#
#   direct            no proxy at all
#   plain             a plain httputil.ReverseProxy with a tuned transport, no verification
#                     (hack/bench/plainproxy): the floor any Go proxy pays
#   sidecar-cached    bin/sidecar, default token cache (the same valid token on every request)
#   sidecar-uncached  bin/sidecar with --token-cache-size=0 (the same token, verified every time)
#   oauth2-proxy      oauth2-proxy v7.15.6 with --skip-jwt-bearer-tokens against a loopback OIDC
#                     issuer serving the same JWKS (it verifies every bearer token; no cache)
#   sidecar-rotating  a third bin/sidecar, default cache, every request with another token from a
#   oauth2-proxy-rotating  file of BENCH_TOKENS pre-minted ones (more than the cache holds: every
#                     request misses), and oauth2-proxy with the same tokens; wrk runs a Lua script
#   haproxy           HAProxy (Debian's haproxy, 2.6) verifying every request's token with
#   haproxy-rotating  jwt_verify against the issuer's public key PEM and checking alg, iss, aud
#                     and exp (hack/bench/haproxy.cfg); it has no token cache. Then with the
#                     rotating tokens
#   sidecar-before-cached, sidecar-before-uncached, sidecar-before-rotating
#                     only with SIDECAR_BEFORE or SIDECAR_BEFORE_REV: the same three sidecar
#                     targets run from another sidecar binary, each measured right after its
#                     counterpart, so that two builds are compared side by side in one run
# Each sidecar target is its own process, so no measurement inherits another one's cache.
#
# BENCH_ROUNDS rounds of two phases, each over the targets in turn with identical wrk settings:
#   load     wrk -t$BENCH_THREADS -c$BENCH_CONNECTIONS: throughput, and latency at saturation
#   latency  wrk -t1 -c1 (one request at a time): the latency a proxy adds to each request
# Before each measurement the target must answer 200 from the upstream with the token, and
# the verifying proxies must refuse a request without a token and each bad token of the
# issuer's bad-tokens.tsv (forged with the trusted kid, expired, no exp, another issuer or
# audience, a swapped payload, alg none, HS256 keyed with the public key) with 401 or 403.
# Every target is checked once before the first measurement, so a proxy that lets a bad
# token through fails the run before anything is measured; a measurement with any non-2xx
# answer fails too.
#
# ES256 keys and tokens come from hack/bench/issuer (internal/keys, internal/jwks); the app is
# hack/bench/upstream (a fixed 3-byte body). Nothing is pinned to a CPU: the load tool, the
# proxy and the upstream share the machine's cores.
#
#   BENCH_ROUNDS=3          rounds, each measuring every target of every phase in turn
#   BENCH_DURATION=10s      each measurement
#   BENCH_WARMUP=2s         an unrecorded wrk run with the same settings before each
#   BENCH_THREADS=1 BENCH_CONNECTIONS=32   the load phase's wrk -t / -c
#   BENCH_PHASES="load latency"
#   BENCH_TARGETS="direct plain sidecar-cached sidecar-uncached oauth2-proxy haproxy sidecar-rotating oauth2-proxy-rotating haproxy-rotating"
#   BENCH_LATENCY_TARGETS="direct plain sidecar-cached sidecar-uncached oauth2-proxy haproxy"
#                           (with a second sidecar, its targets follow their counterparts)
#   SIDECAR=bin/sidecar     the sidecar binary under test
#   SIDECAR_BEFORE=<path>   a second sidecar binary to compare it with (for example a build of
#                           the commit before a change), or SIDECAR_BEFORE_REV=<commit> to build
#                           one from that commit of this repository into bin/bench/
#   BENCH_TOKENS=20000      distinct tokens of the rotating targets (the sidecar caches 10000)
#   BENCH_PATH=/api/items   request path
# Raw wrk output, logs and results.tsv go to bin/bench/proxy/, the summary (medians over the
# rounds, hack/bench/proxysummary) to bin/bench/proxy/summary.md; BENCH_RESULTS=<results.tsv>
# only prints the summary of a saved run. oauth2-proxy is built into bin/bench/ from the Go
# module proxy when missing; wrk and haproxy are installed from apt when missing. Figures are
# ratios against the plain proxy, oauth2-proxy and HAProxy measured in the same invocation,
# never limits.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
duration=${BENCH_DURATION:-10s}
warmup=${BENCH_WARMUP:-2s}
rounds=${BENCH_ROUNDS:-3}
threads=${BENCH_THREADS:-1}
conns=${BENCH_CONNECTIONS:-32}
phases=${BENCH_PHASES:-load latency}
sidecar_bin=${SIDECAR:-bin/sidecar}
before_bin=${SIDECAR_BEFORE:-}
before_rev=${SIDECAR_BEFORE_REV:-}
[ -z "$before_bin" ] || [ -z "$before_rev" ] || { echo "bench-proxy: set SIDECAR_BEFORE or SIDECAR_BEFORE_REV, not both" >&2; exit 2; }
if [ -n "$before_bin$before_rev" ]; then
  default_targets="direct plain sidecar-cached sidecar-before-cached sidecar-uncached sidecar-before-uncached oauth2-proxy haproxy sidecar-rotating sidecar-before-rotating oauth2-proxy-rotating haproxy-rotating"
  default_latency="direct plain sidecar-cached sidecar-before-cached sidecar-uncached sidecar-before-uncached oauth2-proxy haproxy"
else
  default_targets="direct plain sidecar-cached sidecar-uncached oauth2-proxy haproxy sidecar-rotating oauth2-proxy-rotating haproxy-rotating"
  default_latency="direct plain sidecar-cached sidecar-uncached oauth2-proxy haproxy"
fi
targets=${BENCH_TARGETS:-$default_targets}
latency_targets=${BENCH_LATENCY_TARGETS:-$default_latency}
ntokens=${BENCH_TOKENS:-20000}
path=${BENCH_PATH:-/api/items}
oauth2_proxy_version=v7.15.6
audience=bench-api
work="$root/bin/bench/proxy"
o2p="$root/bin/bench/oauth2-proxy"

SAY_TO_STDERR=1
. hack/lib.sh

if [ -n "${BENCH_RESULTS:-}" ]; then
  go run ./hack/bench/proxysummary "$BENCH_RESULTS"
  exit 0
fi

need=()
for tool in wrk haproxy; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  say "Installing ${need[*]} from apt"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# jwt_verify came with HAProxy 2.5.
haproxy_version=$(haproxy -v | sed -n '1s/^HAProxy version \([^ ]*\).*/\1/p')
printf '%s\n' "$haproxy_version" | awk -F'[.-]' '{ exit !($1 > 2 || ($1 == 2 && $2 >= 5)) }' ||
  die "HAProxy $haproxy_version has no jwt_verify (2.5 or later needed)"
[ -x "$sidecar_bin" ] || die "$sidecar_bin is missing: run make build (make bench-proxy does)"
rm -rf "$work"; mkdir -p "$work"

say "Building hack/bench/{upstream,plainproxy,issuer,proxysummary}"
go build -o "$work/" ./hack/bench/upstream ./hack/bench/plainproxy ./hack/bench/issuer ./hack/bench/proxysummary
# oauth2-proxy is built and started only when a target measures it.
measured=""
for ph in $phases; do
  if [ "$ph" = latency ]; then measured+=" $latency_targets"; else measured+=" $targets"; fi
done
uses_o2p=no
[[ "$measured " == *" oauth2-proxy"* ]] && uses_o2p=yes
o2p_info=$(go version -m "$o2p" 2>/dev/null || true)
if [ "$uses_o2p" = yes ] && ! grep -qE "^[[:space:]]+mod[[:space:]]+github.com/oauth2-proxy/oauth2-proxy/v7[[:space:]]+$oauth2_proxy_version[[:space:]]" <<<"$o2p_info"; then
  say "Building oauth2-proxy $oauth2_proxy_version from the Go module proxy into bin/bench/"
  GOBIN="$root/bin/bench" go install "github.com/oauth2-proxy/oauth2-proxy/v7@$oauth2_proxy_version"
fi
sidecar_desc="$sidecar_bin built from the work tree at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- cmd internal api || echo ' + local changes')"
[ "$sidecar_bin" = bin/sidecar ] || sidecar_desc="$sidecar_bin ($(go version "$sidecar_bin" | cut -d' ' -f2))"
if [ -n "$before_rev" ]; then
  rev=$(git rev-parse --short "$before_rev^{commit}") || die "SIDECAR_BEFORE_REV=$before_rev is not a commit"
  before_bin="$root/bin/bench/sidecar-$rev"
  if [ ! -x "$before_bin" ]; then
    say "Building the sidecar of commit $rev into ${before_bin#"$root"/}"
    src=$(mktemp -d)
    git archive "$rev" | tar -x -C "$src"
    (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$before_bin" ./cmd/sidecar) || { rm -rf "$src"; die "could not build the sidecar of commit $rev"; }
    rm -rf "$src"
  fi
  before_desc="${before_bin#"$root"/} built from commit $rev"
elif [ -n "$before_bin" ]; then
  [ -x "$before_bin" ] || die "SIDECAR_BEFORE=$before_bin is not an executable"
  before_desc="$before_bin ($(go version "$before_bin" | cut -d' ' -f2))"
fi

wrk_version=$( (wrk -v 2>&1 || true) | sed -n '1s/ Copyright.*//p')
machine="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) memory, Linux $(uname -r), $(go version | cut -d' ' -f3-), $wrk_version, oauth2-proxy $oauth2_proxy_version ($( [ "$uses_o2p" = yes ] && go version "$o2p" | cut -d' ' -f2 || echo 'not measured')), HAProxy $haproxy_version, sidecar: $sidecar_desc${before_desc:+, sidecar before: $before_desc}"
say "Machine: $machine; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- processes -------------------------------------------------------------------------
up_port=$(port); iss_port=$(port); plain_port=$(port)
sc_port=$(port); sc_admin=$(port); scu_port=$(port); scu_admin=$(port); scr_port=$(port); scr_admin=$(port)
o2p_port=$(port); hap_port=$(port)
sb_port=-; sb_admin=-; sbu_port=-; sbu_admin=-; sbr_port=-; sbr_admin=-; sb_pid=-; sbu_pid=-; sbr_pid=-
if [ -n "$before_bin" ]; then
  sb_port=$(port); sb_admin=$(port); sbu_port=$(port); sbu_admin=$(port); sbr_port=$(port); sbr_admin=$(port)
fi
upstream="http://127.0.0.1:$up_port"
issuer="http://127.0.0.1:$iss_port"


say "Starting the upstream, the issuer ($ntokens tokens), the plain proxy, $([ -n "$before_bin" ] && echo six || echo three) sidecars, oauth2-proxy and HAProxy"
"$work/upstream" --listen "127.0.0.1:$up_port" > "$work/upstream.log" 2>&1 &
up_pid=$!; track "$up_pid"
"$work/issuer" --listen "127.0.0.1:$iss_port" --dir "$work/keys" --audience "$audience" --tokens "$ntokens" > "$work/issuer.log" 2>&1 &
track "$!"
wait_http "$upstream/" upstream
wait_http "$issuer/.well-known/openid-configuration" issuer
token=$(cat "$work/keys/token")

"$work/plainproxy" --listen "127.0.0.1:$plain_port" --upstream "$upstream" > "$work/plainproxy.log" 2>&1 &
plain_pid=$!; track "$plain_pid"
sidecar() { # binary listen admin log extra-flags...
  local bin=$1 listen=$2 admin=$3 log=$4
  shift 4
  "$bin" --listen "127.0.0.1:$listen" --admin-listen "127.0.0.1:$admin" --upstream "$upstream" \
    --policy-file "$work/keys/policy.yaml" --jwks-file "$work/keys/jwks.json" \
    --drain-delay=1ms --shutdown-timeout=2s "$@" > "$work/$log" 2>&1 &
}
sidecar "$sidecar_bin" "$sc_port" "$sc_admin" sidecar-cached.log
sc_pid=$!; track "$sc_pid"
sidecar "$sidecar_bin" "$scu_port" "$scu_admin" sidecar-uncached.log --token-cache-size=0
scu_pid=$!; track "$scu_pid"
# The rotating target fills its cache (10000 entries): a sidecar of its own, so that the
# cached target's later measurements do not run with a full cache.
sidecar "$sidecar_bin" "$scr_port" "$scr_admin" sidecar-rotating.log
scr_pid=$!; track "$scr_pid"
if [ -n "$before_bin" ]; then
  sidecar "$before_bin" "$sb_port" "$sb_admin" sidecar-before-cached.log
  sb_pid=$!; track "$sb_pid"
  sidecar "$before_bin" "$sbu_port" "$sbu_admin" sidecar-before-uncached.log --token-cache-size=0
  sbu_pid=$!; track "$sbu_pid"
  sidecar "$before_bin" "$sbr_port" "$sbr_admin" sidecar-before-rotating.log
  sbr_pid=$!; track "$sbr_pid"
fi
o2p_pid=-
if [ "$uses_o2p" = yes ]; then
  "$o2p" --provider=oidc --oidc-issuer-url="$issuer" --client-id="$audience" --client-secret=unused \
    --cookie-secret="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" --cookie-secure=false \
    --email-domain='*' --upstream="$upstream/" --http-address="127.0.0.1:$o2p_port" \
    --skip-jwt-bearer-tokens --bearer-token-login-fallback=false --api-route='^/' --skip-provider-button \
    --request-logging=false --auth-logging=false > "$work/oauth2-proxy.log" 2>&1 &
  o2p_pid=$!; track "$o2p_pid"
fi
sed -e "s|@LISTEN@|127.0.0.1:$hap_port|" -e "s|@UPSTREAM@|127.0.0.1:$up_port|" -e "s|@ISSUER@|$issuer|" \
  -e "s|@AUDIENCE@|$audience|" -e "s|@PUBLIC_KEY@|$work/keys/public.pem|" hack/bench/haproxy.cfg > "$work/haproxy.cfg"
haproxy -c -q -f "$work/haproxy.cfg" || die "HAProxy refused ${work#"$root"/}/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
hap_pid=$!; track "$hap_pid"
wait_http "http://127.0.0.1:$plain_port/" "plain proxy"
wait_http "http://127.0.0.1:$sc_admin/readyz" "sidecar (cached)"
wait_http "http://127.0.0.1:$scu_admin/readyz" "sidecar (uncached)"
wait_http "http://127.0.0.1:$scr_admin/readyz" "sidecar (rotating)"
if [ -n "$before_bin" ]; then
  wait_http "http://127.0.0.1:$sb_admin/readyz" "sidecar before (cached)"
  wait_http "http://127.0.0.1:$sbu_admin/readyz" "sidecar before (uncached)"
  wait_http "http://127.0.0.1:$sbr_admin/readyz" "sidecar before (rotating)"
fi
[ "$uses_o2p" = no ] || wait_http "http://127.0.0.1:$o2p_port/ping" oauth2-proxy
wait_http "http://127.0.0.1:$hap_port/" HAProxy 401

# --- targets ---------------------------------------------------------------------------
# target_info name -> "port pid verifies admin-port rotating"
target_info() {
  case $1 in
    direct) echo "$up_port $up_pid no - no" ;;
    plain) echo "$plain_port $plain_pid no - no" ;;
    sidecar-cached) echo "$sc_port $sc_pid yes $sc_admin no" ;;
    sidecar-uncached) echo "$scu_port $scu_pid yes $scu_admin no" ;;
    oauth2-proxy) echo "$o2p_port $o2p_pid yes - no" ;;
    sidecar-rotating) echo "$scr_port $scr_pid yes $scr_admin yes" ;;
    oauth2-proxy-rotating) echo "$o2p_port $o2p_pid yes - yes" ;;
    haproxy) echo "$hap_port $hap_pid yes - no" ;;
    haproxy-rotating) echo "$hap_port $hap_pid yes - yes" ;;
    sidecar-before-*)
      [ -n "$before_bin" ] || die "target $1 needs SIDECAR_BEFORE or SIDECAR_BEFORE_REV"
      case $1 in
        sidecar-before-cached) echo "$sb_port $sb_pid yes $sb_admin no" ;;
        sidecar-before-uncached) echo "$sbu_port $sbu_pid yes $sbu_admin no" ;;
        sidecar-before-rotating) echo "$sbr_port $sbr_pid yes $sbr_admin yes" ;;
        *) die "unknown target $1" ;;
      esac ;;
    *) die "unknown target $1" ;;
  esac
}

# check fails unless the target answers 200 with the upstream's body for a valid token and,
# when it verifies, 401 or 403 without a token and with each bad token.
check() { # name
  local p pid verifies admin rotating body t
  read -r p pid verifies admin rotating <<<"$(target_info "$1")"
  local url="http://127.0.0.1:$p$path"
  local toks=("$token")
  [ "$rotating" = yes ] && toks=("$(head -1 "$work/keys/tokens.txt")" "$(tail -1 "$work/keys/tokens.txt")")
  for t in "${toks[@]}"; do
    body=$(curl -s -w ' %{http_code}' -H "Authorization: Bearer $t" "$url")
    [ "$body" = "ok
 200" ] || die "$1: a valid token got \"$body\", want the upstream's ok with 200"
  done
  if [ "$verifies" = yes ]; then
    local none bad kind seen=()
    none=$(curl -s -o /dev/null -w '%{http_code}' "$url")
    [[ $none == 401 || $none == 403 ]] || die "$1: no token got $none, want 401 or 403"
    while IFS=$'\t' read -r kind t; do
      bad=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $t" "$url")
      [[ $bad == 401 || $bad == 403 ]] || die "$1: a bad token ($kind) got $bad, want 401 or 403"
      seen+=("$kind $bad")
    done < "$work/keys/bad-tokens.tsv"
    [ ${#seen[@]} -gt 0 ] || die "no bad tokens in ${work#"$root"/}/keys/bad-tokens.tsv"
    echo "checked: token 200 ok, no token $none; bad tokens: $(IFS=,; echo "${seen[*]}" | sed 's/,/, /g')" >&2
  else
    echo "checked: token 200 ok" >&2
  fi
}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
child_ticks() { awk '{print $16+$17}' "/proc/$$/stat"; } # waited-for children of this shell: wrk
machine_busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
machine_total() { awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
cache_counter() { # admin-port name
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="tokenkeeper_sidecar_verify_cache_$2_total" '$1 == n {printf "%d", $2}'
}

# parse_wrk file -> rps p50 p99 p50us p99us requests non2xx socketerrors (raw wrk strings kept)
parse_wrk() {
  awk 'function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return (v + 0) * 1000; if (v ~ /s$/) return (v + 0) * 1000000; if (v ~ /m$/) return (v + 0) * 60000000; return -1 }
    /^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 } /^Requests\/sec:/ { rps = $2 } / requests in / { n = $1 }
    /Non-2xx or 3xx responses:/ { bad = $NF } /Socket errors:/ { sub(/^ *Socket errors: */, ""); gsub(/ /, ""); serr = $0 }
    END { if (rps == "" || p50 == "") exit 1; printf "%s\t%s\t%s\t%.2f\t%.2f\t%s\t%d\t%s\n", rps, p50, p99, us(p50), us(p99), n, bad, (serr == "" ? "-" : serr) }' "$1"
}

printf 'round\tphase\ttarget\trps\tp50\tp99\tp50_us\tp99_us\trequests\tnon2xx\tsocket_errors\tproxy_cpu_s\tproxy_cpu_us_per_req\tmachine_busy_pct\tcache_hits\tcache_misses\tupstream_cpu_s\twrk_cpu_s\tother_cpu_s\tmachine_cpu_s\n' > "$work/results.tsv"
tck=$(getconf CLK_TCK)
measure() { # round phase name
  local round=$1 phase=$2 name=$3 p pid verifies admin rotating c t
  read -r p pid verifies admin rotating <<<"$(target_info "$name")"
  c=$conns; t=$threads
  [ "$phase" = latency ] && { c=1; t=1; }
  local args=(-t"$t" -c"$c" --latency) warm
  if [ "$rotating" = yes ]; then
    # The warm-up sends other tokens, so that the measurement starts with none of its own cached.
    warm=("${args[@]}" -s hack/bench/rotate-tokens.lua "http://127.0.0.1:$p$path" -- "$work/keys/tokens-warmup.txt")
    args+=(-s hack/bench/rotate-tokens.lua "http://127.0.0.1:$p$path" -- "$work/keys/tokens.txt")
  else
    args+=(-H "Authorization: Bearer $token" "http://127.0.0.1:$p$path")
    warm=("${args[@]}")
  fi
  say "[round $round/$rounds, $phase] $name: wrk -t$t -c$c -d$duration (after a $warmup warm-up)"
  check "$name"
  local out="$work/wrk/$round-$phase-$name"
  wrk -d"$warmup" "${warm[@]}" > "$out.warmup.txt"
  local h0=- m0=- h1=- m1=-
  if [ "$admin" != - ]; then h0=$(cache_counter "$admin" hits); m0=$(cache_counter "$admin" misses); fi
  local c0 b0 a0 u0 w0 c1 b1 a1 u1 w1
  c0=$(cpu_ticks "$pid"); u0=$(cpu_ticks "$up_pid"); b0=$(machine_busy); a0=$(machine_total); w0=$(child_ticks)
  wrk -d"$duration" "${args[@]}" > "$out.txt"
  w1=$(child_ticks); c1=$(cpu_ticks "$pid"); u1=$(cpu_ticks "$up_pid"); b1=$(machine_busy); a1=$(machine_total)
  if [ "$admin" != - ]; then h1=$(cache_counter "$admin" hits); m1=$(cache_counter "$admin" misses); fi
  cat "$out.txt" >&2
  local parsed
  parsed=$(parse_wrk "$out.txt") || die "$name: could not parse the wrk output"
  local non2xx
  non2xx=$(cut -f7 <<<"$parsed")
  [ "$non2xx" = 0 ] || die "$name: $non2xx non-2xx answers during the measurement (see ${out#"$root"/}.txt)"
  local hits=- misses=-
  [ "$h0" != - ] && { hits=$((h1 - h0)); misses=$((m1 - m0)); }
  [[ $name == sidecar-uncached || $name == sidecar-before-uncached ]] && { hits=off; misses=off; }
  # CPU seconds during the measurement: the proxy, the upstream (for direct: the same
  # process), wrk, and everything else on the machine (other processes, the kernel's softirq
  # work not charged to a process, and this script's few /proc reads), out of the machine's
  # capacity (CPUs × wall time). The machine's busy time in /proc/stat is sampled at ticks
  # while process times are exact, so "other" reads a few percent low, and below zero when
  # the machine is otherwise idle, most at one request at a time.
  awk -v round="$round" -v phase="$phase" -v name="$name" -v parsed="$parsed" -v c0="$c0" -v c1="$c1" -v b0="$b0" -v b1="$b1" \
    -v a0="$a0" -v a1="$a1" -v u0="$u0" -v u1="$u1" -v w0="$w0" -v w1="$w1" -v tck="$tck" -v hits="$hits" -v misses="$misses" \
    -v direct="$([ "$pid" = "$up_pid" ] && echo 1 || echo 0)" 'BEGIN {
      split(parsed, f, "\t"); cpu = (c1 - c0) / tck; up = (u1 - u0) / tck; w = (w1 - w0) / tck; busy = (b1 - b0) / tck
      other = busy - w - up - (direct ? 0 : cpu)
      printf "%s\t%s\t%s\t%s\t%.2f\t%.3f\t%.1f\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.2f\n", round, phase, name, parsed, cpu, cpu * 1e6 / f[6],
        100 * (b1 - b0) / (a1 - a0), hits, misses, up, w, other, (a1 - a0) / tck
    }' >> "$work/results.tsv"
}

say "Checking every target: a valid token passes, no token and every bad token is refused"
checked=()
for name in $measured; do
  [[ " ${checked[*]} " == *" $name "* ]] && continue
  echo "$name:" >&2
  check "$name"
  checked+=("$name")
done

mkdir -p "$work/wrk"
for round in $(seq "$rounds"); do
  for phase in $phases; do
    list=$targets
    [ "$phase" = latency ] && list=$latency_targets
    for name in $list; do measure "$round" "$phase" "$name"; done
  done
done

echo "Machine: $machine." > "$work/run.txt"
echo "Settings: rounds: $rounds; each wrk -d$duration (each after a $warmup warm-up), load phase -t$threads -c$conns, latency phase -t1 -c1; GET $path; ES256." >> "$work/run.txt"
"$work/proxysummary" "$work/results.tsv" | tee "$work/summary.md"
say "Raw wrk output (wrk/<round>-<phase>-<target>.txt), logs and results.tsv are in ${work#"$root"/}/"
