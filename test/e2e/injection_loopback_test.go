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
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
)

// loopbackPolicy creates a namespace with a SigningKey and a Ready TokenPolicy orders-api.
func loopbackPolicy(prefix string) string {
	ns := newNamespace(prefix)
	apply(signingKeyYAML(ns, "issuer", "30s", "15s", "60s"))
	apply(fmt.Sprintf(`apiVersion: tokenkeeper.dev/v1alpha1
kind: TokenPolicy
metadata: {name: orders-api, namespace: %[1]s}
spec:
  issuer: %[2]s
  audiences: [orders]
  trustedKeys: [{signingKeyRef: {name: issuer}}]
`, ns, e2eIssuer))
	waitReady(ns, "issuer", 60*time.Second)
	Eventually(func() bool {
		tp := &tkv1.TokenPolicy{}
		Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "orders-api"}, tp)).To(Succeed())
		return meta.IsStatusConditionTrue(tp.Status.Conditions, tkv1.ConditionReady)
	}, 60*time.Second, time.Second).Should(BeTrue())
	return ns
}

// injectedApp is an injected tokencheck echo pod listening on listen, with httpGet liveness
// and readiness probes on its port (which the webhook moves to the sidecar's admin port).
// annotations are added as `key: "value"` pairs.
func injectedApp(ns, name, listen string, annotations ...string) string {
	extra := ""
	for i := 0; i+1 < len(annotations); i += 2 {
		extra += fmt.Sprintf(", %s: %q", annotations[i], annotations[i+1])
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %[2]s
  namespace: %[1]s
  labels: {app: %[2]s}
  annotations: {tokenkeeper.dev/inject: "true", tokenkeeper.dev/policy: orders-api%[5]s}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: orders
    image: %[3]s
    imagePullPolicy: Never
    args: [echo, "--listen=%[4]s"]
    ports: [{name: http, containerPort: 8080}]
    livenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2, failureThreshold: 1}
    readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
`, ns, name, os.Getenv("TOKENCHECK_IMAGE"), listen, extra)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

var _ = Describe("An injected app bound to loopback", func() {
	It("is probed through the sidecar, keeps running, and cannot be reached on its port from another pod", func() {
		ns := loopbackPolicy("e2e-loopback")
		apply(injectedApp(ns, "orders", "127.0.0.1:8080"))
		// A pod that is not injected, to call from.
		apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: client, namespace: %[1]s}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: client
    image: %[2]s
    imagePullPolicy: Never
    args: [echo, "--listen=:8080"]
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
`, ns, os.Getenv("TOKENCHECK_IMAGE")))
		out, err := kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/orders", "pod/client", "--timeout=180s")
		Expect(err).NotTo(HaveOccurred(), out)

		pod := &corev1.Pod{}
		Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "orders"}, pod)).To(Succeed())
		app := pod.Spec.Containers[0]
		By("the app's probes call the sidecar's admin port")
		Expect(app.LivenessProbe.HTTPGet).NotTo(BeNil())
		Expect(app.LivenessProbe.HTTPGet.Path).To(Equal("/app-health/orders/livez"))
		Expect(app.ReadinessProbe.HTTPGet.Path).To(Equal("/app-health/orders/readyz"))
		Expect(pod.Labels["tokenkeeper.dev/policy"]).To(Equal("orders-api"))

		By("the liveness probe keeps passing: the app is never restarted")
		Consistently(func() int32 {
			p := &corev1.Pod{}
			Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(pod), p)).To(Succeed())
			Expect(podReady(p)).To(BeTrue(), "pod stays Ready")
			for _, st := range p.Status.ContainerStatuses {
				if st.Name == "orders" {
					return st.RestartCount
				}
			}
			return -1
		}, 30*time.Second, 2*time.Second).Should(BeZero())

		By("from another pod, the app port refuses connections and the sidecar's port asks for a token")
		get := func(url string) string {
			out, _ := kubectl("exec", "-n", ns, "client", "--", "/tokencheck", "get", url)
			return out
		}
		Expect(get(fmt.Sprintf("http://%s:8080/api", pod.Status.PodIP))).To(ContainSubstring("connection refused"))
		Expect(get(fmt.Sprintf("http://%s:15080/api", pod.Status.PodIP))).To(ContainSubstring("status 401"))
	})
})

var _ = Describe("An injected app bound to every address", func() {
	It("never becomes Ready, and the pod's Event says to bind 127.0.0.1", func() {
		ns := loopbackPolicy("e2e-nonloopback")
		apply(injectedApp(ns, "orders", ":8080"))

		By("the kubelet records the sidecar's reason as a readiness probe failure")
		Eventually(func() string {
			var events corev1.EventList
			Expect(k8s.List(context.Background(), &events, client.InNamespace(ns))).To(Succeed())
			for _, e := range events.Items {
				if e.InvolvedObject.Name == "orders" && e.Reason == "Unhealthy" &&
					strings.Contains(e.Message, "Readiness probe failed") && strings.Contains(e.Message, "bind it to 127.0.0.1") {
					return e.Message
				}
			}
			return ""
		}, 3*time.Minute, 2*time.Second).ShouldNot(BeEmpty())

		By("the pod stays not Ready")
		Consistently(func() bool {
			p := &corev1.Pod{}
			Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "orders"}, p)).To(Succeed())
			return podReady(p)
		}, 20*time.Second, 2*time.Second).Should(BeFalse())
	})
})
