package jwks

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// MaxFetchBytes bounds a fetched JWKS: real ones are a few KiB.
const MaxFetchBytes = 1 << 20

// Source is one remote JWKS as a TokenPolicy names it: the URI and how it may be reached.
// Two policies naming the same Source share one fetch.
type Source struct {
	URI string
	// CABundle (PEM) replaces the system roots for an https URI: a private IdP.
	CABundle string
	// AllowInsecureHTTP permits a plain http URI.
	AllowInsecureHTTP bool
}

// Key identifies the source: the URI and everything that changes what answers it.
func (s Source) Key() string {
	ca := ""
	if s.CABundle != "" {
		sum := sha256.Sum256([]byte(s.CABundle))
		ca = hex.EncodeToString(sum[:8])
	}
	return fmt.Sprintf("%s|ca=%s|http=%t", s.URI, ca, s.AllowInsecureHTTP)
}

// Check refuses a source that is never fetched, before any connection: not an absolute
// http(s) URL, a userinfo part (credentials would reach logs, metrics and status), a
// fragment, plain http without the explicit opt-in, or a CA bundle that holds no certificate.
// Messages name the problem, never the URI's parts.
func (s Source) Check() error {
	u, err := url.Parse(s.URI)
	if err != nil {
		return errors.New("not a URL")
	}
	switch {
	case u.User != nil:
		return errors.New("userinfo (user:password@) is not allowed")
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.Opaque != "":
		return errors.New("not an http(s) URL")
	case u.Fragment != "":
		return errors.New("a fragment is not allowed")
	case u.Scheme == "http" && !s.AllowInsecureHTTP:
		return errors.New("plain http is refused: anyone on the network path could substitute keys; use https, or set allowInsecureHTTP: true")
	}
	if s.CABundle != "" {
		if u.Scheme != "https" {
			return errors.New("caBundle applies to https only")
		}
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(s.CABundle)) {
			return errors.New("caBundle holds no PEM certificate")
		}
	}
	return nil
}

// FetchError is a failed fetch in a fixed vocabulary that is safe to show a tenant: it
// never carries a response body, a resolved address or a dial error, so a status cannot be
// used to map what answers inside the cluster. Unwrap gives the cause, for the manager's log.
type FetchError struct {
	Reason string
	cause  error
}

func (e *FetchError) Error() string { return e.Reason }
func (e *FetchError) Unwrap() error { return e.cause }

// The fetch failures a status may name.
const (
	FailUnreachable     = "unreachable"
	FailTimedOut        = "timed out"
	FailAddressRefused  = "refused: the address is loopback, link-local or cloud metadata"
	FailRedirect        = "refused: redirected to another host"
	FailTLS             = "TLS handshake failed"
	FailNotJWKS         = "not a JWKS"
	FailTooLarge        = "not a JWKS: larger than 1 MiB"
	FailNoUsableKey     = "no usable signing key"
	failHTTPStatusFmt   = "HTTP %d"
	errAddressRefusedTx = "address not allowed"
)

var (
	errAddressRefused  = errors.New(errAddressRefusedTx)
	errRedirectRefused = errors.New("redirect to another host refused")
)

func fail(reason string, cause error) *FetchError { return &FetchError{Reason: reason, cause: cause} }

// classify maps a transport error to the vocabulary.
func classify(err error) *FetchError {
	var fe *FetchError
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var unknownAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var netErr net.Error
	switch {
	case errors.As(err, &fe):
		return fe
	case errors.Is(err, errAddressRefused):
		return fail(FailAddressRefused, err)
	case errors.Is(err, errRedirectRefused):
		return fail(FailRedirect, err)
	case errors.As(err, &certErr), errors.As(err, &recErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr):
		return fail(FailTLS, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return fail(FailTimedOut, err)
	}
	return fail(FailUnreachable, err)
}

// FetchPolicy is what the manager's JWKS fetches may reach.
type FetchPolicy struct {
	// AllowLocalAddresses permits loopback, link-local and cloud metadata addresses, which
	// are refused by default: a tenant must not make the manager call its own pod's
	// endpoints or the node's metadata service. For tests and single-node labs.
	AllowLocalAddresses bool
	// Timeout bounds one fetch, from dial to the last byte.
	Timeout time.Duration
}

// DefaultFetchTimeout bounds one fetch when FetchPolicy.Timeout is zero.
const DefaultFetchTimeout = 5 * time.Second

// metadataAddrs are cloud metadata services outside the link-local ranges (AWS's IPv6 one,
// Alibaba's); 169.254.169.254 is link-local already.
var metadataAddrs = []netip.Addr{netip.MustParseAddr("fd00:ec2::254"), netip.MustParseAddr("100.100.100.200")}

// LocalAddress reports whether ip is one a fetch refuses by default.
func LocalAddress(ip netip.Addr) bool {
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip.IsMulticast() {
		return true
	}
	for _, m := range metadataAddrs {
		if ip == m {
			return true
		}
	}
	return false
}

// dialControl checks the address actually dialed, after name resolution, so a name that
// resolves to a public address at check time and to 127.0.0.1 at dial time (DNS rebinding)
// is refused too.
func dialControl(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return errAddressRefused
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || LocalAddress(ip) {
		return errAddressRefused
	}
	return nil
}

// NewClient builds the HTTP client for one source's fetches: no proxy (the address check
// must see what answers), only the source's CA bundle when it has one, and redirects only
// to the same scheme and host.
func NewClient(p FetchPolicy, src Source) (*http.Client, error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if !p.AllowLocalAddresses {
		dialer.Control = dialControl
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if src.CABundle != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(src.CABundle)) {
			return nil, errors.New("caBundle holds no PEM certificate")
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{Transport: tr, Timeout: timeout, CheckRedirect: sameHostRedirects}, nil
}

// sameHostRedirects follows at most 3 redirects, each to the scheme and host (with port) the
// first request went to: an IdP may move its JWKS path, but not send the manager elsewhere.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	first := via[0].URL
	if len(via) > 3 || req.URL.User != nil || req.URL.Scheme != first.Scheme || !strings.EqualFold(req.URL.Host, first.Host) {
		return errRedirectRefused
	}
	return nil
}

// fetchDoc gets one JWKS document and checks that it is a JWKS. It returns the response
// headers for CacheLifetime. Every error is a *FetchError.
func fetchDoc(ctx context.Context, client *http.Client, uri string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, nil, fail(FailUnreachable, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	req.Header.Set("User-Agent", "tokenkeeper-manager")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, classify(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fail(fmt.Sprintf(failHTTPStatusFmt, resp.StatusCode), nil)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxFetchBytes+1))
	if err != nil {
		return nil, nil, classify(err)
	}
	if len(body) > MaxFetchBytes {
		return nil, nil, fail(FailTooLarge, nil)
	}
	if _, _, err := Usable(body, nil); err != nil {
		return nil, nil, fail(FailNotJWKS, err)
	}
	return body, resp.Header, nil
}
