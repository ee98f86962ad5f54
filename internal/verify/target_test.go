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
