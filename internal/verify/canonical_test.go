package verify

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
)

// segments splits a compact token into its three parts.
func segments(tok string) [3]string {
	p := strings.Split(tok, ".")
	return [3]string{p[0], p[1], p[2]}
}

func joinSegments(s [3]string) string { return s[0] + "." + s[1] + "." + s[2] }

// tailSpellings are every last character seg could end with that decodes to the same
// bytes: the canonical one first, then those that set some of the unused low bits.
func tailSpellings(seg string) []string {
	unused := map[int]byte{2: 0x0f, 3: 0x03}[len(seg)%4]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	v := byte(strings.IndexByte(alphabet, seg[len(seg)-1]))
	out := []string{seg}
	for low := byte(1); low <= unused; low++ {
		out = append(out, seg[:len(seg)-1]+string(alphabet[v&^unused|low]))
	}
	return out
}

// sTwin returns tok with its ECDSA signature (r, s) replaced by (r, n−s), which verifies
// just the same.
func sTwin(t testing.TB, tok, alg string) string {
	t.Helper()
	o := ecdsaOrders[alg]
	seg := segments(tok)
	sig, err := base64.RawURLEncoding.DecodeString(seg[2])
	if err != nil || len(sig) != 2*o.size {
		t.Fatalf("signature of %d bytes (%v), want %d", len(sig), err, 2*o.size)
	}
	n := new(big.Int).SetBytes(o.n)
	s := new(big.Int).SetBytes(sig[o.size:])
	n.Sub(n, s).FillBytes(sig[o.size:])
	seg[2] = base64.RawURLEncoding.EncodeToString(sig)
	return joinSegments(seg)
}

// isHighS reports whether tok's ECDSA s is above n/2.
func isHighS(t testing.TB, tok, alg string) bool {
	t.Helper()
	o := ecdsaOrders[alg]
	sig, _ := base64.RawURLEncoding.DecodeString(segments(tok)[2])
	return new(big.Int).SetBytes(sig[o.size:]).Cmp(new(big.Int).SetBytes(o.half)) > 0
}

// tokenWithTwoByteTails pads the header and the claims until both segments have a length
// of 2 mod 4, whose last character has the most unused bits: the most variants to flood.
func tokenWithTwoByteTails(t *testing.T, alg string) string {
	t.Helper()
	k := testKey(t, alg)
	for h := range 4 {
		for p := range 4 {
			tok := newToken(t, k, withHeader("x", strings.Repeat("h", h)), withClaim("pad", strings.Repeat("p", p)))
			s := segments(tok)
			if len(s[0])%4 == 2 && len(s[1])%4 == 2 {
				return tok
			}
		}
	}
	t.Fatal("no padding gave header and payload 2 characters over a multiple of 4")
	return ""
}

func TestAFloodOfVariantsOfOneTokenLeavesOneCacheEntry(t *testing.T) {
	for _, alg := range []string{"ES256", "ES384", "ES512"} {
		t.Run(alg, func(t *testing.T) {
			tok := tokenWithTwoByteTails(t, alg)
			v := newVerifier(t, trusting(testKey(t, alg)))
			seg := segments(tok)
			twin := segments(sTwin(t, tok, alg))
			var canonical, refused int
			sigs := [][]string{tailSpellings(seg[2]), tailSpellings(twin[2])}
			want := len(tailSpellings(seg[0]))*len(tailSpellings(seg[1]))*len(sigs[0])*2 - 2
			for _, sig := range sigs {
				for _, h := range tailSpellings(seg[0]) {
					for _, p := range tailSpellings(seg[1]) {
						for _, s := range sig {
							variant := joinSegments([3]string{h, p, s})
							c, err := v.Verify(variant, t0)
							if h == seg[0] && p == seg[1] && s == sig[0] {
								canonical++
								wantReason(t, c, err, "") // the token and its s twin
								continue
							}
							refused++
							wantReason(t, c, err, ReasonMalformed)
						}
					}
				}
			}
			// ES384 and ES512 signatures are a whole number of base64 quanta: no spare bits.
			if canonical != 2 || refused != want || (alg == "ES256" && refused < 1000) {
				t.Fatalf("flooded with %d accepted and %d refused variants, want 2 and %d", canonical, refused, want)
			}
			if _, _, n := v.CacheStats(); n != 1 {
				t.Errorf("%d cache entries after the flood, want 1", n)
			}
			checkCacheInvariants(t, v.cache)
			// Both spellings now hit the one entry, the twin through its alias.
			hits, _, _ := v.CacheStats()
			for _, s := range []string{tok, joinSegments(twin)} {
				c, err := v.Verify(s, t0)
				wantReason(t, c, err, "")
			}
			if after, _, _ := v.CacheStats(); after != hits+2 {
				t.Errorf("%d hits for the token and its twin, want 2", after-hits)
			}
		})
	}
}

