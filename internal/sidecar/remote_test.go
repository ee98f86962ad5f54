package sidecar

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// idp serves a JWKS as an identity provider would, counting requests.
type idp struct {
	srv      *httptest.Server
	requests atomic.Int64

	mu           sync.Mutex
	doc          []byte
	cacheControl string
	etag         string
	status       int           // when set, answered instead of the document
	hold         chan struct{} // when set, each answer waits for it to close
}

func newIDP(t *testing.T, ks ...*keys.Key) *idp {
	p := &idp{doc: jwksDoc(t, ks...)}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serveHTTP))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *idp) url() string { return p.srv.URL + "/.well-known/jwks.json" }

func (p *idp) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	p.mu.Lock()
	doc, cc, etag, status, hold := p.doc, p.cacheControl, p.etag, p.status, p.hold
	p.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	if cc != "" {
		w.Header().Set("Cache-Control", cc)
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_, _ = w.Write(doc)
}

func (p *idp) set(f func(p *idp)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *idp) serve(t *testing.T, ks ...*keys.Key) {
	doc := jwksDoc(t, ks...)
	p.set(func(p *idp) { p.doc, p.status = doc, 0 })
}

func trusting(uris ...string) policyOpt {
	return func(tp *tkv1.TokenPolicy) {
		tp.Spec.TrustedKeys = nil
		for _, u := range uris {
			tp.Spec.TrustedKeys = append(tp.Spec.TrustedKeys, tkv1.TrustedKeySource{JWKSURI: u})
		}
	}
}

// newRemoteFixture is a sidecar whose only keys come from p, after its first fetch.
func newRemoteFixture(t *testing.T, p *idp, opts ...fixtureOpt) *fixture {
	f := newFixture(t, append([]fixtureOpt{withoutJWKS(), withPolicy(trusting(p.url()))}, opts...)...)
	eventually(t, "the first fetch", func() bool { ok, _ := f.sc.Ready(); return ok })
	return f
}

func TestRemoteJWKSRefreshesOnAnUnknownKIDAtMostOncePerInterval(t *testing.T) {
	a, b, c := testKey(t, "idp-a"), testKey(t, "idp-b"), testKey(t, "idp-c")
	p := newIDP(t, a)
	f := newRemoteFixture(t, p)
	if n := p.requests.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	f.wantStatus(newToken(t, a), 200, "")
	if !strings.Contains(f.logs.String(), "Fetching a JWKS over plain http") {
		t.Error("a plain-http jwksURI was not warned about")
	}

	// The IdP rotates. Within the interval since the last fetch, a new kid does not fetch.
	p.serve(t, a, b)
	tokB := newToken(t, b)
	f.wantStatus(tokB, 401, verify.ReasonUnknownKID)
	if n := p.requests.Load(); n != 1 {
		t.Fatalf("%d fetches, want still 1 (rate limited)", n)
	}
	if f.fetches(triggerUnknownKID, resultRateLimited) != 1 {
		t.Errorf("the rate-limited refresh was not counted")
	}

	// After the interval, the unknown kid refreshes the set and the token passes.
	f.clock.Advance(DefaultJWKSUnknownKIDInterval)
	f.wantStatus(tokB, 200, "")
	if n := p.requests.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
	p.serve(t, a, b, c)
	f.wantStatus(newToken(t, c), 401, verify.ReasonUnknownKID)
	if n := p.requests.Load(); n != 2 {
		t.Fatalf("%d fetches, want still 2", n)
	}

	// Many requests with the unknown kid at once share one fetch.
	f.clock.Advance(DefaultJWKSUnknownKIDInterval)
	hold := make(chan struct{})
	p.set(func(p *idp) { p.hold = hold })
	const concurrent = 8
	var wg sync.WaitGroup
	statuses := make([]int, concurrent)
	for i := range concurrent {
		tok := newToken(t, c, withClaim("jti", fmt.Sprint("c-", i)))
		wg.Go(func() { statuses[i] = f.do("/api", bearer(tok)).status })
	}
	eventually(t, "the refresh to start", func() bool { return p.requests.Load() == 3 })
	time.Sleep(20 * time.Millisecond) // let the other requests reach the hook and wait
	p.set(func(p *idp) { p.hold = nil })
	close(hold)
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Errorf("request %d: status %d, want 200", i, s)
		}
	}
	if n := p.requests.Load(); n != 3 {
		t.Errorf("%d fetches, want 3: one for all concurrent requests", n)
	}
	if got := f.fetches(triggerUnknownKID, resultSuccess); got != 2 {
		t.Errorf("fetches{trigger=unknown_kid,result=success} = %v, want 2", got)
	}
}

