// Package keys generates signing keys, names them by RFC 7638 thumbprint, stores them in a
// Secret's data map and decides, as a pure function of time, how each key generation moves
// through Next → Active → Retired → removed. It imports no Kubernetes client.
package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	_ "crypto/sha256" // RFC 7638 thumbprints hash with SHA-256
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	jose "github.com/go-jose/go-jose/v4"
)

// Params says what kind of key to generate.
type Params struct {
	Algorithm string // a JWS alg: RS256 … EdDSA
	RSABits   int    // for RS*/PS* only
}

// DefaultRSABits is the modulus size used when an RSA algorithm has none.
const DefaultRSABits = 2048

// Algorithms lists every supported JWS algorithm. Only asymmetric ones: a verifier never
// holds anything that can sign.
var Algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// IsRSA reports whether alg uses an RSA key.
func IsRSA(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return true
	}
	return false
}

// Normalized fills in defaults: an RSA size for RSA algorithms, none for others.
func (p Params) Normalized() Params {
	if IsRSA(p.Algorithm) {
		if p.RSABits == 0 {
			p.RSABits = DefaultRSABits
		}
	} else {
		p.RSABits = 0
	}
	return p
}

// Validate checks that the algorithm and size are supported.
func (p Params) Validate() error {
	switch p.Algorithm {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		switch p.Normalized().RSABits {
		case 2048, 3072, 4096:
			return nil
		}
		return fmt.Errorf("RSA key size %d is not one of 2048, 3072, 4096", p.RSABits)
	case "ES256", "ES384", "ES512", "EdDSA":
		if p.RSABits != 0 {
			return fmt.Errorf("an RSA key size does not apply to %s", p.Algorithm)
		}
		return nil
	}
	return fmt.Errorf("unsupported algorithm %q", p.Algorithm)
}

// Expensive reports whether generating such a key takes long enough (RSA: up to seconds)
// that it should not block a reconcile worker.
func (p Params) Expensive() bool { return IsRSA(p.Algorithm) }

// Key is one key generation: its kid, pinned algorithm and key material. Private is nil
// when only the public half is known (a key whose private part was lost but which may still
// have to verify tokens).
type Key struct {
	KID       string
	Algorithm string
	Private   crypto.Signer
	Public    crypto.PublicKey
}

// Generate makes a new key for p. rand is the entropy source (crypto/rand in production).
func Generate(rand io.Reader, p Params) (*Key, error) {
	p = p.Normalized()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	var priv crypto.Signer
	var err error
	switch p.Algorithm {
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand)
	case "ES384":
		priv, err = ecdsa.GenerateKey(elliptic.P384(), rand)
	case "ES512":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand)
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand)
	default:
		priv, err = rsa.GenerateKey(rand, p.RSABits)
	}
	if err != nil {
		return nil, fmt.Errorf("generating %s key: %w", p.Algorithm, err)
	}
	return FromPrivate(priv, p.Algorithm)
}

// FromPrivate wraps existing private key material, checking that it suits alg.
func FromPrivate(priv crypto.Signer, alg string) (*Key, error) {
	if err := suits(priv.Public(), alg); err != nil {
		return nil, err
	}
	kid, err := Thumbprint(priv.Public())
	if err != nil {
		return nil, err
	}
	return &Key{KID: kid, Algorithm: alg, Private: priv, Public: priv.Public()}, nil
}

// FromPublicJWK wraps a public JWK (a key whose private half is gone).
func FromPublicJWK(data []byte) (*Key, error) {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("parsing public JWK: %w", err)
	}
	if !jwk.IsPublic() || !jwk.Valid() {
		return nil, errors.New("not a valid public JWK")
	}
	if err := suits(jwk.Key, jwk.Algorithm); err != nil {
		return nil, err
	}
	kid, err := Thumbprint(jwk.Key)
	if err != nil {
		return nil, err
	}
	if jwk.KeyID != kid {
		return nil, fmt.Errorf("JWK kid %q is not its thumbprint %q", jwk.KeyID, kid)
	}
	return &Key{KID: kid, Algorithm: jwk.Algorithm, Public: jwk.Key}, nil
}

// suits checks that a public key is of the type and size alg needs.
func suits(pub crypto.PublicKey, alg string) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if IsRSA(alg) {
			switch k.N.BitLen() {
			case 2048, 3072, 4096:
				return nil
			}
			return fmt.Errorf("RSA key of %d bits is not allowed", k.N.BitLen())
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
	}
	return fmt.Errorf("a %T does not suit algorithm %q", pub, alg)
}

// Thumbprint is the RFC 7638 JWK thumbprint of a public key, base64url without padding.
func Thumbprint(pub crypto.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	sum, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("computing thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}

// PublicJWK is the key's public half as a JWK with kid, alg and use=sig.
func (k *Key) PublicJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.Public, KeyID: k.KID, Algorithm: k.Algorithm, Use: "sig"}
}

// PrivateJWK is the key with its private half, for issuers that want a JWK.
func (k *Key) PrivateJWK() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.Private, KeyID: k.KID, Algorithm: k.Algorithm, Use: "sig"}
}

// PrivatePEM encodes the private key as PKCS #8 PEM.
func (k *Key) PrivatePEM() ([]byte, error) {
	if k.Private == nil {
		return nil, fmt.Errorf("key %s has no private half", k.KID)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.Private)
	if err != nil {
		return nil, fmt.Errorf("encoding key %s: %w", k.KID, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivatePEM decodes a PKCS #8 PEM private key.
func ParsePrivatePEM(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("trailing data after PEM block")
	}
	if block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("PEM block is %q, want PRIVATE KEY", block.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing PKCS #8 key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T cannot sign", k)
	}
	return s, nil
}
