#!/usr/bin/env bash
# Builds the e2e kind cluster's NetworkPolicy enforcer (hack/kind/netpol/main.go around
# sigs.k8s.io/kube-network-policies $KUBE_NETWORK_POLICIES_VERSION, both from source through the
# Go module proxy) into a FROM scratch image, and prints its reference. The image is tagged
# with a key of its inputs, so a second run reuses it; a new key removes the older images.
# The module is generated here, not kept in the tree: its dependencies (client-go and others at
# kube-network-policies' own versions) stay out of tokenkeeper's go.mod.
#
#   hack/kind/netpol.sh        prints the image reference on stdout
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/versions.sh"
log() { echo "[netpol] $*" >&2; }

src="$root/hack/kind/netpol/main.go"
# The values in effect (an env override must not reuse a stale image), this script, the source
# and the Go toolchain.
key=$( (printf '%s\n' "$KUBE_NETWORK_POLICIES_VERSION" "$(go env GOVERSION)"; cat "$root/hack/kind/netpol.sh" "$src") | sha256sum | cut -c1-12)
image="tokenkeeper.dev/kind-netpol:$KUBE_NETWORK_POLICIES_VERSION-$key"
if docker image inspect "$image" >/dev/null 2>&1; then echo "$image"; exit 0; fi

t0=$(date +%s)
work="$root/bin/kind/netpol-$key"
rm -rf "$work"; mkdir -p "$work/mod" "$work/ctx"
trap 'rm -rf "$work"' EXIT
# The build constraint only keeps the file out of tokenkeeper's own packages.
sed '/^\/\/go:build ignore$/d' "$src" > "$work/mod/main.go"
printf 'module tokenkeeper.dev/hack/kind/netpol\n\ngo 1.26\n\nrequire sigs.k8s.io/kube-network-policies %s\n' \
  "$KUBE_NETWORK_POLICIES_VERSION" > "$work/mod/go.mod"
log "Building kube-network-policies $KUBE_NETWORK_POLICIES_VERSION from source"
(cd "$work/mod" && go mod tidy >&2 && go vet . >&2 &&
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/ctx/netpol" .)
# Root, for CAP_NET_ADMIN (nftables and the queue); the DaemonSet drops every other capability.
printf 'FROM scratch\nCOPY netpol /netpol\nENTRYPOINT ["/netpol"]\n' > "$work/ctx/Dockerfile"
docker build -q -t "$image" "$work/ctx" >/dev/null
log "Image $image built in $(( $(date +%s) - t0 ))s"
# rmi without -f keeps an image a kept cluster's node still has loaded from.
docker images --format '{{.Repository}}:{{.Tag}}' | grep '^tokenkeeper\.dev/kind-netpol:' | grep -vx "$image" |
  while read -r ref; do docker rmi "$ref" >/dev/null 2>&1 || true; done || true
echo "$image"
