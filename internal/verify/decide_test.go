package verify

import "testing"

func TestDecide(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t, configured(func(c *Config) {
		c.Rules = []Rule{
			{PathPrefix: "/healthz", Anonymous: true},
			{PathPrefix: "/public/", Methods: []string{"GET", "HEAD"}, Anonymous: true},
			{PathPrefix: "/admin/", RequiredClaims: []ClaimRequirement{{Name: "groups", Values: []string{"admins"}}}},
			{PathPrefix: "/api/", Methods: []string{"DELETE"}, RequiredClaims: []ClaimRequirement{{Name: "scope", Values: []string{"delete"}}}},
			{PathPrefix: "/api/", RequiredClaims: []ClaimRequirement{{Name: "scope"}}},
		}
	}))
	plain, err := v.Verify(newToken(t, k), t0)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := v.Verify(newToken(t, k, withClaim("groups", []string{"dev", "admins"}), withClaim("scope", "read delete")), t0)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name         string
		method, path string
		claims       *Claims
		want         Decision
	}{
		{"a health check needs no token", "GET", "/healthz", nil, Decision{Outcome: AllowAnonymous, Rule: 0}},
		{"an anonymous route stays anonymous with a token", "GET", "/healthz", plain, Decision{Outcome: AllowAnonymous, Rule: 0}},
		{"an anonymous rule is limited to its methods", "POST", "/public/form", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: -1}},
		{"an anonymous rule with a matching method", "HEAD", "/public/logo.png", nil, Decision{Outcome: AllowAnonymous, Rule: 1}},
		{"dot segments cannot borrow an anonymous prefix", "GET", "/healthz/../admin/users", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: 2}},
		{"doubled slashes are collapsed before matching", "GET", "//admin//users", plain, Decision{Outcome: Forbidden, Reason: ReasonMissingClaim, Claim: "groups", Rule: 2}},
		{"a protected route without a token", "GET", "/admin/users", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: 2}},
		{"a protected route with a token lacking the claim", "GET", "/admin/users", plain, Decision{Outcome: Forbidden, Reason: ReasonMissingClaim, Claim: "groups", Rule: 2}},
		{"a protected route with the claim", "GET", "/admin/users", admin, Decision{Outcome: Allow, Rule: 2}},
		{"the first matching rule decides", "DELETE", "/api/items/1", plain, Decision{Outcome: Forbidden, Reason: ReasonMissingClaim, Claim: "scope", Rule: 3}},
		{"a later rule applies to other methods", "GET", "/api/items/1", admin, Decision{Outcome: Allow, Rule: 4}},
		{"a scope word satisfies a rule", "DELETE", "/api/items/1", admin, Decision{Outcome: Allow, Rule: 3}},
		{"no rule matching needs just a valid token", "GET", "/other", plain, Decision{Outcome: Allow, Rule: -1}},
		{"no rule matching and no token", "GET", "/other", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: -1}},
		{"a trailing slash is kept for prefixes that need it", "GET", "/admin/", admin, Decision{Outcome: Allow, Rule: 2}},
		{"a prefix with a trailing slash matches the bare segment", "GET", "/admin", plain, Decision{Outcome: Forbidden, Reason: ReasonMissingClaim, Claim: "groups", Rule: 2}},
		{"a prefix matches whole segments only", "GET", "/healthz-debug", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: -1}},
		{"a prefix matches below its segment", "GET", "/healthz/ready", nil, Decision{Outcome: AllowAnonymous, Rule: 0}},
		{"a segment-prefixed neighbour is not the rule's", "GET", "/administrator", plain, Decision{Outcome: Allow, Rule: -1}},
		{"an empty path is the root", "GET", "", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: -1}},
		{"a relative path is rooted", "GET", "healthz", nil, Decision{Outcome: AllowAnonymous, Rule: 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := v.Decide(tc.method, tc.path, tc.claims)
			if got != tc.want {
				t.Fatalf("Decide(%s %s) = %+v, want %+v", tc.method, tc.path, got, tc.want)
			}
			if got.Allowed() != (got.Outcome == Allow || got.Outcome == AllowAnonymous) {
				t.Error("Allowed disagrees with Outcome")
			}
		})
	}
}

// Servers answer HEAD with their GET handler: a rule limited to GET must cover HEAD too, or
// HEAD would fall through to a weaker rule.
func TestAGetRuleCoversHead(t *testing.T) {
	v := newVerifier(t, configured(func(c *Config) {
		c.Rules = []Rule{
			{PathPrefix: "/reports/", Methods: []string{"get"}, RequiredClaims: []ClaimRequirement{{Name: "groups", Values: []string{"auditors"}}}},
			{PathPrefix: "/reports/", Anonymous: true},
		}
	}))
	for _, method := range []string{"GET", "HEAD"} {
		if got := v.Decide(method, "/reports/q3", nil); got.Rule != 0 || got.Outcome != Unauthenticated {
			t.Errorf("%s: %+v, want rule 0 to ask for a token", method, got)
		}
	}
	if got := v.Decide("POST", "/reports/q3", nil); got.Rule != 1 {
		t.Errorf("POST: %+v, want the anonymous rule 1", got)
	}
}

func TestOutcomesHaveNames(t *testing.T) {
	for o, want := range map[Outcome]string{Allow: "allow", AllowAnonymous: "allow_anonymous", Unauthenticated: "unauthenticated", Forbidden: "forbidden", 0: "unknown"} {
		if o.String() != want {
			t.Errorf("%d.String() = %q, want %q", o, o.String(), want)
		}
	}
}

func TestCleanPathDoesNotAllocateForCleanPaths(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _ = cleanPath("/api/v1/items/") }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
