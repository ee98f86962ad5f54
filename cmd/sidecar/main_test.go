package main

import (
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/sidecar"
)

func TestParseFlags(t *testing.T) {
	cases := []struct {
		name  string
		args  []string
		check func(t *testing.T, o sidecar.Options)
		error string
	}{
		{
			name: "the injected sidecar's flags read the bundle directory",
			args: []string{"--listen=:15080", "--admin-listen=:15021", "--upstream=http://127.0.0.1:8080",
				"--bundle-dir=/etc/tokenkeeper/bundle", "--policy-name=app"},
			check: func(t *testing.T, o sidecar.Options) {
				if o.PolicyFile != "/etc/tokenkeeper/bundle/policy.yaml" || o.JWKSFile != "/etc/tokenkeeper/bundle/jwks.json" ||
					o.RevocationsFile != "/etc/tokenkeeper/bundle/revocations.yaml" {
					t.Errorf("files %q %q %q", o.PolicyFile, o.JWKSFile, o.RevocationsFile)
				}
				if o.PolicyName != "app" || o.Listen != ":15080" || o.AdminListen != ":15021" {
					t.Errorf("options %+v", o)
				}
				if o.MaxHeaderBytes != 16<<10 || o.MaxBodyBytes != 10<<20 || o.UpstreamTimeout != 30*time.Second ||
					o.DrainDelay != 5*time.Second || o.ShutdownTimeout != 15*time.Second || o.CacheSize != 10000 ||
					o.CacheBytes != 16<<20 {
					t.Errorf("defaults %+v", o)
				}
			},
		},
		{
			name: "the cache's byte budget is a flag",
			args: []string{"--upstream=http://127.0.0.1:8080", "--bundle-dir=/b", "--token-cache-bytes=1048576"},
			check: func(t *testing.T, o sidecar.Options) {
				if o.CacheBytes != 1<<20 {
					t.Errorf("CacheBytes %d, want 1 MiB", o.CacheBytes)
				}
			},
		},
		{
			name: "standalone mode reads the files named",
			args: []string{"--listen", ":8443", "--upstream", "http://127.0.0.1:8080", "--policy-file", "p.yaml",
				"--jwks-file", "jwks.json", "--revocations-file", "r.yaml", "--token-cache-size=0", "--log-format=text"},
			check: func(t *testing.T, o sidecar.Options) {
				if o.PolicyFile != "p.yaml" || o.JWKSFile != "jwks.json" || o.RevocationsFile != "r.yaml" {
					t.Errorf("files %q %q %q", o.PolicyFile, o.JWKSFile, o.RevocationsFile)
				}
				if o.CacheSize >= 0 {
					t.Errorf("a cache size of 0 should disable the cache, got %d", o.CacheSize)
				}
			},
		},
		{
			name:  "a bundle directory and a file exclude each other",
			args:  []string{"--upstream=http://127.0.0.1:8080", "--bundle-dir=/b", "--policy-file=p.yaml"},
			error: "exclude each other",
		},
		{
			name:  "without a bundle directory a policy file is needed",
			args:  []string{"--upstream=http://127.0.0.1:8080", "--jwks-file=jwks.json"},
			error: "--policy-file",
		},
		{
			name:  "an unknown log format is refused",
			args:  []string{"--bundle-dir=/b", "--log-format=xml"},
			error: "--log-format",
		},
		{
			name:  "an unknown log level is refused",
			args:  []string{"--bundle-dir=/b", "--log-level=loud"},
			error: "log-level",
		},
		{
			name:  "stray arguments are refused",
			args:  []string{"--bundle-dir=/b", "extra"},
			error: "unexpected arguments",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, _, err := parseFlags(tc.args, io.Discard)
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	if _, _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
	if code := run([]string{"-h"}, io.Discard); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if code := run([]string{"--bogus"}, io.Discard); code != 2 {
		t.Errorf("exit code %d for a bad flag, want 2", code)
	}
}

func TestProbeCommand(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			_, _ = io.WriteString(w, "ok\n")
		case "/unready":
			http.Error(w, "app port 8080 listens on 0.0.0.0:8080, reachable without a token", http.StatusServiceUnavailable)
		case "/slow":
			time.Sleep(2 * time.Second)
		}
	}))
	t.Cleanup(admin.Close)
	addr := strings.TrimPrefix(admin.URL, "http://")
	closed := httptest.NewServer(http.NotFoundHandler())
	closedAddr := strings.TrimPrefix(closed.URL, "http://")
	closed.Close()
	cases := []struct {
		name   string
		args   []string
		code   int
		output string
	}{
		{name: "a 200 exits 0 quietly", args: []string{"probe", "--admin=" + addr, "/readyz"}, code: 0},
		{name: "a 503 exits 1 and prints why, for the kubelet's Event", args: []string{"probe", "--admin=" + addr, "/unready"},
			code: 1, output: "app port 8080 listens on 0.0.0.0:8080, reachable without a token\n"},
		{name: "an admin port that does not answer exits 1", args: []string{"probe", "--admin=" + closedAddr, "/readyz"},
			code: 1, output: "connection refused"},
		{name: "an answer slower than the timeout exits 1", args: []string{"probe", "--admin=" + addr, "--timeout=200ms", "/slow"},
			code: 1, output: "Timeout"},
		{name: "no path is a usage error", args: []string{"probe", "--admin=" + addr}, code: 2, output: "want one path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			start := time.Now()
			if code := run(tc.args, &out); code != tc.code {
				t.Fatalf("exit code %d (%q), want %d", code, out.String(), tc.code)
			}
			if d := time.Since(start); d > 1500*time.Millisecond {
				t.Errorf("took %v", d)
			}
			if tc.output == "" && out.Len() > 0 || !strings.Contains(out.String(), tc.output) {
				t.Errorf("output %q, want %q", out.String(), tc.output)
			}
		})
	}
}

