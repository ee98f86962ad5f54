package verify

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
)

func TestCheckTarget(t *testing.T) {
	cases := []struct {
		name, requestLine string
		ok                bool
	}{
		{"a plain path", "GET /api/items?x=1 HTTP/1.1", true},
		{"a trailing slash", "GET /api/ HTTP/1.1", true},
		{"an encoded space and a unicode segment", "GET /files/a%20b/%C3%A9 HTTP/1.1", true},
		{"an absolute-form target", "GET http://example.com HTTP/1.1", true},
		{"a hyphenated method", "M-SEARCH /x HTTP/1.1", true},
		{"a lower-case method", "post /admin/users HTTP/1.1", false},
		{"a mixed-case method", "Get /admin HTTP/1.1", false},
		{"a Java path parameter hiding a dot segment", "GET /public/..;/admin/users HTTP/1.1", false},
		{"a path parameter on a segment", "GET /admin;x/users HTTP/1.1", false},
		{"an encoded semicolon", "GET /admin%3Bx/users HTTP/1.1", false},
		{"a backslash", `GET /public/..\admin HTTP/1.1`, false},
		{"an encoded backslash", "GET /public/..%5Cadmin HTTP/1.1", false},
		{"an encoded slash", "GET /public%2F..%2Fadmin HTTP/1.1", false},
		{"an encoded dot", "GET /public/%2e%2e/admin HTTP/1.1", false},
		{"a double encoding", "GET /public/%252e%252e/admin HTTP/1.1", false},
		{"a dot-dot segment", "GET /public/../admin HTTP/1.1", false},
		{"a trailing dot-dot", "GET /public/.. HTTP/1.1", false},
		{"a dot segment", "GET /./admin HTTP/1.1", false},
		{"an empty segment", "GET //admin HTTP/1.1", false},
		{"an encoded control character", "GET /a%00b HTTP/1.1", false},
		{"an asterisk", "OPTIONS * HTTP/1.1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(tc.requestLine + "\r\nHost: x\r\n\r\n")))
			if err != nil {
				t.Fatalf("Go's server would not accept it either: %v", err)
			}
			err = CheckTarget(r.Method, r.URL)
			if (err == nil) != tc.ok {
				t.Errorf("CheckTarget(%q, %q) = %v, want ok=%v", r.Method, r.URL.Path, err, tc.ok)
			}
		})
	}
}

func TestCheckMethodOverride(t *testing.T) {
	cases := []struct {
		name, target, header string
		ok                   bool
	}{
		{"a plain request", "/items/1?x=1", "", true},
		{"a query without the parameter", "/items/1?method=x&a_method=y&_methods=z", "", true},
		{"an unrelated header", "/items/1", "X-Method: DELETE", true},
		{"the Express and Google header", "/items/1", "X-HTTP-Method-Override: DELETE", false},
		{"the header in lower case", "/items/1", "x-http-method-override: DELETE", false},
		{"the header spelled with underscores", "/items/1", "X_HTTP_Method_Override: DELETE", false},
		{"the ASP.NET and Jersey header", "/items/1", "X-HTTP-Method: DELETE", false},
		{"the Symfony header", "/items/1", "X-Method-Override: DELETE", false},
		{"the header with an empty value", "/items/1", "X-HTTP-Method-Override:", false},
		{"the query parameter", "/items/1?_method=DELETE", "", false},
		{"the query parameter after others", "/items/1?a=1&_method=DELETE", "", false},
		{"the query parameter after a semicolon", "/items/1?a=1;_method=DELETE", "", false},
		{"the query parameter without a value", "/items/1?_method", "", false},
		{"the query parameter with an encoded underscore", "/items/1?%5Fmethod=DELETE", "", false},
		{"the query parameter with an encoded letter", "/items/1?_m%65thod=DELETE", "", false},
		{"the query parameter in brackets", "/items/1?_method[]=DELETE", "", false},
		{"the query parameter in upper case", "/items/1?_METHOD=DELETE", "", false},
		{"the query parameter as PHP reads a dot", "/items/1?.method=DELETE", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := "POST " + tc.target + " HTTP/1.1\r\nHost: x\r\n"
			if tc.header != "" {
				raw += tc.header + "\r\n"
			}
			r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw + "\r\n")))
			if err != nil {
				t.Fatalf("Go's server would not accept it either: %v", err)
			}
			if err := CheckMethodOverride(r.Header, r.URL); (err == nil) != tc.ok {
				t.Errorf("CheckMethodOverride(%q, %q) = %v, want ok=%v", tc.header, tc.target, err, tc.ok)
			}
		})
	}
}

func TestCheckMethodOverrideDoesNotAllocate(t *testing.T) {
	r, _ := http.NewRequest("GET", "/api/items?page=2&sort=name", nil)
	r.Header.Set("Authorization", "Bearer x")
	r.Header.Set("Accept", "*/*")
	if n := testing.AllocsPerRun(100, func() { _ = CheckMethodOverride(r.Header, r.URL) }); n != 0 {
		t.Errorf("%v allocations", n)
	}
}
