package sidecar

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/appprobe"
)

// AppProbesEnv is the environment variable the webhook passes the app's original probes in
// (see ParseAppProbes).
const AppProbesEnv = appprobe.Env

// appHealthPrefix starts the admin paths that forward a probe to the app.
const appHealthPrefix = appprobe.PathPrefix

// defaultProbeTimeout is the kubelet's default timeoutSeconds.
const defaultProbeTimeout = time.Second

// The app probe types are the webhook's and the sidecar's shared contract (package appprobe).
type (
	AppProbe       = appprobe.Probe
	HTTPGetProbe   = appprobe.HTTPGet
	HTTPHeader     = appprobe.Header
	TCPSocketProbe = appprobe.TCPSocket
	GRPCProbe      = appprobe.GRPC
)

// appHealthPath is /app-health/<container>/<kind>, the key of each probe.
var appHealthPath = regexp.MustCompile(`^/app-health/[a-z0-9]([-a-z0-9]*[a-z0-9])?/(livez|readyz|startupz)$`)

// ParseAppProbes reads the JSON object of TOKENKEEPER_APP_PROBES: keyed by admin path
// (/app-health/<container>/<livez|readyz|startupz>), each value an AppProbe. Empty means
// none.
func ParseAppProbes(s string) (map[string]AppProbe, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var probes map[string]AppProbe
	if err := json.Unmarshal([]byte(s), &probes); err != nil {
		return nil, fmt.Errorf("%s is not a JSON object of probes: %w", AppProbesEnv, err)
	}
	if err := checkAppProbes(probes); err != nil {
		return nil, fmt.Errorf("%s: %w", AppProbesEnv, err)
	}
	return probes, nil
}

// checkAppProbes says what is wrong with each probe, by its key and field.
func checkAppProbes(probes map[string]AppProbe) error {
	var errs []error
	port := func(key, field string, p int) {
		if p < 1 || p > 65535 {
			errs = append(errs, fmt.Errorf("%s: %s %d is not a port number (1-65535)", key, field, p))
		}
	}
	for key, p := range probes {
		if !appHealthPath.MatchString(key) {
			errs = append(errs, fmt.Errorf("%q: want /app-health/<container>/<livez|readyz|startupz>", key))
		}
		n := 0
		if p.HTTPGet != nil {
			n++
			port(key, "httpGet.port", p.HTTPGet.Port)
			switch p.HTTPGet.Scheme {
			case "", "HTTP", "HTTPS":
			default:
				errs = append(errs, fmt.Errorf("%s: httpGet.scheme %q: want HTTP or HTTPS", key, p.HTTPGet.Scheme))
			}
			if p.HTTPGet.Path != "" && !strings.HasPrefix(p.HTTPGet.Path, "/") {
				errs = append(errs, fmt.Errorf("%s: httpGet.path %q does not start with /", key, p.HTTPGet.Path))
			} else if _, err := url.ParseRequestURI(pathOrRoot(p.HTTPGet)); err != nil {
				errs = append(errs, fmt.Errorf("%s: httpGet.path: %v", key, err))
			}
			for i, h := range p.HTTPGet.HTTPHeaders {
				if h.Name == "" || strings.ContainsAny(h.Name, " :\r\n") || strings.ContainsAny(h.Value, "\r\n") {
					errs = append(errs, fmt.Errorf("%s: httpGet.httpHeaders[%d] is not a valid header", key, i))
				}
			}
		}
		if p.TCPSocket != nil {
			n++
			port(key, "tcpSocket.port", p.TCPSocket.Port)
		}
		if p.GRPC != nil {
			n++
			port(key, "grpc.port", p.GRPC.Port)
		}
		if n != 1 {
			errs = append(errs, fmt.Errorf("%s: want exactly one of httpGet, tcpSocket and grpc, got %d", key, n))
		}
		if p.TimeoutSeconds < 0 {
			errs = append(errs, fmt.Errorf("%s: timeoutSeconds %d is negative", key, p.TimeoutSeconds))
		}
	}
	return errors.Join(errs...)
}

func pathOrRoot(h *HTTPGetProbe) string {
	if h.Path == "" {
		return "/"
	}
	return h.Path
}

func probeTimeout(p AppProbe) time.Duration {
	if p.TimeoutSeconds == 0 {
		return defaultProbeTimeout
	}
	return time.Duration(p.TimeoutSeconds) * time.Second
}

// prober probes the app on loopback the way the kubelet would have probed it on the pod IP.
type prober struct {
	probes map[string]AppProbe
	http   *http.Client // no redirects, no keep-alive, TLS unverified (as the kubelet)
	h2c    *http.Client // gRPC over unencrypted HTTP/2
}

func newProber(probes map[string]AppProbe) *prober {
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	return &prober{
		probes: probes,
		http: &http.Client{
			Transport: &http.Transport{
				Proxy:              nil,
				DisableKeepAlives:  true,
				DisableCompression: true,
				TLSClientConfig:    &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as the kubelet probes
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		h2c: &http.Client{Transport: &http.Transport{
			Proxy:             nil,
			Protocols:         &h2c,
			DisableKeepAlives: true,
		}},
	}
}

// serveHTTP answers GET /app-health/<container>/<kind>: the app's status code for httpGet,
// 200 or 503 for tcpSocket and grpc, 404 for a probe the webhook did not pass.
func (p *prober) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Type"] = contentTypeText
	w.Header()["Cache-Control"] = noStore
	probe, ok := p.probes[r.URL.Path]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, "no such app probe\n")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), probeTimeout(probe))
	defer cancel()
	code, msg := p.probe(ctx, probe)
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}

