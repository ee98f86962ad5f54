package controllers_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
)

// The API server itself refuses invalid objects, naming the field.
func TestInvalidObjectsAreRejectedWithFieldPaths(t *testing.T) {
	ns := newNamespace(t)
	rsa := func(bits int32) *int32 { return &bits }
	d := func(s string) *metav1.Duration { v, _ := time.ParseDuration(s); return &metav1.Duration{Duration: v} }
	policy := func(mut func(*tkv1.TokenPolicySpec)) *tkv1.TokenPolicy {
		tp := &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"}, Spec: tkv1.TokenPolicySpec{
			Issuer:      "https://issuer.example",
			Audiences:   []string{"api"},
			TrustedKeys: []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "k"}}},
		}}
		mut(&tp.Spec)
		return tp
	}
	sk := func(mut func(*tkv1.SigningKeySpec)) *tkv1.SigningKey {
		s := &tkv1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "k"}}
		mut(&s.Spec)
		return s
	}
	cases := []struct {
		name string
		obj  client.Object
		want []string
	}{
		{"an RSA size on an EC algorithm", sk(func(s *tkv1.SigningKeySpec) { s.Algorithm, s.RSAKeySize = tkv1.ES256, rsa(2048) }), []string{"spec.rsaKeySize", "applies only to RS"}},
		{"an RSA size that is too small", sk(func(s *tkv1.SigningKeySpec) { s.Algorithm, s.RSAKeySize = tkv1.RS256, rsa(1024) }), []string{"spec.rsaKeySize", "1024"}},
		{"a symmetric algorithm", sk(func(s *tkv1.SigningKeySpec) { s.Algorithm = "HS256" }), []string{"spec.algorithm", "HS256"}},
		{"publishAhead not shorter than interval", sk(func(s *tkv1.SigningKeySpec) {
			s.Rotation = tkv1.RotationPolicy{Interval: d("1h"), PublishAhead: d("1h"), RetainFor: d("1h")}
		}), []string{"spec.rotation.publishAhead", "shorter than interval"}},
		{"an interval under 10s", sk(func(s *tkv1.SigningKeySpec) {
			s.Rotation = tkv1.RotationPolicy{Interval: d("5s"), PublishAhead: d("1s"), RetainFor: d("1h")}
		}), []string{"spec.rotation.interval", "at least 10s"}},
		{"an issuer with a query", sk(func(s *tkv1.SigningKeySpec) { s.Issuer = "https://a.example/x?y=1" }), []string{"spec.issuer", "without query"}},
		{"an issuer with a trailing slash", sk(func(s *tkv1.SigningKeySpec) { s.Issuer = "https://a.example/" }), []string{"spec.issuer"}},
		{"a policy without audiences", policy(func(s *tkv1.TokenPolicySpec) { s.Audiences = nil }), []string{"spec.audiences"}},
		{"a trusted key source with both a SigningKey and a jwksURI", policy(func(s *tkv1.TokenPolicySpec) {
			s.TrustedKeys[0].JWKSURI = "https://idp.example/jwks"
		}), []string{"spec.trustedKeys[0]", "exactly one of signingKeyRef or jwksURI"}},
		{"an anonymous rule that requires claims", policy(func(s *tkv1.TokenPolicySpec) {
			s.Rules = []tkv1.RouteRule{{PathPrefix: "/healthz", Anonymous: true, RequiredClaims: []tkv1.ClaimRequirement{{Name: "sub"}}}}
		}), []string{"spec.rules[0].requiredClaims", "anonymous"}},
		{"a rule path without a leading slash", policy(func(s *tkv1.TokenPolicySpec) {
			s.Rules = []tkv1.RouteRule{{PathPrefix: "api"}}
		}), []string{"spec.rules[0].pathPrefix"}},
		{"a token source with both header and cookie", policy(func(s *tkv1.TokenPolicySpec) {
			s.TokenSource = &tkv1.TokenSource{Header: "Authorization", Cookie: "session"}
		}), []string{"spec.tokenSource", "exactly one of header or cookie"}},
		{"a clock skew over 10 minutes", policy(func(s *tkv1.TokenPolicySpec) { s.ClockSkew = d("1h") }), []string{"spec.clockSkew"}},
		{"a revoked key without a kid", &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"},
			Spec: tkv1.RevocationListSpec{Keys: []tkv1.RevokedKey{{Reason: "x"}}}}, []string{"spec.keys[0].kid"}},
		{"a revoked token without a jti", &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r"},
			Spec: tkv1.RevocationListSpec{Tokens: []tkv1.RevokedToken{{ExpiresAt: metav1.Now()}}}}, []string{"spec.tokens[0].jti"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := k8sClient.Create(context.Background(), c.obj)
			if err == nil {
				_ = k8sClient.Delete(context.Background(), c.obj)
				t.Fatalf("accepted; want an error naming %v", c.want)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// Defaults make a minimal SigningKey complete.
func TestMinimalSigningKeyGetsDefaults(t *testing.T) {
	ns := newNamespace(t)
	s := &tkv1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "minimal"}}
	create(t, s)
	got := getSK(t, ns, "minimal")
	if got.Spec.Algorithm != tkv1.ES256 || got.Spec.Rotation.Interval == nil || got.Spec.Rotation.Interval.Duration != 24*time.Hour ||
		got.Spec.Rotation.PublishAhead.Duration != time.Hour || got.Spec.Rotation.RetainFor.Duration != 24*time.Hour {
		t.Errorf("defaults not applied: %+v", got.Spec.Rotation)
	}
}
