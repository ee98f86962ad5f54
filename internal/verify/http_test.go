package verify

import (
	"net/http/httptest"
	"testing"
)

func TestExtractToken(t *testing.T) {
	bearer := TokenSource{}
	cookie := TokenSource{Cookie: "session"}
	custom := TokenSource{Header: "X-Access-Token"}
	cases := []struct {
		name    string
		src     TokenSource
		headers [][2]string
		target  string
		want    string
		reason  Reason
	}{
		{name: "a bearer token", src: bearer, headers: [][2]string{{"Authorization", "Bearer abc.def.ghi"}}, want: "abc.def.ghi"},
		{name: "the bearer scheme in any case", src: bearer, headers: [][2]string{{"Authorization", "bEARER abc"}}, want: "abc"},
		{name: "extra spaces after the scheme", src: bearer, headers: [][2]string{{"Authorization", "Bearer   abc"}}, want: "abc"},
		{name: "no header", src: bearer, reason: ReasonMissingToken},
		{name: "another scheme is not a token", src: bearer, headers: [][2]string{{"Authorization", "Basic dXNlcjpwYXNz"}}, reason: ReasonMissingToken},
		{name: "a bare scheme", src: bearer, headers: [][2]string{{"Authorization", "Bearer "}}, reason: ReasonMalformed},
		{name: "two Authorization headers", src: bearer, headers: [][2]string{{"Authorization", "Bearer a"}, {"Authorization", "Bearer b"}}, reason: ReasonAmbiguousToken},
		{name: "a cookie", src: cookie, headers: [][2]string{{"Cookie", "theme=dark; session=abc.def.ghi"}}, want: "abc.def.ghi"},
		{name: "a cookie source ignores other cookies", src: cookie, headers: [][2]string{{"Cookie", "theme=dark"}}, reason: ReasonMissingToken},
		{name: "a token in both the cookie and a bearer header", src: cookie,
			headers: [][2]string{{"Cookie", "session=abc"}, {"Authorization", "Bearer xyz"}}, reason: ReasonAmbiguousToken},
		{name: "a cookie next to Basic credentials", src: cookie,
			headers: [][2]string{{"Cookie", "session=abc"}, {"Authorization", "Basic dXNlcjpwYXNz"}}, want: "abc"},
		{name: "the cookie twice", src: cookie, headers: [][2]string{{"Cookie", "session=a; session=b"}}, reason: ReasonAmbiguousToken},
		{name: "an empty cookie", src: cookie, headers: [][2]string{{"Cookie", "session="}}, reason: ReasonMalformed},
		{name: "a custom header without prefix", src: custom, headers: [][2]string{{"X-Access-Token", "abc"}}, want: "abc"},
		{name: "a custom header next to a bearer header", src: custom,
			headers: [][2]string{{"X-Access-Token", "abc"}, {"Authorization", "Bearer xyz"}}, reason: ReasonAmbiguousToken},
		{name: "a bearer header next to an access_token query parameter", src: bearer, target: "/?a=1&access_token=xyz",
			headers: [][2]string{{"Authorization", "Bearer abc"}}, reason: ReasonAmbiguousToken},
		{name: "an access_token query parameter with an encoded underscore", src: bearer, target: "/?access%5Ftoken=xyz",
			headers: [][2]string{{"Authorization", "Bearer abc"}}, reason: ReasonAmbiguousToken},
		{name: "an access_token query parameter with an encoded letter", src: bearer, target: "/?%61ccess_token=xyz",
			headers: [][2]string{{"Authorization", "Bearer abc"}}, reason: ReasonAmbiguousToken},
		{name: "an access_token query parameter as an array", src: bearer, target: "/?access_token[]=xyz",
			headers: [][2]string{{"Authorization", "Bearer abc"}}, reason: ReasonAmbiguousToken},
		{name: "an access_token query parameter with an index", src: bearer, target: "/?access_token%5B0%5D=xyz",
			headers: [][2]string{{"Authorization", "Bearer abc"}}, reason: ReasonAmbiguousToken},
		{name: "an access_token query parameter as PHP reads a dot", src: bearer, target: "/?access.token=xyz",
			headers: [][2]string{{"Authorization", "Bearer abc"}}, reason: ReasonAmbiguousToken},
		{name: "an access_token query parameter as PHP reads an unclosed bracket", src: bearer, target: "/?access[token=xyz",
			headers: [][2]string{{"Authorization", "Bearer abc"}}, reason: ReasonAmbiguousToken},
		{name: "an access_token query parameter after a semicolon", src: bearer, target: "/?a=1;access_token=xyz",
			headers: [][2]string{{"Authorization", "Bearer abc"}}, reason: ReasonAmbiguousToken},
		{name: "a custom header next to its underscore spelling", src: custom,
			headers: [][2]string{{"X-Access-Token", "abc"}, {"X_Access_Token", "xyz"}}, reason: ReasonAmbiguousToken},
		{name: "a custom header with an underscore spelling only", src: custom,
			headers: [][2]string{{"X_Access_Token", "xyz"}}, reason: ReasonMissingToken},
		{name: "a query parameter merely named like it", src: bearer, target: "/?no_access_token=1",
			headers: [][2]string{{"Authorization", "Bearer abc"}}, want: "abc"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.target == "" {
				tc.target = "/"
			}
			r := httptest.NewRequest("GET", tc.target, nil)
			for _, h := range tc.headers {
				r.Header.Add(h[0], h[1])
			}
			got, err := ExtractToken(r, tc.src)
			if ReasonOf(err) != tc.reason || got != tc.want {
				t.Fatalf("ExtractToken = %q, %v; want %q, reason %q", got, err, tc.want, tc.reason)
			}
		})
	}
}

