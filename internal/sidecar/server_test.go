package sidecar

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// blockingUpstream answers only once release is closed; started counts requests received.
func blockingUpstream(started *atomic.Int64, release <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		echoHandler(w, r)
	})
}

func TestGracefulDrain(t *testing.T) {
	var started atomic.Int64
	release := make(chan struct{})
	f := newFixture(t, withUpstream(blockingUpstream(&started, release)), withOptions(func(o *Options) {
		o.DrainDelay = 300 * time.Millisecond
	}))
	tok := f.token()
	inflight := make(chan response, 1)
	go func() { inflight <- f.do("/api", bearer(tok)) }()
	eventually(t, "the request to reach the app", func() bool { return started.Load() == 1 })

	stopped := time.Now()
	f.stop() // what SIGTERM does
	eventually(t, "readyz to turn 503", func() bool { return f.admin("/readyz").status == 503 })
	if d := time.Since(stopped); d > 100*time.Millisecond {
		t.Errorf("readyz took %s to turn 503", d)
	}
	if r := f.admin("/readyz"); r.body != "draining\n" {
		t.Errorf("/readyz says %q", r.body)
	}
	if r := f.admin("/healthz"); r.status != 200 {
		t.Errorf("/healthz %d while draining, want 200", r.status)
	}

	// During the drain delay new requests are still served, without keep-alive.
	go func() {
		time.Sleep(50 * time.Millisecond)
		close(release)
	}()
	if r := f.do("/api", bearer(tok)); r.status != 200 || !r.close {
		t.Errorf("a request during the drain got %d (closing %v), want 200 and a closed connection", r.status, r.close)
	}
	if r := <-inflight; r.status != 200 {
		t.Errorf("the in-flight request got %d, want 200", r.status)
	}
	select {
	case err := <-f.served:
		f.served <- err // for the cleanup
		if d := time.Since(stopped); d < 300*time.Millisecond {
			t.Errorf("stopped after %s, before the drain delay", d)
		}
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestShutdownTimeoutCutsOffStuckRequests(t *testing.T) {
	var started atomic.Int64
	never := make(chan struct{})
	t.Cleanup(func() { close(never) })
	f := newFixture(t, withUpstream(blockingUpstream(&started, never)), withOptions(func(o *Options) {
		o.DrainDelay, o.ShutdownTimeout = 10*time.Millisecond, 200*time.Millisecond
	}))
	tok := f.token()
	go func() {
		req, _ := http.NewRequest(http.MethodGet, f.proxyURL+"/api", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, err := f.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	eventually(t, "the request to reach the app", func() bool { return started.Load() == 1 })
	stopped := time.Now()
	f.stop()
	select {
	case err := <-f.served:
		f.served <- err
		if d := time.Since(stopped); d > 2*time.Second {
			t.Errorf("took %s to stop", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestOptionsAreChecked(t *testing.T) {
	ok := Options{Upstream: "http://127.0.0.1:8080", PolicyFile: "p.yaml"}
	cases := []struct {
		name  string
		opts  func(o *Options)
		error string
	}{
		{"no policy file", func(o *Options) { o.PolicyFile = "" }, "no policy file"},
		{"no upstream", func(o *Options) { o.Upstream = "" }, "upstream: not set"},
		{"an upstream without a scheme", func(o *Options) { o.Upstream = "127.0.0.1:8080" }, "upstream"},
		{"an upstream with a query", func(o *Options) { o.Upstream = "http://127.0.0.1:8080/?a=b" }, "no query"},
		{"a drain delay as long as the shutdown timeout", func(o *Options) {
			o.DrainDelay, o.ShutdownTimeout = 5*time.Second, 5*time.Second
		}, "drain delay"},
		{"a negative timeout", func(o *Options) { o.UpstreamTimeout = -time.Second }, "upstream timeout"},
		{"refresh bounds the wrong way round", func(o *Options) {
			o.JWKSRefreshMin, o.JWKSRefreshMax = time.Hour, time.Minute
		}, "below the minimum"},
		{"a negative connection cap", func(o *Options) { o.MaxConns = -1 }, "caps must not be negative"},
		{"a negative unauthenticated idle timeout", func(o *Options) { o.UnauthenticatedIdleTimeout = -time.Second }, "unauthenticated idle timeout"},
		{"an app probe without a port", func(o *Options) {
			o.AppProbes = map[string]AppProbe{"/app-health/app/livez": {TCPSocket: &TCPSocketProbe{}}}
		}, "app probes: /app-health/app/livez: tcpSocket.port 0 is not a port number"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.opts(&o)
			_, err := New(o)
			if err == nil || !strings.Contains(err.Error(), tc.error) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.error)
			}
		})
	}
	t.Run("good options with missing files start unready", func(t *testing.T) {
		s, err := New(ok)
		if err != nil {
			t.Fatal(err)
		}
		if ready, _ := s.Ready(); ready {
			t.Error("ready without files")
		}
	})
}

// TestSidecarDependencies keeps the sidecar binary free of Kubernetes clients: small image,
// fast start, low memory, and a verifier that runs outside Kubernetes.
func TestSidecarDependencies(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command to list dependencies with")
		}
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/tokenkeeper/tokenkeeper/cmd/sidecar").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"k8s.io/client-go",
		"sigs.k8s.io/controller-runtime/pkg/client",
		"sigs.k8s.io/controller-runtime/pkg/manager",
		"sigs.k8s.io/controller-runtime/pkg/cache",
		"github.com/tokenkeeper/tokenkeeper/controllers",
		"github.com/tokenkeeper/tokenkeeper/internal/operator",
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list printed nothing")
	}
	for _, dep := range deps {
		for _, bad := range forbidden {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("cmd/sidecar depends on %s", dep)
			}
		}
	}
}

// --drain-delay=0 means no drain, not the default.
func TestAZeroDrainDelayMeansNoDrain(t *testing.T) {
	o, err := Options{Upstream: "http://127.0.0.1:1", PolicyFile: "p.yaml", JWKSFile: "j.json"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.DrainDelay != 0 {
		t.Errorf("drain delay %v, want 0", o.DrainDelay)
	}
}

// rawRequest writes head and then body to the proxy, one chunk every gap, and returns the
// response.
func rawRequest(t *testing.T, f *fixture, head string, body []string, gap time.Duration) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(f.proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, head); err != nil {
		t.Fatal(err)
	}
	go func() {
		for _, b := range body {
			time.Sleep(gap)
			if _, err := io.WriteString(conn, b); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestABodyThatStopsArrivingGets408(t *testing.T) {
	f := newFixture(t, withOptions(func(o *Options) { o.BodyIdleTimeout = 200 * time.Millisecond }))
	head := "POST /api/items HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer " + f.token() + "\r\nContent-Length: 10\r\n\r\nab"
	start := time.Now()
	resp := rawRequest(t, f, head, nil, 0)
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("answered after %v", waited)
	}
}

// The timeout bounds each wait, not the whole body: a slow upload that keeps sending passes,
// and so does a response that streams for longer than the timeout after the body was read.
func TestASlowButSteadyBodyAndALongResponsePass(t *testing.T) {
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		for i := range 3 {
			fmt.Fprintf(w, "%d:%d\n", i, n)
			w.(http.Flusher).Flush()
			time.Sleep(300 * time.Millisecond)
		}
	})
	f := newFixture(t, withUpstream(upstream), withOptions(func(o *Options) {
		o.BodyIdleTimeout = 200 * time.Millisecond
		o.BodyMinRate = 10 // bytes a second: 8 bytes in 400 ms keeps above it
	}))
	head := "POST /api/items HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer " + f.token() + "\r\nContent-Length: 8\r\n\r\n"
	resp := rawRequest(t, f, head, []string{"ab", "cd", "ef", "gh"}, 100*time.Millisecond) // 400 ms in all
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != "0:8\n1:8\n2:8\n" {
		t.Fatalf("body %q, %v: want the whole streamed answer", got, err)
	}
}
