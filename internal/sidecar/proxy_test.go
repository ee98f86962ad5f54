package sidecar

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

const (
	wantMissing      = `Bearer realm="tokenkeeper"`
	wantInvalid      = `Bearer error="invalid_token"`
	wantInsufficient = `Bearer error="insufficient_scope"`
)

func TestProxyDecidesEveryRequest(t *testing.T) {
	f := newFixture(t)
	valid := f.token()
	admin := f.token(withClaim("groups", []string{"dev", "admin"}), withClaim("jti", "token-admin"))
	cases := []struct {
		name      string
		path      string
		opts      []reqOpt
		status    int
		challenge string        // WWW-Authenticate, "" for none
		reason    verify.Reason // rejection counted
		seen      func(t *testing.T, e *echo)
	}{
		{
			name: "a valid token reaches the app with its claims as headers and without the token",
			path: "/api/items?limit=5", opts: []reqOpt{bearer(valid)}, status: 200,
			seen: func(t *testing.T, e *echo) {
				wantHeader(t, e, "X-User", "alice")
				wantHeader(t, e, "X-Groups", "dev")
				wantNoHeader(t, e, "Authorization")
				if e.Path != "/api/items" || e.RawQuery != "limit=5" {
					t.Errorf("upstream saw path %q query %q", e.Path, e.RawQuery)
				}
			},
		},
		{
			name: "spoofed claim headers are replaced by the verified claims",
			path: "/api/items",
			opts: []reqOpt{bearer(valid), header("X-User", "mallory"), header("X-Groups", "admin"),
				header("X_User", "mallory"), header("x-user", "eve")},
			status: 200,
			seen: func(t *testing.T, e *echo) {
				wantHeader(t, e, "X-User", "alice")
				wantHeader(t, e, "X-Groups", "dev")
				wantNoHeader(t, e, "X_user")
				wantNoHeader(t, e, "X_User")
			},
		},
		{
			name: "a Connection header cannot make the proxy drop the claim headers it sets",
			path: "/api/items", opts: []reqOpt{bearer(valid), header("Connection", "X-User, X-Groups")},
			status: 200,
			seen: func(t *testing.T, e *echo) {
				wantHeader(t, e, "X-User", "alice")
				wantHeader(t, e, "X-Groups", "dev")
			},
		},
		{
			name: "the app sees the host the client asked for, and forwarding headers this hop vouches for instead of the client's",
			path: "/api/items", opts: []reqOpt{bearer(valid), header("X-Forwarded-For", "203.0.113.9"),
				header("X-Forwarded-Proto", "https"), header("X-Forwarded-Host", "orders.example.com"),
				header("Forwarded", "for=203.0.113.9;proto=https"), header("X_Forwarded_For", "203.0.113.9")},
			status: 200,
			seen: func(t *testing.T, e *echo) {
				if !strings.HasPrefix(e.Host, "127.0.0.1:") || e.Host == strings.TrimPrefix(f.upstream.URL, "http://") {
					t.Errorf("upstream saw Host %q, want the sidecar's address", e.Host)
				}
				wantHeader(t, e, "X-Forwarded-For", "127.0.0.1")
				wantHeader(t, e, "X-Forwarded-Proto", "http")
				wantHeader(t, e, "X-Forwarded-Host", e.Host)
				wantNoHeader(t, e, "Forwarded")
				for name := range e.Header {
					if strings.Contains(strings.ToLower(name), "forwarded_") {
						t.Errorf("upstream saw the client's %s", name)
					}
				}
			},
		},
		{
			name: "a request without a token is refused without an error code",
			path: "/api/items", status: 401, challenge: wantMissing, reason: verify.ReasonMissingToken,
		},
		{
			name: "a Basic authorization is no bearer token",
			path: "/api/items", opts: []reqOpt{header("Authorization", "Basic YWxpY2U6cHc=")},
			status: 401, challenge: wantMissing, reason: verify.ReasonMissingToken,
		},
		{
			name: "an expired token is invalid",
			path: "/api/items", opts: []reqOpt{bearer(f.token(withClaim("exp", t0.Add(-2*time.Minute).Unix())))},
			status: 401, challenge: wantInvalid, reason: verify.ReasonExpired,
		},
		{
			name: "garbage is an invalid token",
			path: "/api/items", opts: []reqOpt{bearer("not-a-jwt")},
			status: 401, challenge: wantInvalid, reason: verify.ReasonMalformed,
		},
		{
			name: "an unsigned alg=none token is invalid",
			path: "/api/items", opts: []reqOpt{bearer(unsignedToken(f.key))},
			status: 401, challenge: wantInvalid, reason: verify.ReasonAlgNotAllowed,
		},
		{
			name: "a token signed by a key the policy does not trust is invalid",
			path: "/api/items", opts: []reqOpt{bearer(newToken(t, testKey(t, "stranger")))},
			status: 401, challenge: wantInvalid, reason: verify.ReasonUnknownKID,
		},
		{
			name: "a token for another audience is invalid",
			path: "/api/items", opts: []reqOpt{bearer(f.token(withClaim("aud", "billing")))},
			status: 401, challenge: wantInvalid, reason: verify.ReasonWrongAudience,
		},
		{
			name: "two Authorization headers are ambiguous",
			path: "/api/items", opts: []reqOpt{bearer(valid), bearer(valid)},
			status: 401, challenge: wantInvalid, reason: verify.ReasonAmbiguousToken,
		},
		{
			name: "a valid token without the admin group is forbidden on an admin route",
			path: "/admin/users", opts: []reqOpt{bearer(valid)},
			status: 403, challenge: wantInsufficient, reason: verify.ReasonClaimMismatch,
		},
		{
			name: "an admin token passes the admin route",
			path: "/admin/users", opts: []reqOpt{bearer(admin)}, status: 200,
			seen: func(t *testing.T, e *echo) { wantHeader(t, e, "X-Groups", "dev,admin") },
		},
		{
			name: "the anonymous health path passes without a token",
			path: "/healthz", status: 200,
			seen: func(t *testing.T, e *echo) { wantNoHeader(t, e, "X-User") },
		},
		{
			name: "the anonymous health path ignores a bad token and forwards neither it nor claims",
			path: "/healthz", opts: []reqOpt{bearer("not-a-jwt"), header("X-User", "mallory")}, status: 200,
			seen: func(t *testing.T, e *echo) {
				wantNoHeader(t, e, "X-User")
				wantNoHeader(t, e, "Authorization")
			},
		},
		{
			name: "the anonymous health path forwards a valid token's claims, not the token",
			path: "/healthz", opts: []reqOpt{bearer(valid), header("X-User", "mallory")}, status: 200,
			seen: func(t *testing.T, e *echo) {
				wantHeader(t, e, "X-User", "alice")
				wantNoHeader(t, e, "Authorization")
			},
		},
		{
			name: "the anonymous health path drops an unverified query token",
			path: "/healthz?probe=1&access_token=forged", status: 200,
			seen: func(t *testing.T, e *echo) {
				if e.RawQuery != "probe=1" {
					t.Errorf("upstream saw the query %q", e.RawQuery)
				}
			},
		},
		{
			name: "a query token next to the header token is ambiguous",
			path: "/api/items?access_token=forged", opts: []reqOpt{bearer(valid)},
			status: 401, challenge: wantInvalid, reason: verify.ReasonAmbiguousToken,
		},
		{
			name: "an h2c upgrade is not passed to the app",
			path: "/api/items", opts: []reqOpt{bearer(valid), header("Connection", "Upgrade, HTTP2-Settings"), header("Upgrade", "h2c"), header("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")},
			status: 200,
			seen: func(t *testing.T, e *echo) {
				wantNoHeader(t, e, "Upgrade")
				wantNoHeader(t, e, "Http2-Settings")
			},
		},
		{
			name: "dot segments are refused",
			path: "/healthz/../admin/users", status: 400,
		},
		{
			name: "a path parameter hiding a dot segment is refused (Tomcat would serve /admin/users)",
			path: "/healthz/..;/admin/users", status: 400,
		},
		{
			name: "a lower-case method is refused (some servers upper-case it)",
			path: "/admin/users", opts: []reqOpt{method("post"), bearer(valid)}, status: 400,
		},
		{
			name: "CONNECT is refused",
			path: "/api/items", opts: []reqOpt{method(http.MethodConnect), bearer(valid)}, status: 405,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var before float64
			if tc.reason != "" {
				before = f.rejections(tc.reason)
			}
			resp := f.do(tc.path, tc.opts...)
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.status, tc.status, resp.body)
			}
			if got := strings.Join(resp.header.Values("WWW-Authenticate"), " | "); got != tc.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tc.challenge)
			}
			if tc.reason != "" {
				if got := f.rejections(tc.reason) - before; got != 1 {
					t.Errorf("rejections{reason=%q} grew by %v, want 1", tc.reason, got)
				}
			}
			if tc.status >= 400 && resp.echo != nil {
				t.Errorf("the upstream saw a refused request")
			}
			if tc.seen != nil {
				if resp.echo == nil {
					t.Fatalf("the upstream did not answer: %q", resp.body)
				}
				tc.seen(t, resp.echo)
			}
		})
	}
}

