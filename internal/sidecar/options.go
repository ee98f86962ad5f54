package sidecar

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/policy"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// Defaults of Options (and of the sidecar's flags).
const (
	DefaultListen            = ":15080"
	DefaultAdminListen       = ":15021"
	DefaultPollInterval      = time.Second
	DefaultMaxHeaderBytes    = 16 << 10
	DefaultMaxBodyBytes      = 10 << 20
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultBodyIdleTimeout   = 30 * time.Second
	DefaultIdleTimeout       = 90 * time.Second
	// DefaultUpstreamIdleTimeout is below the keep-alive timeouts of common app servers
	// (Node and uvicorn 5s, Puma and Tomcat 20s): the proxy must drop an idle connection
	// before the app does, or a request sent on it as the app closes it fails (502).
	DefaultUpstreamIdleTimeout = 4 * time.Second
	DefaultUpstreamTimeout     = 30 * time.Second
	DefaultDrainDelay          = 5 * time.Second
	DefaultShutdownTimeout     = 15 * time.Second
	DefaultCacheSize           = verify.DefaultCacheSize
	DefaultCacheBytes          = verify.DefaultCacheBytes

	DefaultJWKSFetchTimeout       = 5 * time.Second
	DefaultJWKSMaxBytes           = 1 << 20
	DefaultJWKSRefreshMin         = 30 * time.Second
	DefaultJWKSRefreshMax         = time.Hour
	DefaultJWKSRefresh            = 5 * time.Minute
	DefaultJWKSUnknownKIDInterval = 10 * time.Second

	// DefaultDistributionFallback is three poll holds: a sidecar hears from the manager at
	// least once per hold (30s), so this outlasts a reconnect or two before the sidecar
	// goes back to fetching remote JWKS itself.
	DefaultDistributionFallback = 90 * time.Second

	// DefaultMaxConns bounds the proxy's client connections: an idle one costs some 25 KiB
	// (measured: 3000 after a 401 took the RSS from 19 to 95 MB; 2048 after a 200, with the
	// idle connections to the app they left, from 15 to 86 MB), inside a 128Mi limit.
	// DefaultAdminMaxConns bounds the admin port's (probes and scrapes): enough that a
	// client holding connections open cannot easily starve the kubelet's probes.
	DefaultMaxConns      = 2048
	DefaultAdminMaxConns = 256
	// DefaultUnauthenticatedIdleTimeout is the idle timeout of a connection that never got
	// an answer a token or an anonymous route earned (only 401s and the like).
	DefaultUnauthenticatedIdleTimeout = 5 * time.Second
	// DefaultBodyMinRate is the average rate a request body must keep once it has taken
	// BodyIdleTimeout, so that a body dripped a byte at a time cannot hold an app worker.
	DefaultBodyMinRate = 1024
	// DefaultMaxUpstreamRequests bounds the requests in flight to the app; past it: 503.
	DefaultMaxUpstreamRequests = 1024

	// DefaultUpstreamIdleConns is how many idle keep-alive connections to the app are kept.
	// Go's default of 2 per host makes a busy proxy dial constantly and halves throughput.
	DefaultUpstreamIdleConns = 1024
)

