#!/usr/bin/env bash
# Prepares this host to run kind, changing only what needs it:
#  - a Docker engine: installs docker.io from apt only when no daemon answers and dockerd is
#    missing, and starts dockerd only when none runs;
#  - the runtime wrapper: installed only when CAP_SYS_RESOURCE is missing from the
#    capability bounding set (then runc fails for every privileged container).
# A host with a working Docker and full capabilities is left untouched.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
log() { echo "[host] $*" >&2; }

if docker info >/dev/null 2>&1; then
  daemon_running=yes
else
  daemon_running=no
fi

if [ "$daemon_running" = no ] && ! command -v dockerd >/dev/null; then
  log "No Docker engine: installing docker.io from apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

# CAP_SYS_RESOURCE is capability 24.
capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
needs_wrapper=no
if (( (16#$capbnd >> 24 & 1) == 0 )); then needs_wrapper=yes; fi

wrapper=/usr/local/lib/tokenkeeper/runc-nosysresource
restart=no
if [ "$needs_wrapper" = yes ]; then
  tmp=$(mktemp)
  # No VCS stamp (and no paths): the binary must change only with its source, since a new
  # one restarts dockerd and with it every container, kind clusters included.
  (cd "$root" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -o "$tmp" ./hack/kind/runc-nosysresource)
  if ! cmp -s "$tmp" "$wrapper"; then
    log "CAP_SYS_RESOURCE is missing from the bounding set: installing $wrapper"
    install -D -m 0755 "$tmp" "$wrapper"
    restart=yes
  fi
  rm -f "$tmp"
  conf=/etc/docker/daemon.json
  want=$(python3 - "$conf" "$wrapper" <<'PY'
import json, os, sys
conf, wrapper = sys.argv[1], sys.argv[2]
d = json.load(open(conf)) if os.path.exists(conf) and os.path.getsize(conf) else {}
d.setdefault("runtimes", {})["runc-nosysresource"] = {"path": wrapper}
d["default-runtime"] = "runc-nosysresource"
print(json.dumps(d, indent=2, sort_keys=True))
PY
)
  if [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    log "Registering the wrapper as Docker's default runtime in $conf"
    mkdir -p /etc/docker
    printf '%s\n' "$want" > "$conf"
    restart=yes
  fi
fi

# Probe again: on systemd hosts installing docker.io starts a daemon, before daemon.json was
# written, so it must be restarted like any other.
systemd_docker() { command -v systemctl >/dev/null && systemctl is-active --quiet docker 2>/dev/null; }
if docker info >/dev/null 2>&1 || systemd_docker; then daemon_running=yes; else daemon_running=no; fi

# dockerd's pid without procps (not installed on a fresh CI machine): its pid file, else /proc.
dockerd_pids() {
  local p d
  p=$(cat /var/run/docker.pid 2>/dev/null || true)
  if [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = dockerd ]; then echo "$p"; return; fi
  for d in /proc/[0-9]*; do [ "$(cat "$d/comm" 2>/dev/null)" = dockerd ] && echo "${d#/proc/}"; done; true
}

if [ "$daemon_running" = yes ] && [ "$restart" = yes ]; then
  log "Restarting dockerd for the new runtime"
  if systemd_docker; then
    systemctl restart docker
  else
    pids=$(dockerd_pids)
    [ -z "$pids" ] || kill $pids 2>/dev/null || true
    # dockerd stops its containers first: that can take well over 10s.
    for _ in $(seq 150); do [ -n "$(dockerd_pids)" ] || break; sleep 0.2; done
    [ -z "$(dockerd_pids)" ] || { log "dockerd ($pids) did not stop within 30s"; exit 1; }
    daemon_running=no
  fi
fi

if [ "$daemon_running" = no ] && ! docker info >/dev/null 2>&1; then
  log "Starting dockerd (log: /var/log/tokenkeeper-dockerd.log)"
  nohup dockerd > /var/log/tokenkeeper-dockerd.log 2>&1 &
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
docker info >/dev/null 2>&1 || { tail -20 /var/log/tokenkeeper-dockerd.log >&2; log "Docker did not start"; exit 1; }
log "Docker $(docker version --format '{{.Server.Version}}') ready (wrapper: $needs_wrapper)"
