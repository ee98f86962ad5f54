# Shell helpers shared by hack/ scripts: source it after `set -euo pipefail`.
#   say TEXT                 a bold step heading (on stderr when SAY_TO_STDERR=1)
#   die TEXT                 print and exit 1
#   port                     a free loopback TCP port
#   track PID                stop PID (and wait for it) when the script exits or at stop_tracked
#   on_exit CMD              run CMD when the script exits
#   wait_http URL WHAT [CODE] wait up to 30 s for URL to answer CODE (default 200)
#   expect LABEL CODE ARGS.. one request through curl ARGS: print the answer and fail the
#                            script when its status is not CODE (demos check what they show)

say() {
  if [ "${SAY_TO_STDERR:-}" = 1 ]; then printf '\n\033[1m== %s\033[0m\n' "$*" >&2
  else printf '\n\033[1m== %s\033[0m\n' "$*"; fi
}
die() { echo "$(basename "$0"): $*" >&2; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

_tracked=()
_on_exit=()
track() { _tracked+=("$1"); }
# stop_tracked: stop every tracked process now (between runs of a benchmark).
stop_tracked() {
  local p
  for p in "${_tracked[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${_tracked[@]}"; do wait "$p" 2>/dev/null || true; done
  _tracked=()
}
# on_exit CMD: run CMD (after the tracked processes stopped) when the script exits.
on_exit() { _on_exit+=("$1"); }
_at_exit() {
  local f
  stop_tracked
  for f in "${_on_exit[@]}"; do eval "$f" || true; done
}
trap _at_exit EXIT
trap 'exit 130' INT TERM

wait_http() {
  local code=""
  for _ in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)
    [ "$code" = "${3:-200}" ] && return 0
    sleep 0.1
  done
  die "$2 did not come up at $1 (last status $code)"
}

expect() {
  local label=$1 want=$2; shift 2
  local out code
  out=$(curl -s -o "${EXPECT_BODY:-/dev/null}" -w '%{http_code} %header{www-authenticate}' "$@" || true)
  code=${out%% *}
  if [ "$code" = "$want" ]; then
    printf '  %-50s -> %s\n' "$label" "$out"
  else
    printf '  %-50s -> %s   FAILED: expected %s\n' "$label" "$out" "$want"
    die "\"$label\" answered $code, not $want"
  fi
}
