package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/tokenkeeper/tokenkeeper/internal/discovery"
)

// issuerOption changes a fixture issuer.
type issuerOption func(*discovery.Issuer)

func withMaxAge(d time.Duration) issuerOption { return func(i *discovery.Issuer) { i.MaxAge = d } }
func withoutJWKS() issuerOption               { return func(i *discovery.Issuer) { i.JWKS = nil } }
func withoutDiscovery() issuerOption          { return func(i *discovery.Issuer) { i.Discovery = nil } }

// issuer is a published issuer at url whose bodies name it, so a test can tell which one answered.
func issuer(url string, opts ...issuerOption) discovery.Issuer {
	i := discovery.Issuer{
		URL:       url,
		JWKS:      []byte(jwksBody(url)),
		Discovery: []byte(discoveryBody(url)),
		MaxAge:    5 * time.Minute,
	}
	for _, o := range opts {
		o(&i)
	}
	return i
}

func jwksBody(url string) string      { return fmt.Sprintf(`{"keys":[],"x-issuer":%q}`, url) }
func discoveryBody(url string) string { return fmt.Sprintf(`{"issuer":%q}`, url) }

// serving is a fake Source that lists issuers.
func serving(issuers ...discovery.Issuer) discovery.Source {
	return func(context.Context) ([]discovery.Issuer, error) { return issuers, nil }
}

// failing is a fake Source whose cache cannot be read.
func failing(err error) discovery.Source {
	return func(context.Context) ([]discovery.Issuer, error) { return nil, err }
}

const (
	blue  = "https://auth.example.com/tenants/blue"
	green = "https://auth.example.com/tenants/green"
	root  = "https://root.example.com"
	// Two issuers on different hosts with the same path.
	alpha = "https://alpha.example.com/shared"
	beta  = "https://beta.example.com/shared"
)