func wantHeader(t *testing.T, e *echo, name, want string) {
	t.Helper()
	if got := e.Header[name]; len(got) != 1 || got[0] != want {
		t.Errorf("upstream saw %s %q, want exactly %q", name, got, want)
	}
}

func wantNoHeader(t *testing.T, e *echo, name string) {
	t.Helper()
	if got, ok := e.Header[name]; ok {
		t.Errorf("upstream saw %s %q, want none", name, got)
	}
}

func TestRequestOutcomesAreCounted(t *testing.T) {
	f := newFixture(t)
	tok := f.token() // ES256 signatures are randomized: one token, so the second use hits the cache
	f.do("/api", bearer(tok))
	f.do("/healthz")
	f.do("/api")
	f.do("/admin", bearer(tok))
	want := map[outcome]float64{outcomeAllowed: 1, outcomeAnonymous: 1, outcomeUnauthenticated: 1, outcomeForbidden: 1}
	for o, n := range want {
		eventually(t, "requests{outcome="+o.String()+"}", func() bool { return f.requests(o) == n })
	}
	resp := f.admin("/metrics")
	for _, series := range []string{
		`tokenkeeper_sidecar_requests_total{outcome="allowed"} 1`,
		`tokenkeeper_sidecar_rejections_total{reason="claim_mismatch"} 1`,
		`tokenkeeper_sidecar_rejections_total{reason="revoked_token"} 0`,
		`tokenkeeper_sidecar_request_duration_seconds_count{outcome="allowed"} 1`,
		`tokenkeeper_sidecar_verify_cache_misses_total 1`,
		`tokenkeeper_sidecar_verify_cache_hits_total 1`,
		`tokenkeeper_sidecar_keys_loaded 1`,
		`tokenkeeper_sidecar_reloads_total{file="policy",result="success"} 1`,
		`tokenkeeper_sidecar_remote_jwks_fetches_total{result="rate_limited",trigger="unknown_kid"} 0`,
		`tokenkeeper_sidecar_ready 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(resp.body, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}

func TestTokenFromACookie(t *testing.T) {
	f := newFixture(t, withPolicy(func(tp *tkv1.TokenPolicy) {
		tp.Spec.TokenSource = &tkv1.TokenSource{Cookie: "session"}
	}))
	tok := f.token()
	cases := []struct {
		name   string
		opts   []reqOpt
		status int
		reason verify.Reason
		seen   func(t *testing.T, e *echo)
	}{
		{
			name: "a valid session cookie passes and only that cookie is removed",
			opts: []reqOpt{cookie("theme", "dark"), cookie("session", tok)}, status: 200,
			seen: func(t *testing.T, e *echo) {
				wantHeader(t, e, "Cookie", "theme=dark")
				wantHeader(t, e, "X-User", "alice")
			},
		},
		{
			name: "a bearer header does not count when the policy reads a cookie",
			opts: []reqOpt{bearer(tok)}, status: 401, reason: verify.ReasonMissingToken,
		},
		{
			name: "a token in both the header and the cookie is refused as ambiguous",
			opts: []reqOpt{bearer(tok), cookie("session", tok)}, status: 401, reason: verify.ReasonAmbiguousToken,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var before float64
			if tc.reason != "" {
				before = f.rejections(tc.reason)
			}
			resp := f.do("/api", tc.opts...)
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d (%q)", resp.status, tc.status, resp.body)
			}
			if tc.reason != "" && f.rejections(tc.reason)-before != 1 {
				t.Errorf("rejections{reason=%q} did not grow by 1", tc.reason)
			}
			if tc.seen != nil {
				tc.seen(t, resp.echo)
			}
		})
	}
}

func TestForwardTokenKeepsTheToken(t *testing.T) {
	f := newFixture(t, withPolicy(func(tp *tkv1.TokenPolicy) { tp.Spec.ForwardToken = true }))
	tok := f.token()
	resp := f.do("/api", bearer(tok))
	if resp.status != 200 {
		t.Fatalf("status %d", resp.status)
	}
	wantHeader(t, resp.echo, "Authorization", "Bearer "+tok)
}

func TestRequestLimits(t *testing.T) {
	f := newFixture(t, withOptions(func(o *Options) {
		o.MaxHeaderBytes = 4 << 10
		o.MaxBodyBytes = 64 << 10
	}))
	tok := f.token()
	cases := []struct {
		name     string
		opts     []reqOpt
		status   int
		bodySize int // what the upstream read, when it answered
	}{
		{
			name:   "headers over the limit (and Go's slack) are refused with 431",
			opts:   []reqOpt{bearer(tok), header("X-Padding", strings.Repeat("a", 16<<10))},
			status: http.StatusRequestHeaderFieldsTooLarge,
		},
		{
			name:   "a declared body over the limit is refused with 413 before the app sees it",
			opts:   []reqOpt{bearer(tok), method(http.MethodPost), body(bytes.Repeat([]byte("a"), 65<<10), true)},
			status: http.StatusRequestEntityTooLarge,
		},
		{
			name:   "a chunked body that grows over the limit is cut off with 413",
			opts:   []reqOpt{bearer(tok), method(http.MethodPost), body(bytes.Repeat([]byte("a"), 200<<10), false)},
			status: http.StatusRequestEntityTooLarge,
		},
		{
			name:     "a body within the limit reaches the app whole",
			opts:     []reqOpt{bearer(tok), method(http.MethodPost), body(bytes.Repeat([]byte("a"), 64<<10), false)},
			status:   http.StatusOK,
			bodySize: 64 << 10,
		},
		{
			name:   "a token over the verifier's size limit is invalid",
			opts:   []reqOpt{bearer(strings.Repeat("a", verify.DefaultMaxTokenBytes+1))},
			status: http.StatusUnauthorized,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do("/api", tc.opts...)
			if resp.status != tc.status {
				t.Fatalf("status %d, want %d (%q)", resp.status, tc.status, resp.body)
			}
			if tc.status == http.StatusOK && resp.echo.BodySize != tc.bodySize {
				t.Errorf("upstream read %d bytes, want %d", resp.echo.BodySize, tc.bodySize)
			}
		})
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Run("an upstream that is down gives 502 and is counted", func(t *testing.T) {
		down := listen(t)
		addr := down.Addr().String()
		down.Close() // nothing listens there any more
		f := newFixture(t, withOptions(func(o *Options) { o.Upstream = "http://" + addr }))
		resp := f.do("/api", bearer(f.token()))
		if resp.status != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", resp.status)
		}
		eventually(t, "an upstream error counted", func() bool { return f.requests(outcomeUpstreamError) == 1 })
	})
	t.Run("an upstream slower than the timeout gives 504", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		f := newFixture(t,
			withUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			})),
			withOptions(func(o *Options) { o.UpstreamTimeout = 100 * time.Millisecond }))
		start := time.Now()
		resp := f.do("/api", bearer(f.token()))
		if resp.status != http.StatusGatewayTimeout {
			t.Fatalf("status %d, want 504", resp.status)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %s", d)
		}
		eventually(t, "an upstream error counted", func() bool { return f.requests(outcomeUpstreamError) == 1 })
	})
}

// Behind a trusted ingress (--trust-forwarded-headers), what it said about the client and
// the original host and scheme reaches the app; the peer is appended to X-Forwarded-For.
func TestTrustedForwardedHeadersReachTheApp(t *testing.T) {
	f := newFixture(t, withOptions(func(o *Options) { o.TrustForwardedHeaders = true }))
	resp := f.do("/api/items", bearer(f.token()), header("X-Forwarded-For", "203.0.113.9"),
		header("X-Forwarded-Proto", "https"), header("X-Forwarded-Host", "orders.example.com"),
		header("Forwarded", "for=203.0.113.9;proto=https"))
	if resp.status != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.status)
	}
	wantHeader(t, resp.echo, "X-Forwarded-For", "203.0.113.9, 127.0.0.1")
	wantHeader(t, resp.echo, "X-Forwarded-Proto", "https")
	wantHeader(t, resp.echo, "X-Forwarded-Host", "orders.example.com")
	wantHeader(t, resp.echo, "Forwarded", "for=203.0.113.9;proto=https")

	resp = f.do("/api/items", bearer(f.token()))
	wantHeader(t, resp.echo, "X-Forwarded-For", "127.0.0.1")
	wantHeader(t, resp.echo, "X-Forwarded-Proto", "http")
}
