// Command plainproxy is the floor of the proxy benchmark (hack/bench-proxy.sh): a plain
// httputil.ReverseProxy that verifies nothing, with the tuning any Go proxy in front of one
// app on loopback should have: many idle keep-alive connections to the app (Go keeps 2 per
// host by default), no transport compression, no environment proxy, HTTP/1.1, and a pool of
// copy buffers. Whatever a verifying Go proxy costs beyond this is its own.
//
//	plainproxy --listen 127.0.0.1:9001 --upstream http://127.0.0.1:9000
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "address to serve on")
	upstream := flag.String("upstream", "http://127.0.0.1:9000", "base URL of the app")
	idleConns := flag.Int("idle-conns", 1024, "idle keep-alive connections kept to the app")
	flag.Parse()
	target, err := url.Parse(*upstream)
	if err != nil || target.Host == "" {
		log.Fatalf("--upstream %q: not a base URL", *upstream)
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          *idleConns,
		MaxIdleConnsPerHost:   *idleConns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:  tr,
		BufferPool: &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}},
	}
	var http1 http.Protocols
	http1.SetHTTP1(true)
	srv := &http.Server{
		Addr:              *listen,
		Handler:           rp,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       90 * time.Second,
		Protocols:         &http1,
	}
	log.Fatal(srv.ListenAndServe())
}

// bufferPool recycles the ReverseProxy's 32 KiB copy buffers.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(x []byte) { b.p.Put(&x) }
