package sidecar

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// Fixed instants: no test depends on the wall clock for token validity.
var t0 = time.Date(2030, time.January, 2, 3, 4, 5, 0, time.UTC)

const testIssuer = "https://issuer.example"

// ---- clock ----

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// ---- keys and tokens ----

var (
	testKeysMu sync.Mutex
	testKeys   = map[string]*keys.Key{}
)

// testKey is an ES256 key per name, generated once per test binary.
func testKey(t testing.TB, name string) *keys.Key {
	t.Helper()
	testKeysMu.Lock()
	defer testKeysMu.Unlock()
	if k, ok := testKeys[name]; ok {
		return k
	}
	k, err := keys.Generate(rand.Reader, keys.Params{Algorithm: "ES256"})
	if err != nil {
		t.Fatalf("generating a key: %v", err)
	}
	testKeys[name] = k
	return k
}

func jwksDoc(t testing.TB, ks ...*keys.Key) []byte {
	t.Helper()
	pub := make([]jose.JSONWebKey, 0, len(ks))
	for _, k := range ks {
		pub = append(pub, k.PublicJWK())
	}
	doc, err := jwks.Marshal(pub)
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

type tokenSpec struct {
	key    *keys.Key
	claims map[string]any
}

type tokenOpt func(*tokenSpec)

func withClaim(name string, v any) tokenOpt { return func(s *tokenSpec) { s.claims[name] = v } }

// newToken signs with go-jose a token valid at t0 for the default policy: sub alice, group
// dev, jti token-1.
func newToken(t testing.TB, k *keys.Key, opts ...tokenOpt) string {
	t.Helper()
	s := &tokenSpec{key: k, claims: map[string]any{
		"iss":    testIssuer,
		"sub":    "alice",
		"aud":    "api",
		"jti":    "token-1",
		"groups": []string{"dev"},
		"iat":    t0.Add(-time.Minute).Unix(),
		"exp":    t0.Add(time.Hour).Unix(),
	}}
	for _, o := range opts {
		o(s)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(s.key.Algorithm), Key: s.key.Private},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.key.KID))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(s.claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// unsignedToken is an alg=none token naming k's kid.
func unsignedToken(k *keys.Key) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","kid":"`+k.KID+`"}`)) + "." +
		enc([]byte(`{"iss":"`+testIssuer+`","sub":"alice","aud":"api","exp":1999999999}`)) + "."
}

// ---- manifests ----

type policyOpt func(*tkv1.TokenPolicy)

// basePolicy: issuer and audience as newToken signs them, the SigningKey "app" (whose keys
// come in jwks.json), an anonymous /healthz, an /admin that needs group admin, sub and
// groups forwarded as X-User and X-Groups.
func basePolicy(opts ...policyOpt) *tkv1.TokenPolicy {
	tp := &tkv1.TokenPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: tkv1.GroupVersion.String(), Kind: "TokenPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "default"},
		Spec: tkv1.TokenPolicySpec{
			Issuer:      testIssuer,
			Audiences:   []string{"api"},
			TrustedKeys: []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "app"}}},
			Rules: []tkv1.RouteRule{
				{PathPrefix: "/healthz", Anonymous: true},
				{PathPrefix: "/admin", RequiredClaims: []tkv1.ClaimRequirement{{Name: "groups", Values: []string{"admin"}}}},
			},
			ForwardClaims: []tkv1.ClaimHeader{{Claim: "sub", Header: "X-User"}, {Claim: "groups", Header: "X-Groups"}},
		},
	}
	for _, o := range opts {
		o(tp)
	}
	return tp
}

