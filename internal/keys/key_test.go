package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// fixtureKeys caches one generated key per algorithm (RSA at 2048 bits) so the suite stays
// fast: RSA generation costs up to a second on a busy machine.
var fixtureKeys = struct {
	sync.Mutex
	m map[string]*Key
}{m: map[string]*Key{}}

// fixtureKey returns a cached key for alg. Tests must not modify it.
func fixtureKey(t testing.TB, alg string) *Key {
	t.Helper()
	fixtureKeys.Lock()
	defer fixtureKeys.Unlock()
	if k := fixtureKeys.m[alg]; k != nil {
		return k
	}
	k, err := Generate(rand.Reader, Params{Algorithm: alg})
	if err != nil {
		t.Fatalf("generating %s fixture key: %v", alg, err)
	}
	fixtureKeys.m[alg] = k
	return k
}

// freshKey generates a new key that no other test shares (cheap algorithms only, please).
func freshKey(t testing.TB, alg string) *Key {
	t.Helper()
	k, err := Generate(rand.Reader, Params{Algorithm: alg})
	if err != nil {
		t.Fatalf("generating %s key: %v", alg, err)
	}
	return k
}

func mustPEM(t testing.TB, k *Key) []byte {
	t.Helper()
	b, err := k.PrivatePEM()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// privateJWKMembers are the JWK members (RFC 7518 section 6) that carry private material.
var privateJWKMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

func assertNoPrivateMembers(t *testing.T, what string, jwkJSON []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(jwkJSON, &m); err != nil {
		t.Fatalf("%s is not a JSON object: %v", what, err)
	}
	for _, name := range privateJWKMembers {
		if _, ok := m[name]; ok {
			t.Errorf("%s has private member %q: %s", what, name, jwkJSON)
		}
	}
}

// signAndVerify signs a JWS with the private key and verifies it with the public JWK, both
// as a Go value and after a JSON round trip (what a verifier reading a JWKS gets).
func signAndVerify(t *testing.T, k *Key) {
	t.Helper()
	alg := jose.SignatureAlgorithm(k.Algorithm)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k.Private},
		(&jose.SignerOptions{}).WithHeader(jose.HeaderKey("kid"), k.KID))
	if err != nil {
		t.Fatalf("creating %s signer: %v", alg, err)
	}
	payload := []byte(`{"sub":"workload"}`)
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	compact, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}

	var fromJSON jose.JSONWebKey
	if err := fromJSON.UnmarshalJSON(mustJSON(t, k.PublicJWK())); err != nil {
		t.Fatalf("public JWK does not parse: %v", err)
	}
	for name, verifyKey := range map[string]jose.JSONWebKey{"PublicJWK()": k.PublicJWK(), "PublicJWK() after JSON": fromJSON} {
		parsed, err := jose.ParseSigned(compact, []jose.SignatureAlgorithm{alg})
		if err != nil {
			t.Fatalf("parsing JWS: %v", err)
		}
		if got := parsed.Signatures[0].Header.KeyID; got != k.KID {
			t.Errorf("JWS kid = %q, want %q", got, k.KID)
		}
		got, err := parsed.Verify(verifyKey)
		if err != nil {
			t.Fatalf("JWS signed with the private key does not verify with %s: %v", name, err)
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("verified payload = %q, want %q", got, payload)
		}
	}

	// A tampered payload must not verify: the check above is not vacuous.
	parts := strings.Split(compact, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin"}`))
	tampered, err := jose.ParseSigned(strings.Join(parts, "."), []jose.SignatureAlgorithm{alg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tampered.Verify(k.PublicJWK()); err == nil {
		t.Error("a JWS with a tampered payload verified")
	}
}

func TestGenerate(t *testing.T) {
	tests := []struct {
		name     string
		params   Params
		wantBits int // RSA modulus size; 0 for other key types
		curve    elliptic.Curve
	}{
		{name: "RS256 without a size makes a 2048-bit key", params: Params{Algorithm: "RS256"}, wantBits: 2048},
		{name: "RS384 makes a 2048-bit key", params: Params{Algorithm: "RS384", RSABits: 2048}, wantBits: 2048},
		{name: "RS512 makes a 4096-bit key when asked", params: Params{Algorithm: "RS512", RSABits: 4096}, wantBits: 4096},
		{name: "PS256 makes a 2048-bit key", params: Params{Algorithm: "PS256", RSABits: 2048}, wantBits: 2048},
		{name: "PS384 makes a 3072-bit key when asked", params: Params{Algorithm: "PS384", RSABits: 3072}, wantBits: 3072},
		{name: "PS512 without a size makes a 2048-bit key", params: Params{Algorithm: "PS512"}, wantBits: 2048},
		{name: "ES256 makes a P-256 key", params: Params{Algorithm: "ES256"}, curve: elliptic.P256()},
		{name: "ES384 makes a P-384 key", params: Params{Algorithm: "ES384"}, curve: elliptic.P384()},
		{name: "ES512 makes a P-521 key", params: Params{Algorithm: "ES512"}, curve: elliptic.P521()},
		{name: "EdDSA makes an Ed25519 key", params: Params{Algorithm: "EdDSA"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := Generate(rand.Reader, tc.params)
			if err != nil {
				t.Fatalf("Generate(%+v): %v", tc.params, err)
			}
			if k.Algorithm != tc.params.Algorithm {
				t.Errorf("Algorithm = %q, want %q", k.Algorithm, tc.params.Algorithm)
			}
			if k.Private == nil || k.Public == nil {
				t.Fatal("key lacks a private or public half")
			}
			kid, err := Thumbprint(k.Public)
			if err != nil {
				t.Fatal(err)
			}
			if k.KID != kid {
				t.Errorf("KID = %q, want the thumbprint of the public key %q", k.KID, kid)
			}
			if fromPriv, _ := Thumbprint(k.Private.Public()); fromPriv != k.KID {
				t.Errorf("the public half does not belong to the private half: %q vs %q", fromPriv, k.KID)
			}
			switch pub := k.Public.(type) {
			case *rsa.PublicKey:
				if pub.N.BitLen() != tc.wantBits {
					t.Errorf("modulus has %d bits, want %d", pub.N.BitLen(), tc.wantBits)
				}
			case *ecdsa.PublicKey:
				if pub.Curve != tc.curve {
					t.Errorf("curve = %s, want %s", pub.Curve.Params().Name, tc.curve.Params().Name)
				}
			case ed25519.PublicKey:
				if tc.params.Algorithm != "EdDSA" {
					t.Errorf("got an Ed25519 key for %s", tc.params.Algorithm)
				}
			default:
				t.Fatalf("unexpected public key type %T", pub)
			}
			if tc.wantBits <= DefaultRSABits { // keep it as a fixture for later tests
				fixtureKeys.Lock()
				if fixtureKeys.m[k.Algorithm] == nil {
					fixtureKeys.m[k.Algorithm] = k
				}
				fixtureKeys.Unlock()
			}
			signAndVerify(t, k)
		})
	}
}

func TestGenerateRejectsInvalidParams(t *testing.T) {
	for _, p := range []Params{
		{Algorithm: "RS256", RSABits: 1024},
		{Algorithm: "PS256", RSABits: 8192},
		{Algorithm: "HS256"},
		{Algorithm: "none"},
		{Algorithm: ""},
	} {
		k, err := Generate(rand.Reader, p)
		if err == nil || k != nil {
			t.Errorf("Generate(%+v) = %v, %v; want an error and no key", p, k, err)
		}
	}
}

func TestParamsValidate(t *testing.T) {
	tests := []struct {
		name    string
		params  Params
		wantErr string // a substring of the error; "" means valid
	}{
		{name: "RS256 without a size is valid (defaults to 2048)", params: Params{Algorithm: "RS256"}},
		{name: "RS384 with 3072 bits is valid", params: Params{Algorithm: "RS384", RSABits: 3072}},
		{name: "RS512 with 4096 bits is valid", params: Params{Algorithm: "RS512", RSABits: 4096}},
		{name: "PS256 with 2048 bits is valid", params: Params{Algorithm: "PS256", RSABits: 2048}},
		{name: "PS384 without a size is valid", params: Params{Algorithm: "PS384"}},
		{name: "PS512 with 4096 bits is valid", params: Params{Algorithm: "PS512", RSABits: 4096}},
		{name: "ES256 is valid", params: Params{Algorithm: "ES256"}},
		{name: "ES384 is valid", params: Params{Algorithm: "ES384"}},
		{name: "ES512 is valid", params: Params{Algorithm: "ES512"}},
		{name: "EdDSA is valid", params: Params{Algorithm: "EdDSA"}},

		{name: "RS256 with 1024 bits is too small", params: Params{Algorithm: "RS256", RSABits: 1024}, wantErr: "1024"},
		{name: "RS256 with 2047 bits is not a supported size", params: Params{Algorithm: "RS256", RSABits: 2047}, wantErr: "2047"},
		{name: "PS256 with 8192 bits is not a supported size", params: Params{Algorithm: "PS256", RSABits: 8192}, wantErr: "8192"},
		{name: "RS384 with a negative size is rejected", params: Params{Algorithm: "RS384", RSABits: -2048}, wantErr: "-2048"},
		{name: "ES256 with an RSA size is rejected", params: Params{Algorithm: "ES256", RSABits: 2048}, wantErr: "ES256"},
		{name: "ES512 with an RSA size is rejected", params: Params{Algorithm: "ES512", RSABits: 4096}, wantErr: "ES512"},
		{name: "EdDSA with an RSA size is rejected", params: Params{Algorithm: "EdDSA", RSABits: 3072}, wantErr: "EdDSA"},
		{name: "HS256 is not supported: a verifier must never hold a signing secret", params: Params{Algorithm: "HS256"}, wantErr: "HS256"},
		{name: "none is not supported", params: Params{Algorithm: "none"}, wantErr: "none"},
		{name: "an empty algorithm is not supported", params: Params{}, wantErr: "unsupported"},
		{name: "a lower-case algorithm is not supported", params: Params{Algorithm: "rs256"}, wantErr: "rs256"},
		{name: "an RSA-looking name that is no algorithm is not supported", params: Params{Algorithm: "RS999"}, wantErr: "RS999"},
		{name: "ES256K is not supported", params: Params{Algorithm: "ES256K"}, wantErr: "ES256K"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.params.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate(%+v) = %v, want nil", tc.params, err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("Validate(%+v) = nil, want an error", tc.params)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("Validate(%+v) = %q, want it to mention %q", tc.params, err, tc.wantErr)
			}
		})
	}
}

