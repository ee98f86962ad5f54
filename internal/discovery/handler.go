// Package discovery serves, for every SigningKey with an issuer, the OpenID discovery
// document and the JWKS over HTTP, so standard OIDC clients can verify tokens it signs.
package discovery

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
)

// Issuer is what is served for one issuer URL.
type Issuer struct {
	URL       string
	JWKS      []byte
	Discovery []byte
	// MaxAge caps how long clients may cache; it must not outlive publishAhead, or a
	// client could miss a key that is about to sign.
	MaxAge time.Duration
}

// Source lists the issuers to serve, from whatever holds them (the manager's cache).
type Source func(ctx context.Context) ([]Issuer, error)

// Handler answers <issuer path>/.well-known/openid-configuration and
// <issuer path>/.well-known/jwks.json.
type Handler struct {
	Source Source
	Log    logr.Logger
}

const jwksSuffix = "/.well-known/jwks.json"

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var base, what string
	switch {
	case strings.HasSuffix(r.URL.Path, jwks.DiscoveryPath):
		base, what = strings.TrimSuffix(r.URL.Path, jwks.DiscoveryPath), "discovery"
	case strings.HasSuffix(r.URL.Path, jwksSuffix):
		base, what = strings.TrimSuffix(r.URL.Path, jwksSuffix), "jwks"
	default:
		http.NotFound(w, r)
		return
	}
	issuers, err := h.Source(r.Context())
	if err != nil {
		h.Log.Error(err, "Failed to list issuers")
		http.Error(w, "issuers unavailable", http.StatusServiceUnavailable)
		return
	}
	iss := match(issuers, r.Host, base)
	if iss == nil {
		http.NotFound(w, r)
		return
	}
	body := iss.JWKS
	if what == "discovery" {
		body = iss.Discovery
	}
	if len(body) == 0 {
		http.Error(w, "not published yet", http.StatusServiceUnavailable)
		return
	}
	if secs := int(iss.MaxAge / time.Second); secs > 0 {
		w.Header().Set("Cache-Control", fmt.Sprintf("public, max-age=%d", secs))
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}

// match picks the issuer whose key is the request's host and path. A request on another host
// (the manager's Service name, say) gets the first issuer with that path: the Source lists
// owners earliest claim first, so a later issuer on another host never displaces it.
func match(issuers []Issuer, host, base string) *Issuer {
	want := requestKey(host, base)
	var byPath *Issuer
	for i := range issuers {
		k, err := IssuerKey(issuers[i].URL)
		if err != nil || k.Path != want.Path {
			continue
		}
		if k.Host == want.Host {
			return &issuers[i]
		}
		if byPath == nil {
			byPath = &issuers[i]
		}
	}
	return byPath
}

// MaxAgeFor is the Cache-Control max-age for a key family: half its publishAhead (so a
// cached JWKS always expires before a key published after the fetch can sign), at most an hour.
func MaxAgeFor(publishAhead time.Duration) time.Duration {
	m := publishAhead / 2
	if m > time.Hour {
		m = time.Hour
	}
	return m
}
