//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

func signingKeyYAML(ns, name, interval, ahead, retain string) string {
	return fmt.Sprintf(`apiVersion: tokenkeeper.dev/v1alpha1
kind: SigningKey
metadata:
  name: %s
  namespace: %s
spec:
  algorithm: ES256
  rotation:
    interval: %s
    publishAhead: %s
    retainFor: %s
`, name, ns, interval, ahead, retain)
}

func apply(manifest string) {
	out, err := kubectlIn(manifest, "apply", "-f", "-")
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), out)
}

func getSK(ns, name string) *tkv1.SigningKey {
	sk := &tkv1.SigningKey{}
	ExpectWithOffset(1, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, sk)).To(Succeed())
	return sk
}

func waitReady(ns, name string, timeout time.Duration) *tkv1.SigningKey {
	var sk *tkv1.SigningKey
	EventuallyWithOffset(1, func() bool {
		sk = getSK(ns, name)
		return meta.IsStatusConditionTrue(sk.Status.Conditions, tkv1.ConditionReady)
	}, timeout, 250*time.Millisecond).Should(BeTrue(), "SigningKey %s/%s Ready", ns, name)
	return sk
}

func secretOf(ns, name string) *corev1.Secret {
	s := &corev1.Secret{}
	ExpectWithOffset(1, k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name + "-signing-keys"}, s)).To(Succeed())
	return s
}

func publishedKIDs(ns, name string) (map[string]bool, error) {
	cm := &corev1.ConfigMap{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name + "-jwks"}, cm); err != nil {
		return nil, err
	}
	set, err := jwks.Parse([]byte(cm.Data["jwks.json"]))
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, k := range set.Keys {
		out[k.KeyID] = true
	}
	return out, nil
}

func records(s *corev1.Secret) []keys.Record {
	var sf struct {
		Keys []keys.Record `json:"keys"`
	}
	ExpectWithOffset(1, json.Unmarshal(s.Data[keys.FileState], &sf)).To(Succeed())
	return sf.Keys
}

var _ = Describe("The CRDs", func() {
	It("are installed and listed by kubectl", func() {
		for _, crd := range []string{"signingkeys.tokenkeeper.dev", "tokenpolicies.tokenkeeper.dev", "revocationlists.tokenkeeper.dev"} {
			out, err := kubectl("get", "crd", crd, "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}")
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(Equal("True"), crd)
		}
		out, err := kubectl("api-resources", "--api-group=tokenkeeper.dev", "-o", "name")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("signingkeys.tokenkeeper.dev"))
	})

	It("make kubectl refuse invalid objects, naming the field", func() {
		ns := newNamespace("e2e-invalid")
		out, err := kubectlIn(fmt.Sprintf(`apiVersion: tokenkeeper.dev/v1alpha1
kind: SigningKey
metadata: {name: bad, namespace: %s}
spec: {algorithm: ES256, rsaKeySize: 2048}
`, ns), "apply", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("spec.rsaKeySize"))

		out, err = kubectlIn(signingKeyYAML(ns, "bad", "1h", "2h", "1h"), "apply", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("spec.rotation.publishAhead"))

		out, err = kubectlIn(fmt.Sprintf(`apiVersion: tokenkeeper.dev/v1alpha1
kind: TokenPolicy
metadata: {name: bad, namespace: %s}
spec:
  issuer: https://issuer.example
  audiences: [api]
  trustedKeys: [{signingKeyRef: {name: k}, jwksURI: "https://idp.example/jwks"}]
`, ns), "apply", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("spec.trustedKeys[0]"))
	})
})

