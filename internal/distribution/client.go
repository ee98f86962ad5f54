package distribution

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of ClientConfig.
const (
	// DefaultHold is the ?timeout= a client asks for: the server's default hold.
	DefaultHold = 30 * time.Second
	// DefaultMaxBytes bounds a decoded answer: far above any snapshot a RevocationList
	// shard set can make, low enough that a broken server cannot exhaust a sidecar.
	DefaultMaxBytes    = 64 << 20
	DefaultMinBackoff  = 250 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
	maxRetryAfter      = 5 * time.Minute
	minPollInterval    = 50 * time.Millisecond // a server answering 304 at once cannot spin the client
	requestGrace       = 15 * time.Second      // beyond the hold, for the answer to arrive
	maxErrorBodyBytes  = 512
	maxTokenFileBytes  = 64 << 10
	maxCAFileBytes     = 1 << 20
	zeroDigestForcing  = "0000000000000000000000000000000000000000000000000000000000000000"
	userAgent          = "tokenkeeper-sidecar"
	contentEncodingGz  = "gzip"
	contentTypeMessage = "application/json"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// URL is the distribution server's base URL (https), such as
	// https://tokenkeeper-distribution.tokenkeeper-system.svc:8443.
	URL string
	// Namespace and Name are the TokenPolicy subscribed to.
	Namespace, Name string
	// TokenFile holds the bearer token (a projected service-account token of audience
	// Audience); it is read at every request, as the kubelet rotates it. Empty sends no
	// Authorization header.
	TokenFile string
	// CAFile holds the PEM CA bundle the server's certificate must chain to; nothing else
	// is trusted. It is read at every request and a changed one takes effect for the next
	// connection, so a CA renewal reaches the client without a restart.
	CAFile string
	// Apply enforces a snapshot (required). An error rejects it: the last good one stays.
	// It is called from Run's goroutine only, never concurrently.
	Apply func(*Snapshot) error
	// Heard, when set, is called each time the server says the client is current (an
	// applied snapshot, "not modified", or a snapshot not newer than the one held).
	Heard func(time.Time)
	// Hold is the ?timeout= asked for (the server caps it); 0 means DefaultHold.
	Hold time.Duration
	// MaxBytes bounds an answer, after gzip decoding; 0 means DefaultMaxBytes.
	MaxBytes int64
	// MinBackoff and MaxBackoff bound the jittered exponential wait after a failure;
	// 0 means the defaults. A Retry-After from the server replaces it.
	MinBackoff, MaxBackoff time.Duration
	// Now is the clock of the timestamps (nil: time.Now); waits use real timers.
	Now func() time.Time
	// Logger; nil discards logs.
	Logger *slog.Logger
	// Floor is how far the inputs of the bundle the sidecar started from had come
	// (distribution.VersionKey): before it holds a snapshot the client asks from there
	// and applies only a snapshot that dominates it, so a replica that lags behind the
	// bundle cannot take back a revocation the bundle already enforced.
	Floor Version
}

// ClientStats are a Client's counters, for metrics.
type ClientStats struct {
	// Version is the token of the snapshot applied last (zero before the first).
	Version Token
	// LastHeard is when the server last said the client is current (zero: never).
	LastHeard time.Time
	// Applied and Rejected count snapshots applied and refused (unparsable, invalid, a
	// delta that does not fit, or refused by Apply). Reconnects counts failed polls, each
	// followed by a wait.
	Applied, Rejected, Reconnects uint64
}

// Client subscribes to one TokenPolicy's snapshots: it long-polls the server with the
// token of the snapshot it holds, applies each newer snapshot the server sends, and never
// applies one that is not newer (a replica that lags behind the one it came from). See the
// package documentation for versions and deltas.
type Client struct {
	cfg      ClientConfig
	base     *url.URL
	endpoint string
	log      *slog.Logger

	// Touched by Run's goroutine only.
	held     *Snapshot // the snapshot applied last
	refused  *Token    // a newer snapshot Apply refused: asked past, never applied
	wantFull bool      // a delta did not fit: ask for a full snapshot once
	tlsMu    sync.Mutex
	caPEM    []byte
	tr       *http.Transport
	failing  bool

	version    atomic.Pointer[Token]
	lastHeard  atomic.Int64 // unix nanoseconds; 0: never
	applied    atomic.Uint64
	rejected   atomic.Uint64
	reconnects atomic.Uint64
}

