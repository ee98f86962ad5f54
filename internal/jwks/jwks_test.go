package jwks_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// allAlgorithms are the ten algorithms a SigningKey may use.
var allAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// fixtureKeys caches one generated key per algorithm (RSA at 2048 bits): RSA generation costs
// up to a second on a busy machine.
var fixtureKeys = struct {
	sync.Mutex
	m map[string]*keys.Key
}{m: map[string]*keys.Key{}}

// fixtureKey returns a cached key for alg. Tests must not modify it.
func fixtureKey(t testing.TB, alg string) *keys.Key {
	t.Helper()
	fixtureKeys.Lock()
	defer fixtureKeys.Unlock()
	if k := fixtureKeys.m[alg]; k != nil {
		return k
	}
	k, err := keys.Generate(rand.Reader, keys.Params{Algorithm: alg})
	if err != nil {
		t.Fatalf("generating %s fixture key: %v", alg, err)
	}
	fixtureKeys.m[alg] = k
	return k
}

// jwkOption changes a fixture JWK; k is the key it was made from.
type jwkOption func(jwk *jose.JSONWebKey, k *keys.Key)

func withKID(kid string) jwkOption { return func(j *jose.JSONWebKey, _ *keys.Key) { j.KeyID = kid } }
func withAlg(alg string) jwkOption {
	return func(j *jose.JSONWebKey, _ *keys.Key) { j.Algorithm = alg }
}
func withUse(use string) jwkOption { return func(j *jose.JSONWebKey, _ *keys.Key) { j.Use = use } }
func withMaterial(m any) jwkOption { return func(j *jose.JSONWebKey, _ *keys.Key) { j.Key = m } }
func withPrivateHalf() jwkOption   { return func(j *jose.JSONWebKey, k *keys.Key) { j.Key = k.Private } }

// publicJWK is the public JWK (kid, alg, use=sig) of the fixture key for alg, changed by opts.
func publicJWK(t testing.TB, alg string, opts ...jwkOption) jose.JSONWebKey {
	t.Helper()
	k := fixtureKey(t, alg)
	jwk := k.PublicJWK()
	for _, o := range opts {
		o(&jwk, k)
	}
	return jwk
}

// smallRSAKey is a 1024-bit RSA public key, too small for any JWS use here.
var smallRSAKey = sync.OnceValue(func() *rsa.PublicKey {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		panic(err)
	}
	return &k.PublicKey
})

// rawJWK renders one JWK without any of Marshal's checks, to build sets Parse must refuse.
func rawJWK(t testing.TB, jwk jose.JSONWebKey) string {
	t.Helper()
	b, err := json.Marshal(jwk)
	if err != nil {
		t.Fatalf("rendering fixture JWK: %v", err)
	}
	return string(b)
}

func set(members ...string) []byte {
	return []byte(`{"keys":[` + strings.Join(members, ",") + `]}`)
}

func TestMarshalRefusesKeysThatMustNotBePublished(t *testing.T) {
	tests := []struct {
		name string
		bad  jose.JSONWebKey
	}{
		{"a private EC key is refused", publicJWK(t, "ES256", withPrivateHalf())},
		{"a private RSA key is refused", publicJWK(t, "RS256", withPrivateHalf())},
		{"a private Ed25519 key is refused", publicJWK(t, "EdDSA", withPrivateHalf())},
		{"a key without kid is refused", publicJWK(t, "ES256", withKID(""))},
		{"a symmetric key is refused", publicJWK(t, "ES256", withMaterial([]byte("0123456789abcdef0123456789abcdef")), withAlg("HS256"))},
		{"ES384 on a P-256 key is refused", publicJWK(t, "ES256", withAlg("ES384"))},
		{"ES256 on a P-384 key is refused", publicJWK(t, "ES384", withAlg("ES256"))},
		{"RS256 on an EC key is refused", publicJWK(t, "ES256", withAlg("RS256"))},
		{"EdDSA on an RSA key is refused", publicJWK(t, "RS256", withAlg("EdDSA"))},
		{"ES256 on an Ed25519 key is refused", publicJWK(t, "EdDSA", withAlg("ES256"))},
		{"a key without alg is refused", publicJWK(t, "ES256", withAlg(""))},
		{"an RS999 key is refused", publicJWK(t, "RS256", withAlg("RS999"))},
		{"an RSA encryption alg on an RSA key is refused", publicJWK(t, "RS256", withAlg("RSA-OAEP"))},
		{"an RSA key of 1024 bits is refused", publicJWK(t, "RS256", withMaterial(smallRSAKey()))},
		{"a key for encryption (use=enc) is refused", publicJWK(t, "ES256", withUse("enc"))},
		{"a key without material is refused", publicJWK(t, "ES256", withMaterial(nil))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := publicJWK(t, "EdDSA")
			out, err := jwks.Marshal([]jose.JSONWebKey{good, tt.bad})
			if err == nil {
				t.Fatalf("Marshal accepted the key and rendered:\n%s", out)
			}
			if out != nil {
				t.Errorf("Marshal returned output along with error %v", err)
			}
			if !strings.Contains(err.Error(), "key 1") {
				t.Errorf("error %q does not say which key is bad (key 1)", err)
			}
		})
	}
}

