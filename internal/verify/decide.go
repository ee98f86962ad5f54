package verify

import (
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
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

// foldFree reports whether every rule prefix is ASCII without upper case, so that a path
// that is ASCII without upper case reads the same folded: the case-folded pass is skipped.
func foldFree(rules []rule) bool {
	for i := range rules {
		if !lowerASCII(rules[i].base) {
			return false
		}
	}
	return true
}

func lowerASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// matches compares the path segment by segment, as Kubernetes Ingress "Prefix" paths do:
// "/admin" and "/admin/" both match "/admin", "/admin/" and "/admin/users", and neither
// matches "/administrator", so an anonymous "/healthz" does not open "/healthz-debug".
// Under fold, letters compare case-insensitively, as Express (by default), ASP.NET Core and
// other case-insensitive routers read the path.
func (r *rule) matches(method, p string, fold bool) bool {
	if fold {
		n, ok := prefixFold(p, r.base)
		if !ok || (len(p) > n && p[n] != '/') {
			return false
		}
	} else if !strings.HasPrefix(p, r.base) || (len(p) > len(r.base) && p[len(r.base)] != '/') {
		return false
	}
	return r.allows(method)
}

func (r *rule) allows(method string) bool {
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

// prefixFold reports whether p begins with prefix read case-insensitively (equalFoldRune: the
// widest reading a case-insensitive router may have) and how many bytes of p that takes.
func prefixFold(p, prefix string) (int, bool) {
	i := 0
	for _, pr := range prefix {
		if i >= len(p) {
			return 0, false
		}
		r, size := utf8.DecodeRuneInString(p[i:])
		if r != pr && !equalFoldRune(r, pr) {
			return 0, false
		}
		i += size
	}
	return i, true
}

// equalFoldRune reports whether a case-insensitive router could read r as s: they share a
// case-folding orbit (strings.EqualFold), or upper-case or lower-case to the same rune, as
// comparisons by ToUpper (.NET's OrdinalIgnoreCase) or ToLower do: "ı" upper-cases to "I",
// "İ" lower-cases to "i", though neither folds so.
func equalFoldRune(r, s rune) bool {
	if unicode.ToUpper(r) == unicode.ToUpper(s) || unicode.ToLower(r) == unicode.ToLower(s) {
		return true
	}
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f == s {
			return true
		}
	}
	return false
}

// Decide applies the rules to a request; claims is nil when the request has no valid
// token. Pass the decoded URL path (URL.Path). The first matching rule decides; a request no
// rule matches needs a valid token and nothing more.
//
// The sidecar cannot know whether the app routes case-sensitively (Go, Spring) or not
// (Express by default, ASP.NET Core), so the path is read both ways and the request must
// satisfy both first matches: it is anonymous only if both rules are, and a token must meet
// the claims of both. "/ADMIN/users" thus gets no looser treatment than "/admin/users" in an
// app that serves both from one handler, and a case-sensitive app loses nothing it had.
func (v *Verifier) Decide(method, urlPath string, claims *Claims) Decision {
	p := cleanPath(urlPath)
	exact := v.decideRule(v.firstMatch(method, p, false), claims)
	if v.foldFree && lowerASCII(p) {
		return exact // both readings are the same
	}
	folded := v.decideRule(v.firstMatch(method, p, true), claims)
	switch {
	case !exact.Allowed():
		return exact
	case !folded.Allowed():
		return folded
	case exact.Outcome == AllowAnonymous && folded.Outcome == Allow:
		return folded // the token was needed for the folded reading
	}
	return exact
}

// firstMatch returns the index of the first rule matching the request, or -1.
func (v *Verifier) firstMatch(method, p string, fold bool) int {
	for i := range v.rules {
		if v.rules[i].matches(method, p, fold) {
			return i
		}
	}
	return -1
}

// decideRule is the decision of rule i (-1: no rule) alone.
func (v *Verifier) decideRule(i int, claims *Claims) Decision {
	if i < 0 {
		if claims == nil {
			return Decision{Outcome: Unauthenticated, Reason: ReasonMissingToken, Rule: -1}
		}
		return Decision{Outcome: Allow, Rule: -1}
	}
	r := &v.rules[i]
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
