#!/usr/bin/env bash
# Builds Kubernetes binaries (and etcd) from source through the Go module proxy, since no
# binary download works offline. Results are cached in bin/k8s/<version>-<key>/, keyed by the
# effective versions (env overrides included) and this script's hash, so a second run is instant.
#
#   hack/kube-binaries.sh [binary ...]   (default: kube-apiserver etcd kubectl)
#   binaries: any k8s.io/kubernetes/cmd/<name>, etcd, crictl, coredns
#   prints the assets directory on stdout (usable as KUBEBUILDER_ASSETS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/hack/versions.sh"

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(kube-apiserver etcd kubectl)

self="$root/hack/kube-binaries.sh"
# The values in effect, not versions.sh's text: an env override must not reuse a stale build.
key=$( (printf '%s\n' "$KUBE_VERSION" "$ETCD_VERSION" "$CRICTL_VERSION" "$COREDNS_VERSION"; cat "$self") | sha256sum | cut -c1-12)
# The wrapper modules depend on this script (their generator) and their own version only.
gen=$(sha256sum < "$self" | cut -c1-12)
out="$root/bin/k8s/$KUBE_VERSION-$key"
work="$root/bin/.work"
if [ ! -d "$out" ]; then
  # A new version or script: drop the builds and wrapper modules it replaces.
  find "$root/bin/k8s" -mindepth 1 -maxdepth 1 -type d ! -name "$(basename "$out")" -exec rm -rf {} + 2>/dev/null || true
  find "$work" -mindepth 1 -maxdepth 1 ! -name "*-$gen" -exec rm -rf {} + 2>/dev/null || true
fi
mkdir -p "$out" "$work"
log() { echo "[kube-binaries] $*" >&2; }

missing=()
for b in "${want[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$out"; exit 0; fi

# Builds go to a scratch dir and are renamed into $out: a killed `go build -o` can leave a
# truncated file, and the check above trusts any executable it finds.
tmp=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
publish() { mv -f "$tmp"/* "$out/"; }

kube=()
for b in "${missing[@]}"; do case "$b" in etcd|crictl|coredns) ;; *) kube+=("$b");; esac; done

if [ ${#kube[@]} -gt 0 ]; then
  mod="$work/kubernetes-$KUBE_VERSION-$gen"
  if [ ! -d "$mod" ]; then
    log "Preparing a wrapper module for k8s.io/kubernetes $KUBE_VERSION"
    final=$mod; mod="$final.tmp"
    rm -rf "$mod"; mkdir -p "$mod"
    # The staging modules are replaced by ./staging paths in kubernetes' own go.mod; a wrapper
    # module must pin each to its published v0.Y.Z twin instead.
    kmod=$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    minor=${KUBE_VERSION#v1.}
    staging=$(grep -oE '^\s*k8s.io/[a-z0-9-]+ => \./staging/src/k8s.io/[a-z0-9-]+' "$kmod" | awk '{print $1}')
    {
      echo "module tokenkeeper.dev/hack/kubernetes"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes $KUBE_VERSION"
      echo
      echo "replace ("
      for m in $staging; do echo "	$m => $m v0.$minor"; done
      echo ")"
    } > "$mod/go.mod"
    {
      echo "//go:build tools"
      echo "package tools"
      echo "import ("
      for c in kube-apiserver kubectl kubelet kubeadm kube-controller-manager kube-scheduler kube-proxy; do
        echo "	_ \"k8s.io/kubernetes/cmd/$c\""
      done
      echo ")"
    } > "$mod/tools.go"
    (cd "$mod" && go mod tidy >&2)
    mv "$mod" "$final"; mod=$final   # only a complete module gets the real name
  fi
  major=${KUBE_VERSION#v}; major=${major%%.*}; minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  ld="-s -w"
  # kubeadm and the version endpoint need real version data.
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ld="$ld -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  pkgs=(); for b in "${kube[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  log "Building ${kube[*]} $KUBE_VERSION from source (a cold build takes several minutes)"
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$tmp/" "${pkgs[@]}")
  publish
fi

# wrapper <dir> <module> <version> <main.go source>: a one-file module around a main package,
# generated in <dir>.tmp and renamed when complete.
wrapper() {
  local dir=$1 module=$2 version=$3 src=$4
  if [ ! -d "$dir" ]; then
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    printf 'module tokenkeeper.dev/hack/%s\n\ngo 1.26\n\nrequire %s %s\n' "$(basename "$dir")" "$module" "$version" > "$dir.tmp/go.mod"
    printf '%s\n' "$src" > "$dir.tmp/main.go"
    (cd "$dir.tmp" && go mod tidy >&2)
    mv "$dir.tmp" "$dir"
  fi
}

if [[ " ${missing[*]} " == *" etcd "* ]]; then
  mod="$work/etcd-$ETCD_VERSION-$gen"
  wrapper "$mod" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" 'package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }'
  log "Building etcd $ETCD_VERSION from source"
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .)
  publish
fi

if [[ " ${missing[*]} " == *" crictl "* ]]; then
  mod="$work/crictl-$CRICTL_VERSION-$gen"
  wrapper "$mod" sigs.k8s.io/cri-tools "$CRICTL_VERSION" '//go:build tools

package tools

import _ "sigs.k8s.io/cri-tools/cmd/crictl"'
  log "Building crictl $CRICTL_VERSION from source"
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/crictl" sigs.k8s.io/cri-tools/cmd/crictl)
  publish
fi

if [[ " ${missing[*]} " == *" coredns "* ]]; then
  mod="$work/coredns-$COREDNS_VERSION-$gen"
  # Only the plugins kubeadm's default Corefile uses.
  wrapper "$mod" github.com/coredns/coredns "$COREDNS_VERSION" 'package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

var _ = dnsserver.Directives

func main() { coremain.Run() }'
  log "Building coredns $COREDNS_VERSION from source"
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" .)
  publish
fi
echo "$out"
