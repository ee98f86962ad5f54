package sidecar

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// WWW-Authenticate challenges (RFC 6750 §3): a request without a token gets no error code.
var (
	challengeMissing      = []string{`Bearer realm="tokenkeeper"`}
	challengeInvalid      = []string{`Bearer error="invalid_token"`}
	challengeInsufficient = []string{`Bearer error="insufficient_scope"`}
	contentTypeText       = []string{"text/plain; charset=utf-8"}
	noSniff               = []string{"nosniff"}
	noStore               = []string{"no-store"}
	retryAfter            = []string{"1"}
	connectionClose       = []string{"close"}
)

// requestState travels from the handler to the ReverseProxy's Rewrite and ErrorHandler in
// the request's context.
type requestState struct {
	eng     *engine
	claims  *verify.Claims // nil unless a token was verified
	outcome outcome
	// bodyIdle: the request body stopped arriving (set by the transport's goroutine).
	bodyIdle atomic.Bool
}

type stateKey struct{}

// Handler is the proxy: it verifies each request and forwards those allowed to the app.
func (s *Sidecar) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Sidecar) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	o := s.handle(w, r)
	s.metrics.request(o, time.Since(start))
	if tc := connOf(r.Context()); tc != nil {
		tc.record(o)
	}
}

// handle decides a request and, when it may pass, proxies it. It returns the outcome.
func (s *Sidecar) handle(w http.ResponseWriter, r *http.Request) outcome {
	if r.Method == http.MethodConnect {
		// A verifying proxy in front of one app never opens tunnels.
		refuse(w, http.StatusMethodNotAllowed, nil)
		return outcomeBadRequest
	}
	if err := verify.CheckTarget(r.Method, r.URL); err != nil {
		// The rules would match one path and the app might serve another.
		s.debugRejection(r, http.StatusBadRequest, "", err)
		refuse(w, http.StatusBadRequest, nil)
		return outcomeBadRequest
	}
	if err := verify.CheckMethodOverride(r.Header, r.URL); err != nil {
		// The rules match the request line's method; the app would serve another.
		s.debugRejection(r, http.StatusBadRequest, "", err)
		refuse(w, http.StatusBadRequest, nil)
		return outcomeBadRequest
	}
	eng := s.engine.Load()
	if eng == nil {
		w.Header()["Retry-After"] = retryAfter
		refuse(w, http.StatusServiceUnavailable, nil)
		return outcomeUnavailable
	}
	if why := s.staleReason(eng); why != "" {
		// spec.distribution.maxStaleness: what is enforced may be missing revocations.
		w.Header()["Retry-After"] = retryAfterStale
		refuseText(w, http.StatusServiceUnavailable, why+"\n")
		return outcomeUnavailable
	}
	v := eng.v
	rs := &requestState{eng: eng, outcome: outcomeAnonymous}
	if d := v.Decide(r.Method, r.URL.Path, nil); d.Outcome == verify.AllowAnonymous {
		// A token is optional here and a bad one cannot break a health check: a valid
		// token is forwarded with its claims as anywhere else, any other is removed in
		// rewrite, so the app never reads a token nobody verified.
		if v.Ready() {
			if tok, err := v.TokenFromRequest(r); err == nil {
				rs.claims, _ = v.Verify(tok, s.now())
			}
		}
	} else {
		if !v.Ready() {
			w.Header()["Retry-After"] = retryAfter
			refuse(w, http.StatusServiceUnavailable, nil)
			return outcomeUnavailable
		}
		tok, err := v.TokenFromRequest(r)
		if err == nil {
			rs.claims, err = v.Verify(tok, s.now())
		}
		if err != nil {
			reason := verify.ReasonOf(err)
			s.metrics.rejection(reason)
			challenge := challengeInvalid
			if reason == verify.ReasonMissingToken {
				challenge = challengeMissing
			}
			s.debugRejection(r, http.StatusUnauthorized, reason, err)
			refuse(w, http.StatusUnauthorized, challenge)
			return outcomeUnauthenticated
		}
		if d = v.Decide(r.Method, r.URL.Path, rs.claims); d.Outcome != verify.Allow {
			s.metrics.rejection(d.Reason)
			s.debugRejection(r, http.StatusForbidden, d.Reason, nil, "claim", d.Claim, "rule", d.Rule)
			refuse(w, http.StatusForbidden, challengeInsufficient)
			return outcomeForbidden
		}
		rs.outcome = outcomeAllowed
	}
	if r.ContentLength > s.opts.MaxBodyBytes {
		refuse(w, http.StatusRequestEntityTooLarge, nil)
		return outcomeBadRequest
	}
	return s.forward(w, r, rs)
}

