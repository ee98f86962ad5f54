package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestEveryAlgorithmVerifiesAValidToken(t *testing.T) {
	for _, alg := range Algorithms {
		t.Run(alg, func(t *testing.T) {
			k := testKey(t, alg)
			v := newVerifier(t, trusting(k))
			c, err := v.Verify(newToken(t, k), t0)
			wantReason(t, c, err, "")
			if c.Algorithm != alg || c.KeyID != k.KID || c.Subject != "alice" || c.Issuer != issuer || c.ID != "token-1" {
				t.Errorf("claims %+v", c)
			}
			if !c.Expiry.Equal(t0.Add(time.Hour)) || !c.IssuedAt.Equal(t0.Add(-time.Minute)) {
				t.Errorf("times exp=%s iat=%s", c.Expiry, c.IssuedAt)
			}
		})
	}
}

func TestAKeySetMayMixAlgorithms(t *testing.T) {
	es, ed := testKey(t, "ES384"), testKey(t, "EdDSA")
	v := newVerifier(t, trusting(es, ed))
	for _, k := range []string{"ES384", "EdDSA"} {
		c, err := v.Verify(newToken(t, testKey(t, k)), t0)
		wantReason(t, c, err, "")
	}
}

func TestClaimChecks(t *testing.T) {
	k := testKey(t, "ES256")
	skew := DefaultClockSkew
	lifetimeCap := configured(func(c *Config) { c.MaxTokenLifetime = 2 * time.Hour })
	require := func(reqs ...ClaimRequirement) fixtureOpt {
		return configured(func(c *Config) { c.RequiredClaims = reqs })
	}
	cases := []struct {
		name    string
		token   []tokenOpt
		fixture []fixtureOpt
		now     time.Time
		want    Reason
	}{
		{name: "a token expired within the skew is accepted", token: []tokenOpt{withClaim("exp", t0.Add(-skew+time.Second).Unix())}},
		{name: "a token expired exactly skew ago is rejected", token: []tokenOpt{withClaim("exp", t0.Add(-skew).Unix())}, want: ReasonExpired},
		{name: "a token expired beyond the skew is rejected", token: []tokenOpt{withClaim("exp", t0.Add(-skew-time.Second).Unix())}, want: ReasonExpired},
		{name: "with no skew a token expiring now is rejected", token: []tokenOpt{withClaim("exp", t0.Unix())},
			fixture: []fixtureOpt{configured(func(c *Config) { c.ClockSkew = 0 })}, want: ReasonExpired},
		{name: "a fractional exp is honoured to the sub-second", token: []tokenOpt{withClaim("exp", fractional(t0, 500*time.Millisecond))},
			now: t0.Add(skew + 499*time.Millisecond)},
		{name: "a fractional exp expires at its sub-second", token: []tokenOpt{withClaim("exp", fractional(t0, 500*time.Millisecond))},
			now: t0.Add(skew + 500*time.Millisecond), want: ReasonExpired},
		{name: "a token without exp is rejected", token: []tokenOpt{withoutClaim("exp")}, want: ReasonMissingExp},
		{name: "a null exp counts as missing", token: []tokenOpt{withClaim("exp", nil)}, want: ReasonMissingExp},
		{name: "an exp that is a string is malformed", token: []tokenOpt{withClaim("exp", "tomorrow")}, want: ReasonMalformed},
		{name: "an absurdly distant exp is accepted without overflow", token: []tokenOpt{withClaim("exp", json.Number("1e300"))}},
		{name: "nbf within the skew is accepted", token: []tokenOpt{withClaim("nbf", t0.Add(skew).Unix())}},
		{name: "nbf beyond the skew is rejected", token: []tokenOpt{withClaim("nbf", t0.Add(skew+time.Second).Unix())}, want: ReasonNotYetValid},
		{name: "iat within the skew is accepted", token: []tokenOpt{withClaim("iat", t0.Add(skew).Unix()), withoutClaim("nbf")}},
		{name: "iat beyond the skew is rejected", token: []tokenOpt{withClaim("iat", t0.Add(skew+time.Second).Unix()), withoutClaim("nbf")}, want: ReasonIssuedInFuture},
		{name: "a token without iat or nbf is accepted without a lifetime cap", token: []tokenOpt{withoutClaim("iat"), withoutClaim("nbf")}},
		{name: "a lifetime at the cap is accepted", token: []tokenOpt{issuedAt(t0.Add(-time.Hour), 2*time.Hour)}, fixture: []fixtureOpt{lifetimeCap}},
		{name: "a lifetime above the cap is rejected", token: []tokenOpt{issuedAt(t0.Add(-time.Hour), 2*time.Hour+time.Second)}, fixture: []fixtureOpt{lifetimeCap}, want: ReasonLifetimeExceeded},
		{name: "a missing iat under a lifetime cap is rejected", token: []tokenOpt{withoutClaim("iat")}, fixture: []fixtureOpt{lifetimeCap}, want: ReasonMissingIAT},
		{name: "a wrong issuer is rejected", token: []tokenOpt{withClaim("iss", "https://evil.example")}, want: ReasonWrongIssuer},
		{name: "an issuer differing only by a trailing slash is rejected", token: []tokenOpt{withClaim("iss", issuer+"/")}, want: ReasonWrongIssuer},
		{name: "a missing issuer is rejected", token: []tokenOpt{withoutClaim("iss")}, want: ReasonWrongIssuer},
		{name: "an issuer that is not a string is malformed", token: []tokenOpt{withClaim("iss", 7)}, want: ReasonMalformed},
		{name: "a wrong audience string is rejected", token: []tokenOpt{withClaim("aud", "other")}, want: ReasonWrongAudience},
		{name: "a wrong audience array is rejected", token: []tokenOpt{withClaim("aud", []string{"other", "more"})}, want: ReasonWrongAudience},
		{name: "an audience array holding ours is accepted", token: []tokenOpt{withClaim("aud", []string{"other", "api"})}},
		{name: "any configured audience is enough", token: []tokenOpt{withClaim("aud", "web")},
			fixture: []fixtureOpt{configured(func(c *Config) { c.Audiences = []string{"api", "web"} })}},
		{name: "a missing audience is rejected", token: []tokenOpt{withoutClaim("aud")}, want: ReasonWrongAudience},
		{name: "an audience array with a number is malformed", token: []tokenOpt{withClaim("aud", []any{"api", 1})}, want: ReasonMalformed},
		{name: "a required claim that is present is accepted", token: []tokenOpt{withClaim("tenant", "a")}, fixture: []fixtureOpt{require(ClaimRequirement{Name: "tenant"})}},
		{name: "a required claim that is absent is rejected", fixture: []fixtureOpt{require(ClaimRequirement{Name: "tenant"})}, want: ReasonMissingClaim},
		{name: "a required claim that is null is rejected", token: []tokenOpt{withClaim("tenant", nil)}, fixture: []fixtureOpt{require(ClaimRequirement{Name: "tenant"})}, want: ReasonMissingClaim},
		{name: "a required value among the scope words is accepted", token: []tokenOpt{withClaim("scope", "read  write admin")},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "scope", Values: []string{"write"}})}},
		{name: "a scope without the required word is rejected", token: []tokenOpt{withClaim("scope", "read writer")},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "scope", Values: []string{"write"}})}, want: ReasonClaimMismatch},
		{name: "a required value among the scp words is accepted", token: []tokenOpt{withClaim("scp", "User.Read Files.Write")},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "scp", Values: []string{"Files.Write"}})}},
		{name: "a scope array element matches whole", token: []tokenOpt{withClaim("scope", []string{"read write"})},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "scope", Values: []string{"write"}})}, want: ReasonClaimMismatch},
		{name: "an array element holding a space is one value", token: []tokenOpt{withClaim("roles", []string{"readonly admin"})},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "roles", Values: []string{"admin"}})}, want: ReasonClaimMismatch},
		{name: "an array element holding a space matches whole", token: []tokenOpt{withClaim("roles", []string{"readonly admin"})},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "roles", Values: []string{"readonly admin"}})}},
		{name: "a string claim other than scope is not split", token: []tokenOpt{withClaim("role", "readonly admin")},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "role", Values: []string{"admin"}})}, want: ReasonClaimMismatch},
		{name: "a nested claim named scope is not split", token: []tokenOpt{withClaim("ext", map[string]any{"scope": "read admin"})},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "ext.scope", Values: []string{"admin"}})}, want: ReasonClaimMismatch},
		{name: "a required value in an array claim is accepted", token: []tokenOpt{withClaim("groups", []string{"dev", "ops"})},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "groups", Values: []string{"sec", "ops"}})}},
		{name: "a nested claim is reached through dots", token: []tokenOpt{withClaim("realm_access", map[string]any{"roles": []string{"admin"}})},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "realm_access.roles", Values: []string{"admin"}})}},
		{name: "a top-level claim named with dots is found", token: []tokenOpt{withClaim("https://example.com/roles", []string{"admin"})},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "https://example.com/roles", Values: []string{"admin"}})}},
		{name: "a number claim matches its JSON text", token: []tokenOpt{withClaim("level", 3)},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "level", Values: []string{"3"}})}},
		{name: "a boolean claim matches true", token: []tokenOpt{withClaim("email_verified", true)},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "email_verified", Values: []string{"true"}})}},
		{name: "an object claim never matches a value", token: []tokenOpt{withClaim("org", map[string]any{"id": "x"})},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "org", Values: []string{"x"}})}, want: ReasonClaimMismatch},
		{name: "typ is not checked by default", token: []tokenOpt{withHeader("typ", "JWT")}},
		{name: "the required typ is accepted", token: []tokenOpt{withHeader("typ", "at+jwt")}, fixture: []fixtureOpt{configured(func(c *Config) { c.RequiredTokenType = "at+jwt" })}},
		{name: "the required typ in another case is accepted", token: []tokenOpt{withHeader("typ", "AT+JWT")}, fixture: []fixtureOpt{configured(func(c *Config) { c.RequiredTokenType = "at+jwt" })}},
		{name: "the required typ with the application/ prefix is accepted", token: []tokenOpt{withHeader("typ", "application/at+jwt")}, fixture: []fixtureOpt{configured(func(c *Config) { c.RequiredTokenType = "at+jwt" })}},
		{name: "an ID token's typ is rejected where an access token is required", token: []tokenOpt{withHeader("typ", "JWT")}, fixture: []fixtureOpt{configured(func(c *Config) { c.RequiredTokenType = "at+jwt" })}, want: ReasonWrongTokenType},
		{name: "a token without typ is rejected when one is required", token: []tokenOpt{withoutHeader("typ")}, fixture: []fixtureOpt{configured(func(c *Config) { c.RequiredTokenType = "at+jwt" })}, want: ReasonWrongTokenType},
		{name: "a typ that is not a string is rejected", token: []tokenOpt{withHeader("typ", 1)}, fixture: []fixtureOpt{configured(func(c *Config) { c.RequiredTokenType = "at+jwt" })}, want: ReasonWrongTokenType},
		{name: "another media type tree is not the required typ", token: []tokenOpt{withHeader("typ", "text/at+jwt")}, fixture: []fixtureOpt{configured(func(c *Config) { c.RequiredTokenType = "at+jwt" })}, want: ReasonWrongTokenType},
		{name: "every required claim must hold", token: []tokenOpt{withClaim("tenant", "a")},
			fixture: []fixtureOpt{require(ClaimRequirement{Name: "tenant"}, ClaimRequirement{Name: "email"})}, want: ReasonMissingClaim},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = t0
			}
			for _, cached := range []bool{true, false} {
				opts := append([]fixtureOpt{trusting(k)}, tc.fixture...)
				if !cached {
					opts = append(opts, withoutCache())
				}
				v := newVerifier(t, opts...)
				tok := newToken(t, k, tc.token...)
				c, err := v.Verify(tok, now)
				wantReason(t, c, err, tc.want)
				c, err = v.Verify(tok, now) // again: from the cache when accepted
				wantReason(t, c, err, tc.want)
			}
		})
	}
}