func TestVerifierReadsAndRemovesItsTokenSource(t *testing.T) {
	v := newVerifier(t, configured(func(c *Config) { c.TokenSource = TokenSource{Cookie: "session"} }))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Add("Cookie", "a=1; session=tok")
	r.Header.Add("Cookie", "b=2")
	if tok, err := v.TokenFromRequest(r); err != nil || tok != "tok" {
		t.Fatalf("TokenFromRequest = %q, %v", tok, err)
	}
	v.RemoveToken(r)
	if got := r.Header.Values("Cookie"); len(got) != 1 || got[0] != "a=1; b=2" {
		t.Errorf("cookies after removal %q", got)
	}

	r = httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Cookie", "session=tok")
	v.RemoveToken(r)
	if _, ok := r.Header["Cookie"]; ok {
		t.Error("an empty Cookie header was left behind")
	}

	v = newVerifier(t)
	r = httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer tok")
	v.RemoveToken(r)
	if r.Header.Get("Authorization") != "" {
		t.Error("Authorization kept")
	}
}

// On a route whose token is not verified, every carrier goes: the source, a bearer header
// and the query parameter, while other credentials and parameters stay.
func TestRemoveUnverifiedTokens(t *testing.T) {
	r := httptest.NewRequest("GET", "/public?b=2&access_token=xyz&a=1", nil)
	r.Header.Add("Cookie", "theme=dark; session=tok")
	r.Header.Add("Authorization", "Bearer other")
	RemoveUnverifiedTokens(r, TokenSource{Cookie: "session"})
	if got := r.Header.Get("Cookie"); got != "theme=dark" {
		t.Errorf("Cookie = %q", got)
	}
	if _, ok := r.Header["Authorization"]; ok {
		t.Error("the bearer header was kept")
	}
	if got := r.URL.RawQuery; got != "b=2&a=1" { // the others as sent, in their order
		t.Errorf("query = %q", got)
	}

	r = httptest.NewRequest("GET", "/public?access%5Ftoken=1&a=1&access_token[]=2&access_token%5B0%5D=3", nil)
	r.Header.Add("X-Auth-Token", "tok")
	r.Header.Add("X_Auth_Token", "forged")
	r.Header.Add("X_auth-TOKEN", "forged")
	RemoveUnverifiedTokens(r, TokenSource{Header: "X-Auth-Token"})
	if got := r.URL.RawQuery; got != "a=1" {
		t.Errorf("query = %q, want every access_token form gone", got)
	}
	if len(r.Header) != 0 {
		t.Errorf("token headers kept: %v", r.Header)
	}

	r = httptest.NewRequest("GET", "/public?a=1", nil)
	r.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	RemoveUnverifiedTokens(r, TokenSource{Cookie: "session"})
	if r.Header.Get("Authorization") == "" || r.URL.RawQuery != "a=1" {
		t.Errorf("removed what is not a token: %v %q", r.Header, r.URL.RawQuery)
	}
}