func TestHandler(t *testing.T) {
	tests := []struct {
		name      string
		source    discovery.Source
		method    string
		target    string // absolute, so it also sets the request's Host
		wantCode  int
		wantBody  string // checked for 200 only
		wantCache string // "" means no Cache-Control header at all
		wantAllow string
	}{
		{
			name:      "the discovery document is served under the issuer's path",
			source:    serving(issuer(blue), issuer(green)),
			target:    "http://auth.example.com/tenants/blue/.well-known/openid-configuration",
			wantCode:  http.StatusOK,
			wantBody:  discoveryBody(blue),
			wantCache: "public, max-age=300",
		},
		{
			name:      "the JWKS is served under the issuer's path",
			source:    serving(issuer(blue), issuer(green)),
			target:    "http://auth.example.com/tenants/green/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(green),
			wantCache: "public, max-age=300",
		},
		{
			name:      "an issuer at a host's root is served at /.well-known",
			source:    serving(issuer(blue), issuer(root)),
			target:    "http://root.example.com/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(root),
			wantCache: "public, max-age=300",
		},
		{
			name:      "an issuer URL with a trailing slash is served without it",
			source:    serving(issuer(blue + "/")),
			target:    "http://auth.example.com/tenants/blue/.well-known/openid-configuration",
			wantCode:  http.StatusOK,
			wantBody:  discoveryBody(blue + "/"),
			wantCache: "public, max-age=300",
		},
		{
			name:      "the max age is advertised in whole seconds",
			source:    serving(issuer(blue, withMaxAge(90*time.Second+700*time.Millisecond))),
			target:    "http://auth.example.com/tenants/blue/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(blue),
			wantCache: "public, max-age=90",
		},
		{
			name:      "a max age of exactly one second may be cached for one second",
			source:    serving(issuer(blue, withMaxAge(time.Second))),
			target:    "http://auth.example.com/tenants/blue/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(blue),
			wantCache: "public, max-age=1",
		},
		{
			name:      "a max age under a second is not cached",
			source:    serving(issuer(blue, withMaxAge(999*time.Millisecond))),
			target:    "http://auth.example.com/tenants/blue/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(blue),
			wantCache: "no-cache",
		},
		{
			name:      "a zero max age is not cached",
			source:    serving(issuer(blue, withMaxAge(0))),
			target:    "http://auth.example.com/tenants/blue/.well-known/openid-configuration",
			wantCode:  http.StatusOK,
			wantBody:  discoveryBody(blue),
			wantCache: "no-cache",
		},
		{
			name:      "the issuer on the request's host wins when two share a path (listed second)",
			source:    serving(issuer(alpha), issuer(beta)),
			target:    "http://beta.example.com/shared/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(beta),
			wantCache: "public, max-age=300",
		},
		{
			name:      "the issuer on the request's host wins when two share a path (listed first)",
			source:    serving(issuer(beta), issuer(alpha)),
			target:    "http://beta.example.com/shared/.well-known/openid-configuration",
			wantCode:  http.StatusOK,
			wantBody:  discoveryBody(beta),
			wantCache: "public, max-age=300",
		},
		{
			name:      "the host is matched case-insensitively",
			source:    serving(issuer(alpha), issuer(beta)),
			target:    "http://BETA.Example.com/shared/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(beta),
			wantCache: "public, max-age=300",
		},
		{
			name:      "a request on another host is served by the first issuer with the path",
			source:    serving(issuer(alpha), issuer(beta)),
			target:    "http://manager.tokenkeeper-system.svc:8082/shared/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(alpha),
			wantCache: "public, max-age=300",
		},
		{
			name:      "the request's host is matched without a default port",
			source:    serving(issuer(alpha), issuer(beta)),
			target:    "http://beta.example.com:443/shared/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(beta),
			wantCache: "public, max-age=300",
		},
		{
			name:      "dot segments in the request path are cleaned as in the issuer's",
			source:    serving(issuer(blue), issuer(green)),
			target:    "http://auth.example.com/tenants/x/../green/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(green),
			wantCache: "public, max-age=300",
		},
		{
			name:     "a path that is no well-known document is not found",
			source:   serving(issuer(root)),
			target:   "http://root.example.com/metrics",
			wantCode: http.StatusNotFound,
		},
		{
			name:     "a well-known document of an unknown issuer path is not found",
			source:   serving(issuer(blue), issuer(green)),
			target:   "http://auth.example.com/tenants/red/.well-known/jwks.json",
			wantCode: http.StatusNotFound,
		},
		{
			name:     "a path below an issuer is not found",
			source:   serving(issuer(blue)),
			target:   "http://auth.example.com/tenants/blue/x/.well-known/jwks.json",
			wantCode: http.StatusNotFound,
		},
		{
			name:     "a parent of an issuer's path is not found",
			source:   serving(issuer(blue)),
			target:   "http://auth.example.com/tenants/.well-known/openid-configuration",
			wantCode: http.StatusNotFound,
		},
		{
			name:     "nothing is found when no issuer is published",
			source:   serving(),
			target:   "http://root.example.com/.well-known/openid-configuration",
			wantCode: http.StatusNotFound,
		},
		{
			name:      "POST is refused with the allowed methods",
			source:    serving(issuer(blue)),
			method:    http.MethodPost,
			target:    "http://auth.example.com/tenants/blue/.well-known/jwks.json",
			wantCode:  http.StatusMethodNotAllowed,
			wantAllow: "GET, HEAD",
		},
		{
			name:      "DELETE is refused with the allowed methods",
			source:    serving(issuer(blue)),
			method:    http.MethodDelete,
			target:    "http://auth.example.com/tenants/blue/.well-known/openid-configuration",
			wantCode:  http.StatusMethodNotAllowed,
			wantAllow: "GET, HEAD",
		},
		{
			name:     "a failing source makes the documents unavailable",
			source:   failing(errors.New("cache not started")),
			target:   "http://auth.example.com/tenants/blue/.well-known/jwks.json",
			wantCode: http.StatusServiceUnavailable,
		},
		{
			name:     "an issuer whose JWKS is not published yet is unavailable",
			source:   serving(issuer(blue, withoutJWKS())),
			target:   "http://auth.example.com/tenants/blue/.well-known/jwks.json",
			wantCode: http.StatusServiceUnavailable,
		},
		{
			name:     "an issuer whose discovery document is not published yet is unavailable",
			source:   serving(issuer(blue, withoutDiscovery())),
			target:   "http://auth.example.com/tenants/blue/.well-known/openid-configuration",
			wantCode: http.StatusServiceUnavailable,
		},
		{
			name:      "an issuer without a discovery document still serves its JWKS",
			source:    serving(issuer(blue, withoutDiscovery())),
			target:    "http://auth.example.com/tenants/blue/.well-known/jwks.json",
			wantCode:  http.StatusOK,
			wantBody:  jwksBody(blue),
			wantCache: "public, max-age=300",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &discovery.Handler{Source: tt.source, Log: testr.New(t)}
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, tt.target, nil))
			res := rec.Result()

			if res.StatusCode != tt.wantCode {
				t.Fatalf("%s %s: status %d, want %d (body %q)", method, tt.target, res.StatusCode, tt.wantCode, rec.Body.String())
			}
			if got := res.Header.Get("Cache-Control"); got != tt.wantCache {
				t.Errorf("Cache-Control = %q, want %q", got, tt.wantCache)
			}
			if got := res.Header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
			if tt.wantCode != http.StatusOK {
				return
			}
			if got := res.Header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
			if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
				t.Errorf("X-Content-Type-Options = %q, want nosniff", got)
			}
			if got := rec.Body.String(); got != tt.wantBody {
				t.Errorf("body = %s, want %s", got, tt.wantBody)
			}
		})
	}
}

