package controllers_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/inject"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

// The real API server calls the manager's webhook, served with the certificate the manager
// issued itself, through the MutatingWebhookConfiguration users install (pointed at a local
// URL instead of the in-cluster Service).
func TestAPIServerInjectsTheSidecarThroughTheManagersWebhook(t *testing.T) {
	managerNS := newNamespace(t)
	addr := freeAddr(t)
	host, port := splitHostPort(t, addr)

	mwc := webhookConfigFromManifest(t, "https://"+addr+"/mutate-v1-pod", managerNS)
	create(t, mwc)
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), mwc) })

	startManager(t, operator.Options{
		WebhookPort: port, WebhookHost: host, Namespace: managerNS,
		WebhookCertHosts: []string{host}, WebhookCertSecret: "webhook-certs",
		MutatingWebhookConfiguration: mwc.Name, Inject: inject.DefaultConfig(),
	})
	eventually(t, 20*time.Second, "the caBundle injected", func() error {
		got := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := k8sClient.Get(context.Background(), client.ObjectKeyFromObject(mwc), got); err != nil {
			return err
		}
		if len(got.Webhooks[0].ClientConfig.CABundle) == 0 {
			return fmt.Errorf("no caBundle yet")
		}
		return nil
	})

	ns := newNamespace(t)
	create(t, &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "orders-api"}, Spec: tkv1.TokenPolicySpec{
		Issuer: "https://issuer.example", Audiences: []string{"orders"},
		TrustedKeys: []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "orders"}}},
	}})
	pod := func(name string, annotations map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "shop/app:1", Ports: ports}}},
		}
	}
	optIn := map[string]string{inject.AnnotationInject: "true", inject.AnnotationPolicy: "orders-api"}
	http := corev1.ContainerPort{Name: "http", ContainerPort: 8080}

	// The webhook may take a moment to serve with the new certificate.
	eventually(t, 20*time.Second, "an injected pod", func() error {
		p := pod("orders", optIn, http)
		if err := k8sClient.Create(context.Background(), p); err != nil {
			return err
		}
		return nil
	})
	stored := &corev1.Pod{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "orders"}, stored); err != nil {
		t.Fatal(err)
	}
	if len(stored.Spec.InitContainers) != 1 || stored.Spec.InitContainers[0].Name != inject.ContainerName {
		t.Fatalf("stored pod has no sidecar: %+v", stored.Spec.InitContainers)
	}
	if stored.Annotations[inject.AnnotationStatus] != inject.StatusInjected || stored.Spec.Containers[0].Ports[0].Name != "app-http" {
		t.Errorf("injection incomplete: annotations %v, app ports %v", stored.Annotations, stored.Spec.Containers[0].Ports)
	}
	if stored.Labels[inject.LabelPolicy] != "orders-api" {
		t.Errorf("injected pod lacks label %s: %v", inject.LabelPolicy, stored.Labels)
	}

	// The webhook's own output, as the API server stored it (defaulted), is what a
	// reinvocation sees: it is admitted unchanged. The same pod with a sidecar that does not
	// verify is a forgery and must be refused by the API server calling the webhook.
	copyOf := func(name string, change func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: stored.Annotations, Labels: stored.Labels}, Spec: *stored.Spec.DeepCopy()}
		change(p)
		return p
	}
	forgedSidecar := copyOf("forged-sidecar", func(p *corev1.Pod) {
		p.Spec.InitContainers[0].Image = "busybox"
		p.Spec.InitContainers[0].Command = []string{"sleep", "infinity"}
	})
	forgedStatus := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "forged-status", Annotations: map[string]string{
			inject.AnnotationInject: "true", inject.AnnotationPolicy: "orders-api", inject.AnnotationStatus: inject.StatusInjected,
		}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "shop/app:1", Ports: []corev1.ContainerPort{http}}}},
	}

	cases := []struct {
		name string
		pod  *corev1.Pod
		want string // substring of the refusal, or "" when admitted unchanged
	}{
		{"a pod that does not opt in is admitted unchanged", pod("plain", nil, http), ""},
		{"the webhook's own output, defaulted by the API server, is admitted as already injected", copyOf("own-output", func(*corev1.Pod) {}), ""},
		{"a pod naming a missing TokenPolicy is refused", pod("nopolicy", map[string]string{inject.AnnotationInject: "true", inject.AnnotationPolicy: "missing"}, http), "TokenPolicy " + ns + "/missing does not exist"},
		{"a pod with no port to protect is refused", pod("ambiguous", optIn, corev1.ContainerPort{Name: "a", ContainerPort: 1}, corev1.ContainerPort{Name: "b", ContainerPort: 2}), "set annotation tokenkeeper.dev/port"},
		{"a pod with a forged sidecar is refused", forgedSidecar, "is not the sidecar this webhook injects"},
		{"a pod whose status annotation claims a sidecar it lacks is refused", forgedStatus, "annotation tokenkeeper.dev/status=\"injected\" says the pod is injected"},
		{"a pod that does not opt in but is marked injected is refused", pod("forged-status-only", map[string]string{inject.AnnotationStatus: inject.StatusInjected}, http), "annotation tokenkeeper.dev/inject is not \"true\""},
		{"a pod that does not opt in but has a container named like the sidecar is refused", func() *corev1.Pod {
			p := pod("forged-sidecar-only", nil, http)
			always := corev1.ContainerRestartPolicyAlways
			p.Spec.InitContainers = []corev1.Container{{Name: inject.ContainerName, Image: "busybox", Command: []string{"sleep", "infinity"}, RestartPolicy: &always}}
			return p
		}(), "annotation tokenkeeper.dev/inject is not \"true\""},
		{"a copy of an injected pod whose app keeps its port name is refused", copyOf("app-port-kept", func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].Name = "http" }), "still has the name \"http\" the sidecar took over"},
		{"a hostNetwork pod is refused", func() *corev1.Pod { p := pod("hostnet", optIn, http); p.Spec.HostNetwork = true; return p }(), "spec.hostNetwork is true"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := k8sClient.Create(context.Background(), c.pod)
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(c.pod.Spec.InitContainers) != 0 && c.pod.Name != "own-output" {
					t.Errorf("unexpected injection")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want a refusal containing %q", err, c.want)
			}
		})
	}

	// The manager's own namespace never gets a sidecar.
	own := pod("own", optIn, http)
	own.Namespace = managerNS
	if err := k8sClient.Create(context.Background(), own); err != nil {
		t.Fatal(err)
	}
	if len(own.Spec.InitContainers) != 0 {
		t.Error("a pod in the manager's namespace was injected")
	}

	// Losing the certificate Secret is repaired: a new CA and certificate, a new caBundle,
	// and injection keeps working.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: managerNS, Name: "webhook-certs"}}
	before := currentCABundle(t, mwc.Name)
	if err := k8sClient.Delete(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "a new caBundle", func() error {
		if string(currentCABundle(t, mwc.Name)) == string(before) {
			return fmt.Errorf("caBundle unchanged")
		}
		return nil
	})
	eventually(t, 20*time.Second, "injection with the new certificate", func() error {
		p := pod(fmt.Sprintf("after-%d", time.Now().UnixNano()%100000), optIn, http)
		if err := k8sClient.Create(context.Background(), p); err != nil {
			return err
		}
		if len(p.Spec.InitContainers) != 1 {
			return fmt.Errorf("not injected")
		}
		return nil
	})
}

func currentCABundle(t *testing.T, name string) []byte {
	t.Helper()
	got := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Name: name}, got); err != nil {
		t.Fatal(err)
	}
	return got.Webhooks[0].ClientConfig.CABundle
}

// webhookConfigFromManifest loads config/webhook/manifests.yaml, pointed at url, with the
// manager namespace excluded like tokenkeeper-system is in a real install.
func webhookConfigFromManifest(t *testing.T, url, managerNS string) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	data, err := os.ReadFile("../config/webhook/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, mwc); err != nil {
		t.Fatal(err)
	}
	mwc.Name = "tokenkeeper-test-" + managerNS
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
		mwc.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system"},
		}}}
	}
	return mwc
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil {
		t.Fatal(err)
	}
	return addr[:i], port
}
