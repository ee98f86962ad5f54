package jwks

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-logr/logr"
)

// Fetcher defaults: a fetched JWKS is refreshed as its Cache-Control says, within
// [MinRefresh, MaxRefresh]; a failed fetch is retried after RetryMin, doubling to RetryMax.
const (
	DefaultRefresh    = 5 * time.Minute
	DefaultMinRefresh = time.Minute
	DefaultMaxRefresh = time.Hour
	DefaultRetryMin   = 5 * time.Second
	DefaultRetryMax   = 5 * time.Minute
	// DefaultMaxInFlight bounds concurrent fetches: hanging IdPs hold at most this many
	// goroutines and connections, each for at most the fetch timeout.
	DefaultMaxInFlight = 16
)

// FetcherOptions configure a Fetcher; zero values take the defaults above.
type FetcherOptions struct {
	Policy                          FetchPolicy
	Now                             func() time.Time
	Refresh, MinRefresh, MaxRefresh time.Duration
	RetryMin, RetryMax              time.Duration
	MaxInFlight                     int
	Log                             logr.Logger
}

// Entry is what the Fetcher knows of one source.
type Entry struct {
	// Doc is the last good JWKS document, as served; nil before the first good fetch.
	Doc []byte
	// FetchedAt is when Doc was last fetched (or confirmed unchanged).
	FetchedAt time.Time
	// Err is the last fetch's failure (a *FetchError), nil when it succeeded. Doc is kept
	// across failures: an IdP outage does not take its keys away.
	Err error
	// Attempted is false until the first fetch finished.
	Attempted bool
	// RefreshAt is when the next fetch is due.
	RefreshAt time.Time
}

// Keys are the usable keys of the entry's document under allowed (see Usable).
func (e Entry) Keys(allowed []string) ([]jose.JSONWebKey, error) {
	if e.Doc == nil {
		return nil, nil
	}
	keys, _, err := Usable(e.Doc, allowed)
	if err == nil && len(keys) == 0 {
		err = fail(FailNoUsableKey, nil)
	}
	return keys, err
}

// Fetcher fetches remote JWKS in the background, one fetch per Source however many owners
// (TokenPolicies) track it, so that no reconcile ever waits on an IdP. It refreshes each
// source as its Cache-Control says (clamped), backs off on failures (negative caching: a
// failing or hanging IdP is asked again only after RetryMin, doubling), and tells
// subscribers when what a source gives changed. Start runs it; it implements
// controller-runtime's Runnable and runs on every replica.
type Fetcher struct {
	o    FetcherOptions
	wake chan struct{}
	sem  chan struct{}

	mu      sync.Mutex
	entries map[string]*fetchEntry // by Source.Key
	owners  map[string][]Source    // by owner
	subs    []func(src Source, owners []string)
}

type fetchEntry struct {
	src      Source
	e        Entry
	failures int
	inflight bool
	owners   map[string]bool
}

// NewFetcher builds a Fetcher; nothing is fetched before Start.
func NewFetcher(o FetcherOptions) *Fetcher {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Refresh, DefaultRefresh)
	def(&o.MinRefresh, DefaultMinRefresh)
	def(&o.MaxRefresh, DefaultMaxRefresh)
	def(&o.RetryMin, DefaultRetryMin)
	def(&o.RetryMax, DefaultRetryMax)
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Fetcher{
		o:       o,
		wake:    make(chan struct{}, 1),
		sem:     make(chan struct{}, o.MaxInFlight),
		entries: map[string]*fetchEntry{},
		owners:  map[string][]Source{},
	}
}

// Track replaces the sources owner (e.g. "namespace/name") uses; nil forgets the owner. A
// source no owner uses any more is dropped; a new one is fetched at once. Sources that
// fail Check are ignored: the caller reports them.
func (f *Fetcher) Track(owner string, srcs []Source) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var kept []Source
	keep := map[string]bool{}
	for _, s := range srcs {
		if s.Check() != nil || keep[s.Key()] {
			continue
		}
		keep[s.Key()] = true
		kept = append(kept, s)
		fe := f.entries[s.Key()]
		if fe == nil {
			fe = &fetchEntry{src: s, owners: map[string]bool{}}
			f.entries[s.Key()] = fe
		}
		fe.owners[owner] = true
	}
	for _, old := range f.owners[owner] {
		if fe := f.entries[old.Key()]; fe != nil && !keep[old.Key()] {
			delete(fe.owners, owner)
			if len(fe.owners) == 0 {
				delete(f.entries, old.Key())
			}
		}
	}
	if len(kept) > 0 {
		f.owners[owner] = kept
	} else {
		delete(f.owners, owner)
	}
	f.poke()
}