// NewClient checks cfg and returns a Client; Run subscribes.
func NewClient(cfg ClientConfig) (*Client, error) {
	var errs []error
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		errs = append(errs, errors.New("URL: required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("URL: %w", err))
	case u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		errs = append(errs, fmt.Errorf("URL %q: want https://host[:port][/path], no query, fragment or user info", cfg.URL))
	}
	if cfg.Namespace == "" || cfg.Name == "" {
		errs = append(errs, errors.New("namespace and name: required"))
	}
	if strings.Contains(cfg.Namespace, "/") || strings.Contains(cfg.Name, "/") {
		errs = append(errs, errors.New("namespace and name: must not contain /"))
	}
	if cfg.CAFile == "" {
		errs = append(errs, errors.New("CA file: required (the server's CA is the only one trusted)"))
	}
	if cfg.Apply == nil {
		errs = append(errs, errors.New("Apply: required"))
	}
	if cfg.Hold < 0 || cfg.MaxBytes < 0 || cfg.MinBackoff < 0 || cfg.MaxBackoff < 0 {
		errs = append(errs, errors.New("durations and sizes must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Hold == 0 {
		cfg.Hold = DefaultHold
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	cfg.MinBackoff = min(cfg.MinBackoff, cfg.MaxBackoff)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c := &Client{cfg: cfg, base: u, log: cfg.Logger.With("tokenPolicy", cfg.Namespace+"/"+cfg.Name)}
	c.endpoint = strings.TrimSuffix(u.String(), "/") + Path + url.PathEscape(cfg.Namespace) + "/" + url.PathEscape(cfg.Name)
	return c, nil
}

// Stats returns the counters; safe from any goroutine.
func (c *Client) Stats() ClientStats {
	st := ClientStats{
		LastHeard: c.LastHeard(),
		Applied:   c.applied.Load(), Rejected: c.rejected.Load(), Reconnects: c.reconnects.Load(),
	}
	if v := c.version.Load(); v != nil {
		st.Version = *v
	}
	return st
}

// LastHeard is when the server last said the client is current; zero when it never did.
// It is cheap enough for every request.
func (c *Client) LastHeard() time.Time {
	if n := c.lastHeard.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Run polls until ctx is done, then returns nil.
func (c *Client) Run(ctx context.Context) error {
	defer c.closeIdle()
	failures := 0
	for ctx.Err() == nil {
		start := time.Now()
		retryAfter, err := c.poll(ctx)
		if ctx.Err() != nil {
			break
		}
		wait := minPollInterval - time.Since(start)
		switch {
		case errors.Is(err, errNotNewer):
			// Heard, but the server did not hold the poll: wait as after a failure,
			// without calling it one.
			failures++
			wait = c.backoff(failures)
		case err != nil:
			failures++
			c.reconnects.Add(1)
			wait = c.backoff(failures)
			if retryAfter > 0 {
				wait = retryAfter
			}
			if !c.failing {
				c.log.Warn("Failed to poll the distribution server; kept the last good snapshot", "url", c.endpoint,
					"err", err, "retryIn", wait.Round(time.Millisecond).String(), "version", c.heldToken().String())
			} else {
				c.log.Debug("Failed to poll the distribution server again", "err", err,
					"failures", failures, "retryIn", wait.Round(time.Millisecond).String())
			}
			c.failing = true
		default:
			if c.failing {
				c.log.Info("Reached the distribution server again", "afterFailures", failures)
			}
			failures, c.failing = 0, false
		}
		c.sleep(ctx, wait)
	}
	return nil
}

func (c *Client) sleep(ctx context.Context, wait time.Duration) {
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// backoff is the wait after n consecutive failures: doubling from MinBackoff to
// MaxBackoff, each between half and all of it at random so sidecars do not reconnect
// together.
func (c *Client) backoff(n int) time.Duration {
	d := c.cfg.MaxBackoff
	if n < 40 {
		d = min(c.cfg.MinBackoff<<(n-1), c.cfg.MaxBackoff)
	}
	if d/2 <= 0 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func (c *Client) heldToken() Token {
	if c.held == nil {
		return Token{}
	}
	return c.held.Token
}

// askToken is the ?version= of the next poll: the newest token the client knows (the one
// it holds, or a newer one it refused, so the server waits for something else), and with a
// digest the server cannot find when a delta did not fit, so that a full snapshot comes.
func (c *Client) askToken() string {
	var base *Token
	if c.held != nil {
		base = &c.held.Token
	}
	if c.refused != nil {
		base = c.refused
	}
	if base == nil {
		if c.cfg.Floor == (Version{}) {
			return ""
		}
		// No snapshot yet: ask from the bundle's floor, with a digest no server holds.
		return Token{Version: c.cfg.Floor, Digest: zeroDigestForcing}.String()
	}
	if c.wantFull {
		return Token{Version: base.Version, Digest: zeroDigestForcing}.String()
	}
	return base.String()
}

func (c *Client) heard() {
	if c.refused != nil {
		// The server's current snapshot is one Apply refused: what is enforced is not current.
		return
	}
	now := c.cfg.Now()
	c.lastHeard.Store(now.UnixNano())
	if c.cfg.Heard != nil {
		c.cfg.Heard(now)
	}
}

// errRejected marks a poll whose answer was refused; errNotNewer one answered at once
// with a snapshot not newer than the one held, which a server holding polls never does.
var (
	errRejected = errors.New("snapshot rejected")
	errNotNewer = errors.New("answered with a snapshot not newer than the one held")
)

// poll performs one long poll and handles its answer. retryAfter is the server's, if any.
func (c *Client) poll(ctx context.Context) (retryAfter time.Duration, err error) {
	tr, err := c.transport()
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Hold+requestGrace)
	defer cancel()
	q := url.Values{}
	q.Set("version", c.askToken())
	q.Set("timeout", strconv.Itoa(int(c.cfg.Hold/time.Second)))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint+"?"+q.Encode(), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", contentTypeMessage)
	// Set explicitly, so the transport leaves the body as sent and the size cap below
	// applies to what is decoded.
	req.Header.Set("Accept-Encoding", contentEncodingGz)
	req.Header.Set("User-Agent", userAgent)
	if c.cfg.TokenFile != "" {
		tok, err := readBearer(c.cfg.TokenFile)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Transport: tr, CheckRedirect: noRedirects}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return 0, c.handle(resp)
	case http.StatusNotModified:
		c.heard()
		return 0, nil
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		return parseRetryAfter(resp.Header.Get("Retry-After")), statusError(resp)
	default:
		return 0, statusError(resp)
	}
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes))
	msg := strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
	what := ""
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		what = " (the server did not accept the token: check --distribution-token-file and its audience)"
	case http.StatusForbidden:
		what = " (the token's service account may not read this namespace)"
	case http.StatusNotFound:
		what = " (no such TokenPolicy on the server)"
	}
	return fmt.Errorf("status %s%s: %s", resp.Status, what, msg)
}

func parseRetryAfter(v string) time.Duration {
	secs, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || secs < 0 {
		return 0
	}
	return min(time.Duration(secs)*time.Second, maxRetryAfter)
}

// handle reads a 200 and applies what it carries if it is newer than what is held.
func (c *Client) handle(resp *http.Response) error {
	m, err := c.decode(resp)
	if err != nil {
		return c.reject(err, nil)
	}
	if m.Namespace != c.cfg.Namespace || m.Name != c.cfg.Name {
		return c.reject(fmt.Errorf("the answer is for %s/%s", m.Namespace, m.Name), nil)
	}
	wasFull := c.wantFull
	snap, err := Resolve(m, c.held)
	if err != nil {
		if m.Delta != nil && !wasFull {
			// The delta does not fit what is held: never patch a wrong set, ask for all
			// of it at once (not a failure of the server: no wait).
			c.wantFull = true
			c.log.Warn("Rejected a delta that does not fit the snapshot held; asking for a full one",
				"version", m.Version, "held", c.heldToken().String(), "err", err)
			c.rejected.Add(1)
			return nil
		}
		return c.reject(err, nil)
	}
	c.wantFull = false
	if c.refused != nil && snap.Token == *c.refused {
		return nil // still the one refused; wait for the next
	}
	if c.held != nil && snap.Token.Digest == c.held.Token.Digest && snap.Token.Version.Dominates(c.held.Token.Version) {
		// The content held, at a newer version (a change undone, or one that did not
		// touch this policy's content): nothing to apply, but this is the version to
		// resume from, and a snapshot refused meanwhile is no longer current.
		held := *c.held
		held.Token = snap.Token
		c.held, c.refused = &held, nil
		c.version.Store(&held.Token)
		c.heard()
		return nil
	}
	if c.held == nil && !snap.Token.Version.Dominates(c.cfg.Floor) {
		// Older than the bundle in force: a replica that lags. Keep enforcing the bundle.
		c.log.Debug("Kept the bundle; the server sent a snapshot older than it",
			"floor", c.cfg.Floor.String(), "sent", snap.Token.String())
		return errNotNewer
	}
	if !Accepts(heldPtr(c.held), snap.Token) {
		// Not newer (asked for a full snapshot, or a server behind the one this came
		// from that ignored the version): the server is reachable and has nothing
		// newer; keep what is held.
		c.log.Debug("Kept the snapshot held; the server sent one that is not newer",
			"held", c.heldToken().String(), "sent", snap.Token.String())
		c.heard()
		if wasFull {
			return nil
		}
		return errNotNewer // a server that does not hold: do not ask it again at once
	}
	if err := c.cfg.Apply(snap); err != nil {
		tok := snap.Token
		c.refused = &tok
		return c.reject(err, snap)
	}
	c.held, c.refused = snap, nil
	tok := snap.Token
	c.version.Store(&tok)
	c.applied.Add(1)
	c.heard()
	c.log.Debug("Applied a snapshot", "version", tok.String(), "delta", m.Delta != nil)
	return nil
}

func heldPtr(s *Snapshot) *Token {
	if s == nil {
		return nil
	}
	return &s.Token
}

func (c *Client) reject(err error, snap *Snapshot) error {
	attrs := []any{"err", err, "held", c.heldToken().String()}
	if snap != nil {
		attrs = append(attrs, "version", snap.Token.String())
	}
	c.log.Error("Rejected a snapshot from the distribution server; kept the last good one", attrs...)
	c.rejected.Add(1) // after the log, which a reader of the counter may look for
	return fmt.Errorf("%w: %v", errRejected, err)
}

// decode reads a Message, gunzipping it when the server did, within MaxBytes decoded.
func (c *Client) decode(resp *http.Response) (*Message, error) {
	limit := c.cfg.MaxBytes
	var r io.Reader = resp.Body
	switch enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case contentEncodingGz:
		zr, err := gzip.NewReader(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("content encoding %q: want gzip or none", enc)
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("the answer is larger than %d MiB decoded", limit>>20)
	}
	m := &Message{}
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("decoding the answer: %w", err)
	}
	return m, nil
}

// readBearer reads the token file; the kubelet replaces it as the token rotates.
func readBearer(path string) (string, error) {
	data, err := readSmall(path, maxTokenFileBytes)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(data))
	if tok == "" || strings.ContainsAny(tok, " \r\n\t") {
		return "", fmt.Errorf("token file %s: empty or not one token", path)
	}
	return tok, nil
}