func TestMarshalOfNoKeysIsAnEmptyArray(t *testing.T) {
	tests := []struct {
		name string
		in   []jose.JSONWebKey
	}{
		{"a nil list renders keys as []", nil},
		{"an empty list renders keys as []", []jose.JSONWebKey{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := jwks.Marshal(tt.in)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			var doc map[string]json.RawMessage
			if err := json.Unmarshal(out, &doc); err != nil {
				t.Fatalf("output is not a JSON object: %v\n%s", err, out)
			}
			if len(doc) != 1 || string(doc["keys"]) != "[]" {
				t.Errorf(`Marshal(%#v) = %s, want {"keys": []}`, tt.in, out)
			}
		})
	}
}

func TestParseRoundTripsMarshalForEveryAlgorithm(t *testing.T) {
	if len(allAlgorithms) != len(keys.Algorithms) {
		t.Fatalf("keys.Algorithms has %d entries, the tests know %d", len(keys.Algorithms), len(allAlgorithms))
	}
	for _, alg := range allAlgorithms {
		t.Run(alg+" keys survive Marshal then Parse", func(t *testing.T) {
			in := publicJWK(t, alg)
			out, err := jwks.Marshal([]jose.JSONWebKey{in})
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			got, err := jwks.Parse(out)
			if err != nil {
				t.Fatalf("Parse of Marshal output: %v\n%s", err, out)
			}
			if len(got.Keys) != 1 {
				t.Fatalf("Parse gave %d keys, want 1", len(got.Keys))
			}
			sameJWK(t, got.Keys[0], in)
		})
	}

	t.Run("a set of all ten algorithms survives Marshal then Parse in order", func(t *testing.T) {
		var in []jose.JSONWebKey
		for _, alg := range allAlgorithms {
			in = append(in, publicJWK(t, alg))
		}
		out, err := jwks.Marshal(in)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		got, err := jwks.Parse(out)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if len(got.Keys) != len(in) {
			t.Fatalf("Parse gave %d keys, want %d", len(got.Keys), len(in))
		}
		for i := range in {
			sameJWK(t, got.Keys[i], in[i])
		}
	})
}

func sameJWK(t *testing.T, got, want jose.JSONWebKey) {
	t.Helper()
	if got.KeyID != want.KeyID || got.Algorithm != want.Algorithm || got.Use != want.Use {
		t.Errorf("got kid=%q alg=%q use=%q, want kid=%q alg=%q use=%q",
			got.KeyID, got.Algorithm, got.Use, want.KeyID, want.Algorithm, want.Use)
	}
	if !got.IsPublic() {
		t.Errorf("parsed key %s is a %T, not a public key", got.KeyID, got.Key)
	}
	type equaler interface{ Equal(x crypto.PublicKey) bool }
	w, ok := want.Key.(equaler)
	if !ok {
		t.Fatalf("fixture key %T has no Equal method", want.Key)
	}
	if !w.Equal(got.Key) {
		t.Errorf("parsed key material of %s differs from the marshalled key", got.KeyID)
	}
	kid, err := keys.Thumbprint(got.Key)
	if err != nil || kid != got.KeyID {
		t.Errorf("parsed key's thumbprint is %q (%v), want its kid %q", kid, err, got.KeyID)
	}
}