// Get returns what is known of src; false when src is not tracked.
func (f *Fetcher) Get(src Source) (Entry, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fe := f.entries[src.Key()]
	if fe == nil {
		return Entry{}, false
	}
	return fe.e, true
}

// Subscribe registers fn, called (outside any lock, from a fetch goroutine) after a fetch
// changed what src gives: its first result, a new document, a failure after success or
// success after failure. owners are those tracking src at the time.
func (f *Fetcher) Subscribe(fn func(src Source, owners []string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs = append(f.subs, fn)
}

// NeedLeaderElection is false: every replica keeps its cache warm.
func (f *Fetcher) NeedLeaderElection() bool { return false }

// Start runs the scheduler until ctx ends.
func (f *Fetcher) Start(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := f.startDue(ctx)
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(f.o.Now()), 10*time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		case <-timer.C:
		}
	}
}

func (f *Fetcher) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// startDue starts the fetches that are due, as far as MaxInFlight allows, oldest due first,
// and returns when the next one is due.
func (f *Fetcher) startDue(ctx context.Context) time.Time {
	now := f.o.Now()
	f.mu.Lock()
	var due []*fetchEntry
	var next time.Time
	for _, fe := range f.entries {
		if fe.inflight {
			continue
		}
		if !fe.e.RefreshAt.After(now) {
			due = append(due, fe)
		} else if next.IsZero() || fe.e.RefreshAt.Before(next) {
			next = fe.e.RefreshAt
		}
	}
	sort.Slice(due, func(i, j int) bool { return due[i].e.RefreshAt.Before(due[j].e.RefreshAt) })
	for _, fe := range due {
		select {
		case f.sem <- struct{}{}:
		default:
			// Every slot is busy: a finishing fetch pokes the scheduler.
			f.mu.Unlock()
			return now.Add(time.Second)
		}
		fe.inflight = true
		go f.fetch(ctx, fe)
	}
	f.mu.Unlock()
	return next
}

func (f *Fetcher) fetch(ctx context.Context, fe *fetchEntry) {
	defer func() {
		<-f.sem
		f.poke()
	}()
	src := fe.src
	var doc []byte
	var hdr map[string][]string
	client, err := NewClient(f.o.Policy, src)
	if err == nil {
		fctx, cancel := context.WithTimeout(ctx, client.Timeout)
		doc, hdr, err = fetchDoc(fctx, client, src.URI)
		cancel()
		client.CloseIdleConnections()
	}
	if err != nil && ctx.Err() != nil {
		f.mu.Lock()
		fe.inflight = false
		f.mu.Unlock()
		return // shutting down: not a failure of the source
	}
	now := f.o.Now()
	f.mu.Lock()
	fe.inflight = false
	prev := fe.e
	if err != nil {
		fe.failures++
		fe.e.Err = err
		fe.e.RefreshAt = now.Add(min(f.o.RetryMin<<min(fe.failures-1, 16), f.o.RetryMax))
	} else {
		fe.failures = 0
		fe.e.Err = nil
		fe.e.Doc = doc
		fe.e.FetchedAt = now
		fe.e.RefreshAt = now.Add(CacheLifetime(hdr, now, f.o.Refresh, f.o.MinRefresh, f.o.MaxRefresh))
	}
	fe.e.Attempted = true
	changed := !prev.Attempted || !bytes.Equal(prev.Doc, fe.e.Doc) || (prev.Err == nil) != (fe.e.Err == nil) ||
		(prev.Err != nil && fe.e.Err != nil && prev.Err.Error() != fe.e.Err.Error())
	owners := make([]string, 0, len(fe.owners))
	for o := range fe.owners {
		owners = append(owners, o)
	}
	tracked := f.entries[src.Key()] == fe
	subs := slices.Clone(f.subs)
	retry := fe.e.RefreshAt.Sub(now)
	f.mu.Unlock()

	if err != nil {
		var fe *FetchError
		cause := err
		if errors.As(err, &fe) && fe.cause != nil {
			cause = fe.cause
		}
		f.o.Log.Info("Failed to fetch a remote JWKS; kept the last good one", "uri", src.URI, "reason", err.Error(), "cause", cause.Error(), "retryIn", retry.String())
	} else if changed {
		f.o.Log.Info("Fetched a remote JWKS", "uri", src.URI, "refreshIn", retry.String())
	}
	if !changed || !tracked {
		return
	}
	sort.Strings(owners)
	for _, fn := range subs {
		fn(src, owners)
	}
}
