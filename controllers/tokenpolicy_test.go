package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
)

func getTP(t *testing.T, ns, name string) *tkv1.TokenPolicy {
	t.Helper()
	tp := &tkv1.TokenPolicy{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, tp); err != nil {
		t.Fatal(err)
	}
	return tp
}

func bundle(ns, name string) (map[string]string, error) {
	cm := &corev1.ConfigMap{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name + "-bundle"}, cm); err != nil {
		return nil, err
	}
	return cm.Data, nil
}

func bundleKIDs(t *testing.T, data map[string]string) []string {
	t.Helper()
	set, err := jwks.Parse([]byte(data[policy.BundleJWKS]))
	if err != nil {
		t.Fatal(err)
	}
	return kidsOf(set)
}

func condition(conds []metav1.Condition, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func tokenPolicy(ns, name string, sources ...tkv1.TrustedKeySource) *tkv1.TokenPolicy {
	return &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: tkv1.TokenPolicySpec{
		Issuer: "https://issuer.example", Audiences: []string{"orders"}, TrustedKeys: sources,
	}}
}

func TestTokenPolicyBundleFollowsItsSigningKeyThroughRotations(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, operator.Options{})
	create(t, newSigningKey(ns, "orders", withRotation(10*time.Second, 2*time.Second, 20*time.Second)))
	tp := tokenPolicy(ns, "orders-api", tkv1.TrustedKeySource{SigningKeyRef: &tkv1.LocalObjectReference{Name: "orders"}})
	tp.Spec.MaxTokenLifetime = &metav1.Duration{Duration: 5 * time.Second}
	tp.Spec.ClockSkew = &metav1.Duration{Duration: 5 * time.Second} // 5s + 5s fits in retainFor 20s
	create(t, tp)
	first := waitReady(t, ns, "orders", 20*time.Second).Status.ActiveKID

	var data map[string]string
	eventually(t, 20*time.Second, "a bundle with the active key", func() error {
		var err error
		if data, err = bundle(ns, "orders-api"); err != nil {
			return err
		}
		if !contains(bundleKIDs(t, data), first) {
			return fmt.Errorf("bundle lacks %s", first)
		}
		return nil
	})
	// The bundle's policy is the TokenPolicy manifest and builds a verifier configuration.
	parsed, err := policy.ParseTokenPolicy([]byte(data[policy.BundlePolicy]))
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := policy.Config(parsed); err != nil || cfg.Issuer != "https://issuer.example" || cfg.Audiences[0] != "orders" {
		t.Errorf("bundle policy maps to %+v (%v)", cfg, err)
	}
	if _, err := policy.ParseRevocationList([]byte(data[policy.BundleRevocations])); err != nil {
		t.Errorf("bundle revocations: %v", err)
	}
	got := getTP(t, ns, "orders-api")
	if c := condition(got.Status.Conditions, tkv1.ConditionReady); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready = %+v", c)
	}
	eventually(t, 20*time.Second, "KeySourcesSecure True for a SigningKey source", func() error {
		if c := condition(getTP(t, ns, "orders-api").Status.Conditions, tkv1.ConditionKeySourcesSecure); c.Status != metav1.ConditionTrue {
			return fmt.Errorf("KeySourcesSecure = %+v", c)
		}
		return nil
	})
	if c := condition(got.Status.Conditions, tkv1.ConditionRetentionCoversTokens); c.Status != metav1.ConditionTrue {
		t.Errorf("RetentionCoversTokens = %+v", c)
	}

	// A rotation reaches the bundle: the next key appears before it signs.
	eventually(t, 20*time.Second, "the next key in the bundle", func() error {
		sk := getSK(t, ns, "orders")
		if sk.Status.NextKID == "" {
			return fmt.Errorf("no next key yet")
		}
		data, err := bundle(ns, "orders-api")
		if err != nil {
			return err
		}
		if !contains(bundleKIDs(t, data), sk.Status.NextKID) {
			return fmt.Errorf("bundle lacks the next key %s", sk.Status.NextKID)
		}
		return nil
	})
}