func TestParseRejectsUntrustworthySets(t *testing.T) {
	es := rawJWK(t, publicJWK(t, "ES256"))
	tests := []struct {
		name string
		data []byte
		want string // part of the error
	}{
		{"two keys with the same kid are refused", set(es, rawJWK(t, publicJWK(t, "EdDSA", withKID(fixtureKey(t, "ES256").KID)))), "duplicate kid"},
		{"the same key listed twice is refused", set(es, es), "duplicate kid"},
		{"a private EC JWK is refused", set(rawJWK(t, publicJWK(t, "ES256", withPrivateHalf()))), "not a public key"},
		{"a private RSA JWK is refused", set(rawJWK(t, publicJWK(t, "RS256", withPrivateHalf()))), "not a public key"},
		{"a private JWK after a good one is refused", set(es, rawJWK(t, publicJWK(t, "EdDSA", withPrivateHalf()))), "keys[1]"},
		{"a symmetric JWK is refused", set(`{"kty":"oct","kid":"hmac","alg":"HS256","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`), "not a public key"},
		{"an RSA key under 2048 bits is refused", set(rawJWK(t, publicJWK(t, "RS256", withMaterial(smallRSAKey())))), "too small"},
		{"an RSA key claiming RS999 is refused", set(rawJWK(t, publicJWK(t, "RS256", withAlg("RS999")))), "does not suit"},
		{"an EC key claiming RS256 is refused", set(rawJWK(t, publicJWK(t, "ES256", withAlg("RS256")))), "does not suit"},
		{"a P-256 key claiming ES384 is refused", set(rawJWK(t, publicJWK(t, "ES256", withAlg("ES384")))), "does not suit"},
		{"a key without alg is refused", set(rawJWK(t, publicJWK(t, "ES256", withAlg("")))), "does not suit"},
		{"a key without kid is refused", set(rawJWK(t, publicJWK(t, "ES256", withKID("")))), "no kid"},
		{"an encryption key is refused", set(rawJWK(t, publicJWK(t, "ES256", withUse("enc")))), "not sig"},
		{"a JWK of unknown type is refused", set(`{"kty":"XYZ","kid":"x","alg":"ES256"}`), "parsing JWKS"},
		{"truncated JSON is refused", []byte(`{"keys":[` + es), "parsing JWKS"},
		{"garbage is refused", []byte("not json at all"), "parsing JWKS"},
		{"a keys member that is not an array is refused", []byte(`{"keys":{"kid":"x"}}`), "parsing JWKS"},
		{"a bare array of keys is refused", []byte(`[` + es + `]`), "parsing JWKS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := jwks.Parse(tt.data)
			if err == nil {
				t.Fatalf("Parse accepted %d keys from\n%s", len(got.Keys), tt.data)
			}
			if got != nil {
				t.Errorf("Parse returned a set along with error %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestDiscoveryDocument(t *testing.T) {
	rs, es, ed, ps := publicJWK(t, "RS256"), publicJWK(t, "ES256"), publicJWK(t, "EdDSA"), publicJWK(t, "PS512")
	rs2 := publicJWK(t, "RS256", withKID("another-rs256-key"))
	tests := []struct {
		name     string
		issuer   string
		jwksURI  string
		keys     []jose.JSONWebKey
		wantURI  string
		wantAlgs []string
	}{
		{
			name:     "the algorithms are listed once each, sorted",
			issuer:   "https://issuer.example.com",
			keys:     []jose.JSONWebKey{rs, ps, es, rs2, ed, es},
			wantURI:  "https://issuer.example.com/.well-known/jwks.json",
			wantAlgs: []string{"ES256", "EdDSA", "PS512", "RS256"},
		},
		{
			name:     "the jwks_uri defaults to the issuer's well-known JWKS",
			issuer:   "https://issuer.example.com/tenants/blue",
			keys:     []jose.JSONWebKey{es},
			wantURI:  "https://issuer.example.com/tenants/blue/.well-known/jwks.json",
			wantAlgs: []string{"ES256"},
		},
		{
			name:     "an explicit jwks_uri is kept",
			issuer:   "https://issuer.example.com",
			jwksURI:  "https://cdn.example.net/keys.json",
			keys:     []jose.JSONWebKey{ed},
			wantURI:  "https://cdn.example.net/keys.json",
			wantAlgs: []string{"EdDSA"},
		},
		{
			name:     "no keys give an empty algorithm list, not null",
			issuer:   "https://issuer.example.com",
			wantURI:  "https://issuer.example.com/.well-known/jwks.json",
			wantAlgs: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := jwks.DiscoveryDocument(tt.issuer, tt.jwksURI, tt.keys)
			if err != nil {
				t.Fatalf("DiscoveryDocument: %v", err)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(out, &raw); err != nil {
				t.Fatalf("output is not a JSON object: %v\n%s", err, out)
			}
			if string(raw["id_token_signing_alg_values_supported"]) == "null" {
				t.Errorf("id_token_signing_alg_values_supported is null, want a list")
			}
			var got jwks.Discovery
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("decoding output: %v", err)
			}
			want := jwks.Discovery{
				Issuer:                           tt.issuer,
				JWKSURI:                          tt.wantURI,
				ResponseTypesSupported:           []string{"id_token"},
				SubjectTypesSupported:            []string{"public"},
				IDTokenSigningAlgValuesSupported: tt.wantAlgs,
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("DiscoveryDocument =\n%+v\nwant\n%+v", got, want)
			}
		})
	}

	t.Run("an empty issuer is an error", func(t *testing.T) {
		out, err := jwks.DiscoveryDocument("", "https://cdn.example.net/keys.json", []jose.JSONWebKey{es})
		if err == nil {
			t.Fatalf("DiscoveryDocument accepted an empty issuer and rendered:\n%s", out)
		}
	})
}

func TestAlgorithmSuits(t *testing.T) {
	ec := fixtureKey(t, "ES256").Public.(*ecdsa.PublicKey)
	ed := fixtureKey(t, "EdDSA").Public.(ed25519.PublicKey)
	rsaKey := fixtureKey(t, "RS256").Public.(*rsa.PublicKey)
	tests := []struct {
		name string
		pub  any
		alg  string
		ok   bool
	}{
		{"PS384 suits a 2048-bit RSA key", rsaKey, "PS384", true},
		{"RS512 suits a 2048-bit RSA key", rsaKey, "RS512", true},
		{"RS256 does not suit a 1024-bit RSA key", smallRSAKey(), "RS256", false},
		{"RSA1_5 does not suit an RSA key", rsaKey, "RSA1_5", false},
		{"RS1024 does not suit an RSA key", rsaKey, "RS1024", false},
		{"ES256 suits a P-256 key", ec, "ES256", true},
		{"ES512 does not suit a P-256 key", ec, "ES512", false},
		{"EdDSA suits an Ed25519 key", ed, "EdDSA", true},
		{"Ed25519 is not the JWS name of EdDSA", ed, "Ed25519", false},
		{"nothing suits a symmetric key", []byte("secret"), "HS256", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := jwks.AlgorithmSuits(tt.pub, tt.alg)
			if (err == nil) != tt.ok {
				t.Errorf("AlgorithmSuits(%T, %q) = %v, want ok=%v", tt.pub, tt.alg, err, tt.ok)
			}
		})
	}
}

// FuzzParse feeds arbitrary bytes to Parse. It must never panic, and whatever it accepts
// must be publishable again with Marshal and parse back to the same kids.
func FuzzParse(f *testing.F) {
	var all []jose.JSONWebKey
	for _, alg := range []string{"RS256", "ES256", "ES512", "EdDSA"} {
		all = append(all, publicJWK(f, alg))
	}
	good, err := jwks.Marshal(all)
	if err != nil {
		f.Fatalf("Marshal of the seed keys: %v", err)
	}
	es := rawJWK(f, publicJWK(f, "ES256"))
	f.Add(good)
	f.Add(set(es))
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"keys":null}`))
	f.Add(set(es, es))
	f.Add(set(rawJWK(f, publicJWK(f, "ES256", withPrivateHalf()))))
	f.Add(set(rawJWK(f, publicJWK(f, "RS256", withAlg("RS999")))))
	f.Add(set(`{"kty":"oct","kid":"hmac","alg":"HS256","k":"c2VjcmV0"}`))
	f.Add(set(`{"kty":"OKP","crv":"Ed25519","kid":"k","alg":"EdDSA","x":"AAAA"}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k","alg":"ES256","x":"","y":""}]}`))
	f.Add([]byte("\x00\xff{"))

	f.Fuzz(func(t *testing.T, data []byte) {
		parsed, err := jwks.Parse(data)
		if err != nil {
			return
		}
		out, err := jwks.Marshal(parsed.Keys)
		if err != nil {
			t.Fatalf("Parse accepted a set that Marshal refuses: %v\ninput: %q", err, data)
		}
		again, err := jwks.Parse(out)
		if err != nil {
			t.Fatalf("Marshal output of an accepted set does not parse: %v\n%s", err, out)
		}
		if got, want := kids(again.Keys), kids(parsed.Keys); !reflect.DeepEqual(got, want) {
			t.Fatalf("re-parsed kids %v, want %v", got, want)
		}
	})
}

func kids(ks []jose.JSONWebKey) []string {
	out := make([]string, 0, len(ks))
	for _, k := range ks {
		out = append(out, k.KeyID)
	}
	return out
}
