package verify

import (
	"path"
	"slices"
	"strings"
)

// Outcome is what a request may do.
type Outcome uint8

// Outcomes of Decide.
const (
	// Allow: a verified token satisfies the route.
	Allow Outcome = iota + 1
	// AllowAnonymous: the route needs no token.
	AllowAnonymous
	// Unauthenticated: the route needs a valid token and has none (401).
	Unauthenticated
	// Forbidden: a valid token does not satisfy the route's rule (403).
	Forbidden
)

func (o Outcome) String() string {
	switch o {
	case Allow:
		return "allow"
	case AllowAnonymous:
		return "allow_anonymous"
	case Unauthenticated:
		return "unauthenticated"
	case Forbidden:
		return "forbidden"
	}
	return "unknown"
}

// Decision is the outcome for one request.
type Decision struct {
	Outcome Outcome
	// Reason is set for Unauthenticated and Forbidden.
	Reason Reason
	// Claim is the requirement a Forbidden token did not meet.
	Claim string
	// Rule is the index of the rule that decided, or -1 when none matched.
	Rule int
}

// Allowed reports whether the request may reach the app.
func (d Decision) Allowed() bool { return d.Outcome == Allow || d.Outcome == AllowAnonymous }

type rule struct {
	base      string // the path prefix without its trailing slash; "" for "/"
	methods   []string
	anonymous bool
	required  []requirement
}

func compileRules(rules []Rule) []rule {
	out := make([]rule, len(rules))
	for i, r := range rules {
		out[i] = rule{base: strings.TrimRight(r.PathPrefix, "/"), anonymous: r.Anonymous, required: compileRequirements(r.RequiredClaims)}
		for _, m := range r.Methods {
			out[i].methods = append(out[i].methods, strings.ToUpper(m))
		}
		// Servers answer HEAD with their GET handler, so a GET rule covers HEAD too.
		if slices.Contains(out[i].methods, "GET") && !slices.Contains(out[i].methods, "HEAD") {
			out[i].methods = append(out[i].methods, "HEAD")
		}
	}
	return out
}

// matches compares the path segment by segment, as Kubernetes Ingress "Prefix" paths do:
// "/admin" and "/admin/" both match "/admin", "/admin/" and "/admin/users", and neither
// matches "/administrator", so an anonymous "/healthz" does not open "/healthz-debug".
func (r *rule) matches(method, p string) bool {
	if !strings.HasPrefix(p, r.base) || (len(p) > len(r.base) && p[len(r.base)] != '/') {
		return false
	}
	if len(r.methods) == 0 {
		return true
	}
	for _, m := range r.methods {
		if m == method {
			return true
		}
	}
	return false
}

// Decide applies the rules to a request; claims is nil when the request has no valid
// token. Pass the decoded URL path (URL.Path). The first matching rule decides; a request no
// rule matches needs a valid token and nothing more.
func (v *Verifier) Decide(method, urlPath string, claims *Claims) Decision {
	p := cleanPath(urlPath)
	for i := range v.rules {
		r := &v.rules[i]
		if !r.matches(method, p) {
			continue
		}
		if r.anonymous {
			return Decision{Outcome: AllowAnonymous, Rule: i}
		}
		if claims == nil {
			return Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: i}
		}
		if why, name := checkAll(r.required, claims); why != "" {
			return Decision{Outcome: Forbidden, Reason: why, Claim: name, Rule: i}
		}
		return Decision{Outcome: Allow, Rule: i}
	}
	if claims == nil {
		return Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: -1}
	}
	return Decision{Outcome: Allow, Rule: -1}
}

// cleanPath resolves dot segments and repeated slashes before prefix matching, so that
// "/healthz/../admin" cannot borrow the anonymous rule of "/healthz". A trailing slash is
// kept, as it matters to prefixes such as "/api/". Clean paths are returned unchanged,
// without allocating.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	if !needsClean(p) {
		return p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

func needsClean(p string) bool {
	return strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
}