func (p *prober) probe(ctx context.Context, probe AppProbe) (int, string) {
	switch {
	case probe.HTTPGet != nil:
		return p.probeHTTP(ctx, probe.HTTPGet)
	case probe.TCPSocket != nil:
		addr := loopbackAddr(probe.TCPSocket.Port)
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return http.StatusServiceUnavailable, "tcp connect to " + addr + " failed: " + err.Error()
		}
		c.Close()
		return http.StatusOK, "tcp connect to " + addr + " succeeded"
	case probe.GRPC != nil:
		return p.probeGRPC(ctx, probe.GRPC)
	}
	return http.StatusInternalServerError, "empty probe" // checkAppProbes refuses these
}

func loopbackAddr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

func (p *prober) probeHTTP(ctx context.Context, g *HTTPGetProbe) (int, string) {
	scheme := "http"
	if g.Scheme == "HTTPS" {
		scheme = "https"
	}
	target := scheme + "://" + loopbackAddr(g.Port) + pathOrRoot(g)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return http.StatusServiceUnavailable, "bad probe URL: " + err.Error()
	}
	req.Header["User-Agent"] = []string{"kube-probe/tokenkeeper"}
	req.Header["Accept"] = []string{"*/*"}
	for _, h := range g.HTTPHeaders {
		if strings.EqualFold(h.Name, "Host") {
			req.Host = h.Value
			continue
		}
		req.Header.Set(h.Name, h.Value)
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return http.StatusServiceUnavailable, "GET " + target + " failed: " + err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10)) // as the kubelet reads it
	resp.Body.Close()
	return resp.StatusCode, "GET " + target + ": " + resp.Status
}

// grpcServing is grpc.health.v1.HealthCheckResponse.ServingStatus SERVING.
const grpcServing = 1

// probeGRPC calls grpc.health.v1.Health/Check over h2c, with the request and the response
// encoded by hand: a gRPC message is a 5-byte prefix (compressed flag, big-endian length)
// and protobuf; HealthCheckRequest has one field (1: service, a string),
// HealthCheckResponse one (1: status, an enum).
func (p *prober) probeGRPC(ctx context.Context, g *GRPCProbe) (int, string) {
	target := "http://" + loopbackAddr(g.Port) + "/grpc.health.v1.Health/Check"
	var msg []byte
	if g.Service != "" {
		msg = append([]byte{0x0a}, binary.AppendUvarint(nil, uint64(len(g.Service)))...)
		msg = append(msg, g.Service...)
	}
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	frame = append(frame, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(frame))
	if err != nil {
		return http.StatusServiceUnavailable, "bad probe URL: " + err.Error()
	}
	req.Header["Content-Type"] = []string{"application/grpc"}
	req.Header["Te"] = []string{"trailers"}
	req.Header["User-Agent"] = []string{"kube-probe/tokenkeeper"}
	resp, err := p.h2c.Do(req)
	if err != nil {
		return http.StatusServiceUnavailable, "gRPC health check on " + loopbackAddr(g.Port) + " failed: " + err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if err != nil {
		return http.StatusServiceUnavailable, "gRPC health check: reading the answer: " + err.Error()
	}
	st := resp.Trailer.Get("Grpc-Status")
	if st == "" {
		st = resp.Header.Get("Grpc-Status") // a trailers-only answer
	}
	if resp.StatusCode != http.StatusOK || st != "0" {
		return http.StatusServiceUnavailable, fmt.Sprintf("gRPC health check: HTTP %d, grpc-status %q %s",
			resp.StatusCode, st, resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message"))
	}
	status, err := healthStatus(body)
	if err != nil {
		return http.StatusServiceUnavailable, "gRPC health check: " + err.Error()
	}
	if status != grpcServing {
		return http.StatusServiceUnavailable, fmt.Sprintf("gRPC health check: status %d, not SERVING", status)
	}
	return http.StatusOK, "gRPC health check: SERVING"
}

// healthStatus decodes one gRPC message holding a HealthCheckResponse.
func healthStatus(b []byte) (uint64, error) {
	if len(b) < 5 || b[0] != 0 {
		return 0, errors.New("not an uncompressed gRPC message")
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(len(b)-5) < uint64(n) {
		return 0, errors.New("truncated gRPC message")
	}
	b = b[5 : 5+n]
	var status uint64 // absent: 0, UNKNOWN
	for len(b) > 0 {
		tag, k := binary.Uvarint(b)
		if k <= 0 {
			return 0, errors.New("bad protobuf tag")
		}
		b = b[k:]
		switch tag & 7 {
		case 0: // varint
			v, k := binary.Uvarint(b)
			if k <= 0 {
				return 0, errors.New("bad protobuf varint")
			}
			b = b[k:]
			if tag>>3 == 1 {
				status = v
			}
		case 2: // length-delimited: skipped
			l, k := binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < l {
				return 0, errors.New("bad protobuf length")
			}
			b = b[k+int(l):]
		default:
			return 0, fmt.Errorf("unexpected protobuf wire type %d", tag&7)
		}
	}
	return status, nil
}
