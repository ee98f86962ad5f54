package sidecar

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// Sidecar is the verifying proxy: its loaded state, the proxy handler and the admin handler.
// Build it with New, serve it with Run or Serve.
type Sidecar struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	metrics  *metrics
	upstream *url.URL
	rp       *httputil.ReverseProxy
	tr       *http.Transport
	client   *http.Client // remote JWKS fetches
	jitter   func(time.Duration) time.Duration

	upstreamErrLog sampledLog

	prober   *prober
	loopback *loopbackCheck // nil when off (--allow-app-non-loopback, or an upstream not on loopback)
	// inflight counts the requests in flight to the app, up to MaxUpstreamRequests.
	inflight  atomic.Int64
	tunnelsMu sync.Mutex
	tunnels   map[*tunnel]struct{}

	// engine is what requests read: the current policy's Verifier. nil until a valid
	// policy is loaded.
	engine   atomic.Pointer[engine]
	draining atomic.Bool
	// revocationsIncomplete: the loaded revocations file says it holds only part of the
	// revocations (files.go); not ready until a complete set replaces it.
	revocationsIncomplete atomic.Pointer[string]

	// dist subscribes to the manager's snapshots; nil without DistributionURL.
	dist    *distribution.Client
	started time.Time // "never heard" counts from here
	// streamed: a stream snapshot was applied; from then on the bundle files are not
	// applied any more (set under pollMu and mu).
	streamed atomic.Bool
	// remoteByStream: the manager owns the remote JWKS (a snapshot was applied and the
	// manager was heard within DistributionFallback): the sidecar neither fetches them nor
	// adds their keys. Changed under mu.
	remoteByStream atomic.Bool
	// stale: requests fail closed for want of word from the manager (for logs only).
	stale atomic.Bool

	// mu orders every change of the state below and of engine. Lock order: mu, then a
	// remote source's mu; a fetch never holds its source's mu while it takes mu.
	mu       sync.Mutex
	fileKeys []jose.JSONWebKey // the JWKS file's keys, or the stream snapshot's
	// policySpec is the JSON of the TokenPolicy spec engine was built from: a snapshot
	// with the same spec keeps the Verifier (and its cache).
	policySpec []byte
	keySet     *verify.KeySet
	revs       *verify.Revocations
	remotes    atomic.Pointer[[]*remoteSource] // in policy order; read without mu by the kid hook
	cacheBase  struct{ hits, misses atomic.Uint64 }
	pollMu     sync.Mutex // one poll of the files at a time
	// revocationsLoaded: a revocations file was applied once (guarded by pollMu).
	revocationsLoaded bool
	files             []*watchedFile

	ctx    context.Context // background work (remote fetches); cancelled when Serve returns
	cancel context.CancelFunc
}

// engine is one policy's verification state. Requests load it once and use it throughout,
// so a policy swap never mixes two policies in one request.
type engine struct {
	v            *verify.Verifier
	src          verify.TokenSource
	forwardToken bool
	// strip holds the canonical names of the forwarded-claim headers, removed from every
	// request before the verified values are set.
	strip    []string
	stripSet map[string]struct{}
	allowed  []string // algorithms, normalized: for inferring a remote key's alg
	// maxStale is the policy's spec.distribution.maxStaleness (0: off).
	maxStale time.Duration
}

// loadedPolicy is a TokenPolicy checked and turned into what setPolicy applies.
type loadedPolicy struct {
	cfg      verify.Config
	uris     []string // remote JWKS, in policy order
	maxStale time.Duration
	spec     []byte // JSON of the spec
	// plainHTTP are the indexes of trustedKeys whose jwksURI is plain http (for a warning).
	plainHTTP []int
}

