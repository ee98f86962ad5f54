package verify

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// TestAttackCorpus: every token an attacker might send is rejected for its specific reason,
// with and without the cache, and twice (the second time through the cache where one is).
func TestAttackCorpus(t *testing.T) {
	es256 := testKey(t, "ES256")
	es384 := testKey(t, "ES384")
	rs256 := testKey(t, "RS256")
	ps256 := testKey(t, "PS256")
	attacker := namedKey(t, "attacker", "ES256")
	trusted := []*keys.Key{es256, es384, rs256, ps256}

	// Anything that fetches jku or x5u would hit this server.
	var fetched atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetched.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(mustJSON(t, map[string]any{"keys": []any{attacker.PublicJWK()}}))
	}))
	defer srv.Close()

	rsaPEM := publicPEM(t, rs256)
	rsaJWK := mustJSON(t, rs256.PublicJWK())
	attackerJWK := json.RawMessage(mustJSON(t, attacker.PublicJWK()))
	attackerCert := selfSigned(t, attacker)
	revoked := func(r *Revocations) fixtureOpt { return withOptions(WithRevocations(r)) }

	cases := []struct {
		name    string
		token   func(t *testing.T) string
		fixture []fixtureOpt
		want    Reason
	}{
		// Algorithm attacks.
		{name: "alg none with an empty signature", want: ReasonAlgNotAllowed,
			token: func(t *testing.T) string { return newToken(t, es256, signedAs("none", nil)) }},
		{name: "alg none spelled in capitals", want: ReasonAlgNotAllowed,
			token: func(t *testing.T) string { return newToken(t, es256, signedAs("none", nil), withHeader("alg", "NONE")) }},
		{name: "alg none keeping the original signature", want: ReasonAlgNotAllowed,
			token: func(t *testing.T) string {
				good := strings.Split(newToken(t, es256), ".")
				h := b64(mustJSON(t, map[string]any{"alg": "none", "kid": es256.KID}))
				return h + "." + good[1] + "." + good[2]
			}},
		{name: "no alg at all", want: ReasonAlgNotAllowed,
			token: func(t *testing.T) string { return newToken(t, es256, withoutHeader("alg")) }},
		{name: "HS256 keyed with the RSA public key PEM (algorithm confusion)", want: ReasonAlgNotAllowed,
			token: func(t *testing.T) string { return newToken(t, rs256, signedAs("HS256", rsaPEM)) }},
		{name: "HS256 keyed with the RSA public JWK bytes (algorithm confusion)", want: ReasonAlgNotAllowed,
			token: func(t *testing.T) string { return newToken(t, rs256, signedAs("HS256", rsaJWK)) }},
		{name: "HS512 keyed with the RSA public key PEM", want: ReasonAlgNotAllowed,
			token: func(t *testing.T) string { return newToken(t, rs256, signedAs("HS512", rsaPEM)) }},
		{name: "RS256 token under a kid pinned to PS256", want: ReasonAlgMismatch,
			token: func(t *testing.T) string { return newToken(t, ps256, signedAs("RS256", ps256.Private)) }},
		{name: "PS256 token under a kid pinned to RS256", want: ReasonAlgMismatch,
			token: func(t *testing.T) string { return newToken(t, rs256, signedAs("PS256", rs256.Private)) }},
		{name: "ES256 header under a kid pinned to ES384", want: ReasonAlgMismatch,
			token: func(t *testing.T) string { return newToken(t, es384, withHeader("alg", "ES256")) }},
		{name: "an algorithm outside the policy's allowed list", want: ReasonAlgNotAllowed,
			fixture: []fixtureOpt{configured(func(c *Config) { c.AllowedAlgorithms = []string{"ES256", "ES384", "PS256"} })},
			token:   func(t *testing.T) string { return newToken(t, rs256) }},

		// Key selection attacks.
		{name: "an unknown kid", want: ReasonUnknownKID,
			token: func(t *testing.T) string { return newToken(t, es256, withHeader("kid", "no-such-key")) }},
		{name: "a kid with path traversal", want: ReasonUnknownKID,
			token: func(t *testing.T) string { return newToken(t, es256, withHeader("kid", "../../../../dev/null")) }},
		{name: "a kid with SQL", want: ReasonUnknownKID,
			token: func(t *testing.T) string { return newToken(t, es256, withHeader("kid", "x' UNION SELECT 'secret' --")) }},
		{name: "a kid with a NUL byte", want: ReasonUnknownKID,
			token: func(t *testing.T) string { return newToken(t, es256, withHeader("kid", es256.KID+"\x00")) }},
		{name: "no kid", want: ReasonMissingKID,
			token: func(t *testing.T) string { return newToken(t, es256, withoutHeader("kid")) }},
		{name: "a kid that is a number", want: ReasonMalformed,
			token: func(t *testing.T) string { return newToken(t, es256, withHeader("kid", 7)) }},
		{name: "a signature by another key under a trusted kid", want: ReasonBadSignature,
			token: func(t *testing.T) string { return newToken(t, es256, signedBy(attacker)) }},
		{name: "a jku pointing at the attacker's JWKS", want: ReasonUnknownKID,
			token: func(t *testing.T) string {
				return newToken(t, attacker, withHeader("jku", srv.URL+"/jwks.json"))
			}},
		{name: "an x5u pointing at the attacker's certificate", want: ReasonUnknownKID,
			token: func(t *testing.T) string {
				return newToken(t, attacker, withHeader("x5u", srv.URL+"/cert.pem"))
			}},
		{name: "a jku pointing elsewhere under a trusted kid", want: ReasonBadSignature,
			token: func(t *testing.T) string {
				return newToken(t, es256, signedBy(attacker), withHeader("jku", srv.URL+"/jwks.json"))
			}},
		{name: "an embedded jwk of the attacker's key under a trusted kid", want: ReasonBadSignature,
			token: func(t *testing.T) string {
				return newToken(t, es256, signedBy(attacker), withHeader("jwk", attackerJWK))
			}},
		{name: "an embedded jwk of the attacker's key without kid", want: ReasonMissingKID,
			token: func(t *testing.T) string {
				return newToken(t, attacker, withoutHeader("kid"), withHeader("jwk", attackerJWK))
			}},
		{name: "an embedded x5c of the attacker's certificate under a trusted kid", want: ReasonBadSignature,
			token: func(t *testing.T) string {
				return newToken(t, es256, signedBy(attacker), withHeader("x5c", []string{attackerCert}))
			}},

		// Header extensions.
		{name: "an unknown critical header", want: ReasonUnsupportedHeader,
			token: func(t *testing.T) string {
				return newToken(t, es256, withHeader("crit", []string{"tokenkeeper.dev/x"}), withHeader("tokenkeeper.dev/x", 1))
			}},
		{name: "crit naming a registered header", want: ReasonUnsupportedHeader,
			token: func(t *testing.T) string { return newToken(t, es256, withHeader("crit", []string{"exp"})) }},
		{name: "an empty crit list", want: ReasonUnsupportedHeader,
			token: func(t *testing.T) string { return newToken(t, es256, withHeader("crit", []string{})) }},
		{name: "b64 false with crit (unencoded payload)", want: ReasonUnsupportedHeader,
			token: func(t *testing.T) string {
				return newToken(t, es256, withHeader("b64", false), withHeader("crit", []string{"b64"}))
			}},
		{name: "b64 false without crit", want: ReasonUnsupportedHeader,
			token: func(t *testing.T) string { return newToken(t, es256, withHeader("b64", false)) }},

		// Claims.
		{name: "a token without exp", want: ReasonMissingExp,
			token: func(t *testing.T) string { return newToken(t, es256, withoutClaim("exp")) }},
		{name: "a token expired beyond the skew", want: ReasonExpired,
			token: func(t *testing.T) string { return newToken(t, es256, withClaim("exp", t0.Add(-61*time.Second).Unix())) }},
		{name: "nbf in the future beyond the skew", want: ReasonNotYetValid,
			token: func(t *testing.T) string { return newToken(t, es256, withClaim("nbf", t0.Add(2*time.Minute).Unix())) }},
		{name: "iat in the future beyond the skew", want: ReasonIssuedInFuture,
			token: func(t *testing.T) string {
				return newToken(t, es256, withClaim("iat", t0.Add(2*time.Minute).Unix()), withoutClaim("nbf"))
			}},
		{name: "a lifetime above the cap", want: ReasonLifetimeExceeded,
			fixture: []fixtureOpt{configured(func(c *Config) { c.MaxTokenLifetime = time.Hour })},
			token:   func(t *testing.T) string { return newToken(t, es256, issuedAt(t0.Add(-time.Minute), 24*time.Hour)) }},
		{name: "no iat under a lifetime cap", want: ReasonMissingIAT,
			fixture: []fixtureOpt{configured(func(c *Config) { c.MaxTokenLifetime = time.Hour })},
			token:   func(t *testing.T) string { return newToken(t, es256, withoutClaim("iat")) }},
		{name: "a wrong issuer", want: ReasonWrongIssuer,
			token: func(t *testing.T) string { return newToken(t, es256, withClaim("iss", "https://evil.example")) }},
		{name: "a wrong audience string", want: ReasonWrongAudience,
			token: func(t *testing.T) string { return newToken(t, es256, withClaim("aud", "admin-api")) }},
		{name: "a wrong audience array", want: ReasonWrongAudience,
			token: func(t *testing.T) string { return newToken(t, es256, withClaim("aud", []string{"admin-api", "API"})) }},

		// Structure.
		{name: "an empty token", want: ReasonMalformed, token: func(*testing.T) string { return "" }},
		{name: "garbage", want: ReasonMalformed, token: func(*testing.T) string { return "not a token at all" }},
		{name: "three dots of nothing", want: ReasonMalformed, token: func(*testing.T) string { return ".." }},
		{name: "a token truncated to header and payload", want: ReasonMalformed,
			token: func(t *testing.T) string { s := newToken(t, es256); return s[:strings.LastIndex(s, ".")] }},
		{name: "a token with its signature cut short", want: ReasonBadSignature,
			// 86 characters to 84: 63 whole bytes, so the base64url is still canonical.
			token: func(t *testing.T) string { s := newToken(t, es256); return s[:len(s)-2] }},
		{name: "a token with an empty signature", want: ReasonBadSignature,
			token: func(t *testing.T) string { s := newToken(t, es256); return s[:strings.LastIndex(s, ".")+1] }},
		{name: "a five-part JWE", want: ReasonMalformed,
			token: func(*testing.T) string {
				return b64([]byte(`{"alg":"RSA-OAEP","enc":"A256GCM"}`)) + ".a2V5.aXY.Y2lwaGVy.dGFn"
			}},
		{name: "a JWS in JSON serialization", want: ReasonMalformed,
			token: func(t *testing.T) string {
				p := strings.Split(newToken(t, es256), ".")
				return string(mustJSON(t, map[string]string{"protected": p[0], "payload": p[1], "signature": p[2]}))
			}},
		{name: "a token with a line break inside", want: ReasonMalformed,
			token: func(t *testing.T) string { s := newToken(t, es256); return s[:10] + "\n" + s[10:] }},
		{name: "a token with a carriage return inside", want: ReasonMalformed,
			token: func(t *testing.T) string { s := newToken(t, es256); return s[:10] + "\r" + s[10:] }},
		{name: "a token with a space inside", want: ReasonMalformed,
			token: func(t *testing.T) string { s := newToken(t, es256); return s[:10] + " " + s[10:] }},
		{name: "a token with a trailing tab", want: ReasonMalformed,
			token: func(t *testing.T) string { return newToken(t, es256) + "\t" }},
		{name: "a token in standard base64 instead of base64url", want: ReasonMalformed,
			token: func(t *testing.T) string {
				return strings.NewReplacer("-", "+", "_", "/").Replace(newToken(t, es256)) + "+/"
			}},
		{name: "a token with base64 padding", want: ReasonMalformed,
			token: func(t *testing.T) string { return newToken(t, es256) + "==" }},
		{name: "a token over the size limit", want: ReasonOversized,
			token: func(t *testing.T) string { return newToken(t, es256, withClaim("pad", strings.Repeat("x", 9<<10))) }},
		{name: "a header that is not JSON", want: ReasonMalformed,
			token: func(t *testing.T) string {
				p := strings.Split(newToken(t, es256), ".")
				return b64([]byte("{not json")) + "." + p[1] + "." + p[2]
			}},
		{name: "a signed payload that is not JSON", want: ReasonMalformed,
			token: func(t *testing.T) string { return newToken(t, es256, withRawPayload("hello")) }},
		{name: "a signed payload that is a JSON array", want: ReasonMalformed,
			token: func(t *testing.T) string { return newToken(t, es256, withRawPayload(`["iss"]`)) }},
		{name: "a signed payload with trailing data", want: ReasonMalformed,
			token: func(t *testing.T) string {
				return newToken(t, es256, withRawPayload(`{"iss":"https://issuer.example","aud":"api","exp":1999999999} {}`))
			}},

		// Revocations.
		{name: "a revoked jti", want: ReasonRevokedToken,
			fixture: []fixtureOpt{revoked(NewRevocations([]RevokedToken{{JTI: "token-1"}}, nil, nil))},
			token:   func(t *testing.T) string { return newToken(t, es256) }},
		{name: "a revoked jti of this issuer", want: ReasonRevokedToken,
			fixture: []fixtureOpt{revoked(NewRevocations([]RevokedToken{{JTI: "token-1", Issuer: issuer}}, nil, nil))},
			token:   func(t *testing.T) string { return newToken(t, es256) }},
		{name: "a revoked subject issued before notBefore", want: ReasonRevokedSubject,
			fixture: []fixtureOpt{revoked(NewRevocations(nil, []RevokedSubject{{Subject: "alice", NotBefore: t0.Add(-time.Second)}}, nil))},
			token:   func(t *testing.T) string { return newToken(t, es256) }},
		{name: "a revoked subject's token without iat", want: ReasonRevokedSubject,
			fixture: []fixtureOpt{revoked(NewRevocations(nil, []RevokedSubject{{Subject: "alice", NotBefore: t0.Add(-time.Hour)}}, nil))},
			token:   func(t *testing.T) string { return newToken(t, es256, withoutClaim("iat")) }},
		{name: "a token of a revoked kid", want: ReasonRevokedKey,
			fixture: []fixtureOpt{revoked(NewRevocations(nil, nil, []string{es256.KID}))},
			token:   func(t *testing.T) string { return newToken(t, es256) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.token(t)
			for _, cached := range []bool{true, false} {
				opts := append([]fixtureOpt{trusting(trusted...)}, tc.fixture...)
				if !cached {
					opts = append(opts, withoutCache())
				}
				v := newVerifier(t, opts...)
				for range 2 {
					c, err := v.Verify(tok, t0)
					wantReason(t, c, err, tc.want)
				}
			}
		})
	}
	if n := fetched.Load(); n != 0 {
		t.Errorf("the verifier fetched jku/x5u %d times", n)
	}
}