func TestRemoteJWKSRefreshFollowsCacheControl(t *testing.T) {
	cases := []struct {
		name         string
		cacheControl string
		fresh        time.Duration // refreshed at this age, not a second before
	}{
		{name: "max-age is honoured", cacheControl: "public, max-age=120", fresh: 120 * time.Second},
		{name: "a short max-age is raised to the minimum", cacheControl: "max-age=5", fresh: DefaultJWKSRefreshMin},
		{name: "a long max-age is cut to the maximum", cacheControl: "max-age=604800", fresh: DefaultJWKSRefreshMax},
		{name: "no-store refreshes as often as allowed", cacheControl: "no-store", fresh: DefaultJWKSRefreshMin},
		{name: "no caching headers mean the default", fresh: DefaultJWKSRefresh},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newIDP(t, testKey(t, "idp-a"))
			p.set(func(p *idp) { p.cacheControl = tc.cacheControl })
			f := newRemoteFixture(t, p)

			f.clock.Advance(tc.fresh - time.Second)
			f.sc.refreshDue()
			time.Sleep(10 * time.Millisecond)
			if n := p.requests.Load(); n != 1 {
				t.Fatalf("refreshed %d times a second before it was due", n-1)
			}
			f.clock.Advance(time.Second)
			f.sc.refreshDue()
			eventually(t, "the scheduled refresh", func() bool { return f.fetches(triggerScheduled, resultSuccess) == 2 })
		})
	}
}

func TestRemoteJWKSFailuresKeepTheLastGoodSet(t *testing.T) {
	a := testKey(t, "idp-a")
	p := newIDP(t, a)
	p.set(func(p *idp) { p.cacheControl, p.etag = "max-age=60", `"v1"` })
	f := newRemoteFixture(t, p)
	tokA := newToken(t, a)
	f.wantStatus(tokA, 200, "")

	failures := []struct {
		name  string
		apply func(p *idp)
	}{
		{"the IdP answers 500", func(p *idp) { p.status = http.StatusInternalServerError }},
		{"the IdP answers an HTML page", func(p *idp) { p.status, p.doc, p.etag = 0, []byte("<html>sorry</html>"), "" }},
		{"the IdP publishes no keys", func(p *idp) { p.doc = []byte(`{"keys":[]}`) }},
		{"the IdP publishes only an encryption key", func(p *idp) { p.doc = encryptionOnlyJWKS(t) }},
	}
	for i, fail := range failures {
		t.Run(fail.name, func(t *testing.T) {
			p.set(fail.apply)
			f.clock.Advance(2 * time.Minute) // past any refresh or retry time
			f.sc.refreshDue()
			eventually(t, "the failed fetch", func() bool { return f.fetches(triggerScheduled, resultError) == float64(i+1) })
			f.wantStatus(newToken(t, a, withClaim("jti", fail.name)), 200, "") // verified in full
			if ok, why := f.sc.Ready(); !ok {
				t.Errorf("unready after a failed fetch: %s", why)
			}
		})
	}

	t.Run("an unchanged set is not downloaded again", func(t *testing.T) {
		p.serve(t, a)
		p.set(func(p *idp) { p.etag = `"v2"` })
		f.clock.Advance(2 * time.Minute)
		f.sc.refreshDue()
		eventually(t, "a fetch", func() bool { return f.fetches(triggerScheduled, resultSuccess) == 2 })
		f.clock.Advance(2 * time.Minute)
		f.sc.refreshDue()
		eventually(t, "a conditional fetch", func() bool { return f.fetches(triggerScheduled, resultNotModified) == 1 })
		f.wantStatus(newToken(t, a, withClaim("jti", "after-304")), 200, "")
	})
}

