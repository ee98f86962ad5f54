// Command sidecar is tokenkeeper's verifying proxy. Injected into a pod it reads the policy
// bundle the manager renders:
//
//	sidecar --listen=:15080 --admin-listen=:15021 --upstream=http://127.0.0.1:8080 --bundle-dir=/etc/tokenkeeper/bundle
//
// With --distribution-url (and --distribution-token-file, --namespace; the CA defaults to the
// bundle's distribution-ca.crt) it then follows the manager's pushed snapshots.
//
// Outside Kubernetes it runs from files:
//
//	sidecar --listen=:8443 --upstream=http://127.0.0.1:8080 --policy-file=policy.yaml --jwks-file=jwks.json [--revocations-file=revocations.yaml]
//
// SIGTERM or SIGINT drains and stops it; a second signal stops it at once.
//
// The webhook passes the app's original probes in TOKENKEEPER_APP_PROBES (JSON; see
// sidecar.ParseAppProbes); the sidecar refuses to start when it is invalid.
//
// As the sidecar's exec readiness probe, so that the kubelet's Event says why:
//
//	sidecar probe --admin=127.0.0.1:15021 /readyz
//
// GETs the admin URL and exits 0 on 200; otherwise it prints the answer and exits 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/sidecar"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "probe" {
		return probe(args[1:], stderr)
	}
	opts, logger, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sidecar:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	context.AfterFunc(ctx, stop) // a second signal takes its default action: exit at once

	s, err := sidecar.New(opts)
	if err != nil {
		logger.Error("Failed to start", "err", err)
		return 1
	}
	if err := s.Run(ctx); err != nil {
		logger.Error("Stopped with an error", "err", err)
		return 1
	}
	return 0
}

