# Versions of everything built from source, set in one place. Sourced by hack/ scripts.
# (kind itself is pinned in go.mod as a Go tool: `go tool kind`.)
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"     # envtest's kube-apiserver and the kind node image
ETCD_VERSION="${ETCD_VERSION:-v3.7.0}"
CRICTL_VERSION="${CRICTL_VERSION:-v1.37.0}" # sigs.k8s.io/cri-tools
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.6}"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"    # the node image's base, from the apt mirror
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The e2e kind cluster's NetworkPolicy engine (hack/kind/netpol.sh), from the Go module proxy.
KUBE_NETWORK_POLICIES_VERSION="${KUBE_NETWORK_POLICIES_VERSION:-v0.8.0}"