func encryptionOnlyJWKS(t *testing.T) []byte {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &rk.PublicKey, KeyID: "enc", Algorithm: "RSA-OAEP", Use: "enc"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestTheEffectiveKeySetJoinsTheFileAndRemoteSets(t *testing.T) {
	remote := testKey(t, "idp-a")
	p := newIDP(t, remote)
	f := newFixture(t, withPolicy(func(tp *tkv1.TokenPolicy) {
		tp.Spec.TrustedKeys = append(tp.Spec.TrustedKeys, tkv1.TrustedKeySource{JWKSURI: p.url()})
	}))
	eventually(t, "the remote keys", func() bool { return f.sc.engine.Load().v.KeySet().Len() == 2 })
	f.wantStatus(f.token(), 200, "")
	f.wantStatus(newToken(t, remote), 200, "")

	// The policy stops trusting the IdP: its keys go at once.
	f.write("policy.yaml", marshalYAML(t, basePolicy()))
	f.poll()
	f.wantStatus(newToken(t, remote, withClaim("jti", "after")), 401, verify.ReasonUnknownKID)
	f.wantStatus(f.token(), 200, "")
	if n := len(*f.sc.remotes.Load()); n != 0 {
		t.Errorf("%d remote sources left, want 0", n)
	}
}

func TestUsableRemoteKeys(t *testing.T) {
	ec := testKey(t, "idp-a").PublicJWK()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey := func(alg, use string) jose.JSONWebKey {
		return jose.JSONWebKey{Key: &rk.PublicKey, KeyID: "rsa-" + alg + use, Algorithm: alg, Use: use}
	}
	withoutAlg := func(k jose.JSONWebKey) jose.JSONWebKey { k.Algorithm = ""; return k }
	doc := func(ks ...jose.JSONWebKey) []byte {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: ks})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name    string
		doc     []byte
		allowed []string
		want    map[string]string // kid: pinned alg
		skipped int
		err     bool
	}{
		{name: "a signing key with its alg is used as published",
			doc: doc(ec), want: map[string]string{ec.KeyID: "ES256"}},
		{name: "an encryption key next to a signing key is skipped (Keycloak)",
			doc: doc(ec, rsaKey("RSA-OAEP", "enc")), want: map[string]string{ec.KeyID: "ES256"}, skipped: 1},
		{name: "an EC key without alg gets the one its curve allows",
			doc: doc(withoutAlg(ec)), want: map[string]string{ec.KeyID: "ES256"}},
		{name: "an RSA key without alg gets the only RSA algorithm allowed (Azure AD)",
			doc: doc(rsaKey("", "sig")), allowed: []string{"RS256", "ES256"}, want: map[string]string{"rsa-sig": "RS256"}},
		{name: "an RSA key without alg is skipped when several RSA algorithms are allowed",
			doc: doc(ec, rsaKey("", "sig")), want: map[string]string{ec.KeyID: "ES256"}, skipped: 1},
		{name: "a key whose alg the policy does not allow is skipped",
			doc: doc(ec, rsaKey("PS256", "")), allowed: []string{"ES256"}, want: map[string]string{ec.KeyID: "ES256"}, skipped: 1},
		{name: "a symmetric key is skipped",
			doc: []byte(`{"keys":[{"kty":"oct","kid":"hmac","alg":"HS256","k":"c2VjcmV0"}]}`), want: map[string]string{}, skipped: 1},
		{name: "a key that does not parse is skipped, not the set",
			doc:  []byte(`{"keys":[{"kty":"EC","kid":"broken","crv":"P-256","x":"AA","y":"AA"},` + string(mustJSON(t, ec)) + `]}`),
			want: map[string]string{ec.KeyID: "ES256"}, skipped: 1},
		{name: "a document without keys is no JWKS", doc: []byte(`{"issuer":"x"}`), err: true},
		{name: "HTML is no JWKS", doc: []byte(`<html></html>`), err: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, skipped, err := usableRemoteKeys(tc.doc, tc.allowed)
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if tc.err {
				return
			}
			pinned := map[string]string{}
			for _, k := range got {
				pinned[k.KeyID] = k.Algorithm
			}
			if fmt.Sprint(pinned) != fmt.Sprint(tc.want) || skipped != tc.skipped {
				t.Errorf("got %v (skipped %d), want %v (skipped %d)", pinned, skipped, tc.want, tc.skipped)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCacheLifetime(t *testing.T) {
	now := t0
	lo, def, hi := 30*time.Second, 5*time.Minute, time.Hour
	cases := []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"no caching headers mean the default", http.Header{}, def},
		{"max-age is used", http.Header{"Cache-Control": {"public, max-age=600"}}, 10 * time.Minute},
		{"a quoted max-age is used", http.Header{"Cache-Control": {`max-age="600"`}}, 10 * time.Minute},
		{"max-age less Age", http.Header{"Cache-Control": {"max-age=600"}, "Age": {"300"}}, 5 * time.Minute},
		{"max-age in a second header line", http.Header{"Cache-Control": {"public", "MAX-AGE=120"}}, 2 * time.Minute},
		{"no-cache wins over max-age", http.Header{"Cache-Control": {"max-age=600, no-cache"}}, lo},
		{"below the minimum", http.Header{"Cache-Control": {"max-age=0"}}, lo},
		{"above the maximum", http.Header{"Cache-Control": {"max-age=999999999999"}}, hi},
		{"a malformed max-age is ignored", http.Header{"Cache-Control": {"max-age=soon"}}, def},
		{"Expires less Date", http.Header{
			"Expires": {now.Add(20 * time.Minute).Format(http.TimeFormat)},
			"Date":    {now.Add(-10 * time.Minute).Format(http.TimeFormat)}}, 30 * time.Minute},
		{"an invalid Expires means expired", http.Header{"Expires": {"0"}}, lo},
		{"max-age wins over Expires", http.Header{"Cache-Control": {"max-age=120"},
			"Expires": {now.Add(20 * time.Minute).Format(http.TimeFormat)}}, 2 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := cacheLifetime(tc.header, now, def, lo, hi); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// FuzzUsableRemoteKeys: whatever a remote server sends, picking keys never panics, and every
// key picked can be pinned on its own and is allowed.
func FuzzUsableRemoteKeys(f *testing.F) {
	f.Add([]byte(`{"keys":[]}`), "")
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","kid":"a"}]}`), "ES256")
	f.Add([]byte(`{"keys":[{"kty":"oct","kid":"h","alg":"HS256","k":"c2VjcmV0"},{"kty":"RSA","kid":"r","use":"enc","n":"AQAB","e":"AQAB"}]}`), "RS256")
	f.Add([]byte(`<html>`), "")
	f.Fuzz(func(t *testing.T, doc []byte, alg string) {
		var allowed []string
		if alg != "" {
			allowed = []string{alg}
		}
		ks, _, err := usableRemoteKeys(doc, allowed)
		if err != nil {
			return
		}
		for _, k := range ks {
			if _, err := verify.NewKeySet(k); err != nil {
				t.Fatalf("picked a key that cannot be pinned: %v", err)
			}
			if alg != "" && k.Algorithm != alg {
				t.Fatalf("picked alg %q, allowed only %q", k.Algorithm, alg)
			}
		}
	})
}