func TestClaimsGetReachesNestedValues(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t)
	c, err := v.Verify(newToken(t, k, withClaim("a", map[string]any{"b": map[string]any{"c": "deep"}}), withClaim("a.b", "flat")), t0)
	wantReason(t, c, err, "")
	for name, want := range map[string]any{"a.b.c": "deep", "a.b": "flat", "sub": "alice"} {
		if got, ok := c.Get(name); !ok || got != want {
			t.Errorf("Get(%q) = %v, %v; want %v", name, got, ok, want)
		}
	}
	if _, ok := c.Get("a.x"); ok {
		t.Error("Get found a claim that does not exist")
	}
	var nilClaims *Claims
	if _, ok := nilClaims.Get("sub"); ok {
		t.Error("nil Claims has claims")
	}
}

func TestUnknownKIDHookMayRefreshOnce(t *testing.T) {
	old, fresh := testKey(t, "ES256"), testKey(t, "EdDSA")
	var v *Verifier
	var calls []string
	v = newVerifier(t, trusting(old), withOptions(WithUnknownKIDHook(func(kid string) bool {
		calls = append(calls, kid)
		if kid == fresh.KID {
			v.SetKeySet(keySetOf(t, old, fresh))
			return true
		}
		return false
	})))
	c, err := v.Verify(newToken(t, fresh), t0)
	wantReason(t, c, err, "")
	_, err = v.Verify(newToken(t, fresh, withHeader("kid", "nope")), t0)
	wantReason(t, nil, err, ReasonUnknownKID)
	if len(calls) != 2 || calls[0] != fresh.KID || calls[1] != "nope" {
		t.Errorf("hook calls %q", calls)
	}
	var e *Error
	if !errors.As(err, &e) || e.KID() != "nope" {
		t.Errorf("unknown_kid error does not carry the kid: %v", err)
	}
}

// fractional is a NumericDate with a fraction of a second.
func fractional(t time.Time, frac time.Duration) json.Number {
	return json.Number(fmt.Sprintf("%d.%03d", t.Unix(), frac.Milliseconds()))
}
