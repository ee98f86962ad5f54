package verify

import (
	"net/http"
	"strings"
)

// ExtractToken reads a request's token from src (zero means Authorization: Bearer).
//
// A request that offers more than one candidate is refused as ambiguous rather than
// guessing which one a downstream component will read: the source header or cookie given
// twice (an underscore spelling of the header counts: WSGI reads it as the same), or, when
// the source is not the Authorization header itself, an "Authorization: Bearer" header next
// to it, or an RFC 6750 "access_token" query parameter in any spelling an app's parser could
// read as one, which a policy never reads and an app might. The returned error is an *Error
// with Reason missing_token (RFC 6750: answer 401 without an error code), ambiguous_token or
// malformed.
func ExtractToken(r *http.Request, src TokenSource) (string, error) {
	if src == (TokenSource{}) {
		src = TokenSource{Header: DefaultTokenHeader, Prefix: DefaultTokenPrefix}
	}
	if HasQueryToken(r) {
		return "", errAmbiguousToken
	}
	var tok string
	if src.Cookie != "" {
		cookies := r.CookiesNamed(src.Cookie)
		switch {
		case len(cookies) == 0:
			return "", errMissingToken
		case len(cookies) > 1 || hasBearer(r.Header):
			return "", errAmbiguousToken
		}
		tok = cookies[0].Value
	} else {
		values := r.Header.Values(src.Header)
		switch {
		case len(values) == 0:
			return "", errMissingToken
		case len(values) > 1 || hasHeaderVariant(r.Header, src.Header):
			return "", errAmbiguousToken
		case !strings.EqualFold(src.Header, DefaultTokenHeader) && hasBearer(r.Header):
			return "", errAmbiguousToken
		}
		v := values[0]
		if src.Prefix != "" {
			// Auth schemes are case-insensitive (RFC 9110); another scheme, such as Basic,
			// is not a token for this policy.
			if len(v) < len(src.Prefix) || !strings.EqualFold(v[:len(src.Prefix)], src.Prefix) {
				return "", errMissingToken
			}
			v = v[len(src.Prefix):]
		}
		tok = strings.Trim(v, " \t")
	}
	if tok == "" {
		return "", reject(ReasonMalformed, "empty token")
	}
	return tok, nil
}

// queryTokenParam is RFC 6750's URI query parameter for a bearer token (§2.3).
const queryTokenParam = "access_token"

// HasQueryToken reports whether r's query carries an access_token parameter in any form an
// app's parser could read as one: an encoded key ("access%5Ftoken"), a bracketed one
// ("access_token[]", "access_token[0]").
func HasQueryToken(r *http.Request) bool {
	return hasQueryKey(r.URL.RawQuery, queryTokenParam)
}

// hasHeaderVariant reports whether h holds a header other than name that an app reads as
// name: an underscore spelling ("X_Auth_Token"), which CGI, WSGI, Rack and PHP map to the
// same variable as "X-Auth-Token".
func hasHeaderVariant(h http.Header, name string) bool {
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 && sameHeaderName(k, name) {
			return true
		}
	}
	return false
}

// deleteHeaderVariants deletes name and every underscore spelling of it from h.
func deleteHeaderVariants(h http.Header, name string) {
	h.Del(name)
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 && sameHeaderName(k, name) {
			delete(h, k)
		}
	}
}

// RemoveUnverifiedTokens deletes every token carrier of r: the source, any
// "Authorization: Bearer" header and the access_token query parameter. For requests whose
// token was not verified (anonymous routes), so that the app never reads one.
func RemoveUnverifiedTokens(r *http.Request, src TokenSource) {
	RemoveToken(r, src)
	if hasBearer(r.Header) {
		r.Header.Del(DefaultTokenHeader)
	}
	if HasQueryToken(r) {
		r.URL.RawQuery = removeQueryKey(r.URL.RawQuery, queryTokenParam)
	}
}

func hasBearer(h http.Header) bool {
	for _, v := range h.Values(DefaultTokenHeader) {
		if len(v) >= len(DefaultTokenPrefix) && strings.EqualFold(v[:len(DefaultTokenPrefix)], DefaultTokenPrefix) {
			return true
		}
	}
	return false
}

// RemoveToken deletes the token from r: the source header with its underscore spellings, or
// just the source cookie from
// the Cookie header(s), leaving other cookies as they were.
func RemoveToken(r *http.Request, src TokenSource) {
	if src == (TokenSource{}) {
		src = TokenSource{Header: DefaultTokenHeader, Prefix: DefaultTokenPrefix}
	}
	if src.Cookie == "" {
		deleteHeaderVariants(r.Header, src.Header)
		return
	}
	lines := r.Header.Values("Cookie")
	if len(lines) == 0 {
		return
	}
	var kept []string
	for _, line := range lines {
		for part := range strings.SplitSeq(line, ";") {
			part = strings.TrimSpace(part)
			name, _, _ := strings.Cut(part, "=")
			if part != "" && strings.TrimSpace(name) != src.Cookie {
				kept = append(kept, part)
			}
		}
	}
	r.Header.Del("Cookie")
	if len(kept) > 0 {
		r.Header.Set("Cookie", strings.Join(kept, "; "))
	}
}
