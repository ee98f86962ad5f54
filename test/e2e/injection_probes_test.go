//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// probedApp is an injected Deployment of the echo app listening on listen, with the httpGet
// liveness and readiness probes an ordinary app has on its named port.
func probedApp(ns, name, listen string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: %[2]s}}
  template:
    metadata:
      labels: {app: %[2]s}
      annotations: {tokenkeeper.dev/inject: "true", tokenkeeper.dev/policy: orders-api}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: orders
        image: %[3]s
        imagePullPolicy: Never
        args: [echo, --listen=%[4]s]
        ports: [{name: http, containerPort: 8080}]
        livenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2, failureThreshold: 2}
        readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
`, ns, name, os.Getenv("TOKENCHECK_IMAGE"), listen)
}

func podOf(ns, app string) corev1.Pod {
	var pods corev1.PodList
	ExpectWithOffset(1, k8s.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{"app": app})).To(Succeed())
	ExpectWithOffset(1, pods.Items).To(HaveLen(1))
	return pods.Items[0]
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

var _ = Describe("An injected app's probes", func() {
	var ns string
	BeforeEach(func() {
		Expect(os.Getenv("TOKENCHECK_IMAGE")).NotTo(BeEmpty(), "TOKENCHECK_IMAGE must name the loaded tokencheck image")
		ns = newNamespace("e2e-probes")
		apply(signingKeyYAML(ns, "issuer", "1h", "2s", "1h"))
		apply(fmt.Sprintf(`apiVersion: tokenkeeper.dev/v1alpha1
kind: TokenPolicy
metadata: {name: orders-api, namespace: %s}
spec:
  issuer: %s
  audiences: [orders]
  trustedKeys: [{signingKeyRef: {name: issuer}}]
  rules:
  - {pathPrefix: /healthz, anonymous: true}
`, ns, e2eIssuer))
		waitReady(ns, "issuer", 60*time.Second)
	})

	It("reach an app bound to 127.0.0.1 through the sidecar, which keeps running, while its port is closed to other hosts", func() {
		apply(probedApp(ns, "loopback", "127.0.0.1:8080"))
		out, err := kubectl("rollout", "status", "-n", ns, "deploy/loopback", "--timeout=180s")
		Expect(err).NotTo(HaveOccurred(), out)
		pod := podOf(ns, "loopback")
		Expect(pod.Spec.Containers[0].LivenessProbe.HTTPGet.Path).To(Equal("/app-health/orders/livez"))
		Expect(pod.Labels).To(HaveKeyWithValue("tokenkeeper.dev/policy", "orders-api"))

		By("a dozen liveness periods later the app has never been restarted")
		Consistently(func(g Gomega) {
			p := podOf(ns, "loopback")
			g.Expect(podReady(p)).To(BeTrue(), "pod ready")
			for _, st := range p.Status.ContainerStatuses {
				g.Expect(st.RestartCount).To(BeZero(), "restarts of %s", st.Name)
			}
		}, 25*time.Second, 2*time.Second).Should(Succeed())

		By("from the API server's host (another network namespace) the app port is closed; the sidecar's port serves")
		out, err = kubectl("get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:15080/proxy/healthz", ns, pod.Name))
		Expect(err).NotTo(HaveOccurred(), "the sidecar's port, anonymous /healthz: %s", out)
		out, err = kubectl("get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:8080/proxy/healthz", ns, pod.Name))
		Expect(err).To(HaveOccurred(), "the app port answered from outside the pod: %s", out)
	})

	It("keep an app bound to 0.0.0.0 from becoming Ready, with an Event saying to bind it to 127.0.0.1", func() {
		apply(probedApp(ns, "wildcard", "0.0.0.0:8080"))
		var pod corev1.Pod
		Eventually(func(g Gomega) {
			pod = podOf(ns, "wildcard")
			var running bool
			for _, st := range pod.Status.ContainerStatuses {
				running = running || (st.Name == "orders" && st.State.Running != nil)
			}
			g.Expect(running).To(BeTrue(), "the app container runs")
		}, 180*time.Second, 2*time.Second).Should(Succeed())

		Eventually(func(g Gomega) {
			var events corev1.EventList
			g.Expect(k8s.List(context.Background(), &events, client.InNamespace(ns))).To(Succeed())
			var msgs []string
			for _, e := range events.Items {
				if e.InvolvedObject.Name == pod.Name && e.Reason == "Unhealthy" {
					msgs = append(msgs, e.Message)
				}
			}
			g.Expect(strings.Join(msgs, "\n")).To(ContainSubstring("bind it to 127.0.0.1"))
		}, 90*time.Second, 2*time.Second).Should(Succeed())

		Consistently(func() bool { return podReady(podOf(ns, "wildcard")) }, 20*time.Second, 2*time.Second).Should(BeFalse())
	})
})
