package sidecar

import (
	"testing"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
)

// Rules match the request line's method; a request asking the app for another method is
// refused before any rule, whatever its token allows.
func TestMethodOverridesAreRefused(t *testing.T) {
	f := newFixture(t, withPolicy(func(tp *tkv1.TokenPolicy) {
		tp.Spec.Rules = append([]tkv1.RouteRule{{PathPrefix: "/items", Methods: []string{"DELETE"},
			RequiredClaims: []tkv1.ClaimRequirement{{Name: "groups", Values: []string{"admin"}}}}}, tp.Spec.Rules...)
	}))
	valid := f.token()
	cases := []struct {
		name   string
		path   string
		opts   []reqOpt
		status int
	}{
		{"a POST without an override reaches the app", "/items/1", []reqOpt{method("POST"), bearer(valid)}, 200},
		{"a POST asking to be a DELETE", "/items/1", []reqOpt{method("POST"), bearer(valid), header("X-HTTP-Method-Override", "DELETE")}, 400},
		{"the override header with underscores", "/items/1", []reqOpt{method("POST"), bearer(valid), header("X_HTTP_Method_Override", "DELETE")}, 400},
		{"the X-HTTP-Method header", "/items/1", []reqOpt{method("POST"), bearer(valid), header("X-HTTP-Method", "DELETE")}, 400},
		{"the X-Method-Override header", "/items/1", []reqOpt{method("POST"), bearer(valid), header("X-Method-Override", "DELETE")}, 400},
		{"a _method query parameter", "/items/1?_method=DELETE", []reqOpt{method("POST"), bearer(valid)}, 400},
		{"a percent-encoded _method key", "/items/1?%5Fmethod=DELETE", []reqOpt{method("POST"), bearer(valid)}, 400},
		{"an override on an anonymous route", "/healthz?_method=DELETE", []reqOpt{method("POST")}, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do(tc.path, tc.opts...)
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.status, tc.status, resp.body)
			}
			if tc.status >= 400 && resp.echo != nil {
				t.Error("the upstream saw a refused request")
			}
		})
	}
}