// Options configure a Sidecar. Zero durations and sizes take the defaults above.
type Options struct {
	// Listen and AdminListen are the addresses Run listens on: app traffic, and /healthz,
	// /readyz and /metrics.
	Listen, AdminListen string
	// Upstream is the app's base URL, such as http://127.0.0.1:8080.
	Upstream string

	// PolicyFile holds a TokenPolicy manifest (required). JWKSFile holds a JWKS; empty means
	// keys come from the policy's jwksURIs only. RevocationsFile holds a RevocationList
	// manifest; empty or absent means nothing is revoked. BundleFiles names them in a bundle
	// directory.
	PolicyFile, JWKSFile, RevocationsFile string
	// PolicyName is the TokenPolicy the bundle is expected to hold, for logs and a sanity
	// check; empty skips the check.
	PolicyName string
	// PollInterval is how often the files are checked for changes, and how often remote
	// JWKS are checked for a due refresh.
	PollInterval time.Duration

	// MaxHeaderBytes bounds request headers (Go allows 4 KiB of slack); beyond: 431.
	MaxHeaderBytes int
	// MaxBodyBytes bounds request bodies; beyond: 413.
	MaxBodyBytes int64
	// ReadHeaderTimeout bounds reading a request's headers; IdleTimeout a keep-alive
	// connection's wait for the next request.
	ReadHeaderTimeout, IdleTimeout time.Duration
	// BodyIdleTimeout bounds each wait for more of a request body (beyond: 408), so a
	// client that stops sending cannot hold a connection to the app; a long upload that
	// keeps sending is not cut.
	BodyIdleTimeout time.Duration
	// BodyMinRate (bytes per second) is the average a request body must keep once it has
	// taken BodyIdleTimeout; beyond: 408. Negative disables it.
	BodyMinRate int64
	// UpstreamTimeout bounds the wait for the app's response headers; beyond: 504.
	UpstreamTimeout time.Duration
	// UpstreamIdleConns is the number of idle connections kept to the app, for at most
	// UpstreamIdleTimeout each.
	UpstreamIdleConns   int
	UpstreamIdleTimeout time.Duration

	// MaxConns and AdminMaxConns bound the open client connections of the proxy and of the
	// admin listener; past them new connections wait (in the kernel's backlog) for one to
	// close.
	MaxConns, AdminMaxConns int
	// UnauthenticatedIdleTimeout replaces IdleTimeout for a connection whose requests were
	// all refused before a token verified (401, 400, 503), so that idle connections cost an
	// attacker without a token more than they cost the sidecar. It is also the admin
	// port's idle timeout.
	UnauthenticatedIdleTimeout time.Duration
	// MaxUpstreamRequests bounds the requests in flight to the app (open WebSocket tunnels
	// included); past it: 503 with Retry-After.
	MaxUpstreamRequests int

	// TrustForwardedHeaders keeps the client's X-Forwarded-Host, X-Forwarded-Proto and
	// Forwarded and appends to its X-Forwarded-For, for an ingress in front that sets them.
	// Off, they are removed and set from this hop: what the app reads is true.
	TrustForwardedHeaders bool

	// AppProbes are the app's probes the webhook moved to the admin port, by admin path
	// (see ParseAppProbes).
	AppProbes map[string]AppProbe
	// AllowAppNonLoopback turns off the check that the app port listens on loopback only;
	// without it the sidecar is not ready while any pod could reach the app past it. Apps
	// that cannot bind 127.0.0.1 then rely on a NetworkPolicy.
	AllowAppNonLoopback bool

	// DrainDelay is how long the sidecar keeps serving, unready, after it is told to stop
	// (zero: stop at once; the command line defaults it to DefaultDrainDelay);
	// ShutdownTimeout bounds the whole stop, drain delay included.
	DrainDelay, ShutdownTimeout time.Duration

	// CacheSize bounds the verified-token cache: 0 means DefaultCacheSize, negative
	// disables it.
	CacheSize int
	// CacheBytes bounds what the verified-token cache holds: 0 means DefaultCacheBytes.
	CacheBytes int64

	// JWKSFetchTimeout and JWKSMaxBytes bound one remote JWKS fetch.
	JWKSFetchTimeout time.Duration
	JWKSMaxBytes     int64
	// A remote JWKS is refreshed after its Cache-Control max-age (or Expires) clamped to
	// [JWKSRefreshMin, JWKSRefreshMax], or after JWKSRefresh when it says nothing.
	JWKSRefreshMin, JWKSRefreshMax, JWKSRefresh time.Duration
	// JWKSUnknownKIDInterval: a token with an unknown kid refreshes a remote JWKS at most
	// this often (per URI).
	JWKSUnknownKIDInterval time.Duration
	// HTTPClient fetches remote JWKS; nil means a client honouring the proxy environment
	// variables. Its timeout is JWKSFetchTimeout either way.
	HTTPClient *http.Client

	// DistributionURL is the manager's distribution server (https); empty runs from the
	// files alone. With it the sidecar starts from the files, then subscribes to the
	// snapshots of Namespace/PolicyName; once one is applied the stream is the source of
	// the policy, keys and revocations (see the package documentation).
	DistributionURL string
	// DistributionTokenFile holds the bearer token presented to the server (the projected
	// service-account token, re-read at every request); DistributionCAFile the PEM CA the
	// server's certificate must chain to (re-read when it changes). Both are required
	// with DistributionURL, and so are Namespace and PolicyName.
	DistributionTokenFile, DistributionCAFile string
	// DistributionFloorFile holds the bundle's distribution.VersionKey: the sidecar applies
	// no snapshot older than the bundle it started from. Empty or absent: no floor.
	DistributionFloorFile string
	// Namespace is the TokenPolicy's namespace.
	Namespace string
	// DistributionFallback: after this long without word from the manager the sidecar
	// fetches the policy's remote JWKS itself again (while it hears, the manager's
	// snapshots carry them).
	DistributionFallback time.Duration

	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards logs.
	Logger *slog.Logger

	// jitter shortens refresh intervals a little; nil means up to a tenth at random. Tests
	// make it exact.
	jitter func(time.Duration) time.Duration
	// distributionMaxBackoff caps the waits after failed polls; zero: the client's default.
	distributionMaxBackoff time.Duration
}

// BundleFiles are the files of a policy bundle directory as mounted into an injected pod.
func BundleFiles(dir string) (policyFile, jwksFile, revocationsFile string) {
	return filepath.Join(dir, policy.BundlePolicy), filepath.Join(dir, policy.BundleJWKS),
		filepath.Join(dir, policy.BundleRevocations)
}

