#!/usr/bin/env bash
# Builds Kubernetes binaries (and etcd) from source through the Go module proxy, since no
# binary download works offline. Results are cached in bin/k8s/<version>/, keyed by the
# versions and this script's hash, so a second run is instant.
#
#   hack/kube-binaries.sh [binary ...]   (default: kube-apiserver etcd kubectl)
#   prints the assets directory on stdout (usable as KUBEBUILDER_ASSETS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/hack/versions.sh"

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(kube-apiserver etcd kubectl)

key=$(cat "$root/hack/versions.sh" "$0" | sha256sum | cut -c1-12)
out="$root/bin/k8s/$KUBE_VERSION-$key"
mkdir -p "$out"
log() { echo "[kube-binaries] $*" >&2; }

missing=()
for b in "${want[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$out"; exit 0; fi

work="$root/bin/.work"
mkdir -p "$work"

kube=()
for b in "${missing[@]}"; do [ "$b" = etcd ] || kube+=("$b"); done

if [ ${#kube[@]} -gt 0 ]; then
  mod="$work/kubernetes-$KUBE_VERSION"
  if [ ! -f "$mod/go.sum" ]; then
    log "Preparing a wrapper module for k8s.io/kubernetes $KUBE_VERSION"
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
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$out/" "${pkgs[@]}")
fi

if [[ " ${missing[*]} " == *" etcd "* ]]; then
  mod="$work/etcd-$ETCD_VERSION"
  if [ ! -f "$mod/go.sum" ]; then
    rm -rf "$mod"; mkdir -p "$mod"
    printf 'module tokenkeeper.dev/hack/etcd\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$mod/go.mod"
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > "$mod/main.go"
    (cd "$mod" && go mod tidy >&2)
  fi
  log "Building etcd $ETCD_VERSION from source"
  (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/etcd" .)
fi
echo "$out"
