package jwks

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Usable picks the keys of a remote JWKS that can verify tokens under allowed
// (empty: every algorithm). Identity providers publish more than signing keys (Keycloak an
// RSA-OAEP encryption key, others keys without alg), so unlike the JWKS file, where one bad
// key rejects the file, a remote key that cannot be used is skipped. A key without alg gets
// the one algorithm its type allows (EC curve, Ed25519), or for RSA the only RSA algorithm
// allowed; otherwise it is skipped: the token header's alg is never trusted.
func Usable(doc []byte, allowed []string) (keys []jose.JSONWebKey, skipped int, err error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, 0, fmt.Errorf("not a JWKS: %w", err)
	}
	if set.Keys == nil {
		return nil, 0, errors.New("not a JWKS: no \"keys\" array")
	}
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			skipped++
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			skipped++
			continue
		}
		if k.Algorithm == "" {
			k.Algorithm = inferAlgorithm(k.Key, allowed)
		}
		if !slices.Contains(allowed, k.Algorithm) {
			skipped++
			continue
		}
		if err := checkPublic(k); err != nil {
			skipped++
			continue
		}
		keys = append(keys, k)
	}
	return keys, skipped, nil
}

func inferAlgorithm(pub any, allowed []string) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ES256"
		case elliptic.P384():
			return "ES384"
		case elliptic.P521():
			return "ES512"
		}
	case ed25519.PublicKey:
		return "EdDSA"
	case *rsa.PublicKey:
		var only string
		for _, a := range allowed {
			if strings.HasPrefix(a, "RS") || strings.HasPrefix(a, "PS") {
				if only != "" {
					return "" // ambiguous
				}
				only = a
			}
		}
		return only
	}
	return ""
}

// CacheLifetime is how long a fetched JWKS stays fresh: Cache-Control max-age less Age,
// else Expires less Date, else def; no-store and no-cache mean as short as allowed. The
// result is clamped to [lo, hi].
func CacheLifetime(h http.Header, now time.Time, def, lo, hi time.Duration) time.Duration {
	d, ok := maxAge(h.Values("Cache-Control"))
	if ok && d > 0 {
		if age, err := strconv.ParseInt(strings.TrimSpace(h.Get("Age")), 10, 64); err == nil && age > 0 {
			d -= time.Duration(min(age, maxAgeSeconds)) * time.Second
		}
	}
	if !ok {
		if exp := h.Get("Expires"); exp != "" {
			ok = true
			d = 0 // an invalid Expires means already expired (RFC 9111 §5.3)
			if t, err := http.ParseTime(exp); err == nil {
				base := now
				if date, err := http.ParseTime(h.Get("Date")); err == nil {
					base = date
				}
				d = t.Sub(base)
			}
		}
	}
	if !ok {
		d = def
	}
	return min(max(d, lo), hi)
}

// maxAgeSeconds bounds parsed delta-seconds so that conversions cannot overflow.
const maxAgeSeconds = 1 << 31

// maxAge reads the max-age directive; no-store and no-cache win and mean zero.
func maxAge(values []string) (time.Duration, bool) {
	var d time.Duration
	found, noCache := false, false
	for _, v := range values {
		for dir := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				noCache = true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(arg), `"`), 10, 64)
				if err != nil || n < 0 {
					continue
				}
				d, found = time.Duration(min(n, maxAgeSeconds))*time.Second, true
			}
		}
	}
	if noCache {
		return 0, true
	}
	return d, found
}
