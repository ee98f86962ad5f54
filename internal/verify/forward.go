package verify

import (
	"net/http"
	"strings"
)

type forwardHeader struct {
	claim  string
	header string // canonical
}

func compileForward(fs []ClaimHeader) []forwardHeader {
	out := make([]forwardHeader, len(fs))
	for i, f := range fs {
		out[i] = forwardHeader{claim: f.Claim, header: http.CanonicalHeaderKey(f.Header)}
	}
	return out
}

// ForwardedHeaderNames are the headers ForwardHeaders may set, canonicalized. A proxy
// deletes incoming copies of all of them so the app never sees a client-supplied value.
func (v *Verifier) ForwardedHeaderNames() []string {
	out := make([]string, len(v.forward))
	for i, f := range v.forward {
		out[i] = f.header
	}
	return out
}

// ForwardHeaders returns the headers carrying c's claims to the app. Strings, numbers and
// booleans are forwarded as text, arrays of them joined with commas; objects, null and
// absent claims set no header, and neither does a value holding control characters (a
// header-injection attempt cannot reach the app) nor an array with an element holding a
// comma (the list would split differently).
//
// They are computed once per verified token and shared by every request that carries it
// from the cache: callers copy the entries into their own header and must not modify the
// returned map or its slices (each slice is full, so an append elsewhere copies it).
func (v *Verifier) ForwardHeaders(c *Claims) http.Header {
	if m := c.forwarded.Load(); m != nil && m.v == v {
		return m.h
	}
	h := v.forwardHeaders(c)
	c.forwarded.Store(&forwardMemo{v: v, h: h})
	return h
}

// forwardMemo is a token's forwarded headers under the Verifier that computed them: a
// Claims outlives no Verifier in practice, but a memo from another configuration is never
// used.
type forwardMemo struct {
	v *Verifier
	h http.Header
}

func (v *Verifier) forwardHeaders(c *Claims) http.Header {
	h := make(http.Header, len(v.forward))
	for _, f := range v.forward {
		val, ok := c.Get(f.claim)
		if !ok {
			continue
		}
		if s, ok := headerValue(val); ok {
			h[f.header] = []string{s}
		}
	}
	return h
}

func headerValue(v any) (string, bool) {
	var b strings.Builder
	n, ok := 0, true
	_, isArray := v.([]any)
	if !isArray {
		if _, scalar := scalarString(v); !scalar {
			return "", false
		}
	}
	claimStrings(v, func(s string) bool {
		// An element holding a comma would read as two to an app that splits the list:
		// ["cn=x,ou=admins"] must not become "cn=x" and "ou=admins".
		if !safeHeaderText(s) || (isArray && strings.IndexByte(s, ',') >= 0) {
			ok = false
			return false
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s)
		n++
		return true
	})
	return b.String(), ok
}

// safeHeaderText allows what a header field value may hold: visible ASCII, space, tab and
// obs-text bytes; no CR, LF, NUL or other controls.
func safeHeaderText(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
