package sidecar

import (
	"net/http"
	"testing"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// A policy requiring a token type refuses tokens of another type with 401 and its own
// reason; the fixture's tokens carry typ "JWT".
func TestRequiredTokenTypeIsEnforced(t *testing.T) {
	for _, tc := range []struct {
		name, typ string
		status    int
	}{
		{"a token of the required type passes", "jwt", http.StatusOK},
		{"a token of another type is refused", "at+jwt", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, withPolicy(func(tp *tkv1.TokenPolicy) { tp.Spec.RequiredTokenType = tc.typ }))
			before := f.rejections(verify.ReasonWrongTokenType)
			resp := f.do("/api/items", bearer(f.token()))
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.status, tc.status, resp.body)
			}
			want := 0.0
			if tc.status == http.StatusUnauthorized {
				want = 1
				if got := resp.header.Get("WWW-Authenticate"); got != `Bearer error="invalid_token"` {
					t.Errorf("WWW-Authenticate %q", got)
				}
			}
			if got := f.rejections(verify.ReasonWrongTokenType) - before; got != want {
				t.Errorf("rejections{reason=wrong_token_type} grew by %v, want %v", got, want)
			}
		})
	}
}
