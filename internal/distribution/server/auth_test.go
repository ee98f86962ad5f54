package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
)

// fakeReviewer answers TokenReviews from a table and counts them; it isolates the
// Authenticator's caching and mapping (the real TokenReview is tested on envtest in
// controllers/distribution_test.go).
type fakeReviewer struct {
	users map[string]string // token -> username
	err   error
	calls int
}

func (f *fakeReviewer) Review(_ context.Context, token string, aud []string) (authenticationv1.TokenReviewStatus, error) {
	f.calls++
	if f.err != nil {
		return authenticationv1.TokenReviewStatus{}, f.err
	}
	u, ok := f.users[token]
	if !ok {
		return authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}, nil
	}
	groups := []string{"system:authenticated"}
	if strings.HasPrefix(u, "system:serviceaccount:") {
		groups = append(groups, "system:serviceaccounts")
	}
	return authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: aud, User: authenticationv1.UserInfo{Username: u, Groups: groups}}, nil
}

func fakeJWT(t *testing.T, aud any, exp time.Time) string {
	t.Helper()
	payload, err := json.Marshal(map[string]any{"aud": aud, "exp": exp.Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(payload) + ".c2ln"
}

func authorize(a *Authenticator, token, namespace string) int {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	status, _ := a.Authorize(r, namespace)
	return status
}

func TestAuthenticatorDecidesAndCaches(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	good := fakeJWT(t, []string{distribution.Audience}, now.Add(2*time.Minute))
	human := fakeJWT(t, distribution.Audience, now.Add(time.Hour))
	rev := &fakeReviewer{users: map[string]string{good: "system:serviceaccount:shop:api", human: "jane@example.com"}}
	a := &Authenticator{Reviewer: rev, Now: func() time.Time { return now }}

	for _, c := range []struct {
		name, token, ns string
		want, reviews   int
	}{
		{"its own namespace", good, "shop", http.StatusOK, 1},
		{"again, from the cache", good, "shop", http.StatusOK, 0},
		{"another namespace", good, "bank", http.StatusForbidden, 0},
		{"no token", "", "shop", http.StatusUnauthorized, 0},
		{"garbage, never sent to the API server", "not-a-jwt", "shop", http.StatusUnauthorized, 0},
		{"a wrong audience, never sent", fakeJWT(t, "https://kubernetes.default.svc", now.Add(time.Hour)), "shop", http.StatusUnauthorized, 0},
		{"expired, never sent", fakeJWT(t, distribution.Audience, now.Add(-time.Second)), "shop", http.StatusUnauthorized, 0},
		{"refused by TokenReview", fakeJWT(t, distribution.Audience, now.Add(90*time.Minute)), "shop", http.StatusUnauthorized, 1},
		{"not a service account", human, "shop", http.StatusForbidden, 1},
	} {
		before := rev.calls
		if got := authorize(a, c.token, c.ns); got != c.want {
			t.Errorf("%s: status %d, want %d", c.name, got, c.want)
		}
		if got := rev.calls - before; got != c.reviews {
			t.Errorf("%s: %d TokenReviews, want %d", c.name, got, c.reviews)
		}
	}

	// A success is reused until the token's exp (2m here, sooner than the 5m TTL).
	now = now.Add(2*time.Minute + time.Second)
	rev.users = map[string]string{}
	if got := authorize(a, good, "shop"); got != http.StatusUnauthorized {
		t.Errorf("past its exp the token was still accepted: %d", got)
	}
}

func TestAuthenticatorCachesRefusalsBrieflyAndErrorsNot(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tok := fakeJWT(t, distribution.Audience, now.Add(time.Hour))
	rev := &fakeReviewer{users: map[string]string{}}
	a := &Authenticator{Reviewer: rev, Now: func() time.Time { return now }}
	if got := authorize(a, tok, "shop"); got != http.StatusUnauthorized {
		t.Fatalf("status %d", got)
	}
	// Now the token is good (say the ServiceAccount was created late): a refusal is
	// reused for FailureTTL only.
	rev.users[tok] = "system:serviceaccount:shop:api"
	if got := authorize(a, tok, "shop"); got != http.StatusUnauthorized || rev.calls != 1 {
		t.Errorf("within FailureTTL: status %d after %d reviews, want the cached 401 after 1", got, rev.calls)
	}
	now = now.Add(DefaultAuthFailureTTL)
	if got := authorize(a, tok, "shop"); got != http.StatusOK {
		t.Errorf("after FailureTTL: status %d", got)
	}

	// The API server unreachable: 503 (the sidecar retries), and nothing cached.
	other := fakeJWT(t, distribution.Audience, now.Add(30*time.Minute))
	rev.err = errors.New("connection refused")
	if got := authorize(a, other, "shop"); got != http.StatusServiceUnavailable {
		t.Errorf("TokenReview failing: status %d, want 503", got)
	}
	rev.err = nil
	rev.users[other] = "system:serviceaccount:shop:api"
	if got := authorize(a, other, "shop"); got != http.StatusOK {
		t.Errorf("the error was cached: status %d", got)
	}
}

func TestAuthenticatorCacheIsBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rev := &fakeReviewer{users: map[string]string{}}
	a := &Authenticator{Reviewer: rev, Now: func() time.Time { return now }, MaxEntries: 10}
	for i := range 100 {
		tok := fakeJWT(t, distribution.Audience, now.Add(time.Duration(i+1)*time.Minute))
		rev.users[tok] = "system:serviceaccount:shop:api"
		if got := authorize(a, tok, "shop"); got != http.StatusOK {
			t.Fatalf("token %d: status %d", i, got)
		}
	}
	if n := len(a.ok); n > 10 {
		t.Errorf("cache holds %d entries, bound 10", n)
	}
}

func TestServiceAccountNamespace(t *testing.T) {
	for user, want := range map[string]string{
		"system:serviceaccount:shop:api":  "shop",
		"system:serviceaccount:shop":      "",
		"system:serviceaccount::api":      "",
		"system:serviceaccount:shop:a:b":  "",
		"system:serviceaccounts:shop:api": "",
		"jane":                            "",
	} {
		got, _ := serviceAccountNamespace(user)
		if got != want {
			t.Errorf("%q: namespace %q, want %q", user, got, want)
		}
	}
}

// blockingReviewer holds every review until release is closed.
type blockingReviewer struct {
	started chan struct{}
	release chan struct{}
}

func (b *blockingReviewer) Review(_ context.Context, _ string, aud []string) (authenticationv1.TokenReviewStatus, error) {
	b.started <- struct{}{}
	<-b.release
	return authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: aud, User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop:api", Groups: []string{"system:serviceaccounts"}}}, nil
}

// Tokens made to pass the precheck cannot pile up requests behind a slow API server: past
// MaxReviews in flight a client gets 503 at once, and nothing of it is cached.
func TestTokenReviewsInFlightAreBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rev := &blockingReviewer{started: make(chan struct{}, 4), release: make(chan struct{})}
	a := &Authenticator{Reviewer: rev, Now: func() time.Time { return now }, MaxReviews: 2, MaxReviewsPerClient: 8}
	done := make(chan int, 2)
	for i := range 2 {
		tok := fakeJWT(t, distribution.Audience, now.Add(time.Duration(i+1)*time.Minute))
		go func() { done <- authorize(a, tok, "shop") }()
		<-rev.started
	}
	third := fakeJWT(t, distribution.Audience, now.Add(time.Hour))
	if got := authorize(a, third, "shop"); got != http.StatusServiceUnavailable {
		t.Errorf("a third review while two are in flight: status %d, want 503", got)
	}
	close(rev.release)
	for range 2 {
		if got := <-done; got != http.StatusOK {
			t.Errorf("a review in flight ended %d", got)
		}
	}
	if got := authorize(a, third, "shop"); got != http.StatusOK {
		t.Errorf("the refused token once reviews are free: %d (a 503 must not be cached)", got)
	}
}

