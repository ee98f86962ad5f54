package verify

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestCachedTokensStopAtExpiry(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t)
	tok := newToken(t, k, withClaim("exp", t0.Add(time.Minute).Unix()))
	for _, step := range []struct {
		name string
		at   time.Time
		want Reason
	}{
		{"verified and cached", t0, ""},
		{"served from the cache", t0.Add(time.Minute), ""},
		{"still served within the skew", t0.Add(time.Minute + DefaultClockSkew - time.Nanosecond), ""},
		{"rejected at exp plus skew", t0.Add(time.Minute + DefaultClockSkew), ReasonExpired},
		{"rejected after it", t0.Add(time.Hour), ReasonExpired},
	} {
		c, err := v.Verify(tok, step.at)
		if got := ReasonOf(err); got != step.want || (err == nil) != (c != nil) {
			t.Fatalf("%s: reason %q, want %q", step.name, got, step.want)
		}
	}
	hits, misses, _ := v.CacheStats()
	if hits != 2 || misses != 3 {
		t.Errorf("hits %d misses %d, want 2 and 3: expired entries must not be served", hits, misses)
	}
}

func TestCachedTokensAreNotServedBeforeTheyAreValid(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t)
	tok := newToken(t, k, withClaim("nbf", t0.Unix()), withClaim("iat", t0.Unix()))
	if _, err := v.Verify(tok, t0); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(tok, t0.Add(-DefaultClockSkew-time.Second))
	wantReason(t, nil, err, ReasonNotYetValid)
}

func TestAKeySetSwapEvictsTokensOfRemovedKeys(t *testing.T) {
	a, b := testKey(t, "ES256"), testKey(t, "EdDSA")
	v := newVerifier(t, trusting(a, b))
	ta, tb := newToken(t, a), newToken(t, b)
	for _, tok := range []string{ta, tb, ta, tb} {
		if _, err := v.Verify(tok, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, n := v.CacheStats(); n != 2 {
		t.Fatalf("%d cached, want 2", n)
	}

	v.SetKeySet(keySetOf(t, b))

	if _, _, n := v.CacheStats(); n != 1 {
		t.Errorf("%d cached after removing a key, want 1", n)
	}
	_, err := v.Verify(ta, t0)
	wantReason(t, nil, err, ReasonUnknownKID)
	c, err := v.Verify(tb, t0)
	wantReason(t, c, err, "")
	if hits, _, _ := v.CacheStats(); hits != 3 {
		t.Errorf("hits %d, want 3: the kept key's token must still come from the cache", hits)
	}
}

func TestAStaleCacheEntryCannotOutliveItsKey(t *testing.T) {
	// A verification that raced a swap may insert an entry for a key already removed: the
	// hit path checks the key against the current set, not only the swap's eviction.
	a := testKey(t, "ES256")
	v := newVerifier(t, trusting(a))
	tok := newToken(t, a)
	if _, err := v.Verify(tok, t0); err != nil {
		t.Fatal(err)
	}
	v.keys.Store(keySetOf(t, testKey(t, "EdDSA"))) // swap without the eviction
	_, err := v.Verify(tok, t0)
	wantReason(t, nil, err, ReasonUnknownKID)
}

func TestAKeyReplacedUnderTheSameKIDInvalidatesItsTokens(t *testing.T) {
	a := testKey(t, "ES256")
	v := newVerifier(t, trusting(a))
	tok := newToken(t, a)
	if _, err := v.Verify(tok, t0); err != nil {
		t.Fatal(err)
	}
	impostor := *namedKey(t, "other", "ES256")
	impostor.KID = a.KID
	v.SetKeySet(keySetOf(t, &impostor))
	_, err := v.Verify(tok, t0)
	wantReason(t, nil, err, ReasonBadSignature)
}

func TestAReparsedIdenticalKeySetKeepsTheCache(t *testing.T) {
	a := testKey(t, "ES256")
	v := newVerifier(t, trusting(a))
	tok := newToken(t, a)
	if _, err := v.Verify(tok, t0); err != nil {
		t.Fatal(err)
	}
	v.SetKeySet(keySetOf(t, a))
	if _, err := v.Verify(tok, t0); err != nil {
		t.Fatal(err)
	}
	if hits, _, n := v.CacheStats(); hits != 1 || n != 1 {
		t.Errorf("hits %d entries %d, want 1 and 1", hits, n)
	}
}

func TestRevocationsApplyToCachedTokens(t *testing.T) {
	k := testKey(t, "ES256")
	for _, tc := range []struct {
		name string
		revs *Revocations
		want Reason
	}{
		{"a revoked jti", NewRevocations([]RevokedToken{{JTI: "token-1"}}, nil, nil), ReasonRevokedToken},
		{"a revoked subject", NewRevocations(nil, []RevokedSubject{{Subject: "alice", NotBefore: t0}}, nil), ReasonRevokedSubject},
		{"a revoked kid", NewRevocations(nil, nil, []string{k.KID}), ReasonRevokedKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t)
			tok := newToken(t, k)
			if _, err := v.Verify(tok, t0); err != nil {
				t.Fatal(err)
			}
			v.SetRevocations(tc.revs)
			_, err := v.Verify(tok, t0)
			wantReason(t, nil, err, tc.want)
			if hits, _, _ := v.CacheStats(); hits != 1 {
				t.Errorf("hits %d, want the rejection to come from a cache hit", hits)
			}
			v.SetRevocations(nil)
			c, err := v.Verify(tok, t0)
			wantReason(t, c, err, "")
		})
	}
}

