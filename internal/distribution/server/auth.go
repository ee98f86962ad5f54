package server

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"

	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
)

// Defaults of an Authenticator.
const (
	// DefaultAuthTTL is the longest a successful review is reused; a token's own exp
	// ends it sooner.
	DefaultAuthTTL = 5 * time.Minute
	// DefaultAuthFailureTTL is how long a refused token stays refused without asking
	// again: long enough that a sidecar retrying with a bad token costs the API server
	// little, short enough that a fixed RBAC or a clock that caught up takes effect soon.
	DefaultAuthFailureTTL = 10 * time.Second
	// DefaultAuthCacheEntries bounds the review cache: a sidecar holds one token at a time.
	DefaultAuthCacheEntries = 50000
	// DefaultMaxReviews bounds the TokenReviews in flight: past it a client gets 503 and
	// retries later, so tokens made to pass the precheck cannot pile up requests waiting
	// for the API server (the review client is rate-limited).
	DefaultMaxReviews = 64
	// DefaultMaxReviewsPerClient: a sidecar needs one review at a time.
	DefaultMaxReviewsPerClient = 4
	// maxTokenBytes bounds what is hashed, parsed and sent to TokenReview.
	maxTokenBytes = 8 << 10
)

// Reviewer asks the API server about a token (a TokenReview create).
type Reviewer interface {
	Review(ctx context.Context, token string, audiences []string) (authenticationv1.TokenReviewStatus, error)
}

// Authenticator checks a sidecar's projected service-account token with TokenReview and
// lets it read its own namespace only. Results are cached by the token's hash: a success
// until the token's exp or TTL, whichever is sooner; a refusal for FailureTTL; an error
// reaching the API server not at all.
type Authenticator struct {
	Reviewer   Reviewer
	Now        func() time.Time
	Log        *slog.Logger
	TTL        time.Duration
	FailureTTL time.Duration
	MaxEntries int
	MaxReviews int // TokenReviews in flight; 0 means DefaultMaxReviews
	// MaxReviewsPerClient bounds them per client address; 0 means DefaultMaxReviewsPerClient.
	MaxReviewsPerClient int
	// Observe, when set, is told each decision's result ("ok", "unauthenticated",
	// "forbidden", "error") and whether it came from the cache.
	Observe func(result string, cached bool)

	mu sync.Mutex
	// Successes and refusals are kept apart, each bounded: refusals (which anyone can
	// make by the thousand with forged tokens) can never evict a sidecar's success.
	ok, refused map[[sha256.Size]byte]decision
	reviews     int            // in flight, under mu
	perClient   map[string]int // in flight by client address, under mu
}

type decision struct {
	namespace string // the service account's, when authenticated
	user      string
	status    int // http.StatusOK or the refusal's
	reason    string
	until     time.Time
	// prechecked: refused before any TokenReview (garbage, another audience, expired),
	// logged at debug only, so a flood of junk cannot flood the log either.
	prechecked bool
}

// Authorize implements Handler.Authorize.
func (a *Authenticator) Authorize(r *http.Request, namespace string) (int, string) {
	now := a.now()
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		a.observe("unauthenticated", false)
		return http.StatusUnauthorized, "no bearer token: present the projected service-account token of audience " + distribution.Audience
	}
	key := sha256.Sum256([]byte(token))
	d, cached := a.lookup(key, now)
	if !cached {
		d = a.review(r.Context(), token, clientHost(r), now)
		if d.status == http.StatusServiceUnavailable {
			a.observe("error", false)
			return d.status, d.reason
		}
		if !d.prechecked { // free to decide again: junk must not evict anything
			a.store(key, d, now)
		}
	}
	if d.status != http.StatusOK {
		a.observe(result(d.status), cached)
		if !cached {
			level := slog.LevelInfo
			if d.prechecked {
				level = slog.LevelDebug
			}
			a.logger().Log(r.Context(), level, "Refused a distribution client", "status", d.status, "reason", d.reason, "user", d.user, "namespace", namespace)
		}
		return d.status, d.reason
	}
	if d.namespace != namespace {
		a.observe("forbidden", cached)
		if !cached {
			a.logger().Info("Refused a distribution client another namespace's policy", "user", d.user, "namespace", namespace)
		}
		return http.StatusForbidden, fmt.Sprintf("%s may read the policies of namespace %s only, not %s", d.user, d.namespace, namespace)
	}
	a.observe("ok", cached)
	return http.StatusOK, ""
}

func result(status int) string {
	if status == http.StatusForbidden {
		return "forbidden"
	}
	return "unauthenticated"
}

