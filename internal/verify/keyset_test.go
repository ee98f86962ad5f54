package verify

import (
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
)

func TestKeySetsPinEachKIDToItsAlgorithm(t *testing.T) {
	es, rs := testKey(t, "ES256"), testKey(t, "PS384")
	doc, err := jwks.Marshal([]jose.JSONWebKey{es.PublicJWK(), rs.PublicJWK()})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := ParseKeySet(doc)
	if err != nil {
		t.Fatal(err)
	}
	if ks.Len() != 2 {
		t.Fatalf("Len %d", ks.Len())
	}
	for _, k := range []struct{ kid, alg string }{{es.KID, "ES256"}, {rs.KID, "PS384"}} {
		if alg, ok := ks.Algorithm(k.kid); !ok || alg != k.alg {
			t.Errorf("Algorithm(%s) = %q, %v", k.kid, alg, ok)
		}
	}
	if got := ks.KIDs(); len(got) != 2 || got[0] > got[1] {
		t.Errorf("KIDs %v, want two sorted", got)
	}
}

func TestKeySetsRefuseUnpinnedOrUnsafeKeys(t *testing.T) {
	es := testKey(t, "ES256")
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	other := namedKey(t, "other", "ES256")
	cases := []struct {
		name string
		keys []jose.JSONWebKey
		want string
	}{
		{"a JWK without alg", []jose.JSONWebKey{{Key: es.Public, KeyID: es.KID, Use: "sig"}}, "no alg"},
		{"a JWK without kid", []jose.JSONWebKey{{Key: es.Public, Algorithm: "ES256"}}, "no kid"},
		{"a private key", []jose.JSONWebKey{es.PrivateJWK()}, "not a public key"},
		{"an encryption key", []jose.JSONWebKey{{Key: es.Public, KeyID: es.KID, Algorithm: "ES256", Use: "enc"}}, "use"},
		{"an alg that does not suit the key", []jose.JSONWebKey{{Key: es.Public, KeyID: es.KID, Algorithm: "ES384"}}, "does not suit"},
		{"a symmetric alg", []jose.JSONWebKey{{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "h", Algorithm: "HS256"}}, "not a public key"},
		{"an RSA key under 2048 bits", []jose.JSONWebKey{{Key: &small.PublicKey, KeyID: "s", Algorithm: "RS256"}}, "too small"},
		{"two keys under one kid", []jose.JSONWebKey{es.PublicJWK(), {Key: other.Public, KeyID: es.KID, Algorithm: "ES256"}}, "two different keys"},
		{"one key under one kid with two algs", []jose.JSONWebKey{es.PublicJWK(), {Key: es.Public, KeyID: es.KID, Algorithm: "ES384"}}, "does not suit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewKeySet(tc.keys...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

func TestKeySetsAcceptTheSameKeyTwice(t *testing.T) {
	es := testKey(t, "ES256")
	ks, err := NewKeySet(es.PublicJWK(), es.PublicJWK())
	if err != nil || ks.Len() != 1 {
		t.Fatalf("NewKeySet: %v, %d keys", err, ks.Len())
	}
}

func TestParseKeySetRefusesABadDocument(t *testing.T) {
	for _, doc := range []string{``, `{`, `{"keys":[{"kty":"EC"}]}`, `[]`} {
		if _, err := ParseKeySet([]byte(doc)); err == nil {
			t.Errorf("ParseKeySet(%q) succeeded", doc)
		}
	}
}

func TestANilKeySetHasNoKeys(t *testing.T) {
	var ks *KeySet
	if ks.Len() != 0 || ks.KIDs() != nil {
		t.Error("nil KeySet has keys")
	}
	if _, ok := ks.Algorithm("x"); ok {
		t.Error("nil KeySet has an algorithm")
	}
	v, err := New(Config{Issuer: issuer, Audiences: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Ready() {
		t.Error("a verifier without keys is ready")
	}
	_, err = v.Verify(newToken(t, testKey(t, "ES256")), t0)
	wantReason(t, nil, err, ReasonUnknownKID)
}
