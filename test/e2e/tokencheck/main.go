// Command tokencheck is the e2e suite's issuer, relying party and app, run as pods:
//
//	tokencheck sign   --key-dir /keys --target http://verifier/verify
//	tokencheck verify --jwks /jwks/jwks.json
//	tokencheck echo   (an app behind the sidecar: answers every request with the headers it got;
//	                   --files-dir d serves d's files at /mounted/)
//	tokencheck mint   --key-dir dir --audience a [--ttl 10m] [--expired] [--jti id]   (prints one token)
//	tokencheck get    [--token t] URL   (one GET: prints "status <code>", "from echo" when the app answered, or "error: <why>")
//
// The signer signs a short-lived JWT with whatever active key its mounted Secret holds, as
// an issuer would, and sends it to the verifier, which checks it against the JWKS mounted
// from the ConfigMap, re-read on every request. Both count outcomes at /stats, so the suite
// can assert that no valid token was rejected across rotations.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
)

// Stats are the outcomes counted by either side.
type Stats struct {
	mu       sync.Mutex
	Sent     int `json:"sent"`
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	Errors   int `json:"errors"`
	// Warmup counts failures before the first token reached the verifier (pod start, volume
	// and Service endpoints settling): those say nothing about rotation.
	Warmup  int            `json:"warmup"`
	ByKID   map[string]int `json:"byKID"`
	Reasons map[string]int `json:"reasons"`
}

