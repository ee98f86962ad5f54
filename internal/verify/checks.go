package verify

import (
	"fmt"
	"time"
)

// checkClaims applies the policy to signature-verified claims: issuer, audience, time
// claims with skew, lifetime cap and required claims.
func (v *Verifier) checkClaims(c *Claims, now time.Time) error {
	if c.Issuer != v.cfg.Issuer {
		return reject(ReasonWrongIssuer, fmt.Sprintf("iss %.64q", c.Issuer))
	}
	if !v.audienceMatches(c.Audience) {
		return reject(ReasonWrongAudience, "")
	}
	skew := v.cfg.ClockSkew
	if c.Expiry.IsZero() {
		return reject(ReasonMissingExp, "")
	}
	if !now.Before(c.Expiry.Add(skew)) {
		return errExpired
	}
	if !c.NotBefore.IsZero() && c.NotBefore.Add(-skew).After(now) {
		return errNotYetValid
	}
	if !c.IssuedAt.IsZero() && c.IssuedAt.Add(-skew).After(now) {
		return reject(ReasonIssuedInFuture, "")
	}
	if limit := v.cfg.MaxTokenLifetime; limit > 0 {
		if c.IssuedAt.IsZero() {
			return reject(ReasonMissingIAT, "a lifetime cap needs iat")
		}
		if life := c.Expiry.Sub(c.IssuedAt); life > limit {
			return reject(ReasonLifetimeExceeded, fmt.Sprintf("lifetime %s over %s", life, limit))
		}
	}
	if why, name := checkAll(v.required, c); why != "" {
		return reject(why, fmt.Sprintf("claim %q", name))
	}
	return nil
}

func (v *Verifier) audienceMatches(aud []string) bool {
	for _, a := range aud {
		for _, want := range v.cfg.Audiences {
			if a == want {
				return true
			}
		}
	}
	return false
}
