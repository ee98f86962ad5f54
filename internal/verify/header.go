package verify

import (
	"fmt"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// checkCompact accepts only the compact JWS shape: three parts, the first two non-empty (a
// JWT's payload is a JSON object). It rejects a five-part JWE and the JSON serialization
// before any decoding, and line breaks, the only bytes outside the base64url alphabet that
// Go's decoder would skip rather than refuse. The scans are vectorised: this runs on every
// uncached request.
func checkCompact(raw string) error {
	if n := strings.Count(raw, "."); n != 2 {
		return reject(ReasonMalformed, fmt.Sprintf("%d parts, want 3 (compact JWS only)", n+1))
	}
	if strings.IndexByte(raw, '\n') >= 0 || strings.IndexByte(raw, '\r') >= 0 {
		return reject(ReasonMalformed, "line break in token")
	}
	first := strings.IndexByte(raw, '.')
	if first == 0 || raw[first+1] == '.' {
		return reject(ReasonMalformed, "empty header or payload")
	}
	return nil
}

// checkHeader refuses header parameters that would change how the token must be processed.
// No critical extension is understood: "crit" is always refused, and so is b64=false
// (RFC 7797), which go-jose would honour. jku, x5u, jwk and x5c are never read: keys come
// only from the KeySet.
func checkHeader(h jose.Header) error {
	if _, ok := h.ExtraHeaders["crit"]; ok {
		return reject(ReasonUnsupportedHeader, "crit")
	}
	if b64, ok := h.ExtraHeaders["b64"]; ok && b64 != true {
		return reject(ReasonUnsupportedHeader, "b64")
	}
	return nil
}

// checkType enforces RequiredTokenType on the "typ" header, before the key is looked up: a
// token of another type (an ID token where an access token is wanted) is refused unread.
func (v *Verifier) checkType(h jose.Header) error {
	if v.typ == "" {
		return nil
	}
	typ, _ := h.ExtraHeaders[jose.HeaderType].(string)
	if typ == "" {
		return reject(ReasonWrongTokenType, "no typ")
	}
	if mediaType(typ) != v.typ {
		return reject(ReasonWrongTokenType, fmt.Sprintf("typ %.64q", typ))
	}
	return nil
}

// mediaType is the canonical form of a typ value (RFC 7515 §4.1.9): media types compare
// case-insensitively, and a value without "/" means "application/" + it.
func mediaType(typ string) string {
	typ = strings.ToLower(typ)
	if !strings.Contains(typ, "/") {
		typ = "application/" + typ
	}
	return typ
}