func TestTokenPolicyConditionsSayWhatIsWrong(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, operator.Options{})

	// A SigningKey that drops retired keys before the policy's tokens expire.
	create(t, newSigningKey(ns, "short", withRotation(time.Hour, time.Second, 30*time.Minute)))
	short := tokenPolicy(ns, "short-retention", tkv1.TrustedKeySource{SigningKeyRef: &tkv1.LocalObjectReference{Name: "short"}})
	short.Spec.MaxTokenLifetime = &metav1.Duration{Duration: time.Hour}
	create(t, short)
	// A missing SigningKey and an unreachable IdP.
	create(t, tokenPolicy(ns, "broken",
		tkv1.TrustedKeySource{SigningKeyRef: &tkv1.LocalObjectReference{Name: "nowhere"}},
		tkv1.TrustedKeySource{JWKSURI: "http://127.0.0.1:1/jwks.json", AllowInsecureHTTP: true}))

	eventually(t, 20*time.Second, "the retention warning", func() error {
		c := condition(getTP(t, ns, "short-retention").Status.Conditions, tkv1.ConditionRetentionCoversTokens)
		if c.Status != metav1.ConditionFalse || c.Reason != tkv1.ReasonRetentionTooShort || !strings.Contains(c.Message, "SigningKey short keeps retired keys 30m0s") {
			return fmt.Errorf("condition %+v", c)
		}
		return nil
	})
	eventually(t, 20*time.Second, "the resolution problems", func() error {
		tp := getTP(t, ns, "broken")
		c := condition(tp.Status.Conditions, tkv1.ConditionKeysResolved)
		if c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "SigningKey nowhere: not found") || !strings.Contains(c.Message, "trustedKeys[1].jwksURI: refused: the address is loopback") {
			return fmt.Errorf("KeysResolved %+v", c)
		}
		if r := condition(tp.Status.Conditions, tkv1.ConditionReady); r.Status != metav1.ConditionFalse || r.Reason != tkv1.ReasonNoKeys {
			return fmt.Errorf("Ready %+v", r)
		}
		return nil
	})
}

func TestTokenPolicyBundlesRemoteJWKSAndRevocations(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, operator.Options{JWKSAllowLocalAddresses: true})
	idpKey, err := keys.Generate(nil, keys.Params{Algorithm: "RS256"})
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "max-age=300")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{idpKey.PublicJWK()}})
	}))
	defer idp.Close()

	create(t, tokenPolicy(ns, "external", tkv1.TrustedKeySource{JWKSURI: idp.URL + "/jwks.json", AllowInsecureHTTP: true}))
	eventually(t, 20*time.Second, "the IdP key in the bundle", func() error {
		data, err := bundle(ns, "external")
		if err != nil {
			return err
		}
		if !contains(bundleKIDs(t, data), idpKey.KID) {
			return fmt.Errorf("no IdP key")
		}
		return nil
	})

	// Revoking the IdP's key and a subject reaches the bundle.
	create(t, &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "incident"}, Spec: tkv1.RevocationListSpec{
		Keys:     []tkv1.RevokedKey{{KID: idpKey.KID}},
		Subjects: []tkv1.RevokedSubject{{Subject: "mallory", NotBefore: metav1.Now()}},
	}})
	eventually(t, 20*time.Second, "revocations in the bundle", func() error {
		data, err := bundle(ns, "external")
		if err != nil {
			return err
		}
		if contains(bundleKIDs(t, data), idpKey.KID) {
			return fmt.Errorf("revoked key still in the bundle")
		}
		rl, err := policy.ParseRevocationList([]byte(data[policy.BundleRevocations]))
		if err != nil {
			return err
		}
		if len(rl.Spec.Subjects) != 1 || rl.Spec.Subjects[0].Subject != "mallory" {
			return fmt.Errorf("revocations %+v", rl.Spec)
		}
		return nil
	})
	// A jwksURI over plain http is allowed but named as a risk.
	eventually(t, 20*time.Second, "KeySourcesSecure False naming trustedKeys[0]", func() error {
		c := condition(getTP(t, ns, "external").Status.Conditions, tkv1.ConditionKeySourcesSecure)
		if c.Status != metav1.ConditionFalse || c.Reason != tkv1.ReasonInsecureJWKSURI || !strings.Contains(c.Message, "trustedKeys[0].jwksURI "+idp.URL) {
			return fmt.Errorf("KeySourcesSecure = %+v", c)
		}
		return nil
	})
	// The reconciles the RevocationList triggered reused the fetched set (max-age=300).
	if n := hits.Load(); n != 1 {
		t.Errorf("the IdP was asked %d times, want once within its max-age", n)
	}
}