var _ = Describe("A SigningKey", func() {
	It("becomes Ready, writes its Secret and a public-only JWKS, and publishes each key before it signs", func() {
		ns := newNamespace("e2e-rotation")
		const ahead = 8 * time.Second
		apply(signingKeyYAML(ns, "rot", "20s", "8s", "20s"))
		first := waitReady(ns, "rot", 60*time.Second).Status.ActiveKID

		s := secretOf(ns, "rot")
		Expect(string(s.Type)).To(Equal("tokenkeeper.dev/signing-keys"))
		Expect(s.Data).To(HaveKey("active.pem"))
		Expect(string(s.Data["active.kid"])).To(Equal(first))
		cm := &corev1.ConfigMap{}
		Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "rot-jwks"}, cm)).To(Succeed())
		for k, v := range cm.Data {
			Expect(v).NotTo(ContainSubstring(`"d"`), k)
			Expect(v).NotTo(ContainSubstring("PRIVATE KEY"), k)
		}

		// Watch one rotation: the next key must be in the JWKS for publishAhead before the
		// Secret names it active.
		firstPublished, firstActive := map[string]time.Time{}, map[string]time.Time{}
		var second string
		Eventually(func() string {
			now := time.Now()
			if kids, err := publishedKIDs(ns, "rot"); err == nil {
				for kid := range kids {
					if _, ok := firstPublished[kid]; !ok {
						firstPublished[kid] = now
					}
				}
			}
			kid := string(secretOf(ns, "rot").Data["active.kid"])
			if _, ok := firstActive[kid]; !ok {
				firstActive[kid] = now
			}
			if kid != first {
				second = kid
			}
			return second
		}, 60*time.Second, 200*time.Millisecond).ShouldNot(BeEmpty())
		Expect(firstPublished).To(HaveKey(second))
		Expect(firstActive[second].Sub(firstPublished[second])).To(BeNumerically(">=", ahead-time.Second),
			"the next key was in the JWKS for %v before it signed; publishAhead is %v", firstActive[second].Sub(firstPublished[second]), ahead)
		kids, err := publishedKIDs(ns, "rot")
		Expect(err).NotTo(HaveOccurred())
		Expect(kids).To(HaveKey(first), "the retired key stays published")
	})

	It("never rejects a valid token while a pod signs with the mounted Secret through several rotations", func() {
		ns := newNamespace("e2e-tokens")
		apply(signingKeyYAML(ns, "issuer", "20s", "10s", "30s"))
		waitReady(ns, "issuer", 60*time.Second)
		apply(tokencheckManifests(ns, "issuer"))
		out, err := kubectl("rollout", "status", "-n", ns, "deploy/verifier", "deploy/signer", "--timeout=120s")
		Expect(err).NotTo(HaveOccurred(), out)

		// Let at least three keys sign (two rotations seen by the signer), then read both sides.
		var stats signerStats
		Eventually(func() int {
			stats = readStats(ns, "signer")
			return len(stats.ByKID)
		}, 150*time.Second, 2*time.Second).Should(BeNumerically(">=", 3), "tokens signed by at least three keys")
		verifier := readStats(ns, "verifier")
		Expect(stats.Sent).To(BeNumerically(">", 50))
		Expect(stats.Rejected).To(BeZero(), "valid tokens rejected: signer saw %v; verifier counted %v", stats.Reasons, verifier.Reasons)
		Expect(stats.Errors).To(BeZero(), "signer errors: %v", stats.Reasons)
		Expect(verifier.Rejected).To(BeZero(), "verifier rejections: %v", verifier.Reasons)
		Expect(verifier.Accepted).To(BeNumerically(">=", stats.Accepted))
		GinkgoWriter.Printf("signed %d tokens with %d keys, all accepted: %v\n", stats.Sent, len(stats.ByKID), stats.ByKID)
	})

	It("regenerates nothing and publishes nothing late when the manager pod dies mid-rotation", func() {
		ns := newNamespace("e2e-crash")
		const ahead = 15 * time.Second
		apply(signingKeyYAML(ns, "crash", "30s", "15s", "60s"))
		oldActive := waitReady(ns, "crash", 60*time.Second).Status.ActiveKID
		var next string
		Eventually(func() string {
			next = getSK(ns, "crash").Status.NextKID
			return next
		}, 60*time.Second, 250*time.Millisecond).ShouldNot(BeEmpty())
		before := secretOf(ns, "crash")

		out, err := kubectl("delete", "pod", "-n", managerNS, "-l", "app.kubernetes.io/component=manager", "--wait=false")
		Expect(err).NotTo(HaveOccurred(), out)
		Eventually(func() string {
			return getSK(ns, "crash").Status.ActiveKID
		}, 2*time.Minute, 500*time.Millisecond).Should(Equal(next), "the prepared key takes over after the restart")

		after := secretOf(ns, "crash")
		for _, kid := range []string{oldActive, next} {
			Expect(after.Data[keys.KeyFile(kid)]).To(Equal(before.Data[keys.KeyFile(kid)]), "key %s unchanged", kid)
		}
		for _, r := range records(after) {
			if r.KID == next {
				Expect(r.ActivatedAt.Sub(*r.PublishedAt)).To(BeNumerically(">=", ahead), "published for publishAhead before it signed")
			}
			if r.KID == oldActive {
				Expect(r.State).To(Equal(keys.Retired))
			}
		}
	})
})

var _ = Describe("Two manager replicas", func() {
	It("elect one leader, and the leader's death hands over", func() {
		out, err := kubectl("scale", "deploy", "-n", managerNS, "tokenkeeper-manager", "--replicas=2")
		Expect(err).NotTo(HaveOccurred(), out)
		DeferCleanup(func() { _, _ = kubectl("scale", "deploy", "-n", managerNS, "tokenkeeper-manager", "--replicas=1") })
		out, err = kubectl("rollout", "status", "deploy", "-n", managerNS, "tokenkeeper-manager", "--timeout=120s")
		Expect(err).NotTo(HaveOccurred(), out)

		holder := func() string {
			var lease coordinationv1.Lease
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: managerNS, Name: "manager.tokenkeeper.dev"}, &lease); err != nil || lease.Spec.HolderIdentity == nil {
				return ""
			}
			return *lease.Spec.HolderIdentity
		}
		var leader string
		Eventually(func() string { leader = holder(); return leader }, time.Minute, time.Second).ShouldNot(BeEmpty())
		leaderPod := strings.SplitN(leader, "_", 2)[0] // the identity is <hostname>_<uuid>
		out, err = kubectl("delete", "pod", "-n", managerNS, leaderPod, "--wait=false")
		Expect(err).NotTo(HaveOccurred(), out)
		Eventually(func() string {
			h := holder()
			if h == leader {
				return ""
			}
			return h
		}, 90*time.Second, time.Second).ShouldNot(BeEmpty(), "a new leader")

		ns := newNamespace("e2e-handover")
		apply(signingKeyYAML(ns, "after", "1h", "2s", "1h"))
		waitReady(ns, "after", 60*time.Second)
	})
})