func marshalYAML(t testing.TB, v any) []byte {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func revocationList(tokens []tkv1.RevokedToken, subjects []tkv1.RevokedSubject, kids ...string) *tkv1.RevocationList {
	rl := &tkv1.RevocationList{TypeMeta: metav1.TypeMeta{APIVersion: tkv1.GroupVersion.String(), Kind: "RevocationList"}}
	rl.Name = "bundle"
	rl.Spec.Tokens, rl.Spec.Subjects = tokens, subjects
	for _, k := range kids {
		rl.Spec.Keys = append(rl.Spec.Keys, tkv1.RevokedKey{KID: k})
	}
	return rl
}

// writeFile replaces a file as atomically as the kubelet does: a new inode renamed in.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// ---- the fixture: an echoing upstream, the sidecar on loopback ----

// echo is what the upstream saw of a request.
type echo struct {
	Path     string      `json:"path"`
	RawQuery string      `json:"rawQuery"`
	Host     string      `json:"host"`
	Header   http.Header `json:"header"`
	BodySize int         `json:"bodySize"`
}

// echoHandler answers with what it received, after reading the whole body.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(echo{Path: r.URL.Path, RawQuery: r.URL.RawQuery, Host: r.Host, Header: r.Header, BodySize: int(n)})
}

type fixtureConfig struct {
	policy      []byte // nil: no policy file
	jwks        []byte // nil: no JWKS file
	revocations []byte // nil: no revocations file
	upstream    http.Handler
	options     []func(*Options)
}

type fixtureOpt func(*testing.T, *fixtureConfig)

func withPolicy(opts ...policyOpt) fixtureOpt {
	return func(t *testing.T, c *fixtureConfig) { c.policy = marshalYAML(t, basePolicy(opts...)) }
}
func withPolicyFile(data string) fixtureOpt {
	return func(_ *testing.T, c *fixtureConfig) { c.policy = []byte(data) }
}
func withoutPolicy() fixtureOpt { return func(_ *testing.T, c *fixtureConfig) { c.policy = nil } }
func withJWKS(names ...string) fixtureOpt {
	return func(t *testing.T, c *fixtureConfig) {
		var ks []*keys.Key
		for _, n := range names {
			ks = append(ks, testKey(t, n))
		}
		c.jwks = jwksDoc(t, ks...)
	}
}
func withoutJWKS() fixtureOpt { return func(_ *testing.T, c *fixtureConfig) { c.jwks = nil } }
func withRevocations(rl *tkv1.RevocationList) fixtureOpt {
	return func(t *testing.T, c *fixtureConfig) { c.revocations = marshalYAML(t, rl) }
}
func withUpstream(h http.Handler) fixtureOpt {
	return func(_ *testing.T, c *fixtureConfig) { c.upstream = h }
}
func withOptions(f func(*Options)) fixtureOpt {
	return func(_ *testing.T, c *fixtureConfig) { c.options = append(c.options, f) }
}

type fixture struct {
	t        *testing.T
	dir      string
	clock    *fakeClock
	key      *keys.Key // "primary", in jwks.json by default
	upstream *httptest.Server
	sc       *Sidecar
	proxyURL string
	adminURL string
	client   *http.Client
	logs     *syncBuffer
	stop     context.CancelFunc
	served   chan error
}