func (s *Stats) add(f func(*Stats)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *Stats) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s)
}

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: tokencheck mint|sign|echo|verify|get [flags]")
	}
	stats := &Stats{ByKID: map[string]int{}, Reasons: map[string]int{}}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", ":8080", "address of /stats (and /verify)")
	issuer := fs.String("issuer", "https://e2e.tokenkeeper.dev", "iss of signed tokens")
	switch os.Args[1] {
	case "mint":
		keyDir := fs.String("key-dir", "/keys", "a directory holding the SigningKey Secret's active.jwk")
		audience := fs.String("audience", "", "aud of the token")
		subject := fs.String("subject", "alice", "sub of the token")
		expired := fs.Bool("expired", false, "mint a token that expired ten minutes ago")
		ttl := fs.Duration("ttl", 10*time.Minute, "lifetime of the token")
		jti := fs.String("jti", "", "jti of the token (none when empty)")
		_ = fs.Parse(os.Args[2:])
		now := time.Now()
		if *expired {
			now = now.Add(-20 * time.Minute)
		}
		tok, _, err := mint(*keyDir, jwt.Claims{Issuer: *issuer, Subject: *subject, Audience: audienceOf(*audience),
			ID: *jti, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(*ttl))})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(tok)
		return
	case "sign":
		keyDir := fs.String("key-dir", "/keys", "the mounted SigningKey Secret")
		target := fs.String("target", "", "the verifier's /verify URL")
		every := fs.Duration("every", 200*time.Millisecond, "how often to sign and send")
		audience := fs.String("audience", "", "aud of signed tokens")
		bearer := fs.Bool("bearer", false, "send the token as Authorization: Bearer on a GET (to a sidecar) instead of as a POST body")
		_ = fs.Parse(os.Args[2:])
		sg := sender{keyDir: *keyDir, target: *target, issuer: *issuer, audience: *audience, bearer: *bearer}
		go sign(stats, sg, &http.Client{Timeout: 5 * time.Second}, time.Tick(*every))
	case "get":
		// One GET, for e2e specs that check from inside the cluster what answers on an
		// address: prints "status <code>" or "error: <why>" (exit 1).
		token := fs.String("token", "", "send this token as Authorization: Bearer")
		_ = fs.Parse(os.Args[2:])
		c := &http.Client{Timeout: 5 * time.Second}
		req, err := http.NewRequest(http.MethodGet, fs.Arg(0), nil)
		if err != nil {
			log.Fatal(err)
		}
		if *token != "" {
			req.Header.Set("Authorization", "Bearer "+*token)
		}
		resp, err := c.Do(req)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		_ = resp.Body.Close()
		if by := resp.Header.Get(answeredBy); by != "" {
			fmt.Println("status", resp.StatusCode, "from", by)
			return
		}
		fmt.Println("status", resp.StatusCode)
		return
	case "echo":
		files := fs.String("files-dir", "", "serve this directory's files at /mounted/<name> (a mounted volume's copy, as the pod sees it)")
		_ = fs.Parse(os.Args[2:])
		if *files != "" {
			http.Handle("/mounted/", http.StripPrefix("/mounted/", http.FileServer(http.Dir(*files))))
		}
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(answeredBy, "echo")
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path, "headers": r.Header})
		})
	case "verify":
		jwksFile := fs.String("jwks", "/jwks/jwks.json", "the mounted JWKS")
		_ = fs.Parse(os.Args[2:])
		http.HandleFunc("/verify", func(w http.ResponseWriter, r *http.Request) { verify(stats, *jwksFile, *issuer, w, r) })
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
	http.Handle("/stats", stats)
	srv := &http.Server{Addr: *listen, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

type sender struct {
	keyDir, target, issuer, audience string
	bearer                           bool
}

// send delivers tok and returns the response and the address that answered it.
func (s sender) send(client *http.Client, tok string) (*http.Response, string, error) {
	method, body := http.MethodPost, io.Reader(bytes.NewBufferString(tok))
	if s.bearer {
		method, body = http.MethodGet, nil
	}
	var remote string
	trace := &httptrace.ClientTrace{GotConn: func(c httptrace.GotConnInfo) {
		remote = c.Conn.RemoteAddr().String()
		if c.Reused {
			remote += " (reused)"
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, s.target, body)
	if err != nil {
		return nil, "", err
	}
	if s.bearer {
		req.Header.Set("Authorization", "Bearer "+tok)
	} else {
		req.Header.Set("Content-Type", "application/jwt")
	}
	resp, err := client.Do(req)
	return resp, remote, err
}

// sign signs and sends a token on every tick.
func sign(stats *Stats, sg sender, client *http.Client, ticks <-chan time.Time) {
	for range ticks {
		tok, kid, err := signOnce(sg.keyDir, sg.issuer, sg.audience)
		if err != nil {
			stats.failed("sign: " + err.Error())
			continue
		}
		resp, remote, err := sg.send(client, tok)
		if err != nil {
			stats.failed("send: " + err.Error())
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !stats.answered(resp, body, remote, kid) {
			// Never keep talking to a stranger: the next token dials afresh.
			client.CloseIdleConnections()
		}
	}
}

// failed counts a token that never got an answer.
func (s *Stats) failed(reason string) {
	s.add(func(s *Stats) {
		if s.Sent == 0 {
			s.Warmup++
			return
		}
		s.Errors++
		s.Reasons[reason]++
	})
}

// answered counts the answer to a token signed with kid, and reports whether the verifier
// (or the sidecar in front of the echo app) gave it. Anything else is no verdict on the token:
// a Service's ClusterIP that kube-proxy has not programmed yet is routed out of the node like
// any address, and where the network intercepts outbound HTTP (this CI machine answers every
// port-80 connection with an empty 404 and keeps it alive), a kept-alive client would go on
// talking to the interceptor. Such answers count as warmup before the first verdict, as
// errors after it; neither is a rejection.
func (s *Stats) answered(resp *http.Response, body []byte, remote, kid string) bool {
	fromTarget := resp.Header.Get(answeredBy) != "" || strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer")
	s.add(func(s *Stats) {
		if !fromTarget {
			if s.Sent == 0 {
				s.Warmup++
			} else {
				s.Errors++
			}
			s.Reasons[fmt.Sprintf("not the verifier: %d %q from %s (Server %q)", resp.StatusCode, bytes.TrimSpace(body), remote, resp.Header.Get("Server"))]++
			return
		}
		s.Sent++
		s.ByKID[kid]++
		if resp.StatusCode == http.StatusOK {
			s.Accepted++
			return
		}
		s.Rejected++
		s.Reasons[fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))]++
	})
	return fromTarget
}

// signOnce reads the active key afresh, as an issuer mounting the Secret would.
func signOnce(keyDir, issuer, audience string) (string, string, error) {
	now := time.Now()
	return mint(keyDir, jwt.Claims{Issuer: issuer, Subject: "e2e", Audience: audienceOf(audience),
		IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(30 * time.Second))})
}

func audienceOf(a string) jwt.Audience {
	if a == "" {
		return nil
	}
	return jwt.Audience{a}
}

// mint signs claims with the active key in keyDir and returns the token and its kid.
func mint(keyDir string, claims jwt.Claims) (string, string, error) {
	raw, err := os.ReadFile(filepath.Join(keyDir, "active.jwk"))
	if err != nil {
		return "", "", err
	}
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(raw); err != nil {
		return "", "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(key.Algorithm), Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", "", err
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	return tok, key.KeyID, err
}

// answeredBy is the header in which the verifier and the echo app name themselves on every
// answer, so the signer knows its tokens reached them.
const answeredBy = "X-Tokencheck"

func verify(stats *Stats, jwksFile, issuer string, w http.ResponseWriter, r *http.Request) {
	w.Header().Set(answeredBy, "verify")
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 16<<10))
	reject := func(reason string) {
		stats.add(func(s *Stats) { s.Rejected++; s.Reasons[reason]++ })
		http.Error(w, reason, http.StatusUnauthorized)
	}
	data, err := os.ReadFile(jwksFile)
	if err != nil {
		reject("no jwks")
		return
	}
	set, err := jwks.Parse(data)
	if err != nil {
		reject("bad jwks")
		return
	}
	tok, err := jwt.ParseSigned(string(raw), []jose.SignatureAlgorithm{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
	if err != nil || len(tok.Headers) != 1 {
		reject("malformed")
		return
	}
	kid := tok.Headers[0].KeyID
	keys := set.Key(kid)
	if len(keys) != 1 {
		reject("unknown kid " + kid)
		return
	}
	if tok.Headers[0].Algorithm != keys[0].Algorithm {
		reject("alg mismatch")
		return
	}
	var claims jwt.Claims
	if err := tok.Claims(keys[0].Key, &claims); err != nil {
		reject("bad signature")
		return
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: issuer, Time: time.Now()}, 5*time.Second); err != nil {
		reject(fmt.Sprintf("claims: %v", err))
		return
	}
	stats.add(func(s *Stats) { s.Accepted++; s.ByKID[kid]++ })
	w.WriteHeader(http.StatusOK)
}
