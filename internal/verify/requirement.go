package verify

// requirement is a ClaimRequirement compiled for O(1) value lookups.
type requirement struct {
	name   string
	values map[string]struct{} // empty: presence is enough
	words  bool                // a string value is a space-separated list (scope, scp)
}

// wordClaims are the claims whose string value is a space-separated list by definition:
// "scope" (RFC 8693 §4.2, RFC 9068 §2.2.3) and "scp", its Azure AD and Okta spelling.
var wordClaims = map[string]bool{"scope": true, "scp": true}

func compileRequirements(reqs []ClaimRequirement) []requirement {
	out := make([]requirement, len(reqs))
	for i, r := range reqs {
		out[i].name = r.Name
		out[i].words = wordClaims[r.Name]
		if len(r.Values) > 0 {
			out[i].values = make(map[string]struct{}, len(r.Values))
			for _, v := range r.Values {
				out[i].values[v] = struct{}{}
			}
		}
	}
	return out
}

// check returns "" when c satisfies r, else why not.
func (r *requirement) check(c *Claims) Reason {
	v, ok := c.Get(r.name)
	if !ok {
		return ReasonMissingClaim
	}
	if len(r.values) == 0 {
		return ""
	}
	found := false
	if str, ok := v.(string); ok && r.words {
		// Only here are words values: elsewhere "readonly admin" is one value, not "admin".
		for w := range words(str) {
			if _, ok := r.values[w]; ok {
				found = true
				break
			}
		}
	}
	if !found {
		claimStrings(v, func(s string) bool {
			_, found = r.values[s]
			return !found
		})
	}
	if !found {
		return ReasonClaimMismatch
	}
	return ""
}

// checkAll returns the first unmet requirement's reason and name.
func checkAll(reqs []requirement, c *Claims) (Reason, string) {
	for i := range reqs {
		if why := reqs[i].check(c); why != "" {
			return why, reqs[i].name
		}
	}
	return "", ""
}
