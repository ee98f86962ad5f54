//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenkeeper/tokenkeeper/internal/inject"
)

// clientPod is a pod that is not injected, to call other pods from with `tokencheck get`.
func clientPod(ns, name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: client
    image: %[3]s
    imagePullPolicy: Never
    args: [echo, "--listen=:8080"]
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
`, ns, name, os.Getenv("TOKENCHECK_IMAGE"))
}

// The kind cluster enforces NetworkPolicies with kube-network-policies (hack/kind/netpol), so
// this spec shows the TokenPolicy's NetworkPolicy itself closing the app's port, where the
// loopback spec shows the app's bind doing it.
var _ = Describe("An injected app bound to every address, opted out of the loopback check", func() {
	It("is reachable around the sidecar from other pods until its TokenPolicy enables the NetworkPolicy, then only through the sidecar", func() {
		ns := loopbackPolicy("e2e-netpol")
		peerNS := newNamespace("e2e-netpol-peer")
		apply(injectedApp(ns, "orders", ":8080", inject.AnnotationAllowNonLoopback, "true"))
		apply(clientPod(ns, "client"))
		apply(clientPod(peerNS, "client"))
		out, err := kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/orders", "pod/client", "--timeout=180s")
		Expect(err).NotTo(HaveOccurred(), out)
		out, err = kubectl("wait", "-n", peerNS, "--for=condition=Ready", "pod/client", "--timeout=180s")
		Expect(err).NotTo(HaveOccurred(), out)

		pod := &corev1.Pod{}
		Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "orders"}, pod)).To(Succeed())
		Expect(pod.Labels["tokenkeeper.dev/policy"]).To(Equal("orders-api"))
		appURL := fmt.Sprintf("http://%s:8080/api", pod.Status.PodIP)
		sidecarURL := fmt.Sprintf("http://%s:15080/api", pod.Status.PodIP)
		// From a pod in the app's namespace and from one in another namespace.
		callers := []string{ns, peerNS}
		get := func(from string, args ...string) string {
			out, _ := kubectl(append([]string{"exec", "-n", from, "client", "--", "/tokencheck", "get"}, args...)...)
			return out
		}
		setNetworkPolicy := func(enabled bool) {
			out, err := kubectl("patch", "tokenpolicy", "orders-api", "-n", ns, "--type=merge",
				"-p", fmt.Sprintf(`{"spec":{"networkPolicy":{"enabled":%t}}}`, enabled))
			Expect(err).NotTo(HaveOccurred(), out)
			Eventually(func() bool {
				err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "orders-api-tokenkeeper"}, &networkingv1.NetworkPolicy{})
				if err != nil && !apierrors.IsNotFound(err) {
					Expect(err).NotTo(HaveOccurred())
				}
				return err == nil
			}, 30*time.Second, 500*time.Millisecond).Should(Equal(enabled), "the NetworkPolicy exists exactly while enabled")
		}

		By("the control: with no NetworkPolicy, both pods reach the app without a token")
		for _, from := range callers {
			Expect(get(from, appURL)).To(ContainSubstring("status 200 from echo"), "from %s", from)
		}

		By("once the TokenPolicy enables its NetworkPolicy, the app port times out from both pods")
		setNetworkPolicy(true)
		for _, from := range callers {
			tries := 0
			Eventually(func() string { tries++; return get(from, appURL) }, 30*time.Second, time.Second).
				Should(HavePrefix("error:"), "from %s", from)
			GinkgoWriter.Printf("from %s: the app port was closed at try %d after the NetworkPolicy was applied\n", from, tries)
		}
		for _, from := range callers {
			out := get(from, appURL)
			Expect(out).To(HavePrefix("error:"), "from %s", from)
			// Dropped by the enforcer, so the connection never opens: no refusal, no answer.
			Expect(out).To(ContainSubstring("Timeout"), "from %s", from)
		}

		By("the sidecar's port still answers both: 401 without a token, 200 from the app with a valid one")
		token := signFromSecret(ns, "issuer", nil)
		for _, from := range callers {
			Expect(get(from, sidecarURL)).To(Equal("status 401"), "from %s", from)
			Expect(get(from, "--token="+token, sidecarURL)).To(Equal("status 200 from echo"), "from %s", from)
		}

		By("NetworkPolicies add up: another one admitting the app port opens it again, until it is deleted")
		apply(fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: open-app, namespace: %s}
spec:
  podSelector: {matchLabels: {tokenkeeper.dev/policy: orders-api}}
  policyTypes: [Ingress]
  ingress: [{ports: [{protocol: TCP, port: 8080}]}]
`, ns))
		for _, from := range callers {
			Eventually(func() string { return get(from, appURL) }, 30*time.Second, time.Second).
				Should(ContainSubstring("status 200 from echo"), "from %s", from)
		}
		out, err = kubectl("delete", "networkpolicy", "-n", ns, "open-app")
		Expect(err).NotTo(HaveOccurred(), out)
		for _, from := range callers {
			Eventually(func() string { return get(from, appURL) }, 30*time.Second, time.Second).
				Should(HavePrefix("error:"), "from %s", from)
		}

		By("disabling the NetworkPolicy opens the app port again: it was the NetworkPolicy that closed it")
		setNetworkPolicy(false)
		for _, from := range callers {
			Eventually(func() string { return get(from, appURL) }, 30*time.Second, time.Second).
				Should(ContainSubstring("status 200 from echo"), "from %s", from)
		}
	})
})