func TestAlgorithmsAreAllValid(t *testing.T) {
	if len(Algorithms) != 10 {
		t.Errorf("Algorithms has %d entries, want 10: %v", len(Algorithms), Algorithms)
	}
	for _, alg := range Algorithms {
		if err := (Params{Algorithm: alg}).Validate(); err != nil {
			t.Errorf("listed algorithm %s does not validate: %v", alg, err)
		}
	}
}

func TestParamsNormalized(t *testing.T) {
	tests := []struct {
		name string
		in   Params
		want Params
	}{
		{name: "an RSA algorithm without a size gets the default", in: Params{Algorithm: "PS256"}, want: Params{Algorithm: "PS256", RSABits: DefaultRSABits}},
		{name: "an RSA algorithm keeps its size", in: Params{Algorithm: "RS512", RSABits: 4096}, want: Params{Algorithm: "RS512", RSABits: 4096}},
		{name: "a non-RSA algorithm loses a stray size", in: Params{Algorithm: "ES256", RSABits: 2048}, want: Params{Algorithm: "ES256"}},
		{name: "EdDSA has no size", in: Params{Algorithm: "EdDSA"}, want: Params{Algorithm: "EdDSA"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.Normalized(); got != tc.want {
				t.Errorf("%+v.Normalized() = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestIsRSAAndExpensive(t *testing.T) {
	for _, alg := range Algorithms {
		rsaAlg := strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
		if IsRSA(alg) != rsaAlg {
			t.Errorf("IsRSA(%q) = %v, want %v", alg, IsRSA(alg), rsaAlg)
		}
		if (Params{Algorithm: alg}).Expensive() != rsaAlg {
			t.Errorf("Params{%s}.Expensive() = %v, want %v", alg, !rsaAlg, rsaAlg)
		}
	}
	for _, alg := range []string{"", "RS", "RS25", "ES256", "EdDSA", "HS256"} {
		if IsRSA(alg) {
			t.Errorf("IsRSA(%q) = true, want false", alg)
		}
	}
}

func b64Int(t *testing.T, s string) *big.Int {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return new(big.Int).SetBytes(b)
}

func TestThumbprintMatchesRFC7638Example(t *testing.T) {
	// RFC 7638 section 3.1.
	pub := &rsa.PublicKey{
		N: b64Int(t, "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"),
		E: int(b64Int(t, "AQAB").Int64()),
	}
	got, err := Thumbprint(pub)
	if err != nil {
		t.Fatal(err)
	}
	if want := "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("Thumbprint = %q, want %q", got, want)
	}
}

func TestThumbprintMatchesRFC8037Example(t *testing.T) {
	// RFC 8037 appendix A.3: the thumbprint of the Ed25519 key of appendix A.2.
	x, err := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Thumbprint(ed25519.PublicKey(x))
	if err != nil {
		t.Fatal(err)
	}
	if want := "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"; got != want {
		t.Errorf("Thumbprint = %q, want %q", got, want)
	}
}

func TestThumbprintRejectsWhatIsNotAKey(t *testing.T) {
	for _, v := range []crypto.PublicKey{nil, "not a key", 42} {
		if got, err := Thumbprint(v); err == nil {
			t.Errorf("Thumbprint(%#v) = %q, want an error", v, got)
		}
	}
}

func TestThumbprintIsBase64URLWithoutPadding(t *testing.T) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		kid := fixtureKey(t, alg).KID
		if len(kid) != 43 || strings.ContainsAny(kid, "+/=") {
			t.Errorf("%s kid %q is not 43 characters of unpadded base64url", alg, kid)
		}
	}
}

func TestPrivatePEMRoundTrips(t *testing.T) {
	for _, alg := range []string{"RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA"} {
		t.Run(alg+" key survives PEM encoding with its kid", func(t *testing.T) {
			k := fixtureKey(t, alg)
			pemBytes := mustPEM(t, k)
			block, rest := pem.Decode(pemBytes)
			if block == nil || block.Type != "PRIVATE KEY" || len(rest) != 0 {
				t.Fatalf("PrivatePEM is not one PRIVATE KEY block: %q", pemBytes)
			}
			priv, err := ParsePrivatePEM(pemBytes)
			if err != nil {
				t.Fatalf("ParsePrivatePEM: %v", err)
			}
			back, err := FromPrivate(priv, alg)
			if err != nil {
				t.Fatalf("FromPrivate: %v", err)
			}
			if back.KID != k.KID || back.Algorithm != alg {
				t.Errorf("round trip gave %s/%s, want %s/%s", back.KID, back.Algorithm, k.KID, alg)
			}
			again := mustPEM(t, back)
			if !bytes.Equal(again, pemBytes) {
				t.Error("encoding the parsed key again gives different PEM")
			}
			signAndVerify(t, back)
		})
	}
}

func TestPrivatePEMRefusesAPublicOnlyKey(t *testing.T) {
	k, err := FromPublicJWK(mustJSON(t, fixtureKey(t, "ES256").PublicJWK()))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := k.PrivatePEM(); err == nil {
		t.Errorf("PrivatePEM of a public-only key = %q, want an error", b)
	}
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParsePrivatePEM(t *testing.T) {
	ec := fixtureKey(t, "ES256")
	good := mustPEM(t, ec)
	ecPriv := ec.Private.(*ecdsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ecPriv)
	if err != nil {
		t.Fatal(err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(ec.Public)
	if err != nil {
		t.Fatal(err)
	}
	rsaPriv := fixtureKey(t, "RS256").Private.(*rsa.PrivateKey)
	x25519, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519DER, err := x509.MarshalPKCS8PrivateKey(x25519)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		data    []byte
		wantKID string // "" means an error is wanted
	}{
		{name: "a PKCS #8 key parses", data: good, wantKID: ec.KID},
		{name: "trailing white space is allowed", data: append(append([]byte(nil), good...), "\n\n  \t\n"...), wantKID: ec.KID},
		{name: "empty input is rejected", data: nil},
		{name: "garbage is rejected", data: []byte("this is not a key at all")},
		{name: "a lone BEGIN line is rejected", data: []byte("-----BEGIN PRIVATE KEY-----\nMIIB\n")},
		{name: "a truncated PEM is rejected", data: good[:len(good)/2]},
		{name: "a PKCS #1 RSA PRIVATE KEY block is rejected", data: pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaPriv))},
		{name: "a SEC 1 EC PRIVATE KEY block is rejected", data: pemOf("EC PRIVATE KEY", sec1)},
		{name: "a PUBLIC KEY block is rejected", data: pemOf("PUBLIC KEY", pkix)},
		{name: "PKCS #1 bytes labelled PRIVATE KEY are rejected", data: pemOf("PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaPriv))},
		{name: "garbage bytes labelled PRIVATE KEY are rejected", data: pemOf("PRIVATE KEY", []byte("garbage"))},
		{name: "an X25519 key, which cannot sign, is rejected", data: pemOf("PRIVATE KEY", x25519DER)},
		{name: "trailing text after the block is rejected", data: append(append([]byte(nil), good...), "junk"...)},
		{name: "a second PEM block is rejected", data: append(append([]byte(nil), good...), mustPEM(t, fixtureKey(t, "EdDSA"))...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			priv, err := ParsePrivatePEM(tc.data)
			if tc.wantKID == "" {
				if err == nil {
					t.Fatalf("ParsePrivatePEM = %T, want an error", priv)
				}
				if strings.Contains(err.Error(), "MII") {
					t.Errorf("error quotes key material: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePrivatePEM: %v", err)
			}
			if kid, _ := Thumbprint(priv.Public()); kid != tc.wantKID {
				t.Errorf("parsed key has kid %q, want %q", kid, tc.wantKID)
			}
		})
	}
}

func TestFromPrivate(t *testing.T) {
	p256 := fixtureKey(t, "ES256").Private
	p384 := fixtureKey(t, "ES384").Private
	ed := fixtureKey(t, "EdDSA").Private
	rsa2048 := fixtureKey(t, "RS256").Private
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		priv   crypto.Signer
		alg    string
		wantOK bool
	}{
		{name: "a P-256 key suits ES256", priv: p256, alg: "ES256", wantOK: true},
		{name: "a P-384 key suits ES384", priv: p384, alg: "ES384", wantOK: true},
		{name: "an Ed25519 key suits EdDSA", priv: ed, alg: "EdDSA", wantOK: true},
		{name: "a 2048-bit RSA key suits RS256", priv: rsa2048, alg: "RS256", wantOK: true},
		{name: "a 2048-bit RSA key suits PS512", priv: rsa2048, alg: "PS512", wantOK: true},

		{name: "a P-256 key does not suit ES384", priv: p256, alg: "ES384"},
		{name: "a P-384 key does not suit ES256", priv: p384, alg: "ES256"},
		{name: "a P-224 key suits no algorithm", priv: p224, alg: "ES256"},
		{name: "an RSA key does not suit EdDSA", priv: rsa2048, alg: "EdDSA"},
		{name: "an RSA key does not suit ES256", priv: rsa2048, alg: "ES256"},
		{name: "an Ed25519 key does not suit RS256", priv: ed, alg: "RS256"},
		{name: "a P-256 key does not suit PS256", priv: p256, alg: "PS256"},
		{name: "a 1024-bit RSA key is too small for RS256", priv: rsa1024, alg: "RS256"},
		{name: "an RSA key does not suit an empty algorithm", priv: rsa2048, alg: ""},
		{name: "an RSA key does not suit HS256", priv: rsa2048, alg: "HS256"},
		// Every key is pinned to exactly one supported alg; a name that merely looks like an
		// RSA algorithm must not be accepted and later published in the JWKS.
		{name: "an RSA key does not suit RS999, which is no algorithm", priv: rsa2048, alg: "RS999"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := FromPrivate(tc.priv, tc.alg)
			if !tc.wantOK {
				if err == nil {
					t.Fatalf("FromPrivate(%T, %q) = key %s, want an error", tc.priv, tc.alg, k.KID)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromPrivate(%T, %q): %v", tc.priv, tc.alg, err)
			}
			kid, _ := Thumbprint(tc.priv.Public())
			if k.KID != kid || k.Algorithm != tc.alg || k.Private == nil {
				t.Errorf("FromPrivate gave %s/%s, want %s/%s with a private half", k.KID, k.Algorithm, kid, tc.alg)
			}
		})
	}
}

// jwkJSON builds a JWK's JSON by editing the public JWK of k.
func jwkJSON(t *testing.T, k *Key, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(mustJSON(t, k.PublicJWK()), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	return mustJSON(t, m)
}

func TestFromPublicJWK(t *testing.T) {
	es := fixtureKey(t, "ES256")
	other := fixtureKey(t, "ES384")
	tests := []struct {
		name    string
		data    []byte
		wantKID string // "" means an error is wanted
		wantAlg string
	}{
		{name: "an ES256 public JWK is accepted", data: mustJSON(t, es.PublicJWK()), wantKID: es.KID, wantAlg: "ES256"},
		{name: "an EdDSA public JWK is accepted", data: mustJSON(t, fixtureKey(t, "EdDSA").PublicJWK()), wantKID: fixtureKey(t, "EdDSA").KID, wantAlg: "EdDSA"},
		{name: "an RS256 public JWK is accepted", data: mustJSON(t, fixtureKey(t, "RS256").PublicJWK()), wantKID: fixtureKey(t, "RS256").KID, wantAlg: "RS256"},
		{name: "a JWK without use is accepted", data: jwkJSON(t, es, func(m map[string]any) { delete(m, "use") }), wantKID: es.KID, wantAlg: "ES256"},

		{name: "a private JWK is rejected", data: mustJSON(t, es.PrivateJWK())},
		{name: "a private RSA JWK is rejected", data: mustJSON(t, fixtureKey(t, "RS256").PrivateJWK())},
		{name: "a JWK whose kid is not its thumbprint is rejected", data: jwkJSON(t, es, func(m map[string]any) { m["kid"] = "not-the-thumbprint" })},
		{name: "a JWK carrying another key's kid is rejected", data: jwkJSON(t, es, func(m map[string]any) { m["kid"] = other.KID })},
		{name: "a JWK without a kid is rejected", data: jwkJSON(t, es, func(m map[string]any) { delete(m, "kid") })},
		{name: "a JWK whose alg does not suit its curve is rejected", data: jwkJSON(t, es, func(m map[string]any) { m["alg"] = "ES384" })},
		{name: "a JWK without an alg is rejected", data: jwkJSON(t, es, func(m map[string]any) { delete(m, "alg") })},
		{name: "a JWK claiming HS256 is rejected", data: jwkJSON(t, es, func(m map[string]any) { m["alg"] = "HS256" })},
		{name: "a symmetric JWK is rejected", data: []byte(`{"kty":"oct","k":"c2VjcmV0","alg":"HS256"}`)},
		{name: "an empty object is rejected", data: []byte(`{}`)},
		{name: "garbage is rejected", data: []byte(`not json`)},
		{name: "nothing is rejected", data: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := FromPublicJWK(tc.data)
			if tc.wantKID == "" {
				if err == nil {
					t.Fatalf("FromPublicJWK(%s) = key %s, want an error", tc.data, k.KID)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromPublicJWK: %v", err)
			}
			if k.KID != tc.wantKID || k.Algorithm != tc.wantAlg {
				t.Errorf("got %s/%s, want %s/%s", k.KID, k.Algorithm, tc.wantKID, tc.wantAlg)
			}
			if k.Private != nil {
				t.Error("a key read from a public JWK has a private half")
			}
			if kid, _ := Thumbprint(k.Public); kid != tc.wantKID {
				t.Errorf("public key has thumbprint %s, want %s", kid, tc.wantKID)
			}
		})
	}
}

func TestPublicJWKNeverContainsPrivateParts(t *testing.T) {
	for _, alg := range []string{"RS256", "PS384", "ES256", "ES512", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			k := fixtureKey(t, alg)
			pub := mustJSON(t, k.PublicJWK())
			assertNoPrivateMembers(t, "PublicJWK", pub)
			var m map[string]any
			if err := json.Unmarshal(pub, &m); err != nil {
				t.Fatal(err)
			}
			if m["kid"] != k.KID || m["alg"] != alg || m["use"] != "sig" {
				t.Errorf("PublicJWK has kid=%v alg=%v use=%v, want %s %s sig", m["kid"], m["alg"], m["use"], k.KID, alg)
			}
			if jwk := k.PublicJWK(); !jwk.IsPublic() {
				t.Errorf("PublicJWK holds a %T", jwk.Key)
			}
			// The private JWK does carry "d": the check above is not vacuous.
			var priv map[string]any
			if err := json.Unmarshal(mustJSON(t, k.PrivateJWK()), &priv); err != nil {
				t.Fatal(err)
			}
			if _, ok := priv["d"]; !ok {
				t.Error(`PrivateJWK has no "d" member`)
			}
		})
	}
}
