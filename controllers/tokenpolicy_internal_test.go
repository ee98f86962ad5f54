package controllers

import (
	"strings"
	"testing"

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
