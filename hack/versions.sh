# Versions of everything built from source, set in one place. Sourced by hack/ scripts and the Makefile.
KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.0}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
