package verify

import (
	"fmt"
	"sort"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// benchClaims makes a token of realistic size (about 500 bytes for ES256).
func benchClaims(jti string) []tokenOpt {
	return []tokenOpt{
		withClaim("aud", []string{"api", "web"}),
		withClaim("jti", jti),
		withClaim("scope", "openid profile email items:read items:write"),
		withClaim("groups", []string{"dev", "ops", "oncall"}),
		withClaim("email", "alice@example.com"),
	}
}

// BenchmarkVerify measures the full verification of a token that is not in the cache:
// "uncached" with the cache off (comparable with BenchmarkBaselineGoJose), "miss" with the
// cache on but every token new to it (adds hashing, insertion and eviction).
func BenchmarkVerify(b *testing.B) {
	for _, alg := range Algorithms {
		b.Run(alg+"/uncached", func(b *testing.B) {
			k := testKey(b, alg)
			v := newVerifier(b, trusting(k), withoutCache())
			tok := newToken(b, k, benchClaims("jti-1")...)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(tok, t0); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(alg+"/miss", func(b *testing.B) {
			k := testKey(b, alg)
			v := newVerifier(b, trusting(k), withOptions(WithCacheSize(16)))
			toks := make([]string, 64) // cycled through a cache of 16: CLOCK misses every time
			for i := range toks {
				toks[i] = newToken(b, k, benchClaims(fmt.Sprint("jti-", i))...)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := v.Verify(toks[i%len(toks)], t0); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkBaselineGoJose is what plain go-jose does for the same token: parse, verify,
// decode the registered claims, check iss, aud and exp.
func BenchmarkBaselineGoJose(b *testing.B) {
	for _, alg := range Algorithms {
		b.Run(alg, func(b *testing.B) {
			k := testKey(b, alg)
			tok := newToken(b, k, benchClaims("jti-1")...)
			algs := []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)}
			want := jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{"api"}, Time: t0}
			if err := baseline(tok, algs, k, want); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := baseline(tok, algs, k, want); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func baseline(tok string, algs []jose.SignatureAlgorithm, k *keys.Key, want jwt.Expected) error {
	parsed, err := jwt.ParseSigned(tok, algs)
	if err != nil {
		return err
	}
	var c jwt.Claims
	if err := parsed.Claims(k.Public, &c); err != nil {
		return err
	}
	return c.ValidateWithLeeway(want, DefaultClockSkew)
}

// BenchmarkVerifyCached is the common case: a token seen before, with revocations in force.
func BenchmarkVerifyCached(b *testing.B) {
	k := testKey(b, "ES256")
	v := newVerifier(b, trusting(k), withOptions(WithRevocations(NewRevocations(
		[]RevokedToken{{JTI: "other"}}, []RevokedSubject{{Subject: "bob", NotBefore: t0}}, []string{"old-kid"}))))
	tok := newToken(b, k, benchClaims("jti-1")...)
	if _, err := v.Verify(tok, t0); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCacheHitsDoNotAllocate(t *testing.T) {
	k := testKey(t, "ES256")
	v := newVerifier(t, withOptions(WithRevocations(NewRevocations([]RevokedToken{{JTI: "x"}}, []RevokedSubject{{Subject: "bob"}}, []string{"k"}))))
	tok := newToken(t, k, benchClaims("jti-1")...)
	if _, err := v.Verify(tok, t0); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(200, func() { _, _ = v.Verify(tok, t0) }); n != 0 {
		t.Errorf("%v allocations per cache hit", n)
	}
	v.SetRevocations(NewRevocations([]RevokedToken{{JTI: "jti-1"}}, nil, nil))
	if n := testing.AllocsPerRun(200, func() { _, _ = v.Verify(tok, t0) }); n != 0 {
		t.Errorf("%v allocations per revoked cache hit", n)
	}
}

// BenchmarkRatioToBaseline measures Verify (cache off) against BenchmarkBaselineGoJose's
// work in alternating small batches and reports the median of the per-batch time ratios
// as "x-baseline". Pairing adjacent batches cancels most of the noise of a shared machine,
// which swamps two separately run benchmarks. Each b.N iteration is one pair of batches.
func BenchmarkRatioToBaseline(b *testing.B) {
	const batch = 4
	for _, alg := range Algorithms {
		b.Run(alg, func(b *testing.B) {
			k := testKey(b, alg)
			v := newVerifier(b, trusting(k), withoutCache())
			tok := newToken(b, k, benchClaims("jti-1")...)
			algs := []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)}
			want := jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{"api"}, Time: t0}
			ours := func() time.Duration {
				start := time.Now()
				for range batch {
					if _, err := v.Verify(tok, t0); err != nil {
						b.Fatal(err)
					}
				}
				return time.Since(start)
			}
			theirs := func() time.Duration {
				start := time.Now()
				for range batch {
					if err := baseline(tok, algs, k, want); err != nil {
						b.Fatal(err)
					}
				}
				return time.Since(start)
			}
			var ratios []float64
			i := 0
			for b.Loop() {
				var o, t time.Duration
				if i%2 == 0 { // alternate the order so neither side always runs second
					o, t = ours(), theirs()
				} else {
					t, o = theirs(), ours()
				}
				ratios = append(ratios, float64(o)/float64(t))
				i++
			}
			sort.Float64s(ratios)
			b.ReportMetric(ratios[len(ratios)/2], "x-baseline")
			b.ReportMetric(0, "ns/op") // a pair of batches: not comparable with other benchmarks
		})
	}
}

// BenchmarkRevokedLookup measures the revocation check every request makes (Revocations.check,
// after the signature verified) against sets of 1 000 and 100 000 revoked jtis, for a token
// that is revoked ("hit") and one that is not ("miss"). The cost should not grow with the set:
// the check is a few map reads.
func BenchmarkRevokedLookup(b *testing.B) {
	for _, n := range []int{1000, 100000} {
		tokens := make([]RevokedToken, n)
		for i := range tokens {
			tokens[i] = RevokedToken{JTI: fmt.Sprintf("bench-%08d-0c1d2e3f-4a5b-6c7d-8e9f", i)}
		}
		subjects := []RevokedSubject{{Subject: "mallory", NotBefore: t0}}
		r := NewRevocations(tokens, subjects, []string{"old-kid"})
		for _, c := range []struct {
			name string
			jti  string
			want *Error
		}{
			{"hit", tokens[n/2].JTI, errRevokedToken},
			{"miss", "bench-not-revoked-0c1d2e3f-4a5b-6c7d-8e9f", nil},
		} {
			claims := &Claims{Issuer: "https://issuer.example", Subject: "alice", ID: c.jti, IssuedAt: t0, KeyID: "kid-1"}
			b.Run(fmt.Sprintf("%d/%s", n, c.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if got := r.check(claims); got != c.want {
						b.Fatalf("check: %v, want %v", got, c.want)
					}
				}
			})
		}
	}
}
