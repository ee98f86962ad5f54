package sidecar

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// Retry delays after failed remote JWKS fetches: doubling from the first to the last.
const (
	fetchRetryMin = 2 * time.Second
	fetchRetryMax = time.Minute
)

// remoteSource is one jwksURI of the policy: the last good document and when to refresh it.
type remoteSource struct {
	s   *Sidecar
	uri string
	doc atomic.Pointer[[]byte] // last good JWKS document; nil before the first

	mu        sync.Mutex
	inflight  *fetchCall // the fetch under way, which later callers wait for
	lastStart time.Time  // when the last fetch started: the unknown-kid rate limit
	next      time.Time  // when the scheduled refresh is due
	failures  int        // consecutive failed fetches
	etag      string
	hash      [32]byte // of doc
}

// fetchCall is one fetch that every concurrent caller shares.
type fetchCall struct {
	done    chan struct{}
	changed bool // the document changed and the new key set is in place
}

// setRemotesLocked makes the remote sources match uris, keeping the state (last good set,
// schedule) of those that stay. It returns the new ones, which want a first fetch.
func (s *Sidecar) setRemotesLocked(uris []string) (added []*remoteSource) {
	old := *s.remotes.Load()
	next := make([]*remoteSource, 0, len(uris))
	for _, u := range uris {
		i := slices.IndexFunc(old, func(r *remoteSource) bool { return r.uri == u })
		if i >= 0 {
			next = append(next, old[i])
			continue
		}
		src := &remoteSource{s: s, uri: u}
		next = append(next, src)
		added = append(added, src)
	}
	for _, o := range old {
		if !slices.Contains(uris, o.uri) {
			s.metrics.lastFetchOK.DeleteLabelValues(o.uri)
		}
	}
	s.remotes.Store(&next)
	return added
}

// forgetRemotesLocked drops what the sidecar fetched itself when the manager takes the
// remote JWKS over: should the manager go silent later, the sidecar fetches afresh at once
// rather than trust a set from before (one owner at a time).
func (s *Sidecar) forgetRemotesLocked() {
	for _, src := range *s.remotes.Load() {
		src.mu.Lock()
		src.doc.Store(nil)
		src.etag, src.hash, src.next, src.failures = "", [32]byte{}, time.Time{}, 0
		src.mu.Unlock()
	}
}

// refreshDue starts the scheduled refreshes that are due, in the background.
func (s *Sidecar) refreshDue() {
	if s.remoteByStream.Load() {
		return // the manager fetches them; its snapshots carry the keys
	}
	now := s.now()
	for _, src := range *s.remotes.Load() {
		src.mu.Lock()
		due := src.inflight == nil && !now.Before(src.next)
		src.mu.Unlock()
		if due {
			go src.refresh(s.ctx, triggerScheduled, 0)
		}
	}
}

// refreshOnUnknownKID is the Verifier's unknown-kid hook: it refreshes every remote set
// (at most once per JWKSUnknownKIDInterval each, joining a fetch already under way) and
// reports whether any changed. kid is attacker-controlled: it is neither used nor logged.
func (s *Sidecar) refreshOnUnknownKID(string) bool {
	if s.remoteByStream.Load() {
		// The manager owns the remote JWKS: a kid it has not published is not trusted
		// here either (one owner, so a withdrawn key cannot come back through this fetch).
		return false
	}
	srcs := *s.remotes.Load()
	gap := s.opts.JWKSUnknownKIDInterval
	if len(srcs) == 1 {
		return srcs[0].refresh(s.ctx, triggerUnknownKID, gap)
	}
	var changed atomic.Bool
	var wg sync.WaitGroup
	for _, src := range srcs {
		wg.Go(func() {
			if src.refresh(s.ctx, triggerUnknownKID, gap) {
				changed.Store(true)
			}
		})
	}
	wg.Wait()
	return changed.Load()
}

// refresh fetches the document unless a fetch is under way, in which case it waits for that
// one, or one started less than minGap ago. It reports whether the key set changed.
func (src *remoteSource) refresh(ctx context.Context, trigger string, minGap time.Duration) bool {
	now := src.s.now()
	src.mu.Lock()
	if c := src.inflight; c != nil {
		src.mu.Unlock()
		<-c.done
		return c.changed
	}
	if minGap > 0 && !src.lastStart.IsZero() && now.Sub(src.lastStart) < minGap {
		src.mu.Unlock()
		src.s.metrics.rateLimited.Inc() // only unknown-kid refreshes pass a gap
		return false
	}
	c := &fetchCall{done: make(chan struct{})}
	src.inflight, src.lastStart = c, now
	etag := src.etag
	src.mu.Unlock()

	defer func() {
		src.mu.Lock()
		src.inflight = nil
		src.mu.Unlock()
		close(c.done)
	}()
	c.changed = src.fetch(ctx, trigger, etag)
	return c.changed
}

