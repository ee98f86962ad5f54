package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
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
