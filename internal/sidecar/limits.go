package sidecar

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// limitListener accepts at most cap connections at a time: past it, Accept waits for one to
// close, and new connections wait in the kernel's backlog (then SYNs are dropped) instead of
// each costing the sidecar memory.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func newLimitListener(l net.Listener, n int) *limitListener {
	return &limitListener{Listener: l, sem: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &trackedConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// trackedConn is an accepted connection: it frees its slot when closed, and remembers
// whether it ever got an answer a token (or an anonymous route) earned.
type trackedConn struct {
	net.Conn
	release   func()
	closeOnce sync.Once

	earned    atomic.Bool // some request on it was allowed, anonymous or forbidden
	mu        sync.Mutex
	idleTimer *time.Timer // closes it while idle, for a connection that earned nothing
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.mu.Lock()
		if c.idleTimer != nil {
			c.idleTimer.Stop()
		}
		c.mu.Unlock()
		c.release()
	})
	return err
}

// record notes a request's outcome.
func (c *trackedConn) record(o outcome) {
	switch o {
	case outcomeAllowed, outcomeAnonymous, outcomeForbidden:
		if !c.earned.Load() {
			c.earned.Store(true)
		}
	}
}

type connKey struct{}

// connOf is the tracked connection a request came on, or nil.
func connOf(ctx context.Context) *trackedConn {
	c, _ := ctx.Value(connKey{}).(*trackedConn)
	return c
}

// connContext makes the connection reachable from its requests.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*trackedConn); ok {
		return context.WithValue(ctx, connKey{}, tc)
	}
	return ctx
}

// connState gives a connection that only ever got refusals (401s, 400s, 503s) a short idle
// timeout: an attacker holding thousands of them open costs memory, a client that got real
// answers keeps the full IdleTimeout.
func (s *Sidecar) connState(c net.Conn, st http.ConnState) {
	tc, ok := c.(*trackedConn)
	if !ok {
		return
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	switch st {
	case http.StateIdle:
		if !tc.earned.Load() {
			if tc.idleTimer == nil {
				tc.idleTimer = time.AfterFunc(s.opts.UnauthenticatedIdleTimeout, func() { tc.Close() })
			} else {
				tc.idleTimer.Reset(s.opts.UnauthenticatedIdleTimeout)
			}
		}
	case http.StateActive:
		if tc.idleTimer != nil {
			tc.idleTimer.Stop()
		}
	}
}

// tunnel is an upgraded connection (a WebSocket), with the token and the request it was
// opened with, so that it can be checked again when revocations, keys or the policy change.
type tunnel struct {
	claims       *verify.Claims
	token        string
	method, path string
	close        func()
}

// openTunnel registers an upgrade request's connection and closes it at the token's exp;
// the returned func undoes both when the request ends.
func (s *Sidecar) openTunnel(r *http.Request, eng *engine, claims *verify.Claims) func() {
	tc := connOf(r.Context())
	if tc == nil || claims == nil {
		return func() {}
	}
	tok, _ := eng.v.TokenFromRequest(r) // verified in handle
	t := &tunnel{claims: claims, token: tok, method: r.Method, path: r.URL.Path, close: func() { tc.Close() }}
	s.tunnelsMu.Lock()
	s.tunnels[t] = struct{}{}
	s.tunnelsMu.Unlock()
	var timer *time.Timer
	if !claims.Expiry.IsZero() {
		// The injected clock says how long the token has left; the timer runs on real time.
		timer = time.AfterFunc(max(claims.Expiry.Sub(s.now()), 0), func() {
			s.log.Debug("Closed a WebSocket tunnel at its token's exp", "remote", r.RemoteAddr)
			t.close()
		})
	}
	return func() {
		if timer != nil {
			timer.Stop()
		}
		s.tunnelsMu.Lock()
		delete(s.tunnels, t)
		s.tunnelsMu.Unlock()
	}
}

// closeTunnels closes every open tunnel whose claims match, and returns how many: the hook
// for closing tunnels from elsewhere (such as revocations pushed by distribution).
func (s *Sidecar) closeTunnels(match func(*verify.Claims) bool) int {
	return s.closeTunnelsWhere(func(t *tunnel) bool { return match(t.claims) })
}

func (s *Sidecar) closeTunnelsWhere(match func(*tunnel) bool) int {
	s.tunnelsMu.Lock()
	var hit []*tunnel
	for t := range s.tunnels {
		if match(t) {
			hit = append(hit, t)
		}
	}
	s.tunnelsMu.Unlock()
	for _, t := range hit {
		t.close()
	}
	return len(hit)
}

// recheckTunnels closes the tunnels whose token the current state no longer allows on their
// route: revoked (token, subject or key), its key withdrawn, or the policy changed. It runs
// after every change of revocations, keys or policy; a cached token verifies cheaply.
func (s *Sidecar) recheckTunnels() {
	s.tunnelsMu.Lock()
	empty := len(s.tunnels) == 0
	s.tunnelsMu.Unlock()
	if empty {
		return
	}
	eng := s.engine.Load()
	now := s.now()
	if n := s.closeTunnelsWhere(func(t *tunnel) bool {
		if eng == nil {
			return true
		}
		c, err := eng.v.Verify(t.token, now)
		return err != nil || eng.v.Decide(t.method, t.path, c).Outcome != verify.Allow
	}); n > 0 {
		s.log.Info("Closed WebSocket tunnels whose token is no longer allowed", "tunnels", n)
	}
}

// isUpgrade reports a request asking to switch protocols.
func isUpgrade(r *http.Request) bool {
	return len(r.Header["Upgrade"]) > 0
}

// CloseWrite lets the server half-close before closing (as it does after a 431), so the
// client reads the answer instead of a reset.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
