// Command localcluster runs a local control plane (the source-built kube-apiserver and etcd
// that envtest uses) with tokenkeeper's CRDs installed, writes an admin kubeconfig, and
// runs until interrupted. `make demo` and the benchmarks use it; no container runtime needed.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

func main() {
	kubeconfig := flag.String("write-kubeconfig", "bin/demo/kubeconfig", "where to write the admin kubeconfig")
	crds := flag.String("crds", "config/crd/bases", "directory of CRDs to install")
	flag.Parse()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fail(fmt.Errorf("KUBEBUILDER_ASSETS is not set (run hack/kube-binaries.sh)"))
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{*crds}, ErrorIfCRDPathMissing: true}
	if _, err := env.Start(); err != nil {
		fail(err)
	}
	defer func() { _ = env.Stop() }()
	user, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		fail(err)
	}
	cfg, err := user.KubeConfig()
	if err != nil {
		fail(err)
	}
	if err := os.WriteFile(*kubeconfig, cfg, 0o600); err != nil {
		fail(err)
	}
	fmt.Printf("Control plane ready; kubeconfig written to %s\n", *kubeconfig)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "localcluster:", err)
	os.Exit(1)
}
