#!/usr/bin/env bash
# Builds a kind node image for $KUBE_VERSION without pulling anything: a Debian root
# filesystem from the apt mirror (debootstrap), Kubernetes, etcd, CRI tools and CoreDNS built
# from source through the Go module proxy, and the control-plane images pre-imported into
# the node's containerd. The image tag carries a key of every input (the versions in effect,
# these scripts, kind's base files), so a second run with the same inputs reuses it; building
# a new key removes the other keys' images and work dirs.
#
#   hack/kind/node-image.sh        prints the image reference on stdout
#
# With KIND_NODE_IMAGE set (e.g. kindest/node:v1.37.2 on a machine with a registry), nothing
# is built and that reference is printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/hack/versions.sh"
log() { echo "[node-image] $*" >&2; }

if [ -n "${KIND_NODE_IMAGE:-}" ]; then echo "$KIND_NODE_IMAGE"; exit 0; fi

kind_version=$(cd "$root" && go list -m -f '{{.Version}}' sigs.k8s.io/kind)
kind_src=$(cd "$root" && go list -m -f '{{.Dir}}' sigs.k8s.io/kind)
[ -n "$kind_src" ] || { (cd "$root" && go mod download sigs.k8s.io/kind); kind_src=$(cd "$root" && go list -m -f '{{.Dir}}' sigs.k8s.io/kind); }
# The values in effect, not versions.sh's text: an env override must not reuse a stale image.
key=$( (printf '%s\n' "$KUBE_VERSION" "$ETCD_VERSION" "$CRICTL_VERSION" "$COREDNS_VERSION" "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "$kind_version"
  cat "$root/hack/kube-binaries.sh" "$root/hack/kind/node-image.sh" "$root"/hack/kind/node/* "$root"/hack/kind/pause/main.go) | sha256sum | cut -c1-12)
image="tokenkeeper.dev/kind-node:$KUBE_VERSION-$key"
if docker image inspect "$image" >/dev/null 2>&1; then
  log "Reusing $image"
  echo "$image"; exit 0
fi

t0=$(date +%s)
work="$root/bin/kind/$key"
mkdir -p "$work"

# unmount_under <dir>: a killed debootstrap leaves proc, sys (and in a container /dev) mounted
# in its root; rm must never walk into those.
unmount_under() {
  awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
# On any exit: stop the debootstraps still running, unmount what they mounted, drop the build
# container.
pids=(); build_ctr=""
cleanup() {
  if [ ${#pids[@]} -gt 0 ]; then kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true; fi
  unmount_under "$work"
  if [ -n "$build_ctr" ]; then docker rm -f -v "$build_ctr" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
command -v debootstrap >/dev/null || { log "Installing debootstrap from apt"; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }

# 1. Binaries, all from source (cached by hack/kube-binaries.sh and the Go build cache).
bins=$("$root/hack/kube-binaries.sh" kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd crictl coredns)
CGO_ENABLED=0 go build -C "$root" -trimpath -ldflags "-s -w" -o "$work/pause" ./hack/kind/pause
log "Binaries ready: +$(( $(date +%s) - t0 ))s"

# The image names and tags this kubeadm expects.
images=$("$bins/kubeadm" config images list --kubernetes-version "$KUBE_VERSION" 2>"$work/kubeadm-images.log") ||
  { cat "$work/kubeadm-images.log" >&2; log "kubeadm could not list its images"; exit 1; }
# || true: a missing image must reach the message below, not stop set -e silently.
img() { echo "$images" | grep -E "/$1:" | head -1 || true; }
for c in pause etcd coredns kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  [ -n "$(img "$c")" ] || { log "kubeadm listed no $c image: $images"; exit 1; }
done
pause_img=$(img pause); etcd_img=$(img etcd); coredns_img=$(img coredns)

# 2. Root filesystems: the node (systemd, containerd, runc, CNI plugins) and a minimal one
#    for the control-plane images, both from Debian's mirror.
node_rootfs="$work/rootfs-node"; min_rootfs="$work/rootfs-min"
# Both base images are checked (kind-base is tagged last): a run interrupted between them must
# rebuild, or FROM kind-minbase would try to pull.
if ! docker image inspect "tokenkeeper.dev/kind-minbase:$key" "tokenkeeper.dev/kind-base:$key" >/dev/null 2>&1; then
  unmount_under "$work"
  rm -rf --one-file-system "$node_rootfs" "$min_rootfs"
  log "debootstrap $DEBIAN_SUITE (node and minimal roots) from $DEBIAN_MIRROR"
  # timeout: a stalled mirror must fail the run, not eat CI's budget.
  timeout --kill-after=30s 15m debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,ca-certificates,curl,jq,procps,e2fsprogs,containerd,runc,containernetworking-plugins,socat \
    "$DEBIAN_SUITE" "$node_rootfs" "$DEBIAN_MIRROR" > "$work/debootstrap-node.log" 2>&1 &
  p1=$!
  timeout --kill-after=30s 15m debootstrap --variant=minbase --include=iptables,nftables,conntrack,ipset,kmod \
    "$DEBIAN_SUITE" "$min_rootfs" "$DEBIAN_MIRROR" > "$work/debootstrap-min.log" 2>&1 &
  p2=$!
  pids=("$p1" "$p2")
  # Whichever fails first stops the run; the trap stops the other.
  while [ ${#pids[@]} -gt 0 ]; do
    done_pid=""; st=0
    wait -n -p done_pid "${pids[@]}" || st=$?
    if [ "$st" -ne 0 ]; then
      [ "$done_pid" = "$p1" ] && l=node || l=min
      tail "$work/debootstrap-$l.log" >&2; log "debootstrap ($l) failed with status $st (124: timed out)"; exit 1
    fi
    left=(); for p in "${pids[@]}"; do [ "$p" = "$done_pid" ] || left+=("$p"); done; pids=("${left[@]}")
  done
  log "debootstrap done: +$(( $(date +%s) - t0 ))s"

  # Replicate kind's images/base/Dockerfile with Debian's containerd, runc and CNI plugins.
  files="$kind_src/images/base/files"
  R=$node_rootfs
  install -m 0755 "$files"/usr/local/bin/* "$R/usr/local/bin/"
  mkdir -p "$R/kind/bin"; cp -r "$files/kind/." "$R/kind/"; chmod 755 "$R/kind" "$R/kind/bin" "$R"/kind/bin/*
  install -m 0644 "$files/etc/crictl.yaml" "$R/etc/"
  mkdir -p "$R/etc/containerd" "$R/etc/systemd/system/kubelet.service.d" "$R/etc/cni/net.d" "$R/opt/cni/bin"
  install -m 0644 "$files/etc/containerd/config.toml" "$R/etc/containerd/"
  install -m 0644 "$files/etc/default/kubelet" "$R/etc/default/"
  install -m 0644 "$files"/etc/sysctl.d/* "$R/etc/sysctl.d/"
  install -m 0644 "$files"/etc/systemd/system/*.service "$files"/etc/systemd/system/*.slice "$R/etc/systemd/system/"
  install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$R/etc/systemd/system/kubelet.service.d/"
  for b in containerd ctr containerd-shim-runc-v2; do ln -sf "/usr/bin/$b" "$R/usr/local/bin/$b"; done
  for p in host-local loopback ptp portmap bridge; do ln -sf "/usr/lib/cni/$p" "$R/opt/cni/bin/$p"; done
  # No default CNI image can be pulled: a static ptp network for the single node.
  install -m 0644 "$root/hack/kind/node/10-ptp.conflist" "$R/etc/cni/net.d/10-ptp.conflist"
  # Where the host lacks CAP_SYS_RESOURCE, runc cannot lower oom_score_adj for sandboxes;
  # containerd must then keep it at or above its own. Harmless elsewhere.
  sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$R/etc/containerd/config.toml"
  sed -i "s#sandbox_image = .*#sandbox_image = \"$pause_img\"#" "$R/etc/containerd/config.toml"
  # pipefail and a check: a failing ctr must not leave an empty spec behind.
  chroot "$R" /bin/bash -c 'set -euo pipefail
    ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer| length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json
    jq -e ".process and .hooks.createContainer" /etc/containerd/cri-base.json >/dev/null' ||
    { log "could not write the node's /etc/containerd/cri-base.json"; exit 1; }
  chroot "$R" /bin/bash -c 'find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete
    rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* /lib/systemd/system/local-fs.target.wants/* \
      /lib/systemd/system/sockets.target.wants/*udev* /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
    echo ReadKMsg=no >> /etc/systemd/journald.conf
    ln -sf /usr/lib/systemd/systemd /sbin/init
    out=$(systemctl enable kubelet.service containerd.service undo-mount-hacks.service 2>&1) || { echo "$out" >&2; exit 1; }
    out=$(systemctl mask systemd-binfmt.service 2>&1) || { echo "$out" >&2; exit 1; }
    mkdir -p /etc/kubernetes/manifests' || { log "could not enable the node's services"; exit 1; }
  for r in "$node_rootfs" "$min_rootfs"; do
    rm -f "$r"/var/cache/apt/archives/*.deb; rm -rf "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* "$r"/usr/share/man/*
  done
  tar -C "$min_rootfs" -c . | docker import - "tokenkeeper.dev/kind-minbase:$key" >/dev/null
  tar -C "$node_rootfs" -c . | docker import - "tokenkeeper.dev/kind-base-raw:$key" >/dev/null
  mkdir -p "$work/ctx-base"
  # docker import cannot set STOPSIGNAL on older engines: a two-line build does.
  printf 'FROM tokenkeeper.dev/kind-base-raw:%s\nENV container=docker\nSTOPSIGNAL SIGRTMIN+3\nENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]\n' "$key" > "$work/ctx-base/Dockerfile"
  docker build -q -t "tokenkeeper.dev/kind-base:$key" "$work/ctx-base" >/dev/null
  docker rmi "tokenkeeper.dev/kind-base-raw:$key" >/dev/null 2>&1 || true
  rm -rf --one-file-system "$node_rootfs" "$min_rootfs"
  log "Base images built: +$(( $(date +%s) - t0 ))s"
fi

# 3. Control-plane, etcd, CoreDNS and pause images, named as kubeadm expects them.
build_image() { # tag, base, binary, entrypoint-or-empty
  local d="$work/ctx-$(basename "$3")"
  mkdir -p "$d"; cp "$3" "$d/"
  { echo "FROM $2"; echo "COPY $(basename "$3") /usr/local/bin/$(basename "$3")";
    [ -n "$4" ] && echo "ENTRYPOINT [\"/usr/local/bin/$(basename "$3")\"]"; true; } > "$d/Dockerfile"
  docker build -q -t "$1" "$d" >/dev/null
}
for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  build_image "$(img "$c")" "tokenkeeper.dev/kind-minbase:$key" "$bins/$c" ""
done
build_image "$etcd_img" "tokenkeeper.dev/kind-minbase:$key" "$bins/etcd" ""
build_image "$coredns_img" scratch "$bins/coredns" entrypoint
mkdir -p "$work/ctx-pause"; cp "$work/pause" "$work/ctx-pause/"
printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$work/ctx-pause/Dockerfile"
docker build -q -t "$pause_img" "$work/ctx-pause" >/dev/null
log "Component images built: +$(( $(date +%s) - t0 ))s"

# 4. The node: base + kubelet/kubeadm/kubectl/crictl + the images imported into containerd.
b="tokenkeeper-node-build-$key"
docker rm -f -v "$b" >/dev/null 2>&1 || true
docker run -d --entrypoint=sleep --name="$b" --security-opt seccomp=unconfined "tokenkeeper.dev/kind-base:$key" infinity >/dev/null
build_ctr=$b
for x in kubeadm kubelet kubectl; do docker cp "$bins/$x" "$b:/usr/bin/$x"; done
docker cp "$bins/crictl" "$b:/usr/local/bin/crictl"
docker exec "$b" bash -c "echo -n $KUBE_VERSION > /kind/version; chown root:root /usr/bin/kube* /usr/local/bin/crictl"
docker exec "$b" bash -c 'nohup containerd >/dev/null 2>&1 & for i in $(seq 60); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.5; done; ctr version >/dev/null'
all_images=$(echo "$images" | tr '\n' ' ')
# shellcheck disable=SC2086
docker save $all_images | docker exec -i "$b" ctr --namespace=k8s.io images import --all-platforms --no-unpack --digests - >/dev/null
# containerd 1.6's import has no --label: pin the images afterwards so the kubelet never
# garbage-collects what cannot be pulled again.
docker exec "$b" bash -c 'for i in $(ctr -n k8s.io images ls -q | grep -v sha256); do ctr -n k8s.io images label $i io.cri-containerd.pinned=pinned >/dev/null; done'
docker exec "$b" pkill containerd || true
sleep 2
docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' --change 'CMD []' "$b" "$image" >/dev/null
log "Node image $image built in $(( $(date +%s) - t0 ))s"

# This key replaces the others: drop their images and work dirs. rmi without -f keeps an image
# a kept cluster still runs on.
docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^tokenkeeper\.dev/kind-(node|base|base-raw|minbase):' |
  grep -vE "[:-]$key\$" | while read -r ref; do docker rmi "$ref" >/dev/null 2>&1 || true; done || true
find "$root/bin/kind" -mindepth 1 -maxdepth 1 -type d -regextype egrep -regex '.*/[0-9a-f]{12}' ! -name "$key" |
  while read -r d; do unmount_under "$d"; rm -rf --one-file-system "$d" || log "could not remove $d"; done
echo "$image"
