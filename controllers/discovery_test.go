package controllers_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4/jwt"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A standard OIDC client library, pointed at the issuer, verifies tokens signed with the
// active key from the Secret: the discovery document and JWKS the manager serves are right.
func TestStandardOIDCClientVerifiesTokensSignedWithTheActiveKey(t *testing.T) {
	ns := newNamespace(t)
	addr := freeAddr(t)
	startManager(t, operator.Options{DiscoveryAddr: addr})
	for _, c := range []struct {
		alg  tkv1.Algorithm
		bits int32
	}{{tkv1.ES256, 0}, {tkv1.RS256, 2048}, {tkv1.PS384, 3072}} {
		t.Run(string(c.alg), func(t *testing.T) {
			name := "oidc-" + strings.ToLower(string(c.alg))
			issuer := fmt.Sprintf("http://%s/%s/%s", addr, ns, name)
			const ahead = 4 * time.Second
			create(t, newSigningKey(ns, name, withAlgorithm(c.alg, c.bits), withIssuer(issuer), withRotation(time.Hour, ahead, time.Hour)))
			waitReady(t, ns, name, 30*time.Second)
			s, err := getSecret(ns, name)
			if err != nil {
				t.Fatal(err)
			}
			tok := signWithSecret(t, s, jwt.Claims{
				Issuer: issuer, Subject: "alice", Audience: jwt.Audience{"orders"},
				IssuedAt: jwt.NewNumericDate(time.Now()), Expiry: jwt.NewNumericDate(time.Now().Add(5 * time.Minute)),
			})

			ctx := context.Background()
			var provider *oidc.Provider
			eventually(t, 10*time.Second, "the discovery document", func() error {
				provider, err = oidc.NewProvider(ctx, issuer)
				return err
			})
			idt, err := provider.Verifier(&oidc.Config{ClientID: "orders"}).Verify(ctx, tok)
			if err != nil {
				t.Fatalf("go-oidc rejected a token signed with the active key: %v", err)
			}
			if idt.Subject != "alice" {
				t.Errorf("subject %q", idt.Subject)
			}
			// A token for another audience is refused: the check is real.
			if _, err := provider.Verifier(&oidc.Config{ClientID: "billing"}).Verify(ctx, tok); err == nil {
				t.Error("a token for another audience verified")
			}

			// No cache may outlive publishAhead.
			resp, err := http.Get(issuer + "/.well-known/jwks.json")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			cc := resp.Header.Get("Cache-Control")
			i := strings.Index(cc, "max-age=")
			if i < 0 {
				t.Fatalf("Cache-Control %q has no max-age", cc)
			}
			maxAge, err := strconv.Atoi(strings.TrimSpace(cc[i+len("max-age="):]))
			if err != nil || time.Duration(maxAge)*time.Second > ahead || maxAge <= 0 {
				t.Errorf("Cache-Control %q: max-age must be positive and at most publishAhead (%v)", cc, ahead)
			}
		})
	}
	// Unknown issuers get 404, not someone else's keys.
	resp, err := http.Get(fmt.Sprintf("http://%s/%s/nobody/.well-known/openid-configuration", addr, ns))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown issuer: status %d, want 404", resp.StatusCode)
	}
}
