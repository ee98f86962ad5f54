// Command issuer is the token issuer of the proxy benchmark (hack/bench-proxy.sh). At start
// it generates an ES256 key (internal/keys, as the manager does) and writes into --dir:
//
//	jwks.json      the public key, as the manager publishes it (internal/jwks)
//	policy.yaml    a TokenPolicy for a standalone sidecar trusting that key
//	token          one valid token (iss = this issuer's URL, aud = --audience, exp in --ttl)
//	tokens.txt     --tokens more valid tokens, one a line, each with its own jti
//	tokens-warmup.txt  as many others, for a warm-up that must leave tokens.txt uncached
//	forged-token   the same claims with the trusted kid in its header, signed by another key
//	bad-tokens.tsv  tokens every verifying proxy must refuse, one "name<TAB>token" a line:
//	               forged, expired, no exp, another issuer, another audience, a payload
//	               swapped under a valid signature, alg none, HS256 keyed with the public PEM
//	public.pem     the public key as PEM (SubjectPublicKeyInfo), for HAProxy's jwt_verify
//
// Then it serves the issuer's OpenID discovery document and JWKS on --listen, so that an
// OIDC relying party (oauth2-proxy) can be pointed at http://<listen> as its issuer.
//
//	issuer --listen 127.0.0.1:9002 --dir bin/bench/proxy/issuer --audience bench-api
package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9002", "address to serve the discovery document and JWKS on; the issuer is http://<listen>")
	dir := flag.String("dir", "", "directory to write the key material, policy and tokens into (required)")
	audience := flag.String("audience", "bench-api", "aud of the tokens (the sidecar policy's audience, oauth2-proxy's client ID)")
	subject := flag.String("subject", "bench-user", "sub of the tokens")
	count := flag.Int("tokens", 1000, "distinct tokens to write to tokens.txt")
	ttl := flag.Duration("ttl", 2*time.Hour, "lifetime of the tokens")
	flag.Parse()
	if *dir == "" {
		log.Fatal("--dir is required")
	}
	issuer := "http://" + *listen
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		log.Fatal(err)
	}

	key, err := keys.Generate(rand.Reader, keys.Params{Algorithm: "ES256"})
	if err != nil {
		log.Fatal(err)
	}
	pub := jose.JSONWebKey{Key: key.Public, KeyID: key.KID, Algorithm: key.Algorithm, Use: "sig"}
	jwksDoc, err := jwks.Marshal([]jose.JSONWebKey{pub})
	if err != nil {
		log.Fatal(err)
	}
	discovery, err := discoveryDocument(issuer, pub)
	if err != nil {
		log.Fatal(err)
	}
	pol, err := policyYAML(issuer, *audience)
	if err != nil {
		log.Fatal(err)
	}
	signer := newSigner(key.Private, key.KID)
	// A key the verifiers do not trust, claiming the trusted kid: a proxy that accepts this
	// token does not check signatures.
	other, err := keys.Generate(rand.Reader, keys.Params{Algorithm: "ES256"})
	if err != nil {
		log.Fatal(err)
	}
	forger := newSigner(other.Private, key.KID)

	now := time.Now()
	claims := func() claimSet {
		return claimSet{
			Claims: jwt.Claims{
				Issuer: issuer, Subject: *subject, Audience: jwt.Audience{*audience},
				IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
				Expiry: jwt.NewNumericDate(now.Add(*ttl)), ID: rand.Text(),
			},
			Email: *subject + "@example.com", EmailVerified: true,
		}
	}
	tok := mint(signer, claims())
	forged := mint(forger, claims())
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public)
	if err != nil {
		log.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	bad := badTokens(signer, forged, key.KID, pubPEM, now, claims)
	write(*dir, "jwks.json", jwksDoc)
	write(*dir, "public.pem", pubPEM)
	write(*dir, "bad-tokens.tsv", bad)
	write(*dir, "policy.yaml", pol)
	write(*dir, "token", []byte(tok+"\n"))
	write(*dir, "forged-token", []byte(forged+"\n"))
	for _, name := range []string{"tokens.txt", "tokens-warmup.txt"} {
		writeTokens(filepath.Join(*dir, name), *count, func() string { return mint(signer, claims()) })
	}

	mux := http.NewServeMux()
	serve := func(path string, body []byte) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		})
	}
	serve(jwks.DiscoveryPath, discovery)
	serve("/.well-known/jwks.json", jwksDoc)
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("Serving issuer %s (kid %s), files in %s", issuer, key.KID, *dir)
	log.Fatal(srv.ListenAndServe())
}

