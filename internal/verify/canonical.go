package verify

import (
	"bytes"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
	"unsafe"
)

// A valid token must have exactly one spelling that verifies, or every spelling is a fresh
// cache entry and a fresh signature check: one token becomes thousands. Two kinds of
// variant exist. Base64url's last character may carry unused bits that decoders ignore
// (refused by checkCanonical), and an ECDSA signature (r, s) verifies as (r, n−s) too
// (accepted, since issuers produce high s half the time, but cached as its low-s twin).

// checkCanonical refuses a compact token (three parts, as checkCompact checked) whose
// segments are not canonical unpadded base64url: the string encode(decode(s)) gives back.
// Looking at the last character of each segment is enough: padding is found by one
// vectorised scan, and any other byte outside the alphabet fails the decoder go-jose uses
// (line breaks, which it would skip, checkCompact refuses). It allocates nothing.
func checkCanonical(raw string) error {
	if strings.IndexByte(raw, '=') >= 0 {
		return reject(ReasonMalformed, "base64url padding in token")
	}
	first := strings.IndexByte(raw, '.')
	last := strings.LastIndexByte(raw, '.')
	for i, seg := range [3]string{raw[:first], raw[first+1 : last], raw[last+1:]} {
		if !canonicalTail(seg) {
			return reject(ReasonMalformed, "non-canonical base64url in "+segmentNames[i])
		}
	}
	return nil
}

var segmentNames = [3]string{"header", "payload", "signature"}

// canonicalTail reports whether seg's length is possible for unpadded base64 and its last
// character leaves the bits beyond the encoded bytes zero: with 2 characters over a
// multiple of 4 the last carries 4 unused bits, with 3 it carries 2.
func canonicalTail(seg string) bool {
	var unused byte
	switch len(seg) % 4 {
	case 0:
		return true
	case 1:
		return false // 6 bits cannot end a byte
	case 2:
		unused = 0x0f
	case 3:
		unused = 0x03
	}
	v, ok := base64URLValue(seg[len(seg)-1])
	return ok && v&unused == 0
}

func base64URLValue(c byte) (byte, bool) {
	switch {
	case 'A' <= c && c <= 'Z':
		return c - 'A', true
	case 'a' <= c && c <= 'z':
		return c - 'a' + 26, true
	case '0' <= c && c <= '9':
		return c - '0' + 52, true
	case c == '-':
		return 62, true
	case c == '_':
		return 63, true
	}
	return 0, false
}

// ecdsaOrder is the group order n of the curve behind each ECDSA alg, and half of it, as
// big-endian bytes of the length r and s have in a JWS signature (RFC 7518 §3.4).
type ecdsaOrder struct {
	n, half []byte
	size    int
}

var ecdsaOrders = map[string]ecdsaOrder{
	"ES256": orderOf(elliptic.P256(), 32),
	"ES384": orderOf(elliptic.P384(), 48),
	"ES512": orderOf(elliptic.P521(), 66),
}

func orderOf(c elliptic.Curve, size int) ecdsaOrder {
	n := c.Params().N
	return ecdsaOrder{n: n.FillBytes(make([]byte, size)), half: new(big.Int).Rsh(n, 1).FillBytes(make([]byte, size)), size: size}
}

// lowSTwinSum returns the SHA-256 of raw with its ECDSA signature's s replaced by n−s,
// when alg is an ECDSA alg and s is the high one of the pair (n/2 < s < n). Such a token
// and its low-s twin verify alike, so they share the twin's cache entry. Anything else
// (other algs, low s, a signature of the wrong length or out of range) has no twin.
// Called only for a verified token, off the cached path; it works on stack buffers.
func lowSTwinSum(raw, alg string) (sum [32]byte, ok bool) {
	o, isEC := ecdsaOrders[alg]
	if !isEC {
		return sum, false
	}
	cut := strings.LastIndexByte(raw, '.') + 1
	enc := raw[cut:]
	var sig [2 * 66]byte
	if base64.RawURLEncoding.DecodedLen(len(enc)) != 2*o.size {
		return sum, false
	}
	if _, err := base64.RawURLEncoding.Decode(sig[:], unsafe.Slice(unsafe.StringData(enc), len(enc))); err != nil {
		return sum, false
	}
	s := sig[o.size : 2*o.size]
	if bytes.Compare(s, o.half) <= 0 || bytes.Compare(s, o.n) >= 0 {
		return sum, false
	}
	var borrow int
	for i := o.size - 1; i >= 0; i-- { // s = n − s, big-endian with borrow
		d := int(o.n[i]) - int(s[i]) - borrow
		borrow = 0
		if d < 0 {
			d += 256
			borrow = 1
		}
		s[i] = byte(d)
	}
	var out [176]byte // base64 of 132 bytes
	base64.RawURLEncoding.Encode(out[:], sig[:2*o.size])
	h := sha256.New()
	h.Write(unsafe.Slice(unsafe.StringData(raw), cut))
	h.Write(out[:base64.RawURLEncoding.EncodedLen(2*o.size)])
	h.Sum(sum[:0])
	return sum, true
}
