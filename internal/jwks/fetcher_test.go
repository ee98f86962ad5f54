package jwks_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
)

// jwksHandler serves the fixture keys for algs, counting requests.
func jwksHandler(t *testing.T, hits *atomic.Int32, algs ...string) http.HandlerFunc {
	var ks []jose.JSONWebKey
	for _, a := range algs {
		ks = append(ks, publicJWK(t, a))
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if hits != nil {
			hits.Add(1)
		}
		w.Header().Set("Cache-Control", "max-age=600")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: ks})
	}
}

// runFetcher starts a Fetcher until the test ends.
func runFetcher(t *testing.T, o jwks.FetcherOptions) *jwks.Fetcher {
	t.Helper()
	f := jwks.NewFetcher(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = f.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

// firstResult tracks src and waits for its first fetch to finish.
func firstResult(t *testing.T, f *jwks.Fetcher, owner string, src jwks.Source) jwks.Entry {
	t.Helper()
	f.Track(owner, []jwks.Source{src})
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if e, ok := f.Get(src); ok && e.Attempted {
			return e
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no fetch of %s finished within 10s", src.URI)
	return jwks.Entry{}
}

var local = jwks.FetcherOptions{Policy: jwks.FetchPolicy{AllowLocalAddresses: true, Timeout: 2 * time.Second}}

func TestFetchRefusesLocalAddressesUnlessAllowed(t *testing.T) {
	srv := httptest.NewServer(jwksHandler(t, nil, "ES256"))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	for _, tc := range []struct {
		name, uri  string
		allowLocal bool
		wantErr    string
	}{
		{"a loopback IP is refused by default", srv.URL, false, jwks.FailAddressRefused},
		// The name is not an address: only the check at dial time sees 127.0.0.1, which is
		// what a DNS rebinding attack relies on.
		{"a name resolving to loopback is refused at dial time", "http://localhost:" + port, false, jwks.FailAddressRefused},
		{"a loopback IP is fetched when the manager flag allows it", srv.URL, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := jwks.FetcherOptions{Policy: jwks.FetchPolicy{AllowLocalAddresses: tc.allowLocal, Timeout: 2 * time.Second}}
			e := firstResult(t, runFetcher(t, o), "ns/p", jwks.Source{URI: tc.uri + "/jwks", AllowInsecureHTTP: true})
			got := ""
			if e.Err != nil {
				got = e.Err.Error()
			}
			if got != tc.wantErr {
				t.Fatalf("error %q, want %q", got, tc.wantErr)
			}
			if tc.wantErr == "" && len(e.Doc) == 0 {
				t.Fatal("no document")
			}
		})
	}
}

func TestLocalAddressCoversLoopbackLinkLocalAndMetadata(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "127.1.2.3": true, "::1": true, "169.254.169.254": true, "169.254.1.1": true,
		"fe80::1": true, "fd00:ec2::254": true, "::ffff:127.0.0.1": true, "::ffff:169.254.169.254": true,
		"0.0.0.0": true, "::": true, "100.100.100.200": true,
		"10.0.0.5": false, "192.168.1.1": false, "8.8.8.8": false, "2001:db8::1": false, "fd00::1": false,
	} {
		if got := jwks.LocalAddress(netip.MustParseAddr(addr)); got != want {
			t.Errorf("LocalAddress(%s) = %t, want %t", addr, got, want)
		}
	}
}

func TestFetchFollowsRedirectsOnlyToTheSameHost(t *testing.T) {
	other := httptest.NewServer(jwksHandler(t, nil, "ES256"))
	defer other.Close()
	mux := http.NewServeMux()
	mux.Handle("/keys", jwksHandler(t, nil, "ES256"))
	mux.Handle("/moved", http.RedirectHandler("/keys", http.StatusFound))
	mux.Handle("/elsewhere", http.RedirectHandler(other.URL+"/keys", http.StatusFound))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	f := runFetcher(t, local)
	if e := firstResult(t, f, "ns/a", jwks.Source{URI: srv.URL + "/moved", AllowInsecureHTTP: true}); e.Err != nil {
		t.Errorf("same-host redirect: %v", e.Err)
	}
	if e := firstResult(t, f, "ns/b", jwks.Source{URI: srv.URL + "/elsewhere", AllowInsecureHTTP: true}); e.Err == nil || e.Err.Error() != jwks.FailRedirect {
		t.Errorf("redirect to another host (port): %v, want %q", e.Err, jwks.FailRedirect)
	}
}

func TestFetchErrorsUseAFixedVocabulary(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/500", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "internal-admin-console v1.2 at 10.0.0.7", http.StatusInternalServerError)
	})
	mux.HandleFunc("/html", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("<html>internal-admin-console</html>"))
	})
	mux.HandleFunc("/huge", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"keys":["` + strings.Repeat("a", jwks.MaxFetchBytes) + `"]}`))
	})
	srv := httptest.NewServer(mux)
	closed := httptest.NewServer(mux)
	closed.Close()
	defer srv.Close()
	f := runFetcher(t, local)
	for path, want := range map[string]string{
		srv.URL + "/500":     "HTTP 500",
		srv.URL + "/html":    jwks.FailNotJWKS,
		srv.URL + "/huge":    jwks.FailTooLarge,
		closed.URL + "/keys": jwks.FailUnreachable,
	} {
		e := firstResult(t, f, path, jwks.Source{URI: path, AllowInsecureHTTP: true})
		if e.Err == nil || e.Err.Error() != want {
			t.Errorf("%s: error %v, want exactly %q", path, e.Err, want)
		}
	}
}

func TestSourceCheckRefusesWhatIsNeverFetched(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  jwks.Source
		want string // substring; empty: accepted
	}{
		{"an https URI is accepted", jwks.Source{URI: "https://idp.example/jwks"}, ""},
		{"userinfo is refused", jwks.Source{URI: "https://user:secret@idp.example/jwks"}, "userinfo"},
		{"plain http is refused without the opt-in", jwks.Source{URI: "http://idp.example/jwks"}, "allowInsecureHTTP"},
		{"plain http is accepted with the opt-in", jwks.Source{URI: "http://idp.example/jwks", AllowInsecureHTTP: true}, ""},
		{"another scheme is refused", jwks.Source{URI: "file:///etc/passwd"}, "not an http(s) URL"},
		{"a CA bundle without a certificate is refused", jwks.Source{URI: "https://idp.example/jwks", CABundle: "nope"}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.src.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "secret"):
				t.Fatalf("the error repeats the credentials: %v", err)
			}
		})
	}
}

func TestFetchTrustsTheSourcesCABundle(t *testing.T) {
	srv := httptest.NewTLSServer(jwksHandler(t, nil, "ES256"))
	defer srv.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	f := runFetcher(t, local)
	if e := firstResult(t, f, "ns/a", jwks.Source{URI: srv.URL + "/jwks", CABundle: ca}); e.Err != nil {
		t.Errorf("with the CA bundle: %v", e.Err)
	}
	if e := firstResult(t, f, "ns/b", jwks.Source{URI: srv.URL + "/jwks"}); e.Err == nil || e.Err.Error() != jwks.FailTLS {
		t.Errorf("without it: %v, want %q", e.Err, jwks.FailTLS)
	}
}

func TestFetcherFetchesEachSourceOnceForEveryOwner(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(jwksHandler(t, &hits, "ES256"))
	defer srv.Close()
	src := jwks.Source{URI: srv.URL + "/jwks", AllowInsecureHTTP: true}
	f := runFetcher(t, local)
	for i := range 20 {
		f.Track(fmt.Sprintf("ns%d/p", i), []jwks.Source{src})
	}
	firstResult(t, f, "ns0/p", src)
	time.Sleep(100 * time.Millisecond)
	if n := hits.Load(); n != 1 {
		t.Errorf("the IdP was asked %d times for 20 owners within its max-age, want once", n)
	}
	// The last owner gone, the source is forgotten.
	for i := range 20 {
		f.Track(fmt.Sprintf("ns%d/p", i), nil)
	}
	if _, ok := f.Get(src); ok {
		t.Error("a source nobody tracks is still cached")
	}
}

func TestFetcherBacksOffAndDoesNotWaitOnAHangingIdP(t *testing.T) {
	release := make(chan struct{})
	var hangHits atomic.Int32
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hangHits.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	good := httptest.NewServer(jwksHandler(t, nil, "ES256"))
	defer good.Close()

	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	o := jwks.FetcherOptions{
		Policy:   jwks.FetchPolicy{AllowLocalAddresses: true, Timeout: 500 * time.Millisecond},
		Now:      func() time.Time { return *clock.Load() },
		RetryMin: time.Minute, RetryMax: 4 * time.Minute,
	}
	f := runFetcher(t, o)
	hangSrc := jwks.Source{URI: hang.URL + "/jwks", AllowInsecureHTTP: true}
	f.Track("a/p", []jwks.Source{hangSrc})
	time.Sleep(50 * time.Millisecond) // the hanging fetch is under way
	start := time.Now()
	e := firstResult(t, f, "b/p", jwks.Source{URI: good.URL + "/jwks", AllowInsecureHTTP: true})
	if e.Err != nil || time.Since(start) > 300*time.Millisecond {
		t.Fatalf("another source waited %v on the hanging one (err %v)", time.Since(start), e.Err)
	}
	he := firstResult(t, f, "a/p", hangSrc)
	if he.Err == nil || he.Err.Error() != jwks.FailTimedOut {
		t.Fatalf("hanging IdP: %v, want %q", he.Err, jwks.FailTimedOut)
	}
	if want := now.Add(time.Minute); !he.RefreshAt.Equal(want) {
		t.Errorf("retry at %v, want %v (RetryMin)", he.RefreshAt, want)
	}
	time.Sleep(200 * time.Millisecond)
	if n := hangHits.Load(); n != 1 {
		t.Errorf("the failing IdP was asked %d times before its retry was due, want once", n)
	}
	// Past the retry time it is asked again and the delay doubles.
	later := now.Add(time.Minute)
	clock.Store(&later)
	f.Track("a/p", []jwks.Source{hangSrc}) // pokes the scheduler
	deadline := time.Now().Add(5 * time.Second)
	for {
		if e, _ := f.Get(hangSrc); e.RefreshAt.Equal(later.Add(2 * time.Minute)) {
			break
		}
		if time.Now().After(deadline) {
			e, _ := f.Get(hangSrc)
			t.Fatalf("second retry at %v, want %v", e.RefreshAt, later.Add(2*time.Minute))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFetcherTellsSubscribersWhenKeysChange(t *testing.T) {
	var alg atomic.Value
	alg.Store("ES256")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{publicJWK(t, alg.Load().(string))}})
	}))
	defer srv.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clock atomic.Pointer[time.Time]
	clock.Store(&now)
	o := local
	o.Now = func() time.Time { return *clock.Load() }
	f := runFetcher(t, o)
	events := make(chan []string, 10)
	f.Subscribe(func(_ jwks.Source, owners []string) { events <- owners })
	src := jwks.Source{URI: srv.URL + "/jwks", AllowInsecureHTTP: true}
	f.Track("b/p", []jwks.Source{src})
	f.Track("a/p", []jwks.Source{src})
	select {
	case owners := <-events:
		if strings.Join(owners, ",") != "a/p,b/p" && strings.Join(owners, ",") != "b/p" {
			t.Errorf("owners %v", owners)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event for the first fetch")
	}
	// The IdP withdraws its key for another; the next fetch (no-store: MinRefresh) tells.
	alg.Store("EdDSA")
	later := now.Add(jwks.DefaultMinRefresh)
	clock.Store(&later)
	f.Track("c/p", []jwks.Source{src})
	select {
	case <-events:
	case <-time.After(5 * time.Second):
		t.Fatal("no event when the keys changed")
	}
	e, _ := f.Get(src)
	ks, err := e.Keys([]string{"ES256", "EdDSA"})
	if err != nil || len(ks) != 1 || ks[0].KeyID != publicJWK(t, "EdDSA").KeyID || !e.FetchedAt.Equal(later) {
		t.Errorf("keys %v (%v) fetched at %v, want the EdDSA key fetched at %v", ks, err, e.FetchedAt, later)
	}
}
