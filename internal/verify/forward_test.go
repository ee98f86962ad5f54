package verify

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
)

func TestForwardHeaders(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t, configured(func(c *Config) {
		c.ForwardClaims = []ClaimHeader{
			{Claim: "sub", Header: "x-user"},
			{Claim: "groups", Header: "X-Groups"},
			{Claim: "realm_access.roles", Header: "X-Roles"},
			{Claim: "level", Header: "X-Level"},
			{Claim: "big", Header: "X-Big"},
			{Claim: "verified", Header: "X-Verified"},
			{Claim: "org", Header: "X-Org"},
			{Claim: "evil", Header: "X-Evil"},
			{Claim: "absent", Header: "X-Absent"},
			{Claim: "nothing", Header: "X-Nothing"},
			{Claim: "dns", Header: "X-DNs"},
			{Claim: "dn", Header: "X-DN"},
		}
	}))
	c, err := v.Verify(newToken(t, k,
		withClaim("groups", []string{"dev", "ops"}),
		withClaim("realm_access", map[string]any{"roles": []string{"admin"}}),
		withClaim("level", 3),
		withClaim("big", json.Number("12345678901234567890")),
		withClaim("verified", true),
		withClaim("org", map[string]any{"id": 1}),
		withClaim("evil", "x\r\nX-Admin: true"),
		withClaim("nothing", nil),
		withClaim("dns", []string{"cn=x,ou=admins"}),
		withClaim("dn", "cn=x,ou=admins"),
	), t0)
	if err != nil {
		t.Fatal(err)
	}
	want := http.Header{
		"X-User":     {"alice"},
		"X-Groups":   {"dev,ops"},
		"X-Roles":    {"admin"},
		"X-Level":    {"3"},
		"X-Big":      {"12345678901234567890"},
		"X-Verified": {"true"},
		"X-Dn":       {"cn=x,ou=admins"}, // a single string is forwarded whole
	}
	if got := v.ForwardHeaders(c); !reflect.DeepEqual(got, want) {
		t.Errorf("ForwardHeaders = %v\nwant %v", got, want)
	}
	names := v.ForwardedHeaderNames()
	if len(names) != 12 || names[0] != "X-User" || names[9] != "X-Nothing" {
		t.Errorf("ForwardedHeaderNames = %v", names)
	}
}

// The headers are built once per verified token and reused by every request carrying it
// (from the cache), but never across Verifiers of different configurations.
func TestForwardHeadersComputedOncePerVerifier(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t, configured(func(c *Config) {
		c.ForwardClaims = []ClaimHeader{{Claim: "sub", Header: "X-User"}}
	}))
	tok := newToken(t, k)
	c, err := v.Verify(tok, t0)
	if err != nil {
		t.Fatal(err)
	}
	first := v.ForwardHeaders(c)
	cached, err := v.Verify(tok, t0)
	if err != nil {
		t.Fatal(err)
	}
	again := v.ForwardHeaders(cached)
	if reflect.ValueOf(first).Pointer() != reflect.ValueOf(again).Pointer() {
		t.Error("a cached token's headers were built again")
	}
	for name, vals := range first {
		if len(vals) != cap(vals) {
			t.Errorf("%s: a shared slice with spare capacity (%d/%d) lets an append write into it", name, len(vals), cap(vals))
		}
	}

	other := newVerifier(t, configured(func(c *Config) {
		c.ForwardClaims = []ClaimHeader{{Claim: "sub", Header: "X-Subject"}}
	}))
	if got, want := other.ForwardHeaders(c), (http.Header{"X-Subject": {"alice"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("another configuration got %v, want %v", got, want)
	}
	if got, want := v.ForwardHeaders(c), (http.Header{"X-User": {"alice"}}); !reflect.DeepEqual(got, want) {
		t.Errorf("after another configuration, got %v, want %v", got, want)
	}
}