// forward sends an allowed request to the app, within the cap on requests in flight.
func (s *Sidecar) forward(w http.ResponseWriter, r *http.Request, rs *requestState) outcome {
	if s.inflight.Add(1) > int64(s.opts.MaxUpstreamRequests) {
		s.inflight.Add(-1)
		w.Header()["Retry-After"] = retryAfter
		refuse(w, http.StatusServiceUnavailable, nil)
		return outcomeOverloaded
	}
	defer s.inflight.Add(-1)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &idleBody{ReadCloser: http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes),
			rc: http.NewResponseController(w), idle: s.opts.BodyIdleTimeout, minRate: s.opts.BodyMinRate,
			start: time.Now(), rs: rs}
	}
	if isUpgrade(r) {
		defer s.openTunnel(r, rs.eng, rs.claims)() // closed at the token's exp, or when revoked
	}
	s.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, rs)))
	return rs.outcome
}

// refuse answers a request the app never sees.
func refuse(w http.ResponseWriter, code int, challenge []string) {
	h := w.Header()
	if challenge != nil {
		h["Www-Authenticate"] = challenge
	}
	h["Content-Type"] = contentTypeText
	h["X-Content-Type-Options"] = noSniff
	h["Cache-Control"] = noStore
	w.WriteHeader(code)
	_, _ = w.Write(statusBodies[code])
}

// refuseText is refuse with a body of its own.
func refuseText(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h["Content-Type"] = contentTypeText
	h["X-Content-Type-Options"] = noSniff
	h["Cache-Control"] = noStore
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

var statusBodies = map[int][]byte{}

func init() {
	for _, c := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden,
		http.StatusMethodNotAllowed, http.StatusRequestTimeout, http.StatusRequestEntityTooLarge,
		http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout} {
		statusBodies[c] = []byte(http.StatusText(c) + "\n")
	}
}

// debugRejection logs a refusal at debug level: never the token, never the query string.
func (s *Sidecar) debugRejection(r *http.Request, code int, reason verify.Reason, err error, attrs ...any) {
	if !s.log.Enabled(r.Context(), slog.LevelDebug) {
		return
	}
	attrs = append(attrs, "status", code, "reason", string(reason), "method", r.Method,
		"path", r.URL.Path, "remote", r.RemoteAddr)
	var verr *verify.Error
	switch {
	case errors.As(err, &verr) && verr.KID() != "":
		attrs = append(attrs, "kid", truncate(verr.KID(), 64))
	case err != nil && verr == nil:
		attrs = append(attrs, "err", err.Error())
	}
	s.log.Debug("Refused a request", attrs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// newReverseProxy forwards to the upstream with the Rewrite below.
func (s *Sidecar) newReverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:      s.rewrite,
		Transport:    s.tr,
		BufferPool:   newBufferPool(),
		ErrorHandler: s.proxyError,
		ErrorLog:     slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// rewrite prepares the request for the app. It runs after the ReverseProxy removed the
// hop-by-hop headers, so a client naming X-User in "Connection" cannot make the proxy drop
// the X-User the sidecar sets.
func (s *Sidecar) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(s.upstream)
	pr.Out.Host = pr.In.Host // the app sees the host the client asked for
	// By default the forwarding headers are this hop's truth: X-Forwarded-For is the peer,
	// X-Forwarded-Host the Host, X-Forwarded-Proto http; the client's copies (ReverseProxy
	// drops X-Forwarded-* before Rewrite) and its Forwarded are removed, so a client cannot
	// claim another address or scheme to the app. Behind a trusted ingress, its values are
	// kept and the peer is appended to X-Forwarded-For.
	in, out := pr.In.Header, pr.Out.Header
	if s.opts.TrustForwardedHeaders {
		out["X-Forwarded-For"] = in["X-Forwarded-For"]
	}
	pr.SetXForwarded()
	if s.opts.TrustForwardedHeaders {
		for _, name := range forwardingHeaders {
			if v, ok := in[name]; ok {
				out[name] = v
			}
		}
	} else {
		delete(out, "Forwarded")
		for name := range out { // underscore spellings, which WSGI and Rack read as the same
			if strings.IndexByte(name, '_') >= 0 && isForwardingHeader(name) {
				delete(out, name)
			}
		}
	}

	rs, _ := pr.In.Context().Value(stateKey{}).(*requestState)
	if rs == nil {
		return // unreachable: handle always sets it
	}
	eng := rs.eng
	if len(eng.strip) > 0 {
		eng.stripClaimHeaders(out)
		if pr.Out.Trailer != nil {
			eng.stripClaimHeaders(pr.Out.Trailer) // an app may merge trailers into headers
		}
	}
	switch {
	case rs.claims == nil:
		verify.RemoveUnverifiedTokens(pr.Out, eng.src)
	case !eng.forwardToken:
		verify.RemoveToken(pr.Out, eng.src)
	}
	if up := out["Upgrade"]; len(up) > 0 && !strings.EqualFold(up[0], "websocket") {
		// Only WebSocket is tunnelled. After a 101 the client talks to the app directly,
		// and an h2c upgrade would carry requests this proxy never sees.
		delete(out, "Upgrade")
		delete(out, "Connection")
	}
	if rs.claims != nil {
		for name, values := range eng.v.ForwardHeaders(rs.claims) {
			out[name] = values
		}
	}
}

var forwardingHeaders = []string{"X-Forwarded-Host", "X-Forwarded-Proto", "Forwarded"}

// isForwardingHeader matches X-Forwarded-* and Forwarded in any spelling with "_" for "-".
func isForwardingHeader(name string) bool {
	n := strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	return n == "forwarded" || strings.HasPrefix(n, "x-forwarded-")
}

// stripClaimHeaders deletes every copy of the forwarded-claim headers from h, including
// spellings with underscores, which some frameworks (CGI, WSGI, Rack, PHP) read as the same
// header.
func (eng *engine) stripClaimHeaders(h http.Header) {
	for _, name := range eng.strip {
		delete(h, name)
	}
	for name := range h {
		if strings.IndexByte(name, '_') >= 0 {
			if _, ok := eng.stripSet[http.CanonicalHeaderKey(strings.ReplaceAll(name, "_", "-"))]; ok {
				delete(h, name)
			}
		}
	}
}

// proxyError answers when the app could not be reached or did not answer in time.
func (s *Sidecar) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	rs, _ := r.Context().Value(stateKey{}).(*requestState)
	if rs == nil {
		rs = &requestState{}
	}
	var tooLarge *http.MaxBytesError
	var netErr net.Error
	switch {
	case errors.As(err, &tooLarge):
		rs.outcome = outcomeBadRequest
		refuse(w, http.StatusRequestEntityTooLarge, nil)
	case rs.bodyIdle.Load():
		// Checked before the context: the failed read also cancelled it.
		rs.outcome = outcomeBadRequest
		w.Header()["Connection"] = connectionClose
		refuse(w, http.StatusRequestTimeout, nil)
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer. Not the app's fault.
		rs.outcome = outcomeClientClosed
		w.WriteHeader(http.StatusBadGateway)
	case errors.As(err, &netErr) && netErr.Timeout():
		rs.outcome = outcomeUpstreamError
		s.upstreamErrLog.log(s.log, "Timed out waiting for the upstream", err)
		refuse(w, http.StatusGatewayTimeout, nil)
	default:
		rs.outcome = outcomeUpstreamError
		s.upstreamErrLog.log(s.log, "Failed to reach the upstream", err)
		refuse(w, http.StatusBadGateway, nil)
	}
}

