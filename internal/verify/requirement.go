package verify

// requirement is a ClaimRequirement compiled for O(1) value lookups.
type requirement struct {
	name   string
	values map[string]struct{} // empty: presence is enough
}

func compileRequirements(reqs []ClaimRequirement) []requirement {
	out := make([]requirement, len(reqs))
	for i, r := range reqs {
		out[i].name = r.Name
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
	claimStrings(v, func(s string) bool {
		if _, ok := r.values[s]; ok {
			found = true
			return false
		}
		for w := range words(s) {
			if _, ok := r.values[w]; ok {
				found = true
				return false
			}
		}
		return true
	})
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
