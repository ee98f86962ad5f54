package verify

import (
	"errors"
	"unicode/utf8"
)

// Reason says why a token or request was rejected. The set is small and fixed so that it
// can label metrics and logs without unbounded cardinality.
type Reason string

// Rejection reasons.
const (
	ReasonMalformed         Reason = "malformed"          // not a compact JWS with a JSON object header and payload
	ReasonOversized         Reason = "oversized"          // longer than MaxTokenBytes
	ReasonUnsupportedHeader Reason = "unsupported_header" // crit, or b64 other than true
	ReasonAlgNotAllowed     Reason = "alg_not_allowed"    // header alg not among the allowed asymmetric ones
	ReasonMissingKID        Reason = "missing_kid"
	ReasonUnknownKID        Reason = "unknown_kid"
	ReasonAlgMismatch       Reason = "alg_mismatch" // header alg differs from the alg pinned to the kid
	ReasonBadSignature      Reason = "bad_signature"
	ReasonWrongIssuer       Reason = "wrong_issuer"
	ReasonWrongAudience     Reason = "wrong_audience"
	ReasonMissingExp        Reason = "missing_exp"
	ReasonExpired           Reason = "expired"
	ReasonNotYetValid       Reason = "not_yet_valid"
	ReasonIssuedInFuture    Reason = "issued_in_future"
	ReasonMissingIAT        Reason = "missing_iat" // only when MaxTokenLifetime is set
	ReasonLifetimeExceeded  Reason = "lifetime_exceeded"
	ReasonWrongTokenType    Reason = "wrong_token_type" // typ missing or not RequiredTokenType
	ReasonMissingClaim      Reason = "missing_claim"
	ReasonClaimMismatch     Reason = "claim_mismatch" // present, but none of the wanted values
	ReasonRevokedToken      Reason = "revoked_token"
	ReasonRevokedSubject    Reason = "revoked_subject"
	ReasonRevokedKey        Reason = "revoked_key"
	ReasonMissingToken      Reason = "missing_token"   // request carries no token where the policy reads it
	ReasonAmbiguousToken    Reason = "ambiguous_token" // request carries more than one candidate token
)

// Error is a rejection. Its message may carry detail for logs; Reason is what to count.
type Error struct {
	reason Reason
	detail string
	kid    string
}

func (e *Error) Error() string {
	if e.detail == "" {
		return "token rejected: " + string(e.reason)
	}
	return "token rejected: " + string(e.reason) + ": " + e.detail
}

// Reason is the stable rejection reason.
func (e *Error) Reason() Reason { return e.reason }

// KID is the token's kid when the rejection concerns a key (unknown_kid, alg_mismatch,
// revoked_key); it is attacker-controlled text, fine for logs with quoting, never for labels.
func (e *Error) KID() string { return e.kid }

// Is makes errors.Is(err, &Error{...}) compare reasons, so callers can match a class.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.reason == e.reason
}

// ReasonOf extracts the rejection reason of err, or "" when err is not a rejection.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.reason
	}
	return ""
}

// maxDetail caps error details, which may quote attacker-supplied text, for logs.
const maxDetail = 200

func reject(r Reason, detail string) *Error {
	if len(detail) > maxDetail {
		cut := maxDetail
		for cut > 0 && !utf8.RuneStart(detail[cut]) {
			cut--
		}
		detail = detail[:cut] + "…"
	}
	return &Error{reason: r, detail: detail}
}

// Preallocated rejections for the hot paths (cache hits, revocations): no allocation per request.
var (
	errMalformed      = &Error{reason: ReasonMalformed}
	errOversized      = &Error{reason: ReasonOversized}
	errExpired        = &Error{reason: ReasonExpired}
	errNotYetValid    = &Error{reason: ReasonNotYetValid}
	errRevokedToken   = &Error{reason: ReasonRevokedToken}
	errRevokedSubject = &Error{reason: ReasonRevokedSubject}
	errRevokedKey     = &Error{reason: ReasonRevokedKey}
	errMissingToken   = &Error{reason: ReasonMissingToken}
	errAmbiguousToken = &Error{reason: ReasonAmbiguousToken}
)