// fetch gets the document once and, when it changed, applies the new effective key set.
func (src *remoteSource) fetch(ctx context.Context, trigger, etag string) bool {
	s := src.s
	body, hdr, notModified, err := src.get(ctx, etag)
	if s.remoteByStream.Load() {
		return false // the manager took over while this fetch ran
	}
	var keys []jose.JSONWebKey
	var skipped int
	if err == nil && !notModified {
		var allowed []string
		if eng := s.engine.Load(); eng != nil {
			allowed = eng.allowed
		}
		keys, skipped, err = usableRemoteKeys(body, allowed)
		if err == nil && len(keys) == 0 {
			err = fmt.Errorf("no usable signing key (%d skipped: wrong use, unsupported or disallowed alg, or an RSA key without alg while several RSA algorithms are allowed)", skipped)
		}
	}
	now := s.now()
	src.mu.Lock()
	if err != nil {
		src.failures++
		retry := min(fetchRetryMin<<min(src.failures-1, 10), fetchRetryMax)
		src.next = now.Add(retry)
		src.mu.Unlock()
		s.metrics.fetches.WithLabelValues(trigger, resultError).Inc()
		s.log.Warn("Failed to fetch a remote JWKS; kept the last good set", "uri", src.uri,
			"trigger", trigger, "err", err, "retryIn", retry.String(), "haveLastGood", src.doc.Load() != nil)
		return false
	}
	src.failures = 0
	src.next = now.Add(s.jitter(cacheLifetime(hdr, now, s.opts.JWKSRefresh, s.opts.JWKSRefreshMin, s.opts.JWKSRefreshMax)))
	if notModified {
		src.mu.Unlock()
		s.metrics.fetches.WithLabelValues(trigger, resultNotModified).Inc()
		src.markSuccess(now)
		return false
	}
	src.etag = hdr.Get("Etag")
	sum := sha256.Sum256(body)
	changed := sum != src.hash
	src.hash = sum
	src.doc.Store(&body)
	src.mu.Unlock()
	s.metrics.fetches.WithLabelValues(trigger, resultSuccess).Inc()
	src.markSuccess(now)
	if changed {
		effective := s.applyKeys()
		s.log.Info("Fetched a remote JWKS", "uri", src.uri, "trigger", trigger, "keys", len(keys),
			"skippedKeys", skipped, "effectiveKeys", effective)
	}
	return changed
}

func (src *remoteSource) markSuccess(now time.Time) {
	if slices.Contains(*src.s.remotes.Load(), src) { // a dropped source leaves no series behind
		src.s.metrics.lastFetchOK.WithLabelValues(src.uri).Set(float64(now.Unix()))
	}
}

// get performs the request. notModified reports a 304 to a conditional request.
func (src *remoteSource) get(ctx context.Context, etag string) (body []byte, hdr http.Header, notModified bool, err error) {
	s := src.s
	ctx, cancel := context.WithTimeout(ctx, s.opts.JWKSFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src.uri, nil)
	if err != nil {
		return nil, nil, false, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	req.Header.Set("User-Agent", "tokenkeeper-sidecar")
	if etag != "" && src.doc.Load() != nil {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && src.doc.Load() != nil:
		return nil, resp.Header, true, nil
	case resp.StatusCode != http.StatusOK:
		return nil, nil, false, fmt.Errorf("status %s", resp.Status)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, s.opts.JWKSMaxBytes+1))
	if err != nil {
		return nil, nil, false, fmt.Errorf("reading the body: %w", err)
	}
	if int64(len(body)) > s.opts.JWKSMaxBytes {
		return nil, nil, false, fmt.Errorf("body larger than %d bytes", s.opts.JWKSMaxBytes)
	}
	return body, resp.Header, false, nil
}

// usableRemoteKeys and cacheLifetime are shared with the manager's TokenPolicy controller.
func usableRemoteKeys(doc []byte, allowed []string) ([]jose.JSONWebKey, int, error) {
	if len(allowed) == 0 {
		allowed = verify.Algorithms
	}
	return jwks.Usable(doc, allowed)
}

func cacheLifetime(h http.Header, now time.Time, def, lo, hi time.Duration) time.Duration {
	return jwks.CacheLifetime(h, now, def, lo, hi)
}

// defaultJitter refreshes up to a tenth early, so that pods started together do not
// refresh together.
func defaultJitter(d time.Duration) time.Duration {
	if d/10 <= 0 {
		return d
	}
	return d - rand.N(d/10)
}

// newFetchTransport is the transport of remote JWKS fetches: the proxy environment
// variables apply (an IdP is often outside the cluster), HTTP/2 as negotiated.
func newFetchTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}
