package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminShutdownTimeout bounds the admin server's stop, after the proxy's.
const adminShutdownTimeout = time.Second

// AdminHandler serves /healthz (200 while the process runs), /readyz (200 once a valid
// policy and a key are loaded, the manager was heard within the policy's maxStaleness and
// the app port listens on loopback only, 503 before and while draining), /startupz (as
// /readyz without the staleness and app port checks, for the startup probe: the app starts
// only after it passes; a restart would only lose the last good snapshot), /app-health/<container>/<kind> (the app's
// probes, forwarded to it on loopback) and /metrics.
func (s *Sidecar) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header()["Content-Type"] = contentTypeText
		_, _ = w.Write([]byte("ok\n"))
	})
	status := func(w http.ResponseWriter, ok bool, why string) {
		w.Header()["Content-Type"] = contentTypeText
		w.Header()["Cache-Control"] = noStore
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(why + "\n"))
	}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if s.loopback != nil {
			s.loopback.check() // cheap, and the app may have started since the last tick
		}
		ok, why := s.Ready()
		status(w, ok, why)
	})
	startup := func(w http.ResponseWriter, _ *http.Request) {
		ok, why := s.Started()
		status(w, ok, why)
	}
	mux.HandleFunc("GET /startupz", startup)
	mux.HandleFunc("GET /readyz-startup", startup) // the name CONTRACTS.md first gave it
	mux.HandleFunc("GET "+appHealthPrefix, s.prober.serveHTTP)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}))
	return mux
}

// Run listens on Options.Listen and Options.AdminListen and serves until ctx is done, then
// drains (see Serve).
func (s *Sidecar) Run(ctx context.Context) error {
	pl, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("listening for traffic: %w", err)
	}
	al, err := net.Listen("tcp", s.opts.AdminListen)
	if err != nil {
		pl.Close()
		return fmt.Errorf("listening for the admin endpoints: %w", err)
	}
	return s.Serve(ctx, pl, al)
}

// Serve serves traffic on proxyLn and the admin endpoints on adminLn, and polls the files
// and remote JWKS, until ctx is done. Then it drains: /readyz answers 503 at once, traffic
// is still served (without keep-alive) for DrainDelay so that load balancers stop sending
// it, then the proxy shuts down gracefully, forcing connections closed at ShutdownTimeout
// after ctx was done, and the admin server last. It returns nil after a requested stop, or
// the error that stopped a server.
func (s *Sidecar) Serve(ctx context.Context, proxyLn, adminLn net.Listener) error {
	defer s.cancel()
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	var http1 http.Protocols // HTTP/2 is off: plain HTTP/1.1 only
	http1.SetHTTP1(true)
	proxySrv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    s.opts.MaxHeaderBytes,
		Protocols:         &http1,
		ErrorLog:          errLog,
		ConnState:         s.connState,
		ConnContext:       connContext,
	}
	adminSrv := &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		// Probes do not reuse connections and scrapes come every 15s or more: holding
		// admin connections idle only serves someone filling AdminMaxConns.
		IdleTimeout: s.opts.UnauthenticatedIdleTimeout,
		Protocols:   &http1,
		ErrorLog:    errLog,
	}
	errc := make(chan error, 2)
	serve := func(srv *http.Server, ln net.Listener, what string) {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serving %s: %w", what, err)
		}
	}
	go serve(proxySrv, newLimitListener(proxyLn, s.opts.MaxConns), "traffic")
	go serve(adminSrv, newLimitListener(adminLn, s.opts.AdminMaxConns), "the admin endpoints")
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watchDone, distDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watchDone)
		s.watch(watchCtx)
	}()
	go func() {
		defer close(distDone)
		s.runDistribution(watchCtx)
	}()
	ready, why := s.Ready()
	s.log.Info("Started serving", "listen", proxyLn.Addr().String(), "admin", adminLn.Addr().String(),
		"upstream", s.upstream.String(), "ready", ready, "readiness", why)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		s.log.Error("Stopped serving after a server failed", "err", err)
	}
	deadline := time.Now().Add(s.opts.ShutdownTimeout)
	s.draining.Store(true)
	proxySrv.SetKeepAlivesEnabled(false) // each connection closes after its current response
	if err == nil && s.opts.DrainDelay > 0 {
		s.log.Info("Draining: reporting unready and still serving", "delay", s.opts.DrainDelay.String())
		t := time.NewTimer(s.opts.DrainDelay)
		select {
		case <-t.C:
		case err = <-errc:
			t.Stop()
		}
	}
	sctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if serr := proxySrv.Shutdown(sctx); serr != nil {
		s.log.Warn("Closed requests still in flight at the shutdown timeout", "err", serr)
		proxySrv.Close()
	}
	actx, acancel := context.WithTimeout(context.Background(), adminShutdownTimeout)
	defer acancel()
	if aerr := adminSrv.Shutdown(actx); aerr != nil {
		adminSrv.Close()
	}
	stopWatch()
	<-watchDone
	<-distDone
	s.tr.CloseIdleConnections()
	s.log.Info("Stopped")
	return err
}

// watch polls the files, starts due remote JWKS refreshes and checks the word from the
// distribution server every PollInterval.
func (s *Sidecar) watch(ctx context.Context) {
	t := time.NewTicker(s.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.pollFiles()
			s.checkDistribution()
			s.refreshDue()
			if s.loopback != nil {
				s.loopback.check()
			}
		}
	}
}
