// Package disttest runs real distribution servers for tests of their clients: manager
// replicas (a server.Hub behind a server.Handler) behind one TLS endpoint that plays the
// Service, with a CA of its own that can be renewed, and builders of the objects a Hub is
// fed. It is for tests only: it imports the manager's side (controllers).
package disttest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/controllers"
	"github.com/tokenkeeper/tokenkeeper/internal/certs"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution/server"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
)

// FastLimits hold a poll for 300ms by default and at most a second.
func FastLimits() server.Limits {
	l := server.DefaultLimits
	l.DefaultHold, l.MaxHold = 300*time.Millisecond, time.Second
	l.WriteTimeout = 2 * time.Second
	return l
}

// Replica is one manager replica: a running Hub served by the real Handler, which admits
// only "Bearer " + the token set with SetToken.
type Replica struct {
	Hub     *server.Hub
	Handler *server.Handler
	token   atomic.Pointer[string]
}

// NewReplica starts a Hub (not synced: feed it, then MarkSynced) and its Handler.
func NewReplica(t testing.TB, lim server.Limits) *Replica {
	t.Helper()
	r := &Replica{Hub: server.NewHub(slog.New(slog.NewTextHandler(io.Discard, nil)))}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go r.Hub.Run(ctx)
	r.SetToken("sidecar-token-1")
	r.Handler = &server.Handler{Hub: r.Hub, Limits: lim, Authorize: func(req *http.Request, _ string) (int, string) {
		if req.Header.Get("Authorization") != "Bearer "+*r.token.Load() {
			return http.StatusUnauthorized, "token not accepted"
		}
		return http.StatusOK, ""
	}}
	return r
}

// SetToken sets the one bearer token the replica accepts.
func (r *Replica) SetToken(tok string) { r.token.Store(&tok) }

// Feed upserts objects into the Hub, as informer handlers would.
func (r *Replica) Feed(objs ...interface {
	GetNamespace() string
	GetName() string
	GetResourceVersion() string
}) {
	for _, o := range objs {
		r.Hub.Upsert(o)
	}
}

// Request is what the Service saw of one request and its answer.
type Request struct {
	Version, Authorization, AcceptEncoding string
	Status                                 int
	// Message is the decoded 200 answer as sent (after any Tamper), nil otherwise or when
	// it did not decode.
	Message *distribution.Message
}

// Service is one TLS endpoint in front of the replicas, as a Kubernetes Service is: each
// request goes to the replica Route names. Its certificate is for 127.0.0.1, signed by
// a CA written to CAFile.
type Service struct {
	URL       string
	CAFile    string // PEM of the CA(s) the client trusts
	TokenFile string // holds "sidecar-token-1" at first
	Srv       *httptest.Server

	target atomic.Pointer[http.Handler]
	cert   atomic.Pointer[tls.Certificate]
	// Tamper, when set, rewrites 200 answers: it gets the decoded message and returns the
	// bytes to send instead (plain JSON or anything; they are gzipped again when the
	// answer was).
	tamper atomic.Pointer[func(*distribution.Message, []byte) []byte]
	// stripVersion drops ?version= before the replica sees it, as a proxy or an old server
	// that ignores it would: the replica then answers its current snapshot at once.
	stripVersion atomic.Bool

	mu       sync.Mutex
	requests []Request
}

// NewService starts the endpoint, routed to r (nil: every connection is cut).
func NewService(t testing.TB, r *Replica) *Service {
	t.Helper()
	dir := t.TempDir()
	s := &Service{CAFile: filepath.Join(dir, "distribution-ca.crt"), TokenFile: filepath.Join(dir, "token")}
	ca := s.RenewCA(t)
	WriteFile(t, s.CAFile, ca)
	WriteFile(t, s.TokenFile, []byte("sidecar-token-1\n"))
	s.Route(r)
	s.Srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	// Per connection, since a client dialling an IP sends no SNI (GetCertificate alone
	// would not be asked), and connections open keep the certificate they got.
	s.Srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return &tls.Config{Certificates: []tls.Certificate{*s.cert.Load()}}, nil
	}}
	s.Srv.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are what some tests want
	s.Srv.StartTLS()
	t.Cleanup(s.Srv.Close)
	s.URL = s.Srv.URL
	return s
}

