package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// writeKey writes a fresh ES256 key as a SigningKey Secret's active.jwk into dir and returns
// its public JWKS.
func writeKey(t *testing.T, dir string) []byte {
	t.Helper()
	k, err := keys.Generate(rand.Reader, keys.Params{Algorithm: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := json.Marshal(k.PrivateJWK())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "active.jwk"), priv, 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := jwks.Marshal([]jose.JSONWebKey{k.PublicJWK()})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// run sends n tokens through sign, whose client dials the stranger first and the verifier
// afterwards, as a pod does when its first connection leaves before kube-proxy programs the
// Service.
func run(t *testing.T, keyDir, jwksFile string, n int) *Stats {
	t.Helper()
	verifierStats := &Stats{ByKID: map[string]int{}, Reasons: map[string]int{}}
	verifier := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		verify(verifierStats, jwksFile, "https://issuer.test", w, r)
	}))
	defer verifier.Close()
	stranger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Server", "interceptor")
		w.WriteHeader(http.StatusNotFound) // empty body, connection kept alive
	}))
	defer stranger.Close()

	var dials atomic.Int32
	transport := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		addr := verifier.Listener.Addr().String()
		if dials.Add(1) == 1 {
			addr = stranger.Listener.Addr().String()
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	stats := &Stats{ByKID: map[string]int{}, Reasons: map[string]int{}}
	ticks := make(chan time.Time)
	done := make(chan struct{})
	go func() {
		sign(stats, sender{keyDir: keyDir, target: "http://verifier.test/verify", issuer: "https://issuer.test"},
			&http.Client{Transport: transport, Timeout: 5 * time.Second}, ticks)
		close(done)
	}()
	for range n {
		ticks <- time.Now()
	}
	close(ticks)
	<-done
	return stats
}

func TestSignerIgnoresAnswersFromStrangersAndDialsAgain(t *testing.T) {
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, writeKey(t, dir), 0o600); err != nil {
		t.Fatal(err)
	}
	stats := run(t, dir, jwksFile, 5)
	if stats.Warmup != 1 || stats.Sent != 4 || stats.Accepted != 4 || stats.Rejected != 0 || stats.Errors != 0 {
		t.Fatalf("want 1 warmup answer from the stranger, then 4 tokens accepted by the verifier; got %+v", stats)
	}
	if len(stats.Reasons) != 1 {
		t.Fatalf("want the stranger's answer named, got %v", stats.Reasons)
	}
	for r := range stats.Reasons {
		if !strings.Contains(r, `not the verifier: 404 "" from `) || !strings.Contains(r, `"interceptor"`) {
			t.Fatalf("the stranger is not named: %q", r)
		}
	}
}

func TestSignerCountsTheVerifiersRejections(t *testing.T) {
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "jwks.json")
	// The verifier trusts another key than the one the signer holds.
	if err := os.WriteFile(jwksFile, writeKey(t, t.TempDir()), 0o600); err != nil {
		t.Fatal(err)
	}
	writeKey(t, dir)
	stats := run(t, dir, jwksFile, 4)
	if stats.Warmup != 1 || stats.Sent != 3 || stats.Rejected != 3 || stats.Accepted != 0 {
		t.Fatalf("want the verifier's three rejections counted; got %+v", stats)
	}
	for r, n := range stats.Reasons {
		if strings.HasPrefix(r, "401 unknown kid ") && n == 3 {
			return
		}
	}
	t.Fatalf("want 3 rejections for an unknown kid, got %v", stats.Reasons)
}
