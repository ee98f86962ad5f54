package verify

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
	"unsafe"

	jose "github.com/go-jose/go-jose/v4"
)

// Verify checks a compact JWS JWT at time now and returns its claims, or an *Error whose
// Reason says why it was rejected. The returned Claims may be shared with other callers
// through the cache and must not be modified.
func (v *Verifier) Verify(raw string, now time.Time) (*Claims, error) {
	if raw == "" {
		return nil, reject(ReasonMalformed, "empty token")
	}
	if len(raw) > v.cfg.MaxTokenBytes {
		return nil, errOversized
	}
	ks := v.keys.Load()
	if v.cache == nil {
		res, err := v.verifyToken(raw, ks, now)
		if err != nil {
			return nil, err
		}
		return v.checkRevoked(res.claims)
	}

	// Hash without copying: sha256 only reads the bytes, and raw outlives the call.
	sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
	nowNanos := unixNanos(now)
	if claims, key, set, ok := v.cache.get(&sum, nowNanos); ok {
		// A token is only as good as its key: it must still be in the current set.
		if set == ks || ks.lookup(key.kid).same(key) {
			return v.checkRevoked(claims)
		}
	}
	res, err := v.verifyToken(raw, ks, now)
	if err != nil {
		return nil, err
	}
	// Cached before the revocation check: a replayed revoked token then costs a hash, not
	// a signature verification, and revocations are checked on every hit anyway.
	// A high-s ECDSA signature is cached as its low-s twin, with its own sum as an alias:
	// the two spellings of one token share one entry.
	canon, alias := &sum, (*[32]byte)(nil)
	if twin, ok := lowSTwinSum(raw, res.key.alg); ok {
		canon, alias = &twin, &sum
	}
	v.cache.put(canon, alias, res.claims, res.key, res.set, v.validFrom(res.claims), v.validUntil(res.claims), nowNanos, entryCost(raw))
	return v.checkRevoked(res.claims)
}

func (v *Verifier) checkRevoked(c *Claims) (*Claims, error) {
	if err := v.revs.Load().check(c); err != nil {
		return nil, err
	}
	return c, nil
}

// verified is a token that passed verifyToken, with the key that verified it and the
// KeySet holding that key (newer than the one passed in if the unknown-kid hook refreshed).
type verified struct {
	claims *Claims
	key    *pinnedKey
	set    *KeySet
}

// verifyToken is the full check of a token not in the cache: shape, header, key, signature,
// then claims. Cheap rejections come before the signature check.
func (v *Verifier) verifyToken(raw string, ks *KeySet, now time.Time) (verified, error) {
	if err := checkCompact(raw); err != nil {
		return verified{}, err
	}
	if err := checkCanonical(raw); err != nil {
		return verified{}, err
	}
	// The allowed list stops none, HS256 and friends before anything else is read.
	jws, err := jose.ParseSignedCompact(raw, v.algs)
	if err != nil {
		var unexpected *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &unexpected) {
			return verified{}, reject(ReasonAlgNotAllowed, fmt.Sprintf("alg %.32q", string(unexpected.Got)))
		}
		return verified{}, reject(ReasonMalformed, err.Error())
	}
	if len(jws.Signatures) != 1 {
		return verified{}, reject(ReasonMalformed, "not exactly one signature")
	}
	h := jws.Signatures[0].Header
	if err := checkHeader(h); err != nil {
		return verified{}, err
	}
	if err := v.checkType(h); err != nil {
		return verified{}, err
	}
	key, ks, err := v.keyFor(h.KeyID, ks)
	if err != nil {
		return verified{}, err
	}
	// The pinned alg decides; a header that disagrees is an algorithm-confusion attempt.
	if h.Algorithm != key.alg {
		return verified{}, &Error{reason: ReasonAlgMismatch, kid: key.kid,
			detail: fmt.Sprintf("header alg %s, key pinned to %s", h.Algorithm, key.alg)}
	}
	if v.revs.Load().KeyRevoked(key.kid) {
		return verified{}, errRevokedKey // no point spending a signature check
	}
	// Verify with the bare public key, not a JWK or set, so go-jose cannot pick another.
	payload, err := jws.Verify(key.pub)
	if err != nil {
		return verified{}, reject(ReasonBadSignature, "")
	}
	claims, err := parseClaims(payload)
	if err != nil {
		return verified{}, reject(ReasonMalformed, err.Error())
	}
	claims.KeyID, claims.Algorithm = key.kid, key.alg
	if err := v.checkClaims(claims, now); err != nil {
		return verified{}, err
	}
	return verified{claims, key, ks}, nil
}

// keyFor finds the pinned key for kid, giving the unknown-kid hook one chance to refresh.
// It returns the KeySet the key was found in.
func (v *Verifier) keyFor(kid string, ks *KeySet) (*pinnedKey, *KeySet, error) {
	if kid == "" {
		return nil, nil, reject(ReasonMissingKID, "")
	}
	if key := ks.lookup(kid); key != nil {
		return key, ks, nil
	}
	if v.unknownFn != nil && v.unknownFn(kid) {
		fresh := v.keys.Load()
		if key := fresh.lookup(kid); key != nil {
			return key, fresh, nil
		}
	}
	return nil, nil, &Error{reason: ReasonUnknownKID, kid: kid}
}

// validFrom and validUntil bound a cached entry by the same rules checkClaims applies.
func (v *Verifier) validFrom(c *Claims) int64 {
	from := c.NotBefore
	if c.IssuedAt.After(from) {
		from = c.IssuedAt
	}
	if from.IsZero() {
		return unixNanos(minNanoTime)
	}
	return unixNanos(from.Add(-v.cfg.ClockSkew))
}

func (v *Verifier) validUntil(c *Claims) int64 {
	return unixNanos(c.Expiry.Add(v.cfg.ClockSkew))
}