// RenewCA makes a new CA, serves a certificate it signed from now on (connections open
// stay as they are) and returns the CA's PEM; the caller decides when CAFile learns it.
func (s *Service) RenewCA(t testing.TB) []byte {
	t.Helper()
	now := time.Now()
	ca, err := certs.NewCA("tokenkeeper-distribution-test", now)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := certs.NewServing(ca, []string{"127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(pair.Cert, pair.Key)
	if err != nil {
		t.Fatal(err)
	}
	s.cert.Store(&cert)
	return ca.Cert
}

// Route sends the next requests to r; nil cuts every connection (a replica down).
func (s *Service) Route(r *Replica) {
	var h http.Handler
	if r != nil {
		h = r.Handler
	}
	s.target.Store(&h)
}

// Down takes every replica away: polls under way are cut, new ones too.
func (s *Service) Down() {
	s.Route(nil)
	s.Srv.CloseClientConnections()
}

// Tamper rewrites 200 answers until it is set to nil.
func (s *Service) Tamper(f func(m *distribution.Message, plain []byte) []byte) {
	if f == nil {
		s.tamper.Store(nil)
		return
	}
	s.tamper.Store(&f)
}

// StripVersion makes the next requests reach the replica without ?version=.
func (s *Service) StripVersion(on bool) { s.stripVersion.Store(on) }

// Requests returns what the Service saw so far.
func (s *Service) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	h := *s.target.Load()
	if h == nil {
		panic(http.ErrAbortHandler) // the connection is cut, as a replica going away
	}
	req := Request{Version: r.URL.Query().Get("version"), Authorization: r.Header.Get("Authorization"),
		AcceptEncoding: r.Header.Get("Accept-Encoding")}
	if s.stripVersion.Load() {
		q := r.URL.Query()
		q.Del("version")
		r.URL.RawQuery = q.Encode()
		r.RequestURI = r.URL.RequestURI()
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	req.Status = rec.Code
	if rec.Code == http.StatusOK {
		gz := rec.Header().Get("Content-Encoding") == "gzip"
		plain := body
		if gz {
			plain = gunzip(body)
		}
		m := &distribution.Message{}
		if json.Unmarshal(plain, m) != nil {
			m = nil
		}
		if f := s.tamper.Load(); f != nil {
			plain = (*f)(m, plain)
			if m2 := (&distribution.Message{}); json.Unmarshal(plain, m2) == nil {
				m = m2
			} else {
				m = nil
			}
			body = plain
			if gz {
				body = Gzip(plain)
			}
			rec.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		req.Message = m
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body)
}

func gunzip(b []byte) []byte {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	out, _ := io.ReadAll(zr)
	return out
}

// Gzip compresses b.
func Gzip(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// WriteFile replaces a file as the kubelet does: a new file renamed in.
func WriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// ---- objects a Hub is fed ----

// Policy is the TokenPolicy ns/name at resourceVersion rv, trusting the SigningKey "sk"
// unless spec says otherwise.
func Policy(ns, name, rv string, spec func(*tkv1.TokenPolicySpec)) *tkv1.TokenPolicy {
	tp := &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv}}
	tp.Spec.Issuer = "https://issuer.example"
	tp.Spec.Audiences = []string{"api"}
	tp.Spec.TrustedKeys = []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "sk"}}}
	if spec != nil {
		spec(&tp.Spec)
	}
	return tp
}

// JWKSConfigMap is the ConfigMap name (such as "sk-jwks", or a policy's "<name>-bundle")
// publishing keys, at rv.
func JWKSConfigMap(t testing.TB, ns, name, rv string, keys ...jose.JSONWebKey) *corev1.ConfigMap {
	t.Helper()
	doc, err := jwks.Marshal(keys)
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv},
		Data: map[string]string{controllers.ConfigMapJWKS: string(doc)}}
}

// RevocationList is the list ns/name at rv revoking the jtis (valid until 2100) and kids.
func RevocationList(ns, name, rv string, jtis []string, kids ...string) *tkv1.RevocationList {
	rl := &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv}}
	for _, j := range jtis {
		rl.Spec.Tokens = append(rl.Spec.Tokens, tkv1.RevokedToken{JTI: j, ExpiresAt: metav1.NewTime(time.Unix(4102444800, 0))})
	}
	for _, k := range kids {
		rl.Spec.Keys = append(rl.Spec.Keys, tkv1.RevokedKey{KID: k})
	}
	return rl
}

// Eventually waits up to five seconds for cond.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
