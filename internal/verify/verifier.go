package verify

import (
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	jose "github.com/go-jose/go-jose/v4"
)

// Verifier verifies tokens for one Config. Its keys and revocations can be swapped at any
// time; its Config cannot (build a new Verifier for a new policy). Safe for concurrent use.
type Verifier struct {
	cfg       Config
	algs      []jose.SignatureAlgorithm
	required  []requirement
	rules     []rule
	foldFree  bool   // no rule prefix changes when case-folded
	typ       string // RequiredTokenType as mediaType, or ""
	forward   []forwardHeader
	keys      atomic.Pointer[KeySet]
	revs      atomic.Pointer[Revocations]
	swapMu    sync.Mutex // orders KeySet swaps with the cache rebind that follows each
	cache     *cache
	unknownFn func(kid string) bool
}

// Option tunes a Verifier beyond its Config.
type Option func(*options)

type options struct {
	cacheSize  int
	cacheBytes int64
	keys       *KeySet
	revs       *Revocations
	unknownFn  func(kid string) bool
}

// WithCacheSize bounds the verified-token cache; zero or less disables it.
func WithCacheSize(n int) Option { return func(o *options) { o.cacheSize = n } }

// WithCacheBytes bounds the verified-token cache by what its entries hold (entryCost);
// zero or less means DefaultCacheBytes.
func WithCacheBytes(n int64) Option { return func(o *options) { o.cacheBytes = n } }

// WithKeySet starts the Verifier with keys.
func WithKeySet(ks *KeySet) Option { return func(o *options) { o.keys = ks } }

// WithRevocations starts the Verifier with revocations.
func WithRevocations(r *Revocations) Option { return func(o *options) { o.revs = r } }

// WithUnknownKIDHook is called, on the request path, when a token names a kid the current
// KeySet lacks. A remote-JWKS fetcher can refresh there, swap the new set in with SetKeySet
// and return true; the kid is then looked up once more. kid is untrusted input: the hook
// must rate-limit and coalesce refreshes itself, and never use kid to build a URL or path.
func WithUnknownKIDHook(fn func(kid string) (refreshed bool)) Option {
	return func(o *options) { o.unknownFn = fn }
}

// New builds a Verifier, checking cfg. Until it has a KeySet every token fails unknown_kid.
func New(cfg Config, opts ...Option) (*Verifier, error) {
	o := options{cacheSize: DefaultCacheSize}
	for _, opt := range opts {
		opt(&o)
	}
	cfg = cfg.normalized()
	cfg.Audiences = slices.Clone(cfg.Audiences) // read on every request: not the caller's to change
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("invalid verifier config: %w", err)
	}
	v := &Verifier{
		cfg:       cfg,
		required:  compileRequirements(cfg.RequiredClaims),
		rules:     compileRules(cfg.Rules),
		forward:   compileForward(cfg.ForwardClaims),
		cache:     newCache(o.cacheSize, o.cacheBytes),
		unknownFn: o.unknownFn,
	}
	v.foldFree = foldFree(v.rules)
	if cfg.RequiredTokenType != "" {
		v.typ = mediaType(cfg.RequiredTokenType)
	}
	for _, a := range cfg.AllowedAlgorithms {
		v.algs = append(v.algs, jose.SignatureAlgorithm(a))
	}
	if o.keys != nil {
		v.keys.Store(o.keys)
	}
	if o.revs != nil {
		v.revs.Store(o.revs)
	}
	return v, nil
}

// Config is the normalized configuration (defaults filled in). Do not modify its slices.
func (v *Verifier) Config() Config { return v.cfg }

// SetKeySet swaps in a new KeySet. Cached tokens whose key is not in it stop verifying.
func (v *Verifier) SetKeySet(ks *KeySet) {
	v.swapMu.Lock()
	defer v.swapMu.Unlock()
	v.keys.Store(ks)
	if v.cache != nil {
		v.cache.rebind(ks)
	}
}

// KeySet is the current KeySet (nil before the first).
func (v *Verifier) KeySet() *KeySet { return v.keys.Load() }

// Ready reports whether the Verifier has at least one key.
func (v *Verifier) Ready() bool { return v.keys.Load().Len() > 0 }

// SetRevocations swaps in a new revocation snapshot; it applies to the next request,
// cached tokens included. nil revokes nothing.
func (v *Verifier) SetRevocations(r *Revocations) { v.revs.Store(r) }

// Revocations is the current revocation snapshot (nil when none).
func (v *Verifier) Revocations() *Revocations { return v.revs.Load() }

// CacheStats reports cache hits, misses and current entries, for metrics.
func (v *Verifier) CacheStats() (hits, misses uint64, entries int) {
	if v.cache == nil {
		return 0, 0, 0
	}
	return v.cache.hits.Load(), v.cache.misses.Load(), v.cache.len()
}

// TokenFromRequest reads the token from where the Config says requests carry it.
func (v *Verifier) TokenFromRequest(r *http.Request) (string, error) {
	return ExtractToken(r, v.cfg.TokenSource)
}

// RemoveToken deletes the token from r, for when the app must not receive it.
func (v *Verifier) RemoveToken(r *http.Request) { RemoveToken(r, v.cfg.TokenSource) }
