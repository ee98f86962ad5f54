package sidecar

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// rawConn is a client connection spoken to by hand, to see what the server does with it.
type rawConn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, url string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, Conn: c, r: bufio.NewReader(c)}
}

// get sends a GET and reads the answer within wait; nil when none came.
func (c *rawConn) get(path, token string, wait time.Duration) *http.Response {
	c.t.Helper()
	req := "GET " + path + " HTTP/1.1\r\nHost: app\r\n"
	if token != "" {
		req += "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		c.t.Fatalf("writing: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return nil
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// closedWithin reports whether the server closes the connection within d.
func (c *rawConn) closedWithin(d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.r.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

func TestConnectionsPastTheCapWait(t *testing.T) {
	f := newFixture(t, withOptions(func(o *Options) { o.MaxConns, o.AdminMaxConns = 2, 1 }))
	tok := f.token()
	a, b := dial(t, f.proxyURL), dial(t, f.proxyURL)
	if a.get("/api", tok, time.Second) == nil || b.get("/api", tok, time.Second) == nil {
		t.Fatal("the first two connections were not served")
	}
	c := dial(t, f.proxyURL)
	if resp := c.get("/api", tok, 300*time.Millisecond); resp != nil {
		t.Fatalf("a third connection past the cap of 2 got %d", resp.StatusCode)
	}
	a.Close()
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("after a slot freed: %v %v, want 200", resp, err)
	}

	x := dial(t, f.adminURL)
	if x.get("/healthz", "", time.Second) == nil {
		t.Fatal("the first admin connection was not served")
	}
	y := dial(t, f.adminURL)
	if resp := y.get("/healthz", "", 300*time.Millisecond); resp != nil {
		t.Fatalf("an admin connection past the cap of 1 got %d", resp.StatusCode)
	}
}

func TestConnectionsThatOnlyGot401sIdleOutSooner(t *testing.T) {
	f := newFixture(t, withOptions(func(o *Options) { o.UnauthenticatedIdleTimeout = 200 * time.Millisecond }))
	refused, good, anon := dial(t, f.proxyURL), dial(t, f.proxyURL), dial(t, f.proxyURL)
	if r := refused.get("/api", "", time.Second); r == nil || r.StatusCode != 401 {
		t.Fatalf("want a 401, got %v", r)
	}
	if r := good.get("/api", f.token(), time.Second); r == nil || r.StatusCode != 200 {
		t.Fatalf("want a 200, got %v", r)
	}
	if r := anon.get("/healthz", "", time.Second); r == nil || r.StatusCode != 200 {
		t.Fatalf("want a 200, got %v", r)
	}
	if !refused.closedWithin(time.Second) {
		t.Error("a connection that only got a 401 was still open after the short idle timeout")
	}
	if good.closedWithin(500*time.Millisecond) || anon.closedWithin(10*time.Millisecond) {
		t.Fatal("a connection that got a 200 was closed at the short idle timeout")
	}
	// Once earned, a connection keeps the full timeout even after a 401.
	if r := good.get("/api", "", time.Second); r == nil || r.StatusCode != 401 {
		t.Fatalf("want a 401, got %v", r)
	}
	if good.closedWithin(500 * time.Millisecond) {
		t.Error("a connection that once got a 200 was closed at the short idle timeout")
	}

	admin := dial(t, f.adminURL)
	if r := admin.get("/healthz", "", time.Second); r == nil || r.StatusCode != 200 {
		t.Fatalf("admin: want a 200, got %v", r)
	}
	if !admin.closedWithin(time.Second) {
		t.Error("an idle admin connection was still open after the short idle timeout")
	}
}

// A body dripped a byte just before each idle timeout never trips it; the minimum rate cuts it.
func TestABodyDrippedSlowerThanTheMinimumRateGets408(t *testing.T) {
	f := newFixture(t, withOptions(func(o *Options) {
		o.BodyIdleTimeout = 300 * time.Millisecond // stands for 30 s
		o.BodyMinRate = 100
	}))
	head := "POST /api/items HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer " + f.token() + "\r\nContent-Length: 100\r\n\r\n"
	drip := make([]string, 100)
	for i := range drip {
		drip[i] = "a"
	}
	start := time.Now()
	resp := rawRequest(t, f, head, drip, 250*time.Millisecond) // each wait under the idle timeout
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("cut after %v", d)
	}
}

func TestRequestsPastTheUpstreamCapGet503(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/slow" {
			entered <- struct{}{}
			<-release
		}
		echoHandler(w, r)
	})
	f := newFixture(t, withUpstream(slow), withOptions(func(o *Options) { o.MaxUpstreamRequests = 1 }))
	tok := f.token()
	var wg sync.WaitGroup
	wg.Add(1)
	var first response
	go func() { defer wg.Done(); first = doRequest(t, &http.Client{}, f.proxyURL+"/api/slow", bearer(tok)) }()
	<-entered
	r := f.do("/api/fast", bearer(tok))
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Errorf("past the cap: %d Retry-After %q, want 503 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	if r := f.do("/api/fast"); r.status != http.StatusUnauthorized {
		t.Errorf("a request without a token past the cap: %d, want 401 (refusals take no slot)", r.status)
	}
	close(release)
	wg.Wait()
	if first.status != 200 {
		t.Errorf("the slow request: %d", first.status)
	}
	if r := f.do("/api/fast", bearer(tok)); r.status != 200 {
		t.Errorf("after the slot freed: %d, want 200", r.status)
	}
	eventually(t, "the overloaded request to be counted", func() bool { return f.requests(outcomeOverloaded) == 1 })
}