// TestKeyURLHeadersAreIgnored: a genuine token that also carries jku, x5u, jwk and x5c
// pointing at the attacker verifies with the pinned key and nothing is fetched.
func TestKeyURLHeadersAreIgnored(t *testing.T) {
	k, attacker := testKey(t, "ES256"), namedKey(t, "attacker", "ES256")
	var fetched atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { fetched.Add(1) }))
	defer srv.Close()
	tok := newToken(t, k,
		withHeader("jku", srv.URL+"/jwks.json"),
		withHeader("x5u", srv.URL+"/cert.pem"),
		withHeader("jwk", json.RawMessage(mustJSON(t, attacker.PublicJWK()))),
		withHeader("x5c", []string{selfSigned(t, attacker)}),
	)
	c, err := newVerifier(t, trusting(k)).Verify(tok, t0)
	wantReason(t, c, err, "")
	if fetched.Load() != 0 {
		t.Error("a key URL header was fetched")
	}
}

func publicPEM(t *testing.T, k *keys.Key) []byte {
	der, err := x509.MarshalPKIXPublicKey(k.Public)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// selfSigned is an x5c entry: a certificate for k signed by k.
func selfSigned(t *testing.T, k *keys.Key) string {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "attacker"},
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     t0.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public, k.Private)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}