func readSmall(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return data, nil
}

// transport returns the transport trusting the CA file's current content, building a new
// one when the file changed. A changed file that holds no certificate keeps the last good
// CA (logged); before any good one, it is an error.
func (c *Client) transport() (*http.Transport, error) {
	c.tlsMu.Lock()
	defer c.tlsMu.Unlock()
	data, err := readSmall(c.cfg.CAFile, maxCAFileBytes)
	if err != nil {
		if c.tr != nil {
			c.log.Debug("Failed to read the CA file; kept the CA loaded", "file", c.cfg.CAFile, "err", err)
			return c.tr, nil
		}
		return nil, fmt.Errorf("CA file: %w", err)
	}
	if c.tr != nil && bytes.Equal(data, c.caPEM) {
		return c.tr, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		if c.tr != nil {
			c.log.Warn("The CA file holds no PEM certificate; kept the CA loaded", "file", c.cfg.CAFile)
			c.caPEM = data // reported once per content
			return c.tr, nil
		}
		return nil, fmt.Errorf("CA file %s: no PEM certificate", c.cfg.CAFile)
	}
	if c.tr != nil {
		c.tr.CloseIdleConnections()
		c.log.Info("Loaded a changed CA file for the distribution server", "file", c.cfg.CAFile)
	}
	c.caPEM = data
	c.tr = &http.Transport{
		Proxy:       nil, // in-cluster: never through a proxy the app's environment names
		DialContext: (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig: &tls.Config{
			RootCAs:    pool,
			ServerName: c.base.Hostname(),
			MinVersion: tls.VersionTLS12,
		},
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConns:        1,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return c.tr, nil
}

func (c *Client) closeIdle() {
	c.tlsMu.Lock()
	defer c.tlsMu.Unlock()
	if c.tr != nil {
		c.tr.CloseIdleConnections()
	}
}