func TestAppProbesComeFromTheEnvironment(t *testing.T) {
	args := []string{"--upstream=http://127.0.0.1:8080", "--bundle-dir=/b"}
	t.Setenv(sidecar.AppProbesEnv, `{"/app-health/app/livez":{"tcpSocket":{"port":8080},"timeoutSeconds":2}}`)
	o, _, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if p := o.AppProbes["/app-health/app/livez"]; p.TCPSocket == nil || p.TCPSocket.Port != 8080 || p.TimeoutSeconds != 2 {
		t.Fatalf("probes %+v", o.AppProbes)
	}

	t.Setenv(sidecar.AppProbesEnv, `{"/app-health/app/livez":`)
	var stderr strings.Builder
	if code := run(args, &stderr); code != 2 || !strings.Contains(stderr.String(), "TOKENKEEPER_APP_PROBES is not a JSON object") {
		t.Fatalf("invalid probes: exit %d %q, want 2 and a clear error", code, stderr.String())
	}
}

func TestHardeningFlags(t *testing.T) {
	o, _, err := parseFlags([]string{"--upstream=http://127.0.0.1:8080", "--bundle-dir=/b", "--allow-app-non-loopback",
		"--trust-forwarded-headers", "--max-conns=10", "--admin-max-conns=3", "--max-upstream-requests=7",
		"--unauthenticated-idle-timeout=2s", "--body-min-rate=500"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.AllowAppNonLoopback || !o.TrustForwardedHeaders || o.MaxConns != 10 || o.AdminMaxConns != 3 ||
		o.MaxUpstreamRequests != 7 || o.UnauthenticatedIdleTimeout != 2*time.Second || o.BodyMinRate != 500 {
		t.Fatalf("options %+v", o)
	}
	o, _, _ = parseFlags([]string{"--upstream=http://127.0.0.1:8080", "--bundle-dir=/b"}, io.Discard)
	if o.AllowAppNonLoopback || o.TrustForwardedHeaders || o.MaxConns != sidecar.DefaultMaxConns ||
		o.AdminMaxConns != sidecar.DefaultAdminMaxConns || o.MaxUpstreamRequests != sidecar.DefaultMaxUpstreamRequests {
		t.Fatalf("defaults %+v", o)
	}
}

func TestDistributionFlags(t *testing.T) {
	t.Setenv("POD_NAMESPACE", "shop")
	injected := []string{"--upstream=http://127.0.0.1:8080", "--bundle-dir=/etc/tokenkeeper/bundle", "--policy-name=api",
		"--distribution-url=https://tokenkeeper-distribution.tokenkeeper-system.svc:8443",
		"--distribution-token-file=/var/run/secrets/tokenkeeper.dev/distribution/token"}
	o, _, err := parseFlags(injected, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.DistributionURL != "https://tokenkeeper-distribution.tokenkeeper-system.svc:8443" ||
		o.DistributionTokenFile != "/var/run/secrets/tokenkeeper.dev/distribution/token" ||
		o.DistributionCAFile != "/etc/tokenkeeper/bundle/distribution-ca.crt" || o.Namespace != "shop" ||
		o.DistributionFallback != sidecar.DefaultDistributionFallback {
		t.Fatalf("the webhook's flags gave %+v", o)
	}
	o, _, err = parseFlags(append(injected, "--namespace=orders", "--distribution-ca-file=/ca.pem", "--distribution-fallback=2m"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.Namespace != "orders" || o.DistributionCAFile != "/ca.pem" || o.DistributionFallback != 2*time.Minute {
		t.Fatalf("explicit flags gave %+v", o)
	}
	// Standalone: no bundle directory, so no default CA file; New says what is missing.
	o, _, err = parseFlags([]string{"--upstream=http://127.0.0.1:8080", "--policy-file=p.yaml", "--policy-name=api",
		"--distribution-url=https://x", "--distribution-token-file=t"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sidecar.New(o); err == nil || !strings.Contains(err.Error(), "CA file") {
		t.Fatalf("New without a CA file: %v", err)
	}
}

// TestTheSidecarLinksNoKubernetesClient keeps the sidecar small and runnable outside
// Kubernetes (DESIGN.md, "Dependency direction").
func TestTheSidecarLinksNoKubernetesClient(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/tokenkeeper/tokenkeeper/internal/distribution") {
		t.Fatalf("the sidecar does not link the distribution client, or go list printed something else:\n%s", out)
	}
	forbidden := []string{"k8s.io/client-go", "sigs.k8s.io/controller-runtime/pkg/client",
		"sigs.k8s.io/controller-runtime/pkg/cache", "sigs.k8s.io/controller-runtime/pkg/manager",
		"google.golang.org/grpc", "github.com/tokenkeeper/tokenkeeper/controllers",
		"github.com/tokenkeeper/tokenkeeper/internal/distribution/server"}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("cmd/sidecar depends on %s", d)
			}
		}
	}
}