// Forged tokens that pass the precheck cost a TokenReview each, but their refusals live
// apart from the successes: a flood of them never evicts a sidecar's cached review. Junk
// the precheck refuses is not cached at all.
func TestRefusalsCannotEvictASuccess(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	good := fakeJWT(t, distribution.Audience, now.Add(4*time.Minute))
	rev := &fakeReviewer{users: map[string]string{good: "system:serviceaccount:shop:api"}}
	a := &Authenticator{Reviewer: rev, Now: func() time.Time { return now }, MaxEntries: 10}
	if got := authorize(a, good, "shop"); got != http.StatusOK {
		t.Fatalf("status %d", got)
	}
	for i := range 1000 {
		if got := authorize(a, fakeJWT(t, distribution.Audience, now.Add(time.Duration(i+10)*time.Minute)), "shop"); got != http.StatusUnauthorized {
			t.Fatalf("forged token %d: %d", i, got)
		}
		_ = authorize(a, fmt.Sprintf("junk-%d", i), "shop")
	}
	before := rev.calls
	if got := authorize(a, good, "shop"); got != http.StatusOK || rev.calls != before {
		t.Errorf("after a flood of refusals the good token got %d with %d new reviews, want 200 from the cache", got, rev.calls-before)
	}
	if len(a.refused) > 1 {
		t.Errorf("%d refusals cached, bound 1 (a tenth of MaxEntries)", len(a.refused))
	}
}

