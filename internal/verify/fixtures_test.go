package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"math/big"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// Fixed times: no test depends on the wall clock.
var (
	t0     = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)
	issuer = "https://issuer.example"
)

// testKeys are generated once per test binary: RSA generation is slow. A name lets a test
// ask for a second, different key of the same algorithm.
var (
	testKeysMu sync.Mutex
	testKeys   = map[string]*keys.Key{}
)

func testKey(t testing.TB, alg string) *keys.Key { return namedKey(t, "primary", alg) }

func namedKey(t testing.TB, name, alg string) *keys.Key {
	t.Helper()
	testKeysMu.Lock()
	defer testKeysMu.Unlock()
	id := name + "/" + alg
	if k, ok := testKeys[id]; ok {
		return k
	}
	k, err := keys.Generate(rand.Reader, keys.Params{Algorithm: alg})
	if err != nil {
		t.Fatalf("generating %s key: %v", alg, err)
	}
	testKeys[id] = k
	return k
}

// ---- tokens ----

// tokenSpec is a token to build: header and claims as JSON values, the key that signs and
// the algorithm really used to sign (which a test may make differ from the header's).
type tokenSpec struct {
	header     map[string]any
	claims     map[string]any
	rawPayload []byte // when set, signed instead of the claims
	signer     any    // a crypto.Signer, or []byte for HMAC
	signAlg    string
}

type tokenOpt func(*tokenSpec)

func withClaim(name string, v any) tokenOpt { return func(s *tokenSpec) { s.claims[name] = v } }
func withoutClaim(name string) tokenOpt     { return func(s *tokenSpec) { delete(s.claims, name) } }
func withHeader(name string, v any) tokenOpt {
	return func(s *tokenSpec) { s.header[name] = v }
}
func withoutHeader(name string) tokenOpt { return func(s *tokenSpec) { delete(s.header, name) } }
func withRawPayload(p string) tokenOpt   { return func(s *tokenSpec) { s.rawPayload = []byte(p) } }

// signedBy signs with another key (its own algorithm) but leaves the header alone.
func signedBy(k *keys.Key) tokenOpt {
	return func(s *tokenSpec) { s.signer, s.signAlg = k.Private, k.Algorithm }
}

// signedAs signs with alg, using signer as the key, and declares alg in the header.
func signedAs(alg string, signer any) tokenOpt {
	return func(s *tokenSpec) { s.signer, s.signAlg, s.header["alg"] = signer, alg, alg }
}

// at sets every time claim relative to a fixed instant.
func issuedAt(iat time.Time, life time.Duration) tokenOpt {
	return func(s *tokenSpec) {
		s.claims["iat"] = iat.Unix()
		s.claims["nbf"] = iat.Unix()
		s.claims["exp"] = iat.Add(life).Unix()
	}
}

// newToken builds a token valid at t0 for the default fixture, signed by k, then applies opts.
func newToken(t testing.TB, k *keys.Key, opts ...tokenOpt) string {
	t.Helper()
	s := &tokenSpec{
		header: map[string]any{"alg": k.Algorithm, "kid": k.KID, "typ": "JWT"},
		claims: map[string]any{
			"iss": issuer,
			"sub": "alice",
			"aud": "api",
			"jti": "token-1",
			"iat": t0.Add(-time.Minute).Unix(),
			"nbf": t0.Add(-time.Minute).Unix(),
			"exp": t0.Add(time.Hour).Unix(),
		},
		signer:  k.Private,
		signAlg: k.Algorithm,
	}
	for _, o := range opts {
		o(s)
	}
	return s.sign(t)
}

