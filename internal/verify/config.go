package verify

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults, matching the TokenPolicy API's.
const (
	DefaultClockSkew = 60 * time.Second
	// MaxClockSkew is the largest skew the TokenPolicy API allows.
	MaxClockSkew         = 10 * time.Minute
	DefaultMaxTokenBytes = 8 << 10
	DefaultTokenHeader   = "Authorization"
	DefaultTokenPrefix   = "Bearer "
)

// Algorithms lists every algorithm a Verifier can accept: asymmetric only, so that a verifier
// never holds anything that could also sign.
var Algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// Config is what a valid token is, mirroring TokenPolicySpec without Kubernetes types.
type Config struct {
	// Issuer every token must carry in "iss", compared exactly.
	Issuer string
	// Audiences: "aud" (string or array) must hold at least one.
	Audiences []string
	// AllowedAlgorithms narrows Algorithms; empty means all of them.
	AllowedAlgorithms []string
	// ClockSkew tolerated on exp, nbf and iat. Zero means none; the API defaults it to
	// DefaultClockSkew.
	ClockSkew time.Duration
	// MaxTokenLifetime caps exp - iat; zero means no cap. When set, tokens without iat fail.
	MaxTokenLifetime time.Duration
	// RequiredTokenType is the "typ" header every token must carry (such as "at+jwt", RFC
	// 9068), compared as media types: case-insensitively, "application/" implied without a
	// "/". Empty means typ is not checked.
	RequiredTokenType string
	// RequiredClaims every verified token satisfies.
	RequiredClaims []ClaimRequirement
	// Rules are evaluated in order by Decide; the first that matches decides.
	Rules []Rule
	// ForwardClaims copies claims into request headers for the app.
	ForwardClaims []ClaimHeader
	// TokenSource is where requests carry the token; zero means Authorization: Bearer.
	TokenSource TokenSource
	// ForwardToken keeps the token in the request passed to the app.
	ForwardToken bool
	// MaxTokenBytes rejects longer tokens before any parsing; zero means DefaultMaxTokenBytes.
	MaxTokenBytes int
}

// ClaimRequirement requires a claim and, when Values is set, one of them: for an array claim
// any element, whole; for a string claim the whole string, or for "scope" and "scp" (a
// space-separated list by definition) also any word of it. Other claims are never split:
// "readonly admin" is not "admin".
type ClaimRequirement struct {
	// Name of the claim; dots reach into nested objects ("realm_access.roles"). A top-level
	// claim whose own name holds dots (an Auth0-style URL) is found too.
	Name   string
	Values []string
}

// Rule decides what a matching request needs.
type Rule struct {
	PathPrefix string
	// Methods the rule applies to; empty means all.
	Methods []string
	// Anonymous lets matching requests through without a token.
	Anonymous bool
	// RequiredClaims a valid token must also satisfy here, else the request is forbidden.
	RequiredClaims []ClaimRequirement
}

// ClaimHeader forwards one claim as a request header.
type ClaimHeader struct {
	Claim  string
	Header string
}

// TokenSource says where the token is: a header (after Prefix) or a cookie, not both.
type TokenSource struct {
	Header string
	Prefix string
	Cookie string
}

// normalized fills in defaults without touching the caller's slices.
func (c Config) normalized() Config {
	if c.TokenSource == (TokenSource{}) {
		c.TokenSource = TokenSource{Header: DefaultTokenHeader, Prefix: DefaultTokenPrefix}
	}
	if c.MaxTokenBytes == 0 {
		c.MaxTokenBytes = DefaultMaxTokenBytes
	}
	if len(c.AllowedAlgorithms) == 0 {
		c.AllowedAlgorithms = Algorithms
	}
	return c
}

// validate reports every problem of a normalized config at once.
func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Issuer == "" {
		bad("issuer is empty")
	}
	if len(c.Audiences) == 0 {
		bad("no audiences")
	}
	for i, a := range c.Audiences {
		if a == "" {
			bad("audiences[%d] is empty", i)
		}
	}
	for i, a := range c.AllowedAlgorithms {
		if !isAlgorithm(a) {
			bad("allowedAlgorithms[%d]: %q is not one of %s", i, a, strings.Join(Algorithms, ", "))
		}
	}
	if c.ClockSkew < 0 {
		bad("clockSkew %s is negative", c.ClockSkew)
	}
	if c.MaxTokenLifetime < 0 {
		bad("maxTokenLifetime %s is negative", c.MaxTokenLifetime)
	}
	if c.MaxTokenBytes < 0 {
		bad("maxTokenBytes %d is negative", c.MaxTokenBytes)
	}
	errs = append(errs, validateRequirements("requiredClaims", c.RequiredClaims)...)
	for i, r := range c.Rules {
		if !strings.HasPrefix(r.PathPrefix, "/") {
			bad("rules[%d].pathPrefix %q does not start with /", i, r.PathPrefix)
		}
		if r.Anonymous && len(r.RequiredClaims) > 0 {
			bad("rules[%d]: an anonymous rule cannot require claims", i)
		}
		errs = append(errs, validateRequirements(fmt.Sprintf("rules[%d].requiredClaims", i), r.RequiredClaims)...)
	}
	seen := map[string]bool{}
	for i, f := range c.ForwardClaims {
		if f.Claim == "" {
			bad("forwardClaims[%d].claim is empty", i)
		}
		if !isToken(f.Header) {
			bad("forwardClaims[%d].header %q is not a valid header name", i, f.Header)
		}
		h := strings.ToLower(f.Header)
		if seen[h] {
			bad("forwardClaims[%d].header %q is used twice", i, f.Header)
		}
		seen[h] = true
	}
	ts := c.TokenSource
	switch {
	case ts.Header == "" && ts.Cookie == "":
		bad("tokenSource: set header or cookie")
	case ts.Header != "" && ts.Cookie != "":
		bad("tokenSource: set header or cookie, not both")
	case ts.Header != "" && !isToken(ts.Header):
		bad("tokenSource.header %q is not a valid header name", ts.Header)
	case ts.Cookie != "" && !isToken(ts.Cookie):
		bad("tokenSource.cookie %q is not a valid cookie name", ts.Cookie)
	case ts.Cookie != "" && ts.Prefix != "":
		bad("tokenSource.prefix applies to a header only")
	}
	return errors.Join(errs...)
}

func validateRequirements(field string, reqs []ClaimRequirement) []error {
	var errs []error
	for i, r := range reqs {
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("%s[%d].name is empty", field, i))
		}
	}
	return errs
}

func isAlgorithm(a string) bool {
	for _, x := range Algorithms {
		if a == x {
			return true
		}
	}
	return false
}

// isToken reports whether s is an RFC 7230 token: what header and cookie names may be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
