//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
)

const e2eIssuer = "https://e2e.tokenkeeper.dev"

// portForward forwards a local port to a Service, as a developer would, and returns its URL.
func portForward(ns, svc string) string {
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, kubectlBin, "port-forward", "-n", ns, "svc/"+svc, "0:80")
	out, err := cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	cmd.Stderr = GinkgoWriter
	Expect(cmd.Start()).To(Succeed())
	DeferCleanup(func() { cancel(); _ = cmd.Wait() })
	re := regexp.MustCompile(`Forwarding from 127\.0\.0\.1:(\d+)`)
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		if m := re.FindStringSubmatch(lines.Text()); m != nil {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return "http://127.0.0.1:" + m[1]
		}
	}
	Fail("kubectl port-forward did not start")
	return ""
}

// signFromSecret signs like an issuer mounting the SigningKey's Secret.
func signFromSecret(ns, sk string, claims map[string]any) string {
	s := secretOf(ns, sk)
	var key jose.JSONWebKey
	Expect(key.UnmarshalJSON(s.Data["active.jwk"])).To(Succeed())
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	Expect(err).NotTo(HaveOccurred())
	now := time.Now()
	all := map[string]any{"iss": e2eIssuer, "aud": "orders", "sub": "alice", "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix()}
	for k, v := range claims {
		all[k] = v
	}
	tok, err := jwt.Signed(signer).Claims(all).Serialize()
	Expect(err).NotTo(HaveOccurred())
	return tok
}

type answer struct {
	status  int
	wwwAuth string
	headers map[string][]string
}

func call(url, token string, extra map[string]string) answer {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range extra {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, wwwAuth: resp.Header.Get("WWW-Authenticate")}
	if resp.StatusCode == http.StatusOK {
		var body struct {
			Headers map[string][]string `json:"headers"`
		}
		if json.NewDecoder(resp.Body).Decode(&body) == nil {
			a.headers = body.Headers
		}
	}
	return a
}

var _ = Describe("A Deployment annotated for injection", func() {
	It("gets the native sidecar, which answers 200, 401 and 403 through its Service and follows rotations without a restart", func() {
		image := os.Getenv("TOKENCHECK_IMAGE")
		ns := newNamespace("e2e-inject")
		apply(signingKeyYAML(ns, "issuer", "30s", "15s", "60s"))
		apply(fmt.Sprintf(`apiVersion: tokenkeeper.dev/v1alpha1
kind: TokenPolicy
metadata: {name: orders-api, namespace: %[1]s}
spec:
  issuer: %[2]s
  audiences: [orders]
  trustedKeys: [{signingKeyRef: {name: issuer}}]
  rules:
  - {pathPrefix: /healthz, anonymous: true}
  - pathPrefix: /admin
    requiredClaims: [{name: role, values: [admin]}]
  forwardClaims: [{claim: sub, header: X-User}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: orders, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: orders}}
  template:
    metadata:
      labels: {app: orders}
      annotations: {tokenkeeper.dev/inject: "true", tokenkeeper.dev/policy: orders-api}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: orders
        image: %[3]s
        imagePullPolicy: Never
        args: [echo, --listen=127.0.0.1:8080]
        ports: [{name: http, containerPort: 8080}]
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {name: orders, namespace: %[1]s}
spec: {selector: {app: orders}, ports: [{port: 80, targetPort: http}]}
`, ns, e2eIssuer, image))
		waitReady(ns, "issuer", 60*time.Second)
		Eventually(func() bool {
			tp := &tkv1.TokenPolicy{}
			Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "orders-api"}, tp)).To(Succeed())
			return meta.IsStatusConditionTrue(tp.Status.Conditions, tkv1.ConditionReady)
		}, 60*time.Second, time.Second).Should(BeTrue())
		out, err := kubectl("rollout", "status", "-n", ns, "deploy/orders", "--timeout=180s")
		Expect(err).NotTo(HaveOccurred(), out)

		var pods corev1.PodList
		Expect(k8s.List(context.Background(), &pods, client.InNamespace(ns), client.MatchingLabels{"app": "orders"})).To(Succeed())
		Expect(pods.Items).To(HaveLen(1))
		pod := pods.Items[0]
		Expect(pod.Spec.InitContainers).To(HaveLen(1))
		sidecar := pod.Spec.InitContainers[0]
		Expect(sidecar.Name).To(Equal("tokenkeeper-sidecar"))
		Expect(sidecar.RestartPolicy).NotTo(BeNil())
		Expect(*sidecar.RestartPolicy).To(Equal(corev1.ContainerRestartPolicyAlways))
		Expect(pod.Annotations["tokenkeeper.dev/status"]).To(Equal("injected"))

		url := portForward(ns, "orders")
		By("an anonymous health path needs no token")
		Expect(call(url+"/healthz", "", nil).status).To(Equal(http.StatusOK))
		By("a path the app could resolve differently gets 400 before any rule applies")
		Expect(call(url+"/healthz/..;/admin", "", nil).status).To(Equal(http.StatusBadRequest))
		By("no token and a bad token get 401 with WWW-Authenticate")
		a := call(url+"/api", "", nil)
		Expect(a.status).To(Equal(http.StatusUnauthorized))
		Expect(a.wwwAuth).To(HavePrefix("Bearer"))
		a = call(url+"/api", "not.a.token", nil)
		Expect(a.status).To(Equal(http.StatusUnauthorized))
		Expect(a.wwwAuth).To(ContainSubstring(`error="invalid_token"`))
		By("a valid token gets 200; the app sees the claim header, never the token nor a spoofed copy")
		a = call(url+"/api", signFromSecret(ns, "issuer", nil), map[string]string{"X-User": "mallory"})
		Expect(a.status).To(Equal(http.StatusOK))
		Expect(a.headers["X-User"]).To(Equal([]string{"alice"}))
		Expect(a.headers).NotTo(HaveKey("Authorization"))
		By("a valid token that breaks a route rule gets 403")
		Expect(call(url+"/admin", signFromSecret(ns, "issuer", nil), nil).status).To(Equal(http.StatusForbidden))
		Expect(call(url+"/admin", signFromSecret(ns, "issuer", map[string]any{"role": "admin"}), nil).status).To(Equal(http.StatusOK))

		By("a client signing with the mounted Secret through rotations is never rejected")
		apply(fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: signer, namespace: %[1]s}
spec:
  selector: {matchLabels: {app: signer}}
  template:
    metadata: {labels: {app: signer}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: signer
        image: %[2]s
        imagePullPolicy: Never
        args: [sign, --key-dir=/data, --bearer, --audience=orders, --issuer=%[3]s, "--target=http://orders.%[1]s.svc/api"]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /stats, port: 8080}, periodSeconds: 2}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
      volumes: [{name: data, secret: {secretName: issuer-signing-keys}}]
`, ns, image, e2eIssuer))
		out, err = kubectl("rollout", "status", "-n", ns, "deploy/signer", "--timeout=120s")
		Expect(err).NotTo(HaveOccurred(), out)
		var stats signerStats
		Eventually(func() int {
			stats = readStats(ns, "signer")
			return len(stats.ByKID)
		}, 4*time.Minute, 2*time.Second).Should(BeNumerically(">=", 3), "tokens signed by at least three keys")
		Expect(stats.Rejected).To(BeZero(), "valid tokens rejected by the sidecar: %v", stats.Reasons)
		Expect(stats.Errors).To(BeZero(), "signer errors: %v", stats.Reasons)
		GinkgoWriter.Printf("through the sidecar: %d tokens with %d keys, all accepted: %v\n", stats.Sent, len(stats.ByKID), stats.ByKID)

		Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(&pod), &pod)).To(Succeed())
		for _, st := range pod.Status.InitContainerStatuses {
			Expect(st.RestartCount).To(BeZero(), "the sidecar picked up rotations without a restart")
		}
	})
})
