// Command upstream is the app of the proxy benchmark (hack/bench-proxy.sh): a plain Go HTTP/1.1
// server answering every request with the same 3-byte body, so that the proxies in front
// of it are what the benchmark measures.
//
//	upstream --listen 127.0.0.1:9000
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"time"
)

var (
	body        = []byte("ok\n")
	contentType = []string{"text/plain; charset=utf-8"}
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to serve on")
	flag.Parse()
	var http1 http.Protocols
	http1.SetHTTP1(true)
	srv := &http.Server{
		Addr: *listen,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header()["Content-Type"] = contentType
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       90 * time.Second,
		Protocols:         &http1,
	}
	log.Fatal(srv.ListenAndServe())
}