// One client address holds at most MaxReviewsPerClient reviews in flight; others still get theirs.
func TestOneClientCannotTakeEveryReviewSlot(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	rev := &blockingReviewer{started: make(chan struct{}, 4), release: make(chan struct{})}
	a := &Authenticator{Reviewer: rev, Now: func() time.Time { return now }, MaxReviewsPerClient: 1}
	from := func(addr, tok string) int {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = addr
		r.Header.Set("Authorization", "Bearer "+tok)
		status, _ := a.Authorize(r, "shop")
		return status
	}
	done := make(chan int, 1)
	go func() { done <- from("10.0.0.66:40000", fakeJWT(t, distribution.Audience, now.Add(time.Minute))) }()
	<-rev.started
	if got := from("10.0.0.66:40001", fakeJWT(t, distribution.Audience, now.Add(2*time.Minute))); got != http.StatusServiceUnavailable {
		t.Errorf("a second review from the same pod: %d, want 503", got)
	}
	other := make(chan int, 1)
	go func() { other <- from("10.0.0.7:40000", fakeJWT(t, distribution.Audience, now.Add(3*time.Minute))) }()
	<-rev.started // another pod's review started despite the first pod's
	close(rev.release)
	if got := <-other; got != http.StatusOK {
		t.Errorf("another pod: %d", got)
	}
	<-done
}

// A user named like a service account without the service accounts' group (another
// authenticator's user) is not one.
func TestAServiceAccountNeedsItsGroup(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tok := fakeJWT(t, distribution.Audience, now.Add(time.Hour))
	a := &Authenticator{Reviewer: reviewerFunc(func(aud []string) authenticationv1.TokenReviewStatus {
		return authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: aud, User: authenticationv1.UserInfo{Username: "system:serviceaccount:shop:api", Groups: []string{"system:authenticated"}}}
	}), Now: func() time.Time { return now }}
	if got := authorize(a, tok, "shop"); got != http.StatusForbidden {
		t.Errorf("status %d, want 403", got)
	}
}

type reviewerFunc func(aud []string) authenticationv1.TokenReviewStatus

func (f reviewerFunc) Review(_ context.Context, _ string, aud []string) (authenticationv1.TokenReviewStatus, error) {
	return f(aud), nil
}