func (s *tokenSpec) sign(t testing.TB) string {
	t.Helper()
	h := mustJSON(t, s.header)
	p := s.rawPayload
	if p == nil {
		p = mustJSON(t, s.claims)
	}
	input := b64(h) + "." + b64(p)
	sig, err := rawSign(s.signAlg, s.signer, []byte(input))
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return input + "." + b64(sig)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawSign signs with the standard library, independently of the code under test, so that
// tests can craft what go-jose's signer would refuse to produce.
func rawSign(alg string, signer any, input []byte) ([]byte, error) {
	hashFor := map[string]crypto.Hash{"256": crypto.SHA256, "384": crypto.SHA384, "512": crypto.SHA512}
	if alg == "none" {
		return nil, nil
	}
	if alg == "EdDSA" {
		return ed25519.Sign(signer.(ed25519.PrivateKey), input), nil
	}
	hf := hashFor[alg[2:]]
	switch alg[:2] {
	case "HS":
		newHash := map[crypto.Hash]func() hash.Hash{crypto.SHA256: sha256.New, crypto.SHA384: sha512.New384, crypto.SHA512: sha512.New}[hf]
		m := hmac.New(newHash, signer.([]byte))
		m.Write(input)
		return m.Sum(nil), nil
	}
	d := hf.New()
	d.Write(input)
	digest := d.Sum(nil)
	switch alg[:2] {
	case "RS":
		return rsa.SignPKCS1v15(rand.Reader, signer.(*rsa.PrivateKey), hf, digest)
	case "PS":
		return rsa.SignPSS(rand.Reader, signer.(*rsa.PrivateKey), hf, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES":
		priv := signer.(*ecdsa.PrivateKey)
		r, s, err := ecdsa.Sign(rand.Reader, priv, digest)
		if err != nil {
			return nil, err
		}
		size := (priv.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*size)
		r.FillBytes(out[:size])
		s.FillBytes(out[size:])
		return out, nil
	}
	return nil, fmt.Errorf("rawSign: unsupported alg %q", alg)
}

// rawVerify is rawSign's counterpart, used as an independent oracle by the fuzz test.
func rawVerify(alg string, pub crypto.PublicKey, input, sig []byte) bool {
	if alg == "EdDSA" {
		k, ok := pub.(ed25519.PublicKey)
		return ok && ed25519.Verify(k, input, sig)
	}
	hf := map[string]crypto.Hash{"256": crypto.SHA256, "384": crypto.SHA384, "512": crypto.SHA512}[alg[2:]]
	d := hf.New()
	d.Write(input)
	digest := d.Sum(nil)
	switch alg[:2] {
	case "RS":
		return rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), hf, digest, sig) == nil
	case "PS":
		return rsa.VerifyPSS(pub.(*rsa.PublicKey), hf, digest, sig, nil) == nil
	case "ES":
		k := pub.(*ecdsa.PublicKey)
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*size {
			return false
		}
		return ecdsa.Verify(k, digest, new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:]))
	}
	return false
}

// ---- verifiers ----

type fixture struct {
	cfg  Config
	keys []*keys.Key
	opts []Option
}

type fixtureOpt func(*fixture)

func trusting(ks ...*keys.Key) fixtureOpt { return func(f *fixture) { f.keys = append(f.keys, ks...) } }
func configured(edit func(*Config)) fixtureOpt {
	return func(f *fixture) { edit(&f.cfg) }
}
func withOptions(o ...Option) fixtureOpt { return func(f *fixture) { f.opts = append(f.opts, o...) } }
func withoutCache() fixtureOpt           { return withOptions(WithCacheSize(0)) }

// newVerifier builds a verifier for issuer and audience "api" with the default skew,
// trusting the primary ES256 key unless told otherwise.
func newVerifier(t testing.TB, opts ...fixtureOpt) *Verifier {
	t.Helper()
	f := &fixture{cfg: Config{Issuer: issuer, Audiences: []string{"api"}, ClockSkew: DefaultClockSkew}}
	for _, o := range opts {
		o(f)
	}
	if f.keys == nil {
		f.keys = []*keys.Key{testKey(t, "ES256")}
	}
	v, err := New(f.cfg, append([]Option{WithKeySet(keySetOf(t, f.keys...))}, f.opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

func keySetOf(t testing.TB, ks ...*keys.Key) *KeySet {
	t.Helper()
	jwks := make([]jose.JSONWebKey, len(ks))
	for i, k := range ks {
		jwks[i] = k.PublicJWK()
	}
	set, err := NewKeySet(jwks...)
	if err != nil {
		t.Fatalf("NewKeySet: %v", err)
	}
	return set
}

// wantReason fails unless err is a rejection for want.
func wantReason(t testing.TB, claims *Claims, err error, want Reason) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("rejected: %v", err)
		}
		if claims == nil {
			t.Fatal("accepted without claims")
		}
		return
	}
	if err == nil {
		t.Fatalf("accepted, want rejection %q", want)
	}
	if claims != nil {
		t.Errorf("rejection returned claims")
	}
	if got := ReasonOf(err); got != want {
		t.Fatalf("reason %q (%v), want %q", got, err, want)
	}
}