func TestTheCacheIsBounded(t *testing.T) {
	k := testKey(t, "EdDSA")
	v := newVerifier(t, trusting(k), withOptions(WithCacheSize(3)))
	for i := range 20 {
		if _, err := v.Verify(newToken(t, k, withClaim("jti", fmt.Sprint(i))), t0); err != nil {
			t.Fatal(err)
		}
		if _, _, n := v.CacheStats(); n > 3 {
			t.Fatalf("%d entries in a cache of 3", n)
		}
	}
}

func TestTheCacheKeepsRecentlyUsedTokens(t *testing.T) {
	k := testKey(t, "EdDSA")
	v := newVerifier(t, trusting(k), withOptions(WithCacheSize(2)))
	hot := newToken(t, k, withClaim("jti", "hot"))
	for i := range 10 {
		for _, tok := range []string{hot, newToken(t, k, withClaim("jti", fmt.Sprint(i)))} {
			if _, err := v.Verify(tok, t0); err != nil {
				t.Fatal(err)
			}
		}
	}
	if hits, _, _ := v.CacheStats(); hits != 9 {
		t.Errorf("hits %d, want 9: the token used every time must stay cached", hits)
	}
}

// CLOCK gives a referenced entry a second chance, but not an expired one: the hand evicts
// the expired entry before the live, unreferenced one after it.
func TestTheCacheEvictsAnExpiredEntryThoughReferenced(t *testing.T) {
	k := testKey(t, "EdDSA")
	v := newVerifier(t, trusting(k), withOptions(WithCacheSize(2)))
	short := newToken(t, k, withClaim("jti", "short"), withClaim("exp", t0.Add(time.Second).Unix()))
	long := newToken(t, k, withClaim("jti", "long"))
	for _, tok := range []string{short, short, long} { // short is referenced, long is not
		if _, err := v.Verify(tok, t0); err != nil {
			t.Fatal(err)
		}
	}
	later := t0.Add(2 * time.Minute)
	if _, err := v.Verify(newToken(t, k, withClaim("jti", "new")), later); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(long, later); err != nil {
		t.Fatal(err)
	}
	if hits, _, _ := v.CacheStats(); hits != 2 {
		t.Errorf("hits %d, want 2", hits)
	}
}

func TestConcurrentVerificationAndSwaps(t *testing.T) {
	a, b := testKey(t, "ES256"), testKey(t, "EdDSA")
	v := newVerifier(t, trusting(a, b), withOptions(WithCacheSize(8)))
	both, onlyB := keySetOf(t, a, b), keySetOf(t, b)
	toks := []string{newToken(t, a), newToken(t, b), newToken(t, b, withClaim("jti", "2"))}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if i%2 == 0 {
				v.SetKeySet(onlyB)
			} else {
				v.SetKeySet(both)
			}
			v.SetRevocations(NewRevocations([]RevokedToken{{JTI: fmt.Sprint(i % 3)}}, nil, nil))
		}
	})
	for range 2 {
		wg.Go(func() {
			for i := range 2000 {
				tok := toks[i%len(toks)]
				_, err := v.Verify(tok, t0)
				switch ReasonOf(err) {
				case "", ReasonUnknownKID, ReasonRevokedToken:
				default:
					t.Errorf("unexpected rejection %v", err)
				}
			}
		})
	}
	time.Sleep(10 * time.Millisecond)
	close(stop)
	wg.Wait()
	// After the dust settles: b's key only, a's token must fail even if cached.
	v.SetKeySet(onlyB)
	v.SetRevocations(nil)
	_, err := v.Verify(toks[0], t0)
	wantReason(t, nil, err, ReasonUnknownKID)
}