func TestAHangingIdPInOneNamespaceDelaysNoOtherNamespace(t *testing.T) {
	nsA, nsB := newNamespace(t), newNamespace(t)
	release := make(chan struct{})
	var asked atomic.Int32
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		select { // never answers while the test runs
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	startManager(t, operator.Options{JWKSAllowLocalAddresses: true})
	// Namespace A: many policies on the hanging IdP, created first.
	for i := range 8 {
		create(t, tokenPolicy(nsA, fmt.Sprintf("hang-%d", i), tkv1.TrustedKeySource{JWKSURI: fmt.Sprintf("%s/jwks-%d", hang.URL, i), AllowInsecureHTTP: true}))
	}
	eventually(t, 10*time.Second, "the hanging fetches under way", func() error {
		if asked.Load() == 0 {
			return fmt.Errorf("not asked yet")
		}
		return nil
	})
	hangStart := time.Now()

	// Namespace B: a SigningKey policy, ready and rotated while A's fetches still hang.
	create(t, newSigningKey(nsB, "orders", withRotation(time.Hour, time.Second, 2*time.Hour)))
	first := waitReady(t, nsB, "orders", 20*time.Second).Status.ActiveKID
	create(t, tokenPolicy(nsB, "orders-api", tkv1.TrustedKeySource{SigningKeyRef: &tkv1.LocalObjectReference{Name: "orders"}}))
	start := time.Now()
	eventually(t, 20*time.Second, "B's bundle", func() error {
		data, err := bundle(nsB, "orders-api")
		if err != nil {
			return err
		}
		if !contains(bundleKIDs(t, data), first) {
			return fmt.Errorf("bundle lacks %s", first)
		}
		return nil
	})
	ready := time.Since(start)
	sk := getSK(t, nsB, "orders")
	if sk.Annotations == nil {
		sk.Annotations = map[string]string{}
	}
	sk.Annotations[tkv1.AnnotationRotateRequestedAt] = time.Now().UTC().Format(time.RFC3339)
	if err := k8sClient.Update(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	eventually(t, 20*time.Second, "B's rotated key in its bundle", func() error {
		next := getSK(t, nsB, "orders").Status.ActiveKID
		if next == "" || next == first {
			return fmt.Errorf("no new key yet")
		}
		data, err := bundle(nsB, "orders-api")
		if err != nil {
			return err
		}
		if !contains(bundleKIDs(t, data), next) {
			return fmt.Errorf("bundle lacks the new key %s", next)
		}
		return nil
	})
	rotated := time.Since(start)
	t.Logf("B's bundle in %v, its rotated key in %v, while A's IdP hung for %v", ready, rotated, time.Since(hangStart))
	if hung := time.Since(hangStart); hung >= jwks.DefaultFetchTimeout {
		t.Errorf("A's fetches timed out (%v) before B was measured: the test proves nothing", hung)
	}
	if ready > time.Second || rotated > 3*time.Second {
		t.Errorf("B waited: bundle after %v (want under 1s), rotation after %v", ready, rotated)
	}
	// A's policies say what is wrong without naming what answered.
	eventually(t, 20*time.Second, "A's condition", func() error {
		c := condition(getTP(t, nsA, "hang-0").Status.Conditions, tkv1.ConditionKeysResolved)
		if c.Status != metav1.ConditionFalse || (c.Message != "trustedKeys[0].jwksURI: timed out" && c.Message != "trustedKeys[0].jwksURI: waiting for the first fetch") {
			return fmt.Errorf("KeysResolved %+v", c)
		}
		return nil
	})
}

func TestRevocationVolumeNeverStopsAKeyFromBeingPublished(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, operator.Options{})
	// Three near-full RevocationLists: together far past a ConfigMap's 1 MiB.
	exp := metav1.NewTime(time.Now().Add(24 * time.Hour).Truncate(time.Second))
	for l := range 3 {
		rl := &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("big-%d", l)}}
		for i := range 5000 {
			rl.Spec.Tokens = append(rl.Spec.Tokens, tkv1.RevokedToken{JTI: fmt.Sprintf("%d-%06d-%s", l, i, strings.Repeat("j", 120)), ExpiresAt: exp})
		}
		create(t, rl)
	}
	create(t, newSigningKey(ns, "orders", withRotation(time.Hour, time.Second, 2*time.Hour)))
	first := waitReady(t, ns, "orders", 20*time.Second).Status.ActiveKID
	create(t, tokenPolicy(ns, "orders-api", tkv1.TrustedKeySource{SigningKeyRef: &tkv1.LocalObjectReference{Name: "orders"}}))
	eventually(t, 30*time.Second, "a bundle with the key and a truncated revocations file", func() error {
		data, err := bundle(ns, "orders-api")
		if err != nil {
			return err
		}
		if !contains(bundleKIDs(t, data), first) {
			return fmt.Errorf("bundle lacks %s", first)
		}
		rl, err := policy.ParseRevocationList([]byte(data[policy.BundleRevocations]))
		if err != nil {
			return err
		}
		if rl.Annotations[policy.AnnotationRevocationsIncomplete] == "" || len(rl.Spec.Tokens) == 0 || len(rl.Spec.Tokens) >= 15000 {
			return fmt.Errorf("revocations hold %d tokens, marker %q", len(rl.Spec.Tokens), rl.Annotations[policy.AnnotationRevocationsIncomplete])
		}
		return nil
	})
	c := condition(getTP(t, ns, "orders-api").Status.Conditions, tkv1.ConditionRevocationsComplete)
	if c.Status != metav1.ConditionFalse || c.Reason != tkv1.ReasonRevocationsTruncated || !strings.Contains(c.Message, "of 15000 token and subject revocations did not fit") {
		t.Errorf("RevocationsComplete = %+v", c)
	}
	// The key rotates and the new key is still published.
	sk := getSK(t, ns, "orders")
	sk.Annotations = map[string]string{tkv1.AnnotationRotateRequestedAt: time.Now().UTC().Format(time.RFC3339)}
	if err := k8sClient.Update(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, 30*time.Second, "the rotated key in the bundle", func() error {
		next := getSK(t, ns, "orders").Status.ActiveKID
		if next == first {
			return fmt.Errorf("not rotated yet")
		}
		data, err := bundle(ns, "orders-api")
		if err != nil {
			return err
		}
		if !contains(bundleKIDs(t, data), next) {
			return fmt.Errorf("bundle lacks the new key %s", next)
		}
		return nil
	})
	t.Logf("rotated key in the bundle %s after the rotation request", time.Since(start).Round(time.Millisecond))
	if r := condition(getTP(t, ns, "orders-api").Status.Conditions, tkv1.ConditionReady); r.Status != metav1.ConditionTrue {
		t.Errorf("Ready = %+v", r)
	}
}