func TestNonCanonicalBase64URLIsRefused(t *testing.T) {
	k := testKey(t, "EdDSA")
	tok := tokenWithTwoByteTails(t, "EdDSA")
	seg := segments(tok)
	cases := []struct {
		name string
		edit func(s [3]string) [3]string
	}{
		{"a header with unused bits set", func(s [3]string) [3]string { s[0] = tailSpellings(s[0])[1]; return s }},
		{"a payload with unused bits set", func(s [3]string) [3]string { s[1] = tailSpellings(s[1])[15]; return s }},
		{"a signature with unused bits set", func(s [3]string) [3]string { s[2] = tailSpellings(s[2])[1]; return s }},
		{"a padded payload", func(s [3]string) [3]string { s[1] += "=="; return s }},
		{"a padded signature", func(s [3]string) [3]string { s[2] += "=="; return s }},
		{"a header in the standard alphabet", func(s [3]string) [3]string { s[0] = "+" + s[0][1:]; return s }},
		{"a payload of a length base64 cannot have", func(s [3]string) [3]string { s[1] += "AAA"; return s }},
	}
	v := newVerifier(t, trusting(k))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(joinSegments(tc.edit(seg)), t0)
			wantReason(t, c, err, ReasonMalformed)
		})
	}
	c, err := v.Verify(tok, t0)
	wantReason(t, c, err, "")
}

func TestHighSSignaturesVerify(t *testing.T) {
	for _, alg := range []string{"ES256", "ES384", "ES512"} {
		for _, cached := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s cached %v", alg, cached), func(t *testing.T) {
				k := testKey(t, alg)
				opts := []fixtureOpt{trusting(k)}
				if !cached {
					opts = append(opts, withoutCache())
				}
				v := newVerifier(t, opts...)
				tok := newToken(t, k)
				if !isHighS(t, tok, alg) {
					tok = sTwin(t, tok, alg)
				}
				for range 2 { // the second time from the cache, when there is one
					c, err := v.Verify(tok, t0)
					wantReason(t, c, err, "")
				}
				if cached {
					if hits, _, n := v.CacheStats(); hits != 1 || n != 1 {
						t.Errorf("%d hits and %d entries, want 1 and 1", hits, n)
					}
				}
			})
		}
	}
}

func TestAFloodOfLargeTokensStaysUnderTheByteBudget(t *testing.T) {
	k := testKey(t, "EdDSA")
	const budget = 256 << 10
	v := newVerifier(t, trusting(k), withOptions(WithCacheBytes(budget)))
	big := strings.Repeat("x", 5<<10) // a token of about 7 KB
	var last string
	for i := range 300 {
		last = newToken(t, k, withClaim("jti", fmt.Sprint(i)), withClaim("blob", big))
		if _, err := v.Verify(last, t0); err != nil {
			t.Fatal(err)
		}
		if v.cache.bytes > budget {
			t.Fatalf("after %d tokens the cache holds %d bytes, budget %d", i+1, v.cache.bytes, budget)
		}
	}
	_, _, n := v.CacheStats()
	if perEntry := entryCost(last); n == 0 || int64(n) > budget/perEntry {
		t.Errorf("%d entries of %d bytes in a budget of %d", n, perEntry, budget)
	}
	checkCacheInvariants(t, v.cache)
	hits, _, _ := v.CacheStats()
	if _, err := v.Verify(last, t0); err != nil {
		t.Fatal(err)
	}
	if after, _, _ := v.CacheStats(); after != hits+1 {
		t.Error("the newest token was evicted to make room for itself")
	}
}

func TestATokenLargerThanTheByteBudgetIsNotCached(t *testing.T) {
	k := testKey(t, "EdDSA")
	v := newVerifier(t, trusting(k))
	small := newToken(t, k)
	v.cache.maxBytes = entryCost(small) + 10
	c, err := v.Verify(small, t0)
	wantReason(t, c, err, "")
	large := newToken(t, k, withClaim("blob", strings.Repeat("x", 100)))
	c, err = v.Verify(large, t0)
	wantReason(t, c, err, "") // still verified, only not remembered
	if _, _, n := v.CacheStats(); n != 1 {
		t.Errorf("%d entries, want only the small token", n)
	}
	checkCacheInvariants(t, v.cache)
}