// claimSet adds the OIDC email claims oauth2-proxy reads to the registered claims.
type claimSet struct {
	jwt.Claims
	Email         string `json:"email"`
	EmailVerified bool   `json:"email_verified"`
}

func newSigner(priv any, kid string) jose.Signer {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: priv, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		log.Fatal(err)
	}
	return s
}

func mint(s jose.Signer, c claimSet) string {
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		log.Fatal(err)
	}
	return tok
}

// badTokens lists tokens that differ from a valid one in one way each, so a proxy that
// accepts one of them skips the check it names. The signed ones are signed by the trusted
// key, so only the named claim makes them bad.
func badTokens(signer jose.Signer, forged, kid string, pubPEM []byte, now time.Time, claims func() claimSet) []byte {
	expired := claims()
	expired.IssuedAt = jwt.NewNumericDate(now.Add(-2 * time.Hour))
	expired.NotBefore = expired.IssuedAt
	expired.Expiry = jwt.NewNumericDate(now.Add(-time.Hour))
	noExp := claims()
	noExp.Expiry = nil
	otherIssuer := claims()
	otherIssuer.Issuer += "/other"
	otherAudience := claims()
	otherAudience.Audience = jwt.Audience{"other-api"}
	// A valid signature over one payload, sent with another (another sub): the signature
	// must cover the payload.
	valid, other := strings.Split(mint(signer, claims()), "."), claims()
	other.Subject = "admin"
	swapped := valid[0] + "." + segment(other) + "." + valid[2]

	header := func(alg string) string {
		return segment(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"})
	}
	none := header("none") + "." + segment(claims()) + "."
	// Algorithm confusion: HS256 keyed with the public key's PEM, which a verifier that
	// takes the algorithm from the token and the key from its configuration would accept.
	hsInput := header("HS256") + "." + segment(claims())
	mac := hmac.New(sha256.New, pubPEM)
	mac.Write([]byte(hsInput))
	hs := hsInput + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	var b strings.Builder
	for _, t := range [][2]string{
		{"forged", forged},
		{"expired", mint(signer, expired)},
		{"no-exp", mint(signer, noExp)},
		{"other-issuer", mint(signer, otherIssuer)},
		{"other-audience", mint(signer, otherAudience)},
		{"swapped-payload", swapped},
		{"alg-none", none},
		{"alg-hs256-public-pem", hs},
	} {
		fmt.Fprintf(&b, "%s\t%s\n", t[0], t[1])
	}
	return []byte(b.String())
}

// segment is v as a base64url JSON segment of a compact JWS.
func segment(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		log.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(data)
}

// discoveryDocument is the manager's discovery document plus the endpoints an OIDC login
// flow would use. Nothing in the benchmark logs in; oauth2-proxy only wants them present.
func discoveryDocument(issuer string, pub jose.JSONWebKey) ([]byte, error) {
	base, err := jwks.DiscoveryDocument(issuer, "", []jose.JSONWebKey{pub})
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(base, &doc); err != nil {
		return nil, err
	}
	doc["authorization_endpoint"] = issuer + "/authorize"
	doc["token_endpoint"] = issuer + "/token"
	return json.MarshalIndent(doc, "", "  ")
}

// policyYAML is a TokenPolicy as a standalone sidecar reads it: this issuer, the audience,
// the key of jwks.json, ES256 only, an anonymous health path, and the subject and email
// forwarded to the app (as oauth2-proxy forwards them by default).
func policyYAML(issuer, audience string) ([]byte, error) {
	tp := tkv1.TokenPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: tkv1.GroupVersion.String(), Kind: "TokenPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "bench", Namespace: "default"},
		Spec: tkv1.TokenPolicySpec{
			Issuer:            issuer,
			Audiences:         []string{audience},
			TrustedKeys:       []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "bench"}}},
			AllowedAlgorithms: []tkv1.Algorithm{"ES256"},
			Rules:             []tkv1.RouteRule{{PathPrefix: "/healthz", Anonymous: true}},
			ForwardClaims: []tkv1.ClaimHeader{
				{Claim: "sub", Header: "X-Forwarded-User"},
				{Claim: "email", Header: "X-Forwarded-Email"},
			},
		},
	}
	return yaml.Marshal(tp)
}

// writeTokens writes n tokens from next, one a line.
func writeTokens(path string, n int, next func() string) {
	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for range n {
		fmt.Fprintln(w, next())
	}
	if err := w.Flush(); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
}

func write(dir, name string, data []byte) {
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		log.Fatal(err)
	}
}