// review decides about a token not in the cache. A token that cannot be a projected
// token of the distribution audience is refused without asking the API server, so a flood
// of garbage costs no TokenReviews; everything else is decided by TokenReview alone.
func (a *Authenticator) review(ctx context.Context, token, client string, now time.Time) decision {
	refuse := func(status int, reason string) decision {
		return decision{status: status, reason: reason, until: now.Add(a.failureTTL())}
	}
	precheck := func(reason string) decision {
		d := refuse(http.StatusUnauthorized, reason)
		d.prechecked = true
		return d
	}
	claims, err := peekClaims(token)
	switch {
	case err != nil:
		return precheck("bearer token is not a JWT: " + err.Error())
	case !claims.hasAudience(distribution.Audience):
		return precheck("bearer token is not for audience " + distribution.Audience)
	case claims.Exp != 0 && !now.Before(time.Unix(claims.Exp, 0)):
		return precheck("bearer token has expired")
	}
	if !a.acquireReview(client) {
		return decision{status: http.StatusServiceUnavailable, reason: "too many token reviews in flight; retry"}
	}
	st, err := a.Reviewer.Review(ctx, token, []string{distribution.Audience})
	a.releaseReview(client)
	if err != nil {
		a.logger().Error("TokenReview failed; refusing the client for now", "err", err)
		return decision{status: http.StatusServiceUnavailable, reason: "cannot review the token now; retry"}
	}
	switch {
	case !st.Authenticated:
		reason := "token not authenticated"
		if st.Error != "" {
			reason += ": " + st.Error
		}
		return refuse(http.StatusUnauthorized, reason)
	case !slices.Contains(st.Audiences, distribution.Audience):
		return refuse(http.StatusUnauthorized, "token is not valid for audience "+distribution.Audience)
	}
	ns, ok := serviceAccountNamespace(st.User.Username)
	if !ok || !slices.Contains(st.User.Groups, "system:serviceaccounts") {
		d := refuse(http.StatusForbidden, fmt.Sprintf("%s is not a service account", st.User.Username))
		d.user = st.User.Username
		return d
	}
	until := now.Add(a.ttl())
	if claims.Exp != 0 {
		until = minTime(until, time.Unix(claims.Exp, 0))
	}
	return decision{namespace: ns, user: st.User.Username, status: http.StatusOK, until: until}
}

// serviceAccountNamespace reads system:serviceaccount:<namespace>:<name>.
func serviceAccountNamespace(user string) (string, bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", false
	}
	ns, name, ok := strings.Cut(rest, ":")
	if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return "", false
	}
	return ns, true
}

func (a *Authenticator) lookup(key [sha256.Size]byte, now time.Time) (decision, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d, ok := a.ok[key]
	if !ok {
		d, ok = a.refused[key]
	}
	if !ok || !now.Before(d.until) {
		return decision{}, false
	}
	return d, true
}

func (a *Authenticator) store(key [sha256.Size]byte, d decision, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ok == nil {
		a.ok, a.refused = map[[sha256.Size]byte]decision{}, map[[sha256.Size]byte]decision{}
	}
	m, limit := a.ok, a.maxEntries()
	if d.status != http.StatusOK {
		m, limit = a.refused, max(1, limit/10)
	}
	if len(m) >= limit {
		for k, e := range m {
			if !now.Before(e.until) {
				delete(m, k)
			}
		}
		// Still full of live entries: drop arbitrary ones (map order); those clients are
		// reviewed again at their next poll, nothing worse.
		for k := range m {
			if len(m) < limit {
				break
			}
			delete(m, k)
		}
	}
	m[key] = d
}

// acquireReview takes a TokenReview slot: at most MaxReviews in flight, and at most
// MaxReviewsPerClient for one client address, so one pod forging tokens that pass the
// precheck cannot take the slots other sidecars need.
func (a *Authenticator) acquireReview(client string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reviews >= orDefault(a.MaxReviews, DefaultMaxReviews) || a.perClient[client] >= orDefault(a.MaxReviewsPerClient, DefaultMaxReviewsPerClient) {
		return false
	}
	if a.perClient == nil {
		a.perClient = map[string]int{}
	}
	a.reviews++
	a.perClient[client]++
	return true
}

func (a *Authenticator) releaseReview(client string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reviews--
	if a.perClient[client]--; a.perClient[client] <= 0 {
		delete(a.perClient, client)
	}
}

// clientHost is the address a request came from (a pod IP in a cluster).
func clientHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" || len(token) > maxTokenBytes {
		return "", false
	}
	return token, true
}

// peeked are the unverified claims of a token, read only to skip hopeless reviews and to
// bound how long a review that succeeded is reused.
type peeked struct {
	Aud json.RawMessage `json:"aud"`
	Exp int64           `json:"exp"`
}

func peekClaims(token string) (peeked, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return peeked{}, fmt.Errorf("want 3 dot-separated parts, got %d", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return peeked{}, fmt.Errorf("payload: %w", err)
	}
	var c peeked
	if err := json.Unmarshal(payload, &c); err != nil {
		return peeked{}, fmt.Errorf("payload: %w", err)
	}
	return c, nil
}

func (c peeked) hasAudience(want string) bool {
	var one string
	if json.Unmarshal(c.Aud, &one) == nil {
		return one == want
	}
	var many []string
	return json.Unmarshal(c.Aud, &many) == nil && slices.Contains(many, want)
}

func (a *Authenticator) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

func (a *Authenticator) ttl() time.Duration { return orDefault(a.TTL, DefaultAuthTTL) }
func (a *Authenticator) failureTTL() time.Duration {
	return orDefault(a.FailureTTL, DefaultAuthFailureTTL)
}
func (a *Authenticator) maxEntries() int { return orDefault(a.MaxEntries, DefaultAuthCacheEntries) }

func (a *Authenticator) logger() *slog.Logger {
	if a.Log != nil {
		return a.Log
	}
	return slog.Default()
}

func (a *Authenticator) observe(result string, cached bool) {
	if a.Observe != nil {
		a.Observe(result, cached)
	}
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