func TestHandlerAnswersHEADWithTheHeadersOfGET(t *testing.T) {
	srv := httptest.NewServer(&discovery.Handler{Source: serving(issuer(root, withMaxAge(42*time.Second))), Log: testr.New(t)})
	defer srv.Close()

	for _, path := range []string{"/.well-known/jwks.json", "/.well-known/openid-configuration"} {
		t.Run("HEAD "+path+" has GET's headers and no body", func(t *testing.T) {
			get := do(t, http.MethodGet, srv.URL+path)
			head := do(t, http.MethodHead, srv.URL+path)
			if head.code != http.StatusOK {
				t.Fatalf("HEAD status %d, want 200", head.code)
			}
			if len(head.body) != 0 {
				t.Errorf("HEAD sent a body: %q", head.body)
			}
			for _, h := range []string{"Content-Type", "Cache-Control", "Content-Length"} {
				if g, w := head.header.Get(h), get.header.Get(h); g != w || g == "" {
					t.Errorf("HEAD %s = %q, GET %s = %q; want equal and set", h, g, h, w)
				}
			}
			if got := head.header.Get("Cache-Control"); got != "public, max-age=42" {
				t.Errorf("Cache-Control = %q, want public, max-age=42", got)
			}
		})
	}
}

type response struct {
	code   int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading %s %s: %v", method, url, err)
	}
	return response{code: res.StatusCode, header: res.Header, body: body}
}

func TestHandlerAsksTheSourceWithTheRequestContext(t *testing.T) {
	type ctxKey struct{}
	var got any
	h := &discovery.Handler{Log: testr.New(t), Source: func(ctx context.Context) ([]discovery.Issuer, error) {
		got = ctx.Value(ctxKey{})
		return []discovery.Issuer{issuer(root)}, nil
	}}
	req := httptest.NewRequest(http.MethodGet, "http://root.example.com/.well-known/jwks.json", nil)
	req = req.WithContext(context.WithValue(req.Context(), ctxKey{}, "marker"))
	h.ServeHTTP(httptest.NewRecorder(), req)
	if got != "marker" {
		t.Errorf("Source saw context value %v, want the request's context", got)
	}
}

func TestMaxAgeFor(t *testing.T) {
	tests := []struct {
		name         string
		publishAhead time.Duration
		want         time.Duration
	}{
		{"no publishAhead allows no caching", 0, 0},
		{"three seconds ahead allow a second and a half", 3 * time.Second, 1500 * time.Millisecond},
		{"ten minutes ahead allow five", 10 * time.Minute, 5 * time.Minute},
		{"an hour ahead allows half an hour", time.Hour, 30 * time.Minute},
		{"just under two hours ahead allow just under an hour", 2*time.Hour - 2*time.Second, time.Hour - time.Second},
		{"exactly two hours ahead reach the one-hour cap", 2 * time.Hour, time.Hour},
		{"three hours ahead are capped at an hour", 3 * time.Hour, time.Hour},
		{"a week ahead is capped at an hour", 7 * 24 * time.Hour, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := discovery.MaxAgeFor(tt.publishAhead); got != tt.want {
				t.Errorf("MaxAgeFor(%v) = %v, want %v", tt.publishAhead, got, tt.want)
			}
		})
	}
}