// wsUpstream accepts a WebSocket-style upgrade by hijacking, then echoes what it reads.
func wsUpstream() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			echoHandler(w, r)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		_, _ = io.Copy(c, brw)
	})
}

// openWebSocket upgrades through the proxy and checks the tunnel echoes.
func openWebSocket(t *testing.T, f *fixture, tok string) *rawConn {
	t.Helper()
	c := dial(t, f.proxyURL)
	_, _ = io.WriteString(c, "GET /api/ws HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v, want 101", resp, err)
	}
	c.echo("hello")
	return c
}

func (c *rawConn) echo(msg string) {
	c.t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		c.t.Fatalf("writing to the tunnel: %v", err)
	}
	buf := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := io.ReadFull(c.r, buf); err != nil || string(buf) != msg {
		c.t.Fatalf("tunnel echoed %q, %v; want %q", buf, err, msg)
	}
}

func TestWebSocketTunnelsCloseAtTheTokensExp(t *testing.T) {
	f := newFixture(t, withUpstream(wsUpstream()))
	start := time.Now()
	c := openWebSocket(t, f, f.token(withClaim("exp", t0.Add(time.Second).Unix())))
	time.Sleep(500 * time.Millisecond)
	c.echo("still valid") // before exp the tunnel works
	if !c.closedWithin(2 * time.Second) {
		t.Fatal("the tunnel outlived its token")
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("closed after %v, before the token's exp", d)
	}
	eventually(t, "the tunnel to be forgotten", func() bool {
		f.sc.tunnelsMu.Lock()
		defer f.sc.tunnelsMu.Unlock()
		return len(f.sc.tunnels) == 0
	})
}

// closeTunnels is the hook a revocation uses: it closes the matching tunnels at once.
func TestCloseTunnelsClosesTheMatchingTunnels(t *testing.T) {
	f := newFixture(t, withUpstream(wsUpstream()))
	alice := openWebSocket(t, f, f.token())
	bob := openWebSocket(t, f, f.token(withClaim("sub", "bob"), withClaim("jti", "token-bob")))
	if n := f.sc.closeTunnels(func(c *verify.Claims) bool { return c.Subject == "alice" }); n != 1 {
		t.Fatalf("closed %d tunnels, want 1", n)
	}
	if !alice.closedWithin(time.Second) {
		t.Error("alice's tunnel stayed open")
	}
	bob.echo("bob is fine")
}

// A revocation, or the withdrawal of the token's key, closes its open tunnels at the next
// poll; other tunnels stay.
func TestRevocationsAndKeyWithdrawalCloseTunnels(t *testing.T) {
	f := newFixture(t, withUpstream(wsUpstream()))
	revoked := openWebSocket(t, f, f.token())
	other := openWebSocket(t, f, f.token(withClaim("jti", "token-2")))
	expires := metav1.NewTime(t0.Add(2 * time.Hour))
	f.write(policy.BundleRevocations, marshalYAML(t, revocationList([]tkv1.RevokedToken{{JTI: "token-1", ExpiresAt: expires}}, nil)))
	f.poll()
	if !revoked.closedWithin(time.Second) {
		t.Fatal("the revoked token's tunnel stayed open")
	}
	other.echo("not revoked")

	f.write(policy.BundleJWKS, jwksDoc(t, testKey(t, "next")))
	f.poll()
	if !other.closedWithin(time.Second) {
		t.Fatal("a tunnel stayed open after its key was withdrawn")
	}
}

// --token-cache-bytes reaches the Verifier: under a budget smaller than one entry nothing
// is cached, while the default caches the same token.
func TestTheCacheByteBudgetReachesTheVerifier(t *testing.T) {
	for _, c := range []struct {
		name   string
		budget int64
		cached bool
	}{{"the default", 0, true}, {"a budget below one entry", 64, false}} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, withOptions(func(o *Options) { o.CacheBytes = c.budget }))
			tok := f.token()
			f.wantStatus(tok, 200, "")
			f.wantStatus(tok, 200, "")
			if _, _, entries := f.sc.cacheStats(); (entries > 0) != c.cached {
				t.Errorf("cache entries %d, want cached=%v", entries, c.cached)
			}
		})
	}
}
