//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"

	. "github.com/onsi/gomega"
)

type signerStats struct {
	Sent, Accepted, Rejected, Errors int
	ByKID                            map[string]int `json:"byKID"`
	Reasons                          map[string]int `json:"reasons"`
}

// tokencheckManifests deploys the e2e issuer (mounting the SigningKey's Secret) and relying
// party (mounting its JWKS ConfigMap), hardened as any workload should be.
func tokencheckManifests(ns, sk string) string {
	image := os.Getenv("TOKENCHECK_IMAGE")
	Expect(image).NotTo(BeEmpty(), "TOKENCHECK_IMAGE must name the loaded tokencheck image")
	pod := func(name, args, volume string) string {
		return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: %[1]s
        image: %[3]s
        imagePullPolicy: Never
        args: [%[4]s]
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /stats, port: 8080}, periodSeconds: 2}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        volumeMounts: [{name: data, mountPath: /data, readOnly: true}]
      volumes:
      - %[5]s
`, name, ns, image, args, volume)
	}
	return pod("verifier", `verify, --jwks=/data/jwks.json`, fmt.Sprintf(`{name: data, configMap: {name: %s-jwks}}`, sk)) +
		"---\n" + fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: verifier, namespace: %s}
spec: {selector: {app: verifier}, ports: [{port: 80, targetPort: 8080}]}
`, ns) +
		"---\n" + pod("signer", fmt.Sprintf(`sign, --key-dir=/data, "--target=http://verifier.%s.svc/verify"`, ns), fmt.Sprintf(`{name: data, secret: {secretName: %s-signing-keys}}`, sk))
}

// readStats reads a tokencheck pod's counters through the API server's pod proxy.
func readStats(ns, app string) signerStats {
	var pods struct {
		Items []struct {
			Metadata struct{ Name string } `json:"metadata"`
		} `json:"items"`
	}
	out, err := kubectl("get", "pods", "-n", ns, "-l", "app="+app, "-o", "json")
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), out)
	ExpectWithOffset(1, json.Unmarshal([]byte(out), &pods)).To(Succeed())
	ExpectWithOffset(1, pods.Items).To(HaveLen(1))
	out, err = kubectl("get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:8080/proxy/stats", ns, pods.Items[0].Metadata.Name))
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), out)
	var s signerStats
	ExpectWithOffset(1, json.Unmarshal([]byte(out), &s)).To(Succeed(), out)
	return s
}
