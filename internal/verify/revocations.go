package verify

import "time"

// RevokedToken revokes one token by jti; an empty Issuer matches any issuer.
type RevokedToken struct {
	JTI    string
	Issuer string
}

// RevokedSubject rejects a subject's tokens issued before NotBefore (and those without
// iat, whose issue time is unknown); an empty Issuer matches any issuer.
type RevokedSubject struct {
	Subject   string
	Issuer    string
	NotBefore time.Time
}

// Revocations is an immutable snapshot of what is revoked, merged from every RevocationList
// that applies. Lookups are map reads, so the verifier can consult it on every request.
type Revocations struct {
	tokens   map[issuedName]struct{}
	subjects map[issuedName]time.Time
	keys     map[string]struct{}
}

// issuedName is a jti or subject scoped to an issuer ("" for any issuer).
type issuedName struct{ name, iss string }

// NewRevocations builds a snapshot. When a subject appears more than once for the same
// issuer, the latest NotBefore wins: revoking more is the safe merge.
func NewRevocations(tokens []RevokedToken, subjects []RevokedSubject, kids []string) *Revocations {
	r := &Revocations{
		tokens:   make(map[issuedName]struct{}, len(tokens)),
		subjects: make(map[issuedName]time.Time, len(subjects)),
		keys:     make(map[string]struct{}, len(kids)),
	}
	for _, t := range tokens {
		if t.JTI != "" {
			r.tokens[issuedName{t.JTI, t.Issuer}] = struct{}{}
		}
	}
	for _, s := range subjects {
		if s.Subject == "" {
			continue
		}
		k := issuedName{s.Subject, s.Issuer}
		if prev, ok := r.subjects[k]; !ok || s.NotBefore.After(prev) {
			r.subjects[k] = s.NotBefore
		}
	}
	for _, kid := range kids {
		if kid != "" {
			r.keys[kid] = struct{}{}
		}
	}
	return r
}

// Len is the number of entries in force.
func (r *Revocations) Len() int {
	if r == nil {
		return 0
	}
	return len(r.tokens) + len(r.subjects) + len(r.keys)
}

// KeyRevoked reports whether kid is revoked.
func (r *Revocations) KeyRevoked(kid string) bool {
	if r == nil {
		return false
	}
	_, ok := r.keys[kid]
	return ok
}

// check returns the rejection for verified claims, or nil. It allocates nothing.
func (r *Revocations) check(c *Claims) *Error {
	if r == nil {
		return nil
	}
	if len(r.keys) > 0 {
		if _, ok := r.keys[c.KeyID]; ok {
			return errRevokedKey
		}
	}
	if c.ID != "" && len(r.tokens) > 0 {
		if _, ok := r.tokens[issuedName{c.ID, ""}]; ok {
			return errRevokedToken
		}
		if _, ok := r.tokens[issuedName{c.ID, c.Issuer}]; ok {
			return errRevokedToken
		}
	}
	if c.Subject != "" && len(r.subjects) > 0 {
		if r.subjectRevoked(issuedName{c.Subject, ""}, c.IssuedAt) ||
			r.subjectRevoked(issuedName{c.Subject, c.Issuer}, c.IssuedAt) {
			return errRevokedSubject
		}
	}
	return nil
}

func (r *Revocations) subjectRevoked(k issuedName, iat time.Time) bool {
	nb, ok := r.subjects[k]
	if !ok {
		return false
	}
	return iat.IsZero() || iat.Before(nb)
}