// checkCacheInvariants checks the cache's books: the byte count is the sum of its entries'
// costs, and every index key names a used slot by its sum or its alias.
func checkCacheInvariants(t *testing.T, c *cache) {
	t.Helper()
	c.mu.RLock()
	defer c.mu.RUnlock()
	var bytes int64
	keys := 0
	for _, s := range c.slots {
		if !s.used {
			continue
		}
		bytes += s.cost
		keys++
		if s.hasAlias {
			keys++
		}
	}
	if bytes != c.bytes {
		t.Errorf("cache counts %d bytes, its entries hold %d", c.bytes, bytes)
	}
	if keys != len(c.index) {
		t.Errorf("index has %d keys, entries have %d sums and aliases", len(c.index), keys)
	}
	for sum, i := range c.index {
		if s := c.slots[i]; !s.used || (s.sum != sum && (!s.hasAlias || s.alias != sum)) {
			t.Errorf("index key %x names slot %d, which does not hold it", sum[:4], i)
		}
	}
}

func TestTheCanonicalCheckAllocatesNothing(t *testing.T) {
	tok := newToken(t, testKey(t, "ES256"))
	if n := testing.AllocsPerRun(100, func() { _ = checkCanonical(tok) }); n != 0 {
		t.Errorf("%v allocations per check, want 0", n)
	}
}

// FuzzCanonicalTailIsRoundTrip checks the cheap last-character test against the definition:
// a segment the decoder takes is canonical exactly when encoding its bytes gives it back.
func FuzzCanonicalTailIsRoundTrip(f *testing.F) {
	for _, s := range []string{"", "A", "AA", "AB", "AAA", "AAB", "eyJ", "eyJhbGciOiJFUzI1NiJ9", "_-_-Q", "QQ=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seg string) {
		b, err := base64.RawURLEncoding.DecodeString(seg)
		if err != nil || strings.ContainsAny(seg, "\r\n") {
			return // refused by the decoder, or by checkCompact
		}
		if got, want := canonicalTail(seg), base64.RawURLEncoding.EncodeToString(b) == seg; got != want {
			t.Errorf("canonicalTail(%q) = %v, round trip says %v", seg, got, want)
		}
	})
}

func TestAKeySwapDropsATokenAndItsTwinTogether(t *testing.T) {
	k, other := testKey(t, "ES256"), namedKey(t, "other", "ES256")
	v := newVerifier(t, trusting(k, other))
	tok := newToken(t, k)
	for _, s := range []string{tok, sTwin(t, tok, "ES256"), newToken(t, other)} {
		c, err := v.Verify(s, t0)
		wantReason(t, c, err, "")
	}
	if _, _, n := v.CacheStats(); n != 2 {
		t.Fatalf("%d entries, want 2: one for the token and its twin, one for the other key's", n)
	}
	v.SetKeySet(keySetOf(t, other))
	if _, _, n := v.CacheStats(); n != 1 {
		t.Errorf("%d entries after the swap, want 1", n)
	}
	checkCacheInvariants(t, v.cache)
	c, err := v.Verify(sTwin(t, tok, "ES256"), t0)
	wantReason(t, c, err, ReasonUnknownKID)
}

func TestFindingTheLowSTwinAllocatesNothing(t *testing.T) {
	for _, alg := range []string{"ES256", "ES384", "ES512"} {
		tok := newToken(t, testKey(t, alg))
		if !isHighS(t, tok, alg) {
			tok = sTwin(t, tok, alg)
		}
		want, err := base64.RawURLEncoding.DecodeString(segments(sTwin(t, tok, alg))[2])
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := lowSTwinSum(tok, alg); !ok || got != sha256.Sum256([]byte(sTwin(t, tok, alg))) {
			t.Errorf("%s: twin sum %x (%v), want the sum of the token with s %x", alg, got[:4], ok, want[len(want)/2:])
		}
		if n := testing.AllocsPerRun(100, func() { lowSTwinSum(tok, alg) }); n != 0 {
			t.Errorf("%s: %v allocations per twin, want 0", alg, n)
		}
	}
}

func TestConcurrentTwinsUnderASmallByteBudgetKeepTheBooks(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t, trusting(k))
	var toks []string
	for i := range 40 {
		tok := newToken(t, k, withClaim("jti", fmt.Sprint(i)), withClaim("blob", strings.Repeat("x", 2<<10)))
		toks = append(toks, tok, sTwin(t, tok, "ES256"))
	}
	v.cache.maxBytes = 10 * entryCost(toks[0])
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				if _, err := v.Verify(toks[(i*7+g)%len(toks)], t0); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if v.cache.bytes > v.cache.maxBytes {
		t.Errorf("cache holds %d bytes, budget %d", v.cache.bytes, v.cache.maxBytes)
	}
	checkCacheInvariants(t, v.cache)
}
