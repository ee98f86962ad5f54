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

// The sidecar does not know whether the app routes case-insensitively (Express by default,
// ASP.NET Core) or not (Go, Spring), so a request must satisfy the first rule matching its
// path read exactly and the first matching it read case-folded.
func TestDecideReadsThePathBothWaysForCase(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t, configured(func(c *Config) {
		c.Rules = []Rule{
			{PathPrefix: "/admin", RequiredClaims: []ClaimRequirement{{Name: "groups", Values: []string{"admins"}}}},
			{PathPrefix: "/Reports", RequiredClaims: []ClaimRequirement{{Name: "groups", Values: []string{"auditors"}}}},
			{PathPrefix: "/PUBLIC", Anonymous: true},
			{PathPrefix: "/public", Anonymous: true},
			{PathPrefix: "/Docs", Anonymous: true},
			{PathPrefix: "/stra\u00dfe", RequiredClaims: []ClaimRequirement{{Name: "groups", Values: []string{"admins"}}}},
			{PathPrefix: "/", Anonymous: true},
		}
	}))
	plain, err := v.Verify(newToken(t, k), t0)
	if err != nil {
		t.Fatal(err)
	}
	admin, err := v.Verify(newToken(t, k, withClaim("groups", []string{"admins"})), t0)
	if err != nil {
		t.Fatal(err)
	}
	auditor, err := v.Verify(newToken(t, k, withClaim("groups", []string{"auditors"})), t0)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		path   string
		claims *Claims
		want   Decision
	}{
		{"an upper-case path does not skip a lower-case rule for a catch-all anonymous one", "/ADMIN/users", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: 0}},
		{"an upper-case path needs the claims of the lower-case rule", "/ADMIN/users", plain, Decision{Outcome: Forbidden, Reason: ReasonMissingClaim, Claim: "groups", Rule: 0}},
		{"an upper-case path with the claims of the lower-case rule", "/ADMIN/users", admin, Decision{Outcome: Allow, Rule: 0}},
		{"a mixed-case path is folded too", "/aDmIn", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: 0}},
		{"the folded reading keeps whole segments", "/ADMINISTRATOR", nil, Decision{Outcome: AllowAnonymous, Rule: 6}},
		{"a lower-case path does not skip an upper-case rule", "/reports/q3", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: 1}},
		{"an exact-case path under an upper-case rule", "/Reports/q3", auditor, Decision{Outcome: Allow, Rule: 1}},
		{"anonymous when both readings are anonymous", "/Public/logo.png", nil, Decision{Outcome: AllowAnonymous, Rule: 6}},
		{"anonymous under two different anonymous rules", "/public/logo.png", nil, Decision{Outcome: AllowAnonymous, Rule: 3}},
		{"an exact-case anonymous path stays anonymous", "/Docs/intro", nil, Decision{Outcome: AllowAnonymous, Rule: 4}},
		{"a folded anonymous rule gives nothing a token rule asks for", "/admin/users", plain, Decision{Outcome: Forbidden, Reason: ReasonMissingClaim, Claim: "groups", Rule: 0}},
		{"a dotless i reads as i to a router comparing upper case", "/adm\u0131n", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: 0}},
		{"a dotted capital I reads as i to a router comparing lower case", "/ADM\u0130N", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: 0}},
		{"non-ASCII letters fold as Unicode does", "/STRA\u1e9eE", nil, Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: 5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := v.Decide("GET", tc.path, tc.claims); got != tc.want {
				t.Fatalf("Decide(GET %s) = %+v, want %+v", tc.path, got, tc.want)
			}
		})
	}
}

// A token must meet the claims of both readings' rules when they differ.
func TestDecideNeedsTheClaimsOfBothReadings(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t, configured(func(c *Config) {
		c.Rules = []Rule{
			{PathPrefix: "/Billing", RequiredClaims: []ClaimRequirement{{Name: "groups", Values: []string{"finance"}}}},
			{PathPrefix: "/billing", RequiredClaims: []ClaimRequirement{{Name: "groups", Values: []string{"staff"}}}},
		}
	}))
	for _, tc := range []struct {
		name   string
		groups []string
		want   Outcome
	}{
		{"the exact rule's claims alone are not enough", []string{"staff"}, Forbidden},
		{"the folded rule's claims alone are not enough", []string{"finance"}, Forbidden},
		{"the claims of both rules pass", []string{"finance", "staff"}, Allow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(newToken(t, k, withClaim("groups", tc.groups)), t0)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.Decide("GET", "/billing/x", c); got.Outcome != tc.want {
				t.Fatalf("Decide = %+v, want %s", got, tc.want)
			}
		})
	}
}

func TestDecideDoesNotAllocateForLowerCasePaths(t *testing.T) {
	v := newVerifier(t, configured(func(c *Config) {
		c.Rules = []Rule{{PathPrefix: "/healthz", Anonymous: true}, {PathPrefix: "/admin/", RequiredClaims: []ClaimRequirement{{Name: "groups", Values: []string{"admins"}}}}}
	}))
	for _, p := range []string{"/api/v1/items/", "/ADMIN/users"} {
		if n := testing.AllocsPerRun(100, func() { _ = v.Decide("GET", p, nil) }); n != 0 {
			t.Errorf("%s: %v allocations", p, n)
		}
	}
}