// parseFlags turns the command line into Options and a logger.
func parseFlags(args []string, stderr io.Writer) (sidecar.Options, *slog.Logger, error) {
	var o sidecar.Options
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Listen, "listen", sidecar.DefaultListen, "Address the proxy serves traffic on.")
	fs.StringVar(&o.AdminListen, "admin-listen", sidecar.DefaultAdminListen, "Address of /healthz, /readyz and /metrics.")
	fs.StringVar(&o.Upstream, "upstream", "", "Base URL of the app, such as http://127.0.0.1:8080 (required).")
	bundleDir := fs.String("bundle-dir", "", "Directory of the policy bundle (policy.yaml, jwks.json, revocations.yaml); excludes the --*-file flags.")
	fs.StringVar(&o.PolicyName, "policy-name", "", "TokenPolicy the bundle is expected to hold (checked, for logs).")
	fs.StringVar(&o.PolicyFile, "policy-file", "", "TokenPolicy manifest (standalone mode).")
	fs.StringVar(&o.JWKSFile, "jwks-file", "", "JWKS of trusted public keys (standalone mode; optional when the policy names jwksURIs).")
	fs.StringVar(&o.RevocationsFile, "revocations-file", "", "RevocationList manifest (standalone mode; optional: a file that never existed revokes nothing, one that disappears or goes bad keeps the last good list).")
	fs.DurationVar(&o.PollInterval, "poll-interval", sidecar.DefaultPollInterval, "How often the files are checked for changes.")
	fs.IntVar(&o.MaxHeaderBytes, "max-header-bytes", sidecar.DefaultMaxHeaderBytes, "Largest request header block (plus Go's 4 KiB slack); beyond: 431.")
	fs.Int64Var(&o.MaxBodyBytes, "max-body-bytes", sidecar.DefaultMaxBodyBytes, "Largest request body; beyond: 413.")
	fs.DurationVar(&o.ReadHeaderTimeout, "read-header-timeout", sidecar.DefaultReadHeaderTimeout, "Time allowed to read a request's headers.")
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", sidecar.DefaultIdleTimeout, "How long an idle client keep-alive connection is kept.")
	fs.DurationVar(&o.BodyIdleTimeout, "body-idle-timeout", sidecar.DefaultBodyIdleTimeout, "How long to wait for more of a request body before answering 408; a body that keeps coming is never cut.")
	fs.Int64Var(&o.BodyMinRate, "body-min-rate", sidecar.DefaultBodyMinRate, "Bytes per second a request body must average once it has taken --body-idle-timeout; beyond: 408 (negative: no minimum).")
	fs.IntVar(&o.MaxConns, "max-conns", sidecar.DefaultMaxConns, "Open client connections of the proxy; past it new connections wait for one to close.")
	fs.IntVar(&o.AdminMaxConns, "admin-max-conns", sidecar.DefaultAdminMaxConns, "Open connections of the admin listener; past it new connections wait.")
	fs.DurationVar(&o.UnauthenticatedIdleTimeout, "unauthenticated-idle-timeout", sidecar.DefaultUnauthenticatedIdleTimeout, "Idle timeout of a client connection whose requests were all refused before a token verified (401s).")
	fs.IntVar(&o.MaxUpstreamRequests, "max-upstream-requests", sidecar.DefaultMaxUpstreamRequests, "Requests in flight to the app (WebSocket tunnels included); past it: 503 with Retry-After.")
	fs.BoolVar(&o.TrustForwardedHeaders, "trust-forwarded-headers", false, "Keep the client's X-Forwarded-Host/Proto and Forwarded and append to its X-Forwarded-For (for a trusted ingress in front); by default they are replaced with this hop's values.")
	fs.BoolVar(&o.AllowAppNonLoopback, "allow-app-non-loopback", false, "Become ready even while the app port listens beyond loopback, where other pods reach the app without a token: then only a NetworkPolicy protects it.")
	fs.DurationVar(&o.UpstreamTimeout, "upstream-timeout", sidecar.DefaultUpstreamTimeout, "Time the app has to send its response headers; beyond: 504.")
	fs.IntVar(&o.UpstreamIdleConns, "upstream-idle-conns", sidecar.DefaultUpstreamIdleConns, "Idle keep-alive connections kept to the app.")
	fs.DurationVar(&o.UpstreamIdleTimeout, "upstream-idle-timeout", sidecar.DefaultUpstreamIdleTimeout, "How long an idle connection to the app is kept; keep it below the app's own keep-alive timeout.")
	fs.DurationVar(&o.DrainDelay, "drain-delay", sidecar.DefaultDrainDelay, "After SIGTERM, how long to keep serving while /readyz reports 503.")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", sidecar.DefaultShutdownTimeout, "After SIGTERM, how long until remaining requests are cut off (drain delay included).")
	cacheSize := fs.Int("token-cache-size", sidecar.DefaultCacheSize, "Verified tokens remembered (0 disables the cache).")
	fs.Int64Var(&o.CacheBytes, "token-cache-bytes", sidecar.DefaultCacheBytes, "Bytes of token data the verified-token cache may hold (decoded payloads and keys), whatever --token-cache-size allows: a flood of large distinct tokens evicts instead of growing.")
	fs.DurationVar(&o.JWKSFetchTimeout, "jwks-fetch-timeout", sidecar.DefaultJWKSFetchTimeout, "Time allowed for one remote JWKS fetch.")
	fs.Int64Var(&o.JWKSMaxBytes, "jwks-max-bytes", sidecar.DefaultJWKSMaxBytes, "Largest remote JWKS document.")
	fs.DurationVar(&o.JWKSRefreshMin, "jwks-refresh-min", sidecar.DefaultJWKSRefreshMin, "Shortest refresh interval of a remote JWKS, whatever its Cache-Control says.")
	fs.DurationVar(&o.JWKSRefreshMax, "jwks-refresh-max", sidecar.DefaultJWKSRefreshMax, "Longest refresh interval of a remote JWKS.")
	fs.DurationVar(&o.JWKSRefresh, "jwks-refresh", sidecar.DefaultJWKSRefresh, "Refresh interval of a remote JWKS that sends no caching headers.")
	fs.DurationVar(&o.JWKSUnknownKIDInterval, "jwks-unknown-kid-interval", sidecar.DefaultJWKSUnknownKIDInterval, "A token with an unknown kid refreshes a remote JWKS at most this often.")
	fs.StringVar(&o.DistributionURL, "distribution-url", "", "Base URL (https) of the manager's distribution server; the sidecar starts from the files, then follows the policy's pushed snapshots.")
	fs.StringVar(&o.DistributionTokenFile, "distribution-token-file", "", "File holding the projected service-account token presented to the distribution server (re-read at every request).")
	caFile := fs.String("distribution-ca-file", "", "PEM CA bundle the distribution server's certificate must chain to, re-read when it changes (default: <bundle-dir>/"+distribution.CAKey+" with --bundle-dir).")
	fs.StringVar(&o.Namespace, "namespace", os.Getenv(distribution.NamespaceEnv), "Namespace of the TokenPolicy, for the distribution server (default: $"+distribution.NamespaceEnv+", which the webhook sets).")
	fs.DurationVar(&o.DistributionFallback, "distribution-fallback", sidecar.DefaultDistributionFallback, "After this long without word from the distribution server, fetch the policy's remote JWKS directly again.")
	var level slog.Level
	fs.TextVar(&level, "log-level", slog.LevelInfo, "Log level: debug, info, warn or error (debug logs every refused request, never its token).")
	format := fs.String("log-format", "json", "Log format: json or text.")
	if err := fs.Parse(args); err != nil {
		return o, nil, err
	}
	if fs.NArg() > 0 {
		return o, nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	switch {
	case *bundleDir != "" && (o.PolicyFile != "" || o.JWKSFile != "" || o.RevocationsFile != ""):
		return o, nil, errors.New("--bundle-dir and --policy-file/--jwks-file/--revocations-file exclude each other")
	case *bundleDir != "":
		o.PolicyFile, o.JWKSFile, o.RevocationsFile = sidecar.BundleFiles(*bundleDir)
	case o.PolicyFile == "":
		return o, nil, errors.New("set --bundle-dir, or --policy-file (with --jwks-file and optionally --revocations-file)")
	}
	o.DistributionCAFile = *caFile
	if *bundleDir != "" {
		o.DistributionFloorFile = filepath.Join(*bundleDir, distribution.VersionKey)
	}
	if o.DistributionCAFile == "" && *bundleDir != "" {
		o.DistributionCAFile = filepath.Join(*bundleDir, distribution.CAKey)
	}
	probes, err := sidecar.ParseAppProbes(os.Getenv(sidecar.AppProbesEnv))
	if err != nil {
		return o, nil, err
	}
	o.AppProbes = probes
	if *cacheSize == 0 {
		o.CacheSize = -1
	} else {
		o.CacheSize = *cacheSize
	}

	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch *format {
	case "json":
		h = slog.NewJSONHandler(stderr, hopts)
	case "text":
		h = slog.NewTextHandler(stderr, hopts)
	default:
		return o, nil, fmt.Errorf("--log-format %q: want json or text", *format)
	}
	logger := slog.New(h)
	if o.PolicyName != "" {
		logger = logger.With("policyName", o.PolicyName)
	}
	o.Logger = logger
	return o, logger, nil
}

// probe is "sidecar probe --admin=HOST:PORT PATH": exit 0 when the admin endpoint answers
// 200, else print why and exit 1 (the kubelet puts the output in the probe's Event).
func probe(args []string, out io.Writer) int {
	fs := flag.NewFlagSet("sidecar probe", flag.ContinueOnError)
	fs.SetOutput(out)
	admin := fs.String("admin", "127.0.0.1"+sidecar.DefaultAdminListen, "Address of the sidecar's admin endpoints.")
	timeout := fs.Duration("timeout", time.Second, "Time allowed for the answer.")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 || !strings.HasPrefix(fs.Arg(0), "/") {
		fmt.Fprintln(out, "sidecar probe: want one path, such as /readyz")
		return 2
	}
	c := &http.Client{
		Timeout:       *timeout,
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := c.Get("http://" + *admin + fs.Arg(0))
	if err != nil {
		fmt.Fprintln(out, "sidecar probe:", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusOK {
		return 0
	}
	msg := strings.TrimSpace(string(body))
	if msg == "" {
		msg = resp.Status
	}
	fmt.Fprintln(out, msg)
	return 1
}
