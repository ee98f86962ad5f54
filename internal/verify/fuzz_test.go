package verify

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

var updateFuzzSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzVerify")

// fuzzES256PEM is a fixed key, so that committed seeds stay valid and the fuzzer can
// mutate genuinely signed tokens. It signs nothing outside this test.
const fuzzES256PEM = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgX7iDsjiDvGqliiah
RlHeLaA4UZPfFEMpIU/0hxWbO5GhRANCAASKKa5PAZ/kqnxxNdHrPD5QxqSeRcm0
hA9b7jC3tLCgoKspFwed+BpwzeAGQWku+KS/NmF4BettLUi0Iuu5Vrp4
-----END PRIVATE KEY-----
`

// fuzzKeys are the trusted keys of the fuzz verifier: fixed, unlike testKey's.
func fuzzKeys(t testing.TB) []*keys.Key {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	ed, err := keys.FromPrivate(ed25519.NewKeyFromSeed(seed), "EdDSA")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := keys.ParsePrivatePEM([]byte(fuzzES256PEM))
	if err != nil {
		t.Fatal(err)
	}
	es, err := keys.FromPrivate(priv, "ES256")
	if err != nil {
		t.Fatal(err)
	}
	return []*keys.Key{ed, es}
}

func fuzzVerifier(t testing.TB) (*Verifier, []*keys.Key) {
	ks := fuzzKeys(t)
	v := newVerifier(t, trusting(ks...), withOptions(WithCacheSize(4)), configured(func(c *Config) {
		c.MaxTokenLifetime = 24 * time.Hour
		c.RequiredClaims = []ClaimRequirement{{Name: "sub"}}
	}))
	return v, ks
}

var allReasons = map[Reason]bool{
	ReasonMalformed: true, ReasonOversized: true, ReasonUnsupportedHeader: true, ReasonAlgNotAllowed: true,
	ReasonMissingKID: true, ReasonUnknownKID: true, ReasonAlgMismatch: true, ReasonBadSignature: true,
	ReasonWrongIssuer: true, ReasonWrongAudience: true, ReasonMissingExp: true, ReasonExpired: true,
	ReasonNotYetValid: true, ReasonIssuedInFuture: true, ReasonMissingIAT: true, ReasonLifetimeExceeded: true,
	ReasonMissingClaim: true, ReasonClaimMismatch: true, ReasonRevokedToken: true, ReasonRevokedSubject: true,
	ReasonRevokedKey: true, ReasonWrongTokenType: true,
}

// FuzzVerify: no input panics, every rejection has a known reason, and every accepted token
// carries a signature that an independent check confirms was made by a trusted key over
// exactly its header and payload, with claims that meet the policy.
func FuzzVerify(f *testing.F) {
	v, ks := fuzzVerifier(f)
	byKID := map[string]*keys.Key{}
	for _, k := range ks {
		byKID[k.KID] = k
	}
	f.Add("")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, raw string) {
		for range 2 { // the second time through the cache
			c, err := v.Verify(raw, t0)
			if err != nil {
				if c != nil || !allReasons[ReasonOf(err)] {
					t.Fatalf("rejection with claims %v or unknown reason: %v", c, err)
				}
				return
			}
			checkAccepted(t, raw, c, byKID)
		}
	})
}

func checkAccepted(t *testing.T, raw string, c *Claims, byKID map[string]*keys.Key) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("accepted a token of %d parts", len(parts))
	}
	dec := base64.RawURLEncoding.DecodeString
	h, err1 := dec(parts[0])
	p, err2 := dec(parts[1])
	sig, err3 := dec(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatalf("accepted a token that is not base64url")
	}
	var hdr struct{ Alg, Kid string }
	if err := json.Unmarshal(h, &hdr); err != nil {
		t.Fatalf("accepted a token whose header is not JSON: %v", err)
	}
	k := byKID[c.KeyID]
	if k == nil || c.Algorithm != k.Algorithm {
		t.Fatalf("accepted under kid %q alg %q, not a trusted pair", c.KeyID, c.Algorithm)
	}
	// The signature covers the decoded header and payload, re-encoded as go-jose does.
	input := b64(h) + "." + b64(p)
	if !rawVerify(k.Algorithm, k.Public, []byte(input), sig) {
		t.Fatalf("accepted a token not signed by trusted key %s", k.KID)
	}
	if c.Issuer != issuer || !contains(c.Audience, "api") || c.Expiry.IsZero() || !t0.Before(c.Expiry.Add(DefaultClockSkew)) || c.Subject == "" {
		t.Fatalf("accepted claims outside the policy: %+v", c)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// fuzzSeeds are the committed corpus: genuine tokens to mutate and known attacks.
func fuzzSeeds(t testing.TB) map[string]string {
	ks := fuzzKeys(t)
	ed, es := ks[0], ks[1]
	attacker := namedKey(t, "attacker", "ES256")
	good := newToken(t, ed)
	p := strings.Split(good, ".")
	return map[string]string{
		"valid-eddsa":             good,
		"valid-es256":             newToken(t, es, withClaim("aud", []string{"web", "api"}), withClaim("scope", "read write")),
		"valid-eddsa-nested":      newToken(t, ed, withClaim("realm_access", map[string]any{"roles": []string{"admin"}}), withClaim("n", 1.5)),
		"alg-none":                newToken(t, ed, signedAs("none", nil)),
		"hs256-confusion":         newToken(t, ed, signedAs("HS256", []byte(ed.Public.(ed25519.PublicKey)))),
		"alg-mismatch":            newToken(t, es, withHeader("alg", "EdDSA")),
		"crit-unknown":            newToken(t, ed, withHeader("crit", []string{"x"}), withHeader("x", true)),
		"b64-false":               newToken(t, ed, withHeader("b64", false), withHeader("crit", []string{"b64"})),
		"jwk-embedded-attacker":   newToken(t, es, signedBy(attacker), withHeader("jwk", json.RawMessage(mustJSON(t, attacker.PublicJWK())))),
		"unknown-kid":             newToken(t, attacker),
		"no-kid":                  newToken(t, ed, withoutHeader("kid")),
		"expired":                 newToken(t, ed, withClaim("exp", t0.Add(-time.Hour).Unix())),
		"lifetime-too-long":       newToken(t, ed, withClaim("exp", t0.Add(48*time.Hour).Unix())),
		"payload-not-object":      newToken(t, ed, withRawPayload(`[1,2,3]`)),
		"signature-of-other-part": p[0] + "." + p[1] + "." + p[0],
		"five-part-jwe":           p[0] + "." + p[1] + ".x.y." + p[2],
		"json-serialization":      `{"protected":"` + p[0] + `","payload":"` + p[1] + `","signature":"` + p[2] + `"}`,
		"truncated":               good[:len(good)/2],
		"garbage":                 "\x00\xff..\u2028",
	}
}

// TestWriteFuzzSeeds regenerates the committed corpus with -update-fuzz-seeds.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*updateFuzzSeeds {
		t.Skip("run with -update-fuzz-seeds to rewrite testdata/fuzz/FuzzVerify")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzVerify")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, tok := range fuzzSeeds(t) {
		body := "go test fuzz v1\nstring(" + strconv.Quote(tok) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFuzzSeedsStayMeaningful: the committed genuine tokens still verify, so the fuzzer
// keeps mutating tokens that reach the accept path.
func TestFuzzSeedsStayMeaningful(t *testing.T) {
	v, _ := fuzzVerifier(t)
	for _, name := range []string{"valid-eddsa", "valid-es256", "valid-eddsa-nested"} {
		data, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzVerify", name))
		if err != nil {
			t.Fatal(err)
		}
		_, quoted, _ := strings.Cut(strings.TrimSpace(string(data)), "string(")
		tok, err := strconv.Unquote(strings.TrimSuffix(quoted, ")"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := v.Verify(tok, t0); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Whatever Go's own query parser reads as access_token (or access_token[...]), hasQueryKey
// finds, and removeQueryKey leaves nothing of it.
func FuzzQueryKey(f *testing.F) {
	for _, q := range []string{"access_token=x", "a=1&access%5Ftoken=x", "access_token[]=x", "%61ccess_token%5B0%5D=x", "a=1;access_token=x", "x=%zz&access_token"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		parsed := func(q string) bool {
			vals, _ := url.ParseQuery(q) // the parts it could parse
			for k := range vals {
				if k == queryTokenParam || strings.HasPrefix(k, queryTokenParam+"[") {
					return true
				}
			}
			return false
		}
		if parsed(q) && !hasQueryKey(q, queryTokenParam) {
			t.Fatalf("Go reads an access_token in %q, hasQueryKey does not", q)
		}
		rest := removeQueryKey(q, queryTokenParam)
		if parsed(rest) || hasQueryKey(rest, queryTokenParam) {
			t.Fatalf("removeQueryKey(%q) = %q still holds an access_token", q, rest)
		}
	})
}
