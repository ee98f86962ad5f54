package verify

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// CheckTarget refuses a request whose method or path an app could read differently from the
// rules, before any rule is applied. Decide matches the path it is given, while the app
// resolves the path it receives its own way: Tomcat, Jetty and Spring drop ";params" from
// every segment and then resolve dot segments ("/public/..;/admin" is "/admin" to them),
// some servers treat "\" or an encoded "/" as a separator, and some upper-case the method.
// A strict firewall leaves nothing to interpret, as Spring Security's StrictHttpFirewall
// does: methods in upper case only, paths that are already clean, no ";", "\" or control
// characters, and no percent-encoded "/", "\", ".", ";" or "%".
func CheckTarget(method string, u *url.URL) error {
	if method == "" {
		return errors.New("empty method")
	}
	for i := 0; i < len(method); i++ {
		if c := method[i]; (c < 'A' || c > 'Z') && c != '-' && c != '_' {
			return errors.New("method not in upper case")
		}
	}
	p := u.Path
	if p == "" {
		return nil // absolute-form target without a path: "/"
	}
	if p[0] != '/' {
		return errors.New("path does not start with /")
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == ';':
			return errors.New("path holds ';'")
		case c == '\\':
			return errors.New(`path holds '\'`)
		case c < 0x20 || c == 0x7f:
			return errors.New("path holds a control character")
		}
	}
	if needsClean(p) {
		return errors.New("path has dot segments or empty segments")
	}
	if strings.IndexByte(p, '%') >= 0 {
		return errors.New("path holds an encoded '%'") // a second decoding would change it
	}
	if u.RawPath != "" { // the client encoded what needs no encoding
		raw := strings.ToLower(u.RawPath)
		for _, enc := range []string{"%2f", "%5c", "%2e", "%3b"} {
			if strings.Contains(raw, enc) {
				return errors.New("path holds an encoded " + enc)
			}
		}
	}
	return nil
}

// methodOverrideHeaders are the headers frameworks read to serve a request with another
// method than the one on the request line (Express method-override, Rails, Laravel, Symfony,
// ASP.NET, Jersey, Google APIs).
var methodOverrideHeaders = []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"}

// methodOverrideParam is the query parameter Express method-override, Rails, Laravel and
// Symfony read for the same.
const methodOverrideParam = "_method"

// CheckMethodOverride refuses a request that asks the app to serve it with another method:
// a method-override header (any case, "_" for "-") or a "_method" query parameter (any
// encoding of the key, bracketed forms too). Rules match the request line's method, so
// "POST" with "X-HTTP-Method-Override: DELETE" would pass a DELETE-only rule and reach the
// DELETE handler. A "_method" field in a form body is not inspected: apps behind the
// sidecar must not read the method from the body.
func CheckMethodOverride(h http.Header, u *url.URL) error {
	for name := range h {
		for _, o := range methodOverrideHeaders {
			if sameHeaderName(name, o) {
				return errors.New("method override header " + o)
			}
		}
	}
	if hasQueryKey(u.RawQuery, methodOverrideParam) {
		return errors.New("method override query parameter " + methodOverrideParam)
	}
	return nil
}