// withDefaults fills in zero values and checks what cannot work.
func (o Options) withDefaults() (Options, error) {
	def(&o.Listen, DefaultListen)
	def(&o.AdminListen, DefaultAdminListen)
	def(&o.PollInterval, DefaultPollInterval)
	def(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&o.IdleTimeout, DefaultIdleTimeout)
	def(&o.BodyIdleTimeout, DefaultBodyIdleTimeout)
	def(&o.UpstreamTimeout, DefaultUpstreamTimeout)
	def(&o.UnauthenticatedIdleTimeout, DefaultUnauthenticatedIdleTimeout)
	def(&o.UpstreamIdleTimeout, DefaultUpstreamIdleTimeout)
	def(&o.ShutdownTimeout, DefaultShutdownTimeout)
	def(&o.JWKSFetchTimeout, DefaultJWKSFetchTimeout)
	def(&o.JWKSRefreshMin, DefaultJWKSRefreshMin)
	def(&o.JWKSRefreshMax, DefaultJWKSRefreshMax)
	def(&o.JWKSRefresh, DefaultJWKSRefresh)
	def(&o.JWKSUnknownKIDInterval, DefaultJWKSUnknownKIDInterval)
	def(&o.MaxHeaderBytes, DefaultMaxHeaderBytes)
	def(&o.MaxBodyBytes, DefaultMaxBodyBytes)
	def(&o.UpstreamIdleConns, DefaultUpstreamIdleConns)
	def(&o.BodyMinRate, DefaultBodyMinRate)
	def(&o.MaxConns, DefaultMaxConns)
	def(&o.AdminMaxConns, DefaultAdminMaxConns)
	def(&o.MaxUpstreamRequests, DefaultMaxUpstreamRequests)
	def(&o.CacheSize, DefaultCacheSize)
	def(&o.CacheBytes, DefaultCacheBytes)
	def(&o.JWKSMaxBytes, DefaultJWKSMaxBytes)
	def(&o.DistributionFallback, DefaultDistributionFallback)
	if o.jitter == nil {
		o.jitter = defaultJitter
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}

	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if o.PolicyFile == "" {
		bad("no policy file")
	}
	if _, err := upstreamURL(o.Upstream); err != nil {
		bad("upstream: %v", err)
	}
	if o.MaxHeaderBytes < 0 || o.MaxBodyBytes < 0 || o.JWKSMaxBytes < 0 || o.UpstreamIdleConns < 0 {
		bad("sizes must not be negative")
	}
	if o.MaxConns < 0 || o.AdminMaxConns < 0 || o.MaxUpstreamRequests < 0 {
		bad("connection and request caps must not be negative")
	}
	if err := checkAppProbes(o.AppProbes); err != nil {
		bad("app probes: %v", err)
	}
	for name, d := range map[string]time.Duration{
		"poll interval": o.PollInterval, "read-header timeout": o.ReadHeaderTimeout,
		"idle timeout": o.IdleTimeout, "body idle timeout": o.BodyIdleTimeout, "upstream timeout": o.UpstreamTimeout,
		"upstream idle timeout": o.UpstreamIdleTimeout, "unauthenticated idle timeout": o.UnauthenticatedIdleTimeout,
		"shutdown timeout": o.ShutdownTimeout, "JWKS fetch timeout": o.JWKSFetchTimeout,
		"JWKS refresh": o.JWKSRefresh, "JWKS minimum refresh": o.JWKSRefreshMin,
		"JWKS unknown-kid interval": o.JWKSUnknownKIDInterval,
	} {
		if d < 0 {
			bad("%s %s is negative", name, d)
		}
	}
	if o.DrainDelay < 0 {
		bad("drain delay %s is negative", o.DrainDelay)
	}
	if o.DrainDelay >= o.ShutdownTimeout {
		bad("drain delay %s leaves nothing of the shutdown timeout %s", o.DrainDelay, o.ShutdownTimeout)
	}
	if o.DistributionURL != "" {
		switch {
		case o.DistributionTokenFile == "":
			bad("distribution: a token file is required")
		case o.DistributionCAFile == "":
			bad("distribution: a CA file is required")
		case o.Namespace == "" || o.PolicyName == "":
			bad("distribution: the namespace and the policy name are required")
		}
		if o.DistributionFallback < 0 {
			bad("distribution fallback %s is negative", o.DistributionFallback)
		}
	}
	if o.JWKSRefreshMax < o.JWKSRefreshMin {
		bad("JWKS maximum refresh %s is below the minimum %s", o.JWKSRefreshMax, o.JWKSRefreshMin)
	}
	return o, errors.Join(errs...)
}

// upstreamURL parses the app's base URL: http or https, a host, no query or fragment.
func upstreamURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("not set")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q: scheme must be http or https", s)
	case u.Host == "":
		return nil, fmt.Errorf("%q: no host", s)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		return nil, fmt.Errorf("%q: no query, fragment or user info allowed", s)
	}
	return u, nil
}

// def sets *p to d when it is zero: an unset option takes its default.
func def[T comparable](p *T, d T) {
	var zero T
	if *p == zero {
		*p = d
	}
}
