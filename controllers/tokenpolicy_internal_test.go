package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
)

func TestInsecureKeySourcesNamesPlainHTTPOnly(t *testing.T) {
	got := insecureKeySources([]tkv1.TrustedKeySource{
		{SigningKeyRef: &tkv1.LocalObjectReference{Name: "local"}},
		{JWKSURI: "https://idp.example/jwks"},
		{JWKSURI: "HTTP://idp.example/jwks", AllowInsecureHTTP: true},
		{JWKSURI: "http://tokenkeeper-discovery.tokenkeeper-system.svc/ns/sk/.well-known/jwks.json", AllowInsecureHTTP: true},
		{JWKSURI: "http://refused.example/jwks"}, // not fetched at all: KeysResolved says so
	})
	want := []string{"trustedKeys[2].jwksURI HTTP://idp.example/jwks",
		"trustedKeys[3].jwksURI http://tokenkeeper-discovery.tokenkeeper-system.svc/ns/sk/.well-known/jwks.json"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("insecureKeySources = %q, want %q", got, want)
	}
}

// BenchmarkFitRevocations renders 100 000 merged revocations into a bundle's budget, as
// the TokenPolicy controller does after each change of a large set.
func BenchmarkFitRevocations(b *testing.B) {
	merged := &tkv1.RevocationList{}
	merged.Name, merged.Namespace = "api", "shop"
	exp := metav1.NewTime(time.Unix(4102444800, 0))
	for i := range 100000 {
		merged.Spec.Tokens = append(merged.Spec.Tokens, tkv1.RevokedToken{JTI: fmt.Sprintf("revoked-%08d-4c55-4f5e-9a4b-2b8f0b0c1d2e", i), ExpiresAt: exp})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, omitted, err := fitRevocations(merged, maxBundleBytes); err != nil || omitted == "" {
			b.Fatal(err, omitted)
		}
	}
}

// The status is written whatever the reconcile meets: an input that cannot be read leaves
// Ready Unknown with the reason and observedGeneration where it was; a reconcile that
// succeeds without keys bumps observedGeneration though the policy is not Ready.
func TestTokenPolicyStatusIsWrittenOnEveryReconcile(t *testing.T) {
	tp := &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "api", Generation: 3}, Spec: tkv1.TokenPolicySpec{
		Issuer: "https://issuer.example", Audiences: []string{"api"},
		TrustedKeys: []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "missing"}}},
	}}
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = tkv1.AddToScheme(scheme)
	for _, c := range []struct {
		name      string
		listFails bool
		ready     metav1.ConditionStatus
		reason    string
		observed  int64
	}{
		{"RevocationLists cannot be listed", true, metav1.ConditionUnknown, tkv1.ReasonInputsUnreadable, 0},
		{"no keys yet", false, metav1.ConditionFalse, tkv1.ReasonNoKeys, 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl := fake.NewClientBuilder().WithScheme(scheme).WithObjects(tp.DeepCopy()).WithStatusSubresource(&tkv1.TokenPolicy{}).
				WithInterceptorFuncs(interceptor.Funcs{List: func(ctx context.Context, cl client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
					if _, ok := list.(*tkv1.RevocationListList); ok && c.listFails {
						return errors.New("etcd is on fire")
					}
					return cl.List(ctx, list, opts...)
				}}).Build()
			r := &TokenPolicyReconciler{Client: cl, Clock: clock.RealClock{}, Fetcher: jwks.NewFetcher(jwks.FetcherOptions{})}
			_, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(tp)})
			if (err != nil) != c.listFails {
				t.Fatalf("Reconcile: %v", err)
			}
			got := &tkv1.TokenPolicy{}
			if err := cl.Get(context.Background(), client.ObjectKeyFromObject(tp), got); err != nil {
				t.Fatal(err)
			}
			ready := meta.FindStatusCondition(got.Status.Conditions, tkv1.ConditionReady)
			if ready == nil || ready.Status != c.ready || ready.Reason != c.reason {
				t.Errorf("Ready: %+v, want %s/%s", ready, c.ready, c.reason)
			}
			if c.listFails && (ready == nil || !strings.Contains(ready.Message, "etcd is on fire")) {
				t.Errorf("Ready does not say what failed: %+v", ready)
			}
			for _, typ := range []string{tkv1.ConditionKeysResolved, tkv1.ConditionRetentionCoversTokens, tkv1.ConditionKeySourcesSecure, tkv1.ConditionRevocationsComplete} {
				if meta.FindStatusCondition(got.Status.Conditions, typ) == nil {
					t.Errorf("condition %s missing", typ)
				}
			}
			if got.Status.ObservedGeneration != c.observed {
				t.Errorf("observedGeneration %d, want %d", got.Status.ObservedGeneration, c.observed)
			}
		})
	}
}
