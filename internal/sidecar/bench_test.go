package sidecar

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"
)

// BenchmarkProxy measures a request through the sidecar over real loopback HTTP (client →
// proxy → upstream → back), against a plain httputil.ReverseProxy with the same tuned
// transport and buffer pool: the difference is the sidecar's cost per request. "cached"
// sends one token again and again (the verified-token cache answers); "uncached" disables
// the cache, so every request verifies an ES256 signature. The parallel variants measure
// throughput with every core busy.
func BenchmarkProxy(b *testing.B) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	}))
	b.Cleanup(upstream.Close)
	key := testKey(b, "primary")
	tok := newToken(b, key)

	baseline := func(b *testing.B) string {
		target, _ := url.Parse(upstream.URL)
		o, _ := Options{Upstream: upstream.URL, PolicyFile: "unused"}.withDefaults()
		tr := newUpstreamTransport(o)
		rp := &httputil.ReverseProxy{
			Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
			Transport:  tr,
			BufferPool: newBufferPool(),
		}
		srv := httptest.NewServer(rp)
		b.Cleanup(func() { srv.Close(); tr.CloseIdleConnections() })
		return srv.URL
	}
	sidecar := func(cacheSize int) func(b *testing.B) string {
		return func(b *testing.B) string {
			dir := b.TempDir()
			pf, jf, rf := BundleFiles(dir)
			writeFile(b, pf, marshalYAML(b, basePolicy()))
			writeFile(b, jf, jwksDoc(b, key))
			s, err := New(Options{
				Upstream: upstream.URL, PolicyFile: pf, JWKSFile: jf, RevocationsFile: rf,
				CacheSize: cacheSize, Now: newClock().Now, DrainDelay: time.Millisecond,
			})
			if err != nil {
				b.Fatal(err)
			}
			pl, al := listen(b), listen(b)
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx, pl, al) }()
			b.Cleanup(func() { stop(); <-done })
			return "http://" + pl.Addr().String()
		}
	}
	for _, tc := range []struct {
		name  string
		start func(b *testing.B) string
	}{
		{"baseline", baseline},
		{"cached", sidecar(0)},
		{"uncached", sidecar(-1)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			u := tc.start(b) + "/api/items"
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}}
			b.Cleanup(c.CloseIdleConnections)
			b.ReportAllocs()
			for b.Loop() {
				benchRequest(b, c, u, tok)
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			u := tc.start(b) + "/api/items"
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}}
			b.Cleanup(c.CloseIdleConnections)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					benchRequest(b, c, u, tok)
				}
			})
		})
	}
}

func benchRequest(b *testing.B, c *http.Client, u, tok string) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

// BenchmarkHandler isolates the sidecar's own cost per request: the handler is called
// directly and the upstream is a RoundTripper answering at once, so no network or scheduler
// noise blurs the difference from a plain ReverseProxy with the same stub.
func BenchmarkHandler(b *testing.B) {
	key := testKey(b, "primary")
	tok := newToken(b, key)
	target, _ := url.Parse("http://127.0.0.1:8080")
	plain := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport:  stubTransport{},
		BufferPool: newBufferPool(),
	}
	sidecar := func(cacheSize int) http.Handler {
		dir := b.TempDir()
		pf, jf, rf := BundleFiles(dir)
		writeFile(b, pf, marshalYAML(b, basePolicy()))
		writeFile(b, jf, jwksDoc(b, key))
		s, err := New(Options{Upstream: target.String(), PolicyFile: pf, JWKSFile: jf, RevocationsFile: rf,
			CacheSize: cacheSize, Now: newClock().Now})
		if err != nil {
			b.Fatal(err)
		}
		s.rp.Transport = stubTransport{}
		return s.Handler()
	}
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{
		{"baseline", plain},
		{"cached", sidecar(0)},
		{"uncached", sidecar(-1)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/api/items", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				w.code = 0
				tc.h.ServeHTTP(w, req)
				if w.code != http.StatusOK {
					b.Fatalf("status %d", w.code)
				}
			}
		})
	}
}

type stubTransport struct{}

func (stubTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode: http.StatusOK, ProtoMajor: 1, ProtoMinor: 1, Request: r, ContentLength: 3,
		Header: http.Header{"Content-Type": {"text/plain"}},
		Body:   io.NopCloser(strings.NewReader("ok\n")),
	}, nil
}

type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