// newFixture starts an upstream and a sidecar in front of it, both on loopback. By default
// the bundle holds basePolicy and a JWKS with the "primary" key, and the files are polled
// only when a test calls poll.
func newFixture(t *testing.T, opts ...fixtureOpt) *fixture {
	t.Helper()
	cfg := &fixtureConfig{upstream: http.HandlerFunc(echoHandler)}
	withPolicy()(t, cfg)
	withJWKS("primary")(t, cfg)
	for _, o := range opts {
		o(t, cfg)
	}
	f := &fixture{t: t, dir: t.TempDir(), clock: newClock(), key: testKey(t, "primary"), logs: &syncBuffer{}}
	f.upstream = httptest.NewServer(cfg.upstream)
	t.Cleanup(f.upstream.Close)
	pf, jf, rf := BundleFiles(f.dir)
	for path, data := range map[string][]byte{pf: cfg.policy, jf: cfg.jwks, rf: cfg.revocations} {
		if data != nil {
			writeFile(t, path, data)
		}
	}
	o := Options{
		Upstream:        f.upstream.URL,
		PolicyFile:      pf,
		JWKSFile:        jf,
		RevocationsFile: rf,
		PolicyName:      "app",
		PollInterval:    time.Hour, // tests poll explicitly
		DrainDelay:      time.Millisecond,
		ShutdownTimeout: 5 * time.Second,
		Now:             f.clock.Now,
		Logger:          slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		jitter:          func(d time.Duration) time.Duration { return d },
	}
	for _, apply := range cfg.options {
		apply(&o)
	}
	sc, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.sc = sc
	pl := listen(t)
	al := listen(t)
	f.proxyURL, f.adminURL = "http://"+pl.Addr().String(), "http://"+al.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	f.stop, f.served = stop, make(chan error, 1)
	go func() { f.served <- sc.Serve(ctx, pl, al) }()
	f.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(func() {
		f.stop()
		if err := <-f.served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		f.client.CloseIdleConnections()
		if t.Failed() {
			t.Logf("sidecar logs:\n%s", f.logs.String())
		}
	})
	return f
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func (f *fixture) token(opts ...tokenOpt) string { return newToken(f.t, f.key, opts...) }

// poll runs one poll of the files, as the ticker would.
func (f *fixture) poll() { f.sc.pollFiles() }

func (f *fixture) write(name string, data []byte) {
	f.t.Helper()
	writeFile(f.t, filepath.Join(f.dir, name), data)
}

// ---- requests ----

type reqOpt func(*http.Request)

func bearer(tok string) reqOpt { return header("Authorization", "Bearer "+tok) }
func header(name, value string) reqOpt {
	return func(r *http.Request) { r.Header[name] = append(r.Header[name], value) } // names as given
}
func cookie(name, value string) reqOpt {
	return func(r *http.Request) { r.AddCookie(&http.Cookie{Name: name, Value: value}) }
}
func method(m string) reqOpt { return func(r *http.Request) { r.Method = m } }
func body(b []byte, declaredLength bool) reqOpt {
	return func(r *http.Request) {
		if declaredLength {
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
			return
		}
		r.Body, r.ContentLength = io.NopCloser(io.MultiReader(bytes.NewReader(b))), -1 // chunked
	}
}

// response is a finished exchange with the sidecar.
type response struct {
	status int
	header http.Header
	body   string
	close  bool  // the server closes the connection after this response
	echo   *echo // what the upstream saw, when it answered
}

func (f *fixture) do(path string, opts ...reqOpt) response {
	f.t.Helper()
	return doRequest(f.t, f.client, f.proxyURL+path, opts...)
}

func doRequest(t testing.TB, c *http.Client, url string, opts ...reqOpt) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(req)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, body: string(b), close: resp.Close}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		r.echo = &echo{}
		if err := json.Unmarshal(b, r.echo); err != nil {
			t.Fatalf("decoding the echo: %v", err)
		}
	}
	return r
}

func (f *fixture) admin(path string) response {
	f.t.Helper()
	return doRequest(f.t, f.client, f.adminURL+path)
}

// ---- metrics ----

func metricValue(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("metric is neither a counter nor a gauge")
	return 0
}

func (f *fixture) rejections(r verify.Reason) float64 {
	return metricValue(f.t, f.sc.metrics.rejections[r])
}

func (f *fixture) requests(o outcome) float64 {
	return metricValue(f.t, f.sc.metrics.requests[o])
}

func (f *fixture) reloads(file, result string) float64 {
	return metricValue(f.t, f.sc.metrics.reloads.WithLabelValues(file, result))
}

func (f *fixture) fetches(trigger, result string) float64 {
	return metricValue(f.t, f.sc.metrics.fetches.WithLabelValues(trigger, result))
}

// eventually waits up to two seconds for cond: for effects that land just after a response
// (request metrics) or in background goroutines (remote fetches).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// syncBuffer collects the sidecar's logs for a failing test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