// New builds a Sidecar and loads its files once: a file that is missing or invalid now is
// logged, counted and retried at every poll while the sidecar runs. The policy's remote
// JWKS are fetched from now on, in the background, until Serve returns.
func New(opts Options) (*Sidecar, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("invalid sidecar options: %w", err)
	}
	up, _ := upstreamURL(o.Upstream) // checked by withDefaults
	s := &Sidecar{
		opts:     o,
		log:      o.Logger,
		now:      o.Now,
		upstream: up,
		jitter:   o.jitter,
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.started = o.Now()
	if o.DistributionURL != "" {
		c, err := distribution.NewClient(distribution.ClientConfig{
			URL: o.DistributionURL, Namespace: o.Namespace, Name: o.PolicyName,
			TokenFile: o.DistributionTokenFile, CAFile: o.DistributionCAFile,
			Apply: s.applySnapshot, Heard: s.heardFromManager,
			MaxBackoff: o.distributionMaxBackoff, Now: o.Now, Logger: o.Logger,
			Floor: readFloor(o.DistributionFloorFile, o.Logger),
		})
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("invalid sidecar options: distribution: %w", err)
		}
		s.dist = c
	}
	s.metrics = newMetrics(s)
	s.prober = newProber(o.AppProbes)
	s.tunnels = map[*tunnel]struct{}{}
	s.loopback = s.newLoopbackCheck(up)
	s.remotes.Store(&[]*remoteSource{})
	s.tr = newUpstreamTransport(o)
	s.rp = s.newReverseProxy()
	s.client = o.HTTPClient
	if s.client == nil {
		s.client = &http.Client{Transport: newFetchTransport()}
	}
	s.files = []*watchedFile{
		{kind: fileJWKS, path: o.JWKSFile, load: s.loadJWKS},
		{kind: fileRevocations, path: o.RevocationsFile, load: s.loadRevocations},
		{kind: filePolicy, path: o.PolicyFile, load: s.loadPolicy},
	}
	s.pollFiles()
	return s, nil
}

// readFloor reads the bundle's floor version, once, at start: the bundle loaded now is the
// state no snapshot may take back. A missing or unreadable file means no floor (a bundle
// from a manager that does not write one), logged.
func readFloor(path string, log *slog.Logger) distribution.Version {
	if path == "" {
		return distribution.Version{}
	}
	data, err := readFile(path)
	if err == nil {
		var v distribution.Version
		if v, err = distribution.ParseVersion(string(data)); err == nil {
			return v
		}
	}
	log.Warn("No floor version in the bundle; the first snapshot is taken as it comes", "file", path, "err", err)
	return distribution.Version{}
}

// Ready reports whether the sidecar should receive traffic, and why not: Started, not
// failing closed for want of word from the manager (spec.distribution.maxStaleness), and
// the app port listens on loopback only (as last checked).
func (s *Sidecar) Ready() (bool, string) {
	if ok, why := s.Started(); !ok {
		return false, why
	}
	if why := s.staleReason(s.engine.Load()); why != "" {
		return false, why
	}
	if s.loopback != nil {
		if why := s.loopback.current(); why != "" {
			return false, why
		}
	}
	return true, "ok"
}

// Started reports whether a valid policy and a key are loaded (and the sidecar is not
// draining), and why not. Unlike Ready it does not look at the app, which starts after it.
func (s *Sidecar) Started() (bool, string) {
	switch eng := s.engine.Load(); {
	case s.draining.Load():
		return false, "draining"
	case eng == nil:
		return false, "no valid policy loaded"
	case !eng.v.Ready():
		return false, "no keys loaded"
	case s.revocationsIncomplete.Load() != nil:
		return false, "revocations incomplete: " + *s.revocationsIncomplete.Load()
	}
	return true, "ok"
}

// cacheStats sums the verified-token cache counters over every policy's Verifier.
func (s *Sidecar) cacheStats() (hits, misses uint64, entries int) {
	hits, misses = s.cacheBase.hits.Load(), s.cacheBase.misses.Load()
	if eng := s.engine.Load(); eng != nil {
		h, m, n := eng.v.CacheStats()
		hits, misses, entries = hits+h, misses+m, n
	}
	return hits, misses, entries
}

// setPolicy builds a Verifier for p with the current keys and revocations and swaps it in,
// adding and dropping remote JWKS sources to match p.uris.
func (s *Sidecar) setPolicy(p loadedPolicy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setPolicyLocked(p)
}

