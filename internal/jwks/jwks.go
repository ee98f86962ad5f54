// Package jwks renders and parses JSON Web Key Sets (RFC 7517) and OpenID discovery
// documents. It accepts public, asymmetric keys only, each pinned to one algorithm.
package jwks

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// Marshal renders keys as a JWKS. It refuses anything that is not a public key with a kid
// and an algorithm that suits it, so private material can never be published by mistake.
func Marshal(keys []jose.JSONWebKey) ([]byte, error) {
	seen := map[string]bool{}
	for i := range keys {
		if err := checkPublic(keys[i]); err != nil {
			return nil, fmt.Errorf("key %d (%s): %w", i, keys[i].KeyID, err)
		}
		if seen[keys[i].KeyID] {
			// Parse refuses such a set, so never publish one.
			return nil, fmt.Errorf("key %d: duplicate kid %q", i, keys[i].KeyID)
		}
		seen[keys[i].KeyID] = true
	}
	set := jose.JSONWebKeySet{Keys: keys}
	if set.Keys == nil {
		set.Keys = []jose.JSONWebKey{}
	}
	return json.MarshalIndent(set, "", "  ")
}

// Parse reads a JWKS and checks every key: public, asymmetric, with a unique kid and an
// algorithm that suits the key. One bad key fails the whole set: a verifier must not run on
// a silently partial set.
func Parse(data []byte) (*jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("parsing JWKS: %w", err)
	}
	seen := map[string]bool{}
	for i, k := range set.Keys {
		if err := checkPublic(k); err != nil {
			return nil, fmt.Errorf("keys[%d] (kid %q): %w", i, k.KeyID, err)
		}
		if seen[k.KeyID] {
			return nil, fmt.Errorf("keys[%d]: duplicate kid %q", i, k.KeyID)
		}
		seen[k.KeyID] = true
	}
	return &set, nil
}

func checkPublic(k jose.JSONWebKey) error {
	if k.KeyID == "" {
		return errors.New("no kid")
	}
	if k.Use != "" && k.Use != "sig" {
		return fmt.Errorf("use %q is not sig", k.Use)
	}
	if !k.IsPublic() {
		return errors.New("not a public key")
	}
	if !k.Valid() {
		return errors.New("invalid key")
	}
	return AlgorithmSuits(k.Key, k.Algorithm)
}

// AlgorithmSuits checks that alg is an asymmetric JWS algorithm usable with pub.
func AlgorithmSuits(pub any, alg string) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if (strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")) && len(alg) == 5 && alg != "RSA1_5" {
			if k.N.BitLen() < 2048 {
				return fmt.Errorf("RSA key of %d bits is too small", k.N.BitLen())
			}
			switch alg[2:] {
			case "256", "384", "512":
				return nil
			}
		}
	case *ecdsa.PublicKey:
		want := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg]
		if want != nil && k.Curve == want {
			return nil
		}
	case ed25519.PublicKey:
		if alg == "EdDSA" {
			return nil
		}
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
	return fmt.Errorf("algorithm %q does not suit a %T", alg, pub)
}

// PlainHTTP reports whether uri is fetched over plain http, where anyone on the network
// path can substitute keys.
func PlainHTTP(uri string) bool {
	const scheme = "http://"
	return len(uri) >= len(scheme) && strings.EqualFold(uri[:len(scheme)], scheme)
}

// DefaultJWKSURI is where the manager serves an issuer's JWKS.
func DefaultJWKSURI(issuer string) string { return issuer + "/.well-known/jwks.json" }

// DiscoveryPath is the OpenID discovery document's path under an issuer.
const DiscoveryPath = "/.well-known/openid-configuration"

// Discovery is the subset of OpenID Connect Discovery 1.0 metadata a JWT issuer needs.
type Discovery struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
}

// DiscoveryDocument renders the discovery document for issuer, listing the algorithms of
// the published keys.
func DiscoveryDocument(issuer, jwksURI string, keys []jose.JSONWebKey) ([]byte, error) {
	if issuer == "" {
		return nil, errors.New("no issuer")
	}
	if jwksURI == "" {
		jwksURI = DefaultJWKSURI(issuer)
	}
	algSet := map[string]bool{}
	for _, k := range keys {
		algSet[k.Algorithm] = true
	}
	algs := make([]string, 0, len(algSet))
	for a := range algSet {
		algs = append(algs, a)
	}
	sort.Strings(algs)
	return json.MarshalIndent(Discovery{
		Issuer:                           issuer,
		JWKSURI:                          jwksURI,
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: algs,
	}, "", "  ")
}
