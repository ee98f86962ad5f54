package verify

import (
	"crypto"
	"errors"
	"fmt"
	"sort"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
)

// KeySet is an immutable set of public keys, each pinned to the one algorithm its JWK
// names. Build a new set and swap it into the Verifier instead of changing one.
type KeySet struct {
	byKID map[string]*pinnedKey
}

// pinnedKey is a public key and the only algorithm tokens under its kid may use.
type pinnedKey struct {
	kid string
	alg string
	pub crypto.PublicKey
}

// same reports whether two keys would verify exactly the same tokens: a token cached under
// one may be trusted under the other.
func (k *pinnedKey) same(o *pinnedKey) bool {
	if k == o {
		return true
	}
	if k == nil || o == nil || k.kid != o.kid || k.alg != o.alg {
		return false
	}
	eq, ok := k.pub.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(o.pub)
}

// ParseKeySet builds a KeySet from JWKS documents (for example one per trusted source).
// Every key must be public, asymmetric, carry a kid and an alg that suits it.
func ParseKeySet(docs ...[]byte) (*KeySet, error) {
	var all []jose.JSONWebKey
	for i, d := range docs {
		set, err := jwks.Parse(d)
		if err != nil {
			return nil, fmt.Errorf("JWKS %d: %w", i, err)
		}
		all = append(all, set.Keys...)
	}
	return NewKeySet(all...)
}

// NewKeySet builds a KeySet from JWKs. A kid that appears twice must name the same key
// with the same alg: two keys under one kid would make the pinning ambiguous.
func NewKeySet(keys ...jose.JSONWebKey) (*KeySet, error) {
	ks := &KeySet{byKID: make(map[string]*pinnedKey, len(keys))}
	for i := range keys {
		k := &keys[i]
		if err := checkJWK(k); err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, k.KeyID, err)
		}
		p := &pinnedKey{kid: k.KeyID, alg: k.Algorithm, pub: k.Key}
		if prev, dup := ks.byKID[p.kid]; dup {
			if !prev.same(p) {
				return nil, fmt.Errorf("key %d: kid %q names two different keys", i, p.kid)
			}
			continue
		}
		ks.byKID[p.kid] = p
	}
	return ks, nil
}

func checkJWK(k *jose.JSONWebKey) error {
	switch {
	case k.KeyID == "":
		return errors.New("no kid")
	case k.Algorithm == "":
		return errors.New("no alg: every key must be pinned to one algorithm")
	case k.Use != "" && k.Use != "sig":
		return fmt.Errorf("use %q is not sig", k.Use)
	case !k.IsPublic():
		return errors.New("not a public key")
	case !k.Valid():
		return errors.New("invalid key")
	}
	return jwks.AlgorithmSuits(k.Key, k.Algorithm)
}

func (ks *KeySet) lookup(kid string) *pinnedKey {
	if ks == nil {
		return nil
	}
	return ks.byKID[kid]
}

// Len is the number of keys.
func (ks *KeySet) Len() int {
	if ks == nil {
		return 0
	}
	return len(ks.byKID)
}

// Algorithm is the algorithm pinned to kid.
func (ks *KeySet) Algorithm(kid string) (string, bool) {
	k := ks.lookup(kid)
	if k == nil {
		return "", false
	}
	return k.alg, true
}

// KIDs lists the key ids, sorted.
func (ks *KeySet) KIDs() []string {
	if ks == nil {
		return nil
	}
	out := make([]string, 0, len(ks.byKID))
	for kid := range ks.byKID {
		out = append(out, kid)
	}
	sort.Strings(out)
	return out
}