func (s *Sidecar) setPolicyLocked(p loadedPolicy) error {
	vopts := []verify.Option{verify.WithCacheSize(s.opts.CacheSize), verify.WithCacheBytes(s.opts.CacheBytes), verify.WithRevocations(s.revs)}
	if len(p.uris) > 0 {
		vopts = append(vopts, verify.WithUnknownKIDHook(s.refreshOnUnknownKID))
	}
	v, err := verify.New(p.cfg, vopts...) // checks cfg before anything changes
	if err != nil {
		return err
	}
	norm := v.Config()
	eng := &engine{
		v:            v,
		src:          norm.TokenSource,
		forwardToken: norm.ForwardToken,
		allowed:      slices.Clone(norm.AllowedAlgorithms),
		stripSet:     map[string]struct{}{},
		maxStale:     p.maxStale,
	}
	s.policySpec = p.spec
	added := s.setRemotesLocked(p.uris)
	ks := s.unionLocked(eng.allowed)
	v.SetKeySet(ks)
	eng.strip = eng.v.ForwardedHeaderNames()
	for _, h := range eng.strip {
		eng.stripSet[h] = struct{}{}
	}
	s.keySet = ks
	s.metrics.keys.Set(float64(ks.Len()))
	if old := s.engine.Swap(eng); old != nil {
		h, m, _ := old.v.CacheStats()
		s.cacheBase.hits.Add(h)
		s.cacheBase.misses.Add(m)
	}
	if !s.remoteByStream.Load() {
		for _, src := range added {
			go src.refresh(s.ctx, triggerScheduled, 0) // first fetch now, not at the next poll
		}
	}
	go s.recheckTunnels()
	return nil
}

// setFileKeys replaces the JWKS file's keys and applies the new effective key set.
func (s *Sidecar) setFileKeys(keys []jose.JSONWebKey) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fileKeys = keys
	return s.applyKeysLocked()
}

// applyKeys recomputes the effective key set after a remote set changed.
func (s *Sidecar) applyKeys() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyKeysLocked()
}

func (s *Sidecar) applyKeysLocked() int {
	var allowed []string
	eng := s.engine.Load()
	if eng != nil {
		allowed = eng.allowed
	}
	ks := s.unionLocked(allowed)
	s.keySet = ks
	if eng != nil {
		eng.v.SetKeySet(ks)
	}
	s.metrics.keys.Set(float64(ks.Len()))
	go s.recheckTunnels() // a withdrawn key closes its tunnels
	return ks.Len()
}

// unionLocked is the effective key set: the JWKS file's (or stream snapshot's) keys, then,
// unless the manager owns the remote JWKS, each remote set's in policy order; a kid already
// taken is skipped (first source wins), so the union cannot fail.
func (s *Sidecar) unionLocked(allowed []string) *verify.KeySet {
	all := slices.Clone(s.fileKeys)
	seen := make(map[string]bool, len(all))
	for _, k := range all {
		seen[k.KeyID] = true
	}
	remotes := *s.remotes.Load()
	if s.remoteByStream.Load() {
		remotes = nil // the snapshot's keys hold what the manager fetched
	}
	for _, src := range remotes {
		doc := src.doc.Load()
		if doc == nil {
			continue
		}
		keys, _, _ := usableRemoteKeys(*doc, allowed)
		for _, k := range keys {
			if seen[k.KeyID] {
				continue
			}
			seen[k.KeyID] = true
			all = append(all, k)
		}
	}
	ks, err := verify.NewKeySet(all...)
	if err != nil {
		// Every key was checked on its own and kids are unique: this cannot happen. Keep
		// what verified before rather than run on nothing.
		s.log.Error("Failed to build the effective key set; kept the previous one", "err", err)
		return s.keySet
	}
	return ks
}

// setRevocations swaps in a revocation snapshot; cached tokens are checked against it on
// their next request.
func (s *Sidecar) setRevocations(r *verify.Revocations) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revs = r
	if eng := s.engine.Load(); eng != nil {
		eng.v.SetRevocations(r)
	}
	s.metrics.revocations.Set(float64(r.Len()))
	go s.recheckTunnels()
}
