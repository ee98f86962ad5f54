//go:build e2e

// Package e2e proves tokenkeeper on a real kind cluster: the manifests users apply, the
// manager image, kubectl, pods that mount what the manager writes. Run it with
// `make test-e2e`, which creates the cluster, builds and loads the images and deploys.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

const managerNS = "tokenkeeper-system"

var (
	k8s        client.Client
	kubectlBin string
	artifacts  string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "tokenkeeper e2e on kind")
}

var _ = BeforeSuite(func() {
	kubectlBin = os.Getenv("KUBECTL")
	Expect(kubectlBin).NotTo(BeEmpty(), "KUBECTL must name a kubectl binary (make test-e2e sets it)")
	Expect(os.Getenv("KUBECONFIG")).NotTo(BeEmpty(), "KUBECONFIG must point at the kind cluster")
	artifacts = os.Getenv("E2E_ARTIFACTS")
	if artifacts == "" {
		artifacts = os.TempDir()
	}
	cfg, err := config.GetConfig()
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{Scheme: operator.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	Eventually(func() (string, error) {
		return kubectl("get", "deploy", "-n", managerNS, "tokenkeeper-manager", "-o", "jsonpath={.status.availableReplicas}")
	}, 2*time.Minute, time.Second).Should(Equal("1"), "the manager Deployment from config/default is available")
})

// On failure, dump what a human needs: manager logs, events and pod descriptions.
var _ = ReportAfterEach(func(r SpecReport) {
	if !r.Failed() {
		return
	}
	name := strings.NewReplacer(" ", "-", "/", "-").Replace(r.LeafNodeText)
	if len(name) > 80 {
		name = name[:80]
	}
	var b bytes.Buffer
	for _, args := range [][]string{
		{"logs", "-n", managerNS, "-l", "app.kubernetes.io/component=manager", "--all-containers", "--prefix", "--tail=300"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"describe", "pods", "-A"},
		{"get", "signingkeys", "-A", "-o", "yaml"},
		{"logs", "-A", "-l", "app in (signer,verifier,orders)", "--all-containers", "--prefix", "--tail=100"},
		{"get", "networkpolicies", "-A", "-o", "yaml"},
		{"logs", "-n", "kube-system", "-l", "app.kubernetes.io/name=tokenkeeper-netpol", "--prefix", "--tail=200"},
	} {
		out, err := kubectl(args...)
		fmt.Fprintf(&b, "\n### kubectl %s (err: %v)\n%s\n", strings.Join(args, " "), err, out)
	}
	path := filepath.Join(artifacts, "failure-"+name+".txt")
	_ = os.WriteFile(path, b.Bytes(), 0o644)
	AddReportEntry("cluster dump", path)
	GinkgoWriter.Printf("cluster state dumped to %s\n%s", path, tail(b.String(), 200))
})

func tail(s string, lines int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// kubectl runs kubectl against the cluster, as a user would, and returns its combined output.
func kubectl(args ...string) (string, error) {
	return kubectlIn("", args...)
}

func kubectlIn(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectlBin, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// newNamespace creates a namespace for one spec and deletes it afterwards.
func newNamespace(prefix string) string {
	ns := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1_000_000)
	out, err := kubectl("create", "namespace", ns)
	Expect(err).NotTo(HaveOccurred(), out)
	DeferCleanup(func() { _, _ = kubectl("delete", "namespace", ns, "--wait=false") })
	return ns
}