// sampledLog logs at most once a second, so that a down app does not flood the log; the
// request metrics count every failure.
type sampledLog struct{ last atomic.Int64 }

func (l *sampledLog) log(log *slog.Logger, msg string, err error) {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if now-last < int64(time.Second) || !l.last.CompareAndSwap(last, now) {
		return
	}
	log.Warn(msg, "err", err)
}

// newUpstreamTransport is tuned for one app on loopback: many idle keep-alive connections
// (Go keeps 2 per host by default), closed before the app would close them, no compression
// of its own (the proxy passes Accept-Encoding through untouched), no environment proxy,
// HTTP/1.1, default buffer sizes (memory per connection stays small).
func newUpstreamTransport(o Options) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          o.UpstreamIdleConns,
		MaxIdleConnsPerHost:   o.UpstreamIdleConns,
		IdleConnTimeout:       o.UpstreamIdleTimeout,
		ResponseHeaderTimeout: o.UpstreamTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}

// bufferPool recycles the ReverseProxy's copy buffers, which it would otherwise allocate
// (32 KiB) for every response.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }

// errBodyIdle is the error of a request body that stopped arriving.
var errBodyIdle = errors.New("the client sent the request body too slowly")

// idleBody moves the connection's read deadline forward before each read of the body: a
// body may take as long as it needs, but each wait for more of it is bounded.
//
// Once the body has taken idle in all, it must also average minRate bytes a second: the
// deadline for its next byte is when the average would fall below that, so a body
// dripped a byte just before each idle timeout is cut too.
type idleBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	idle    time.Duration
	minRate int64 // bytes per second; negative: no minimum
	start   time.Time
	n       int64         // bytes read so far
	rs      *requestState // told when the body stopped arriving
}

func (b *idleBody) Read(p []byte) (int, error) {
	deadline := time.Now().Add(b.idle)
	if b.minRate > 0 {
		due := b.start.Add(max(b.idle, time.Duration(float64(b.n+1)/float64(b.minRate)*float64(time.Second))))
		if due.Before(deadline) {
			deadline = due
		}
	}
	_ = b.rc.SetReadDeadline(deadline) // not every ResponseWriter supports it
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout():
		b.rs.bodyIdle.Store(true)
		return n, errBodyIdle
	case err != nil:
		b.clearDeadline()
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.clearDeadline()
	return b.ReadCloser.Close()
}

// clearDeadline lifts the deadline once the body is done: the server's background read,
// which notices a client going away while a long response streams, must not time out.
func (b *idleBody) clearDeadline() { _ = b.rc.SetReadDeadline(time.Time{}) }
