package sidecar

import (
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseAppProbes(t *testing.T) {
	cases := []struct {
		name  string
		env   string
		want  int    // probes parsed
		error string // in the error, "" for none
	}{
		{name: "no variable means no probes", env: "", want: 0},
		{
			name: "each kind of probe is read as the webhook writes it",
			env: `{"/app-health/app/livez":{"httpGet":{"path":"/healthz","port":8080,"scheme":"HTTP","httpHeaders":[{"name":"X","value":"y"}]},"timeoutSeconds":1},
			       "/app-health/app/readyz":{"tcpSocket":{"port":8080},"timeoutSeconds":1},
			       "/app-health/grpc-app/startupz":{"grpc":{"port":9090,"service":""},"timeoutSeconds":1}}`,
			want: 3,
		},
		{name: "invalid JSON is refused", env: `{"/app-health/app/livez":`, error: "TOKENKEEPER_APP_PROBES is not a JSON object"},
		{name: "a key that is not an app-health path is refused", env: `{"/healthz":{"tcpSocket":{"port":8080}}}`, error: `"/healthz": want /app-health/<container>/<livez|readyz|startupz>`},
		{name: "a named port is refused", env: `{"/app-health/app/livez":{"tcpSocket":{"port":"http"}}}`, error: "not a JSON object"},
		{name: "a port out of range is refused", env: `{"/app-health/app/livez":{"httpGet":{"port":70000}}}`, error: "httpGet.port 70000 is not a port number"},
		{name: "two kinds in one probe are refused", env: `{"/app-health/app/livez":{"httpGet":{"port":80},"tcpSocket":{"port":80}}}`, error: "exactly one of httpGet, tcpSocket and grpc, got 2"},
		{name: "a probe of no kind is refused", env: `{"/app-health/app/livez":{"timeoutSeconds":1}}`, error: "got 0"},
		{name: "an unknown scheme is refused", env: `{"/app-health/app/livez":{"httpGet":{"port":80,"scheme":"FTP"}}}`, error: `httpGet.scheme "FTP"`},
		{name: "a header with a line break is refused", env: `{"/app-health/app/livez":{"httpGet":{"port":80,"httpHeaders":[{"name":"X","value":"a\r\nB: c"}]}}}`, error: "httpGet.httpHeaders[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAppProbes(tc.env)
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("err = %v, want one containing %q", err, tc.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Fatalf("%d probes, want %d: %+v", len(got), tc.want, got)
			}
		})
	}
}

// port is the port of a loopback URL or address.
func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(strings.TrimPrefix(addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

func TestHTTPGetProbesAreForwardedToTheAppOnLoopback(t *testing.T) {
	var seen http.Header
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			seen = r.Header.Clone()
			_, _ = io.WriteString(w, "fine")
		case "/broken":
			http.Error(w, "database down", http.StatusInternalServerError)
		case "/moved":
			http.Redirect(w, r, "http://198.51.100.1/elsewhere", http.StatusFound)
		case "/slow":
			time.Sleep(1500 * time.Millisecond)
		}
	}))
	t.Cleanup(app.Close)
	p := port(t, app.URL)
	get := func(path string, headers ...HTTPHeader) AppProbe {
		return AppProbe{HTTPGet: &HTTPGetProbe{Path: path, Port: p, Scheme: "HTTP", HTTPHeaders: headers}, TimeoutSeconds: 1}
	}
	f := newFixture(t, withOptions(func(o *Options) {
		o.AppProbes = map[string]AppProbe{
			"/app-health/app/livez":    get("/healthz", HTTPHeader{Name: "X-Probe", Value: "live"}),
			"/app-health/app/readyz":   get("/broken"),
			"/app-health/app/startupz": get("/moved"),
			"/app-health/slow/livez":   get("/slow"),
		}
	}))
	cases := []struct {
		name   string
		path   string
		status int
		check  func(t *testing.T, r response)
	}{
		{
			name: "a healthy app answers 200 and gets the probe's headers", path: "/app-health/app/livez", status: 200,
			check: func(t *testing.T, _ response) {
				if seen.Get("X-Probe") != "live" || !strings.HasPrefix(seen.Get("User-Agent"), "kube-probe/") {
					t.Errorf("app saw headers %v", seen)
				}
			},
		},
		{name: "the app's failing status code is passed on", path: "/app-health/app/readyz", status: 500,
			check: func(t *testing.T, r response) {
				if strings.Contains(r.body, "database down") {
					t.Errorf("the app's body %q was forwarded", r.body)
				}
			}},
		{name: "a redirect is not followed, its status is passed on without the location", path: "/app-health/app/startupz", status: 302,
			check: func(t *testing.T, r response) {
				if r.header.Get("Location") != "" {
					t.Errorf("Location %q forwarded", r.header.Get("Location"))
				}
			}},
		{name: "an app slower than timeoutSeconds fails the probe", path: "/app-health/slow/livez", status: 503},
		{name: "a probe the webhook did not pass is not found", path: "/app-health/other/livez", status: 404},
	}
	noRedirects := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			r := doRequest(t, noRedirects, f.adminURL+tc.path)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (%q)", r.status, tc.status, r.body)
			}
			if d := time.Since(start); d > 1400*time.Millisecond {
				t.Errorf("answered after %v, past the probe's timeout", d)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestTCPSocketProbesConnectOnLoopback(t *testing.T) {
	open := listen(t)
	t.Cleanup(func() { open.Close() })
	closed := listen(t)
	closedPort := port(t, closed.Addr().String())
	closed.Close()
	f := newFixture(t, withOptions(func(o *Options) {
		o.AppProbes = map[string]AppProbe{
			"/app-health/app/livez":  {TCPSocket: &TCPSocketProbe{Port: port(t, open.Addr().String())}},
			"/app-health/app/readyz": {TCPSocket: &TCPSocketProbe{Port: closedPort}},
		}
	}))
	if r := f.admin("/app-health/app/livez"); r.status != 200 {
		t.Errorf("a listening port: status %d (%q), want 200", r.status, r.body)
	}
	if r := f.admin("/app-health/app/readyz"); r.status != 503 || !strings.Contains(r.body, strconv.Itoa(closedPort)) {
		t.Errorf("a closed port: status %d (%q), want 503 naming the port", r.status, r.body)
	}
}

// grpcHealthServer is a gRPC health service written with the standard library alone: h2c,
// the request's service name decoded by hand, status by service.
func grpcHealthServer(t *testing.T, statuses map[string]uint64) int {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || r.Method != http.MethodPost || r.URL.Path != "/grpc.health.v1.Health/Check" ||
			r.Header.Get("Content-Type") != "application/grpc" {
			http.Error(w, "not a gRPC health check", http.StatusBadRequest)
			return
		}
		b, _ := io.ReadAll(r.Body)
		service := ""
		if len(b) >= 5 && binary.BigEndian.Uint32(b[1:5]) > 0 {
			msg := b[5:]
			if msg[0] != 0x0a {
				http.Error(w, "bad request message", http.StatusBadRequest)
				return
			}
			l, k := binary.Uvarint(msg[1:])
			service = string(msg[1+k : 1+k+int(l)])
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		status, ok := statuses[service]
		if !ok {
			w.Header().Set("Grpc-Status", "5") // NOT_FOUND
			return
		}
		msg := []byte{0x08} // field 1, varint
		msg = binary.AppendUvarint(msg, status)
		_, _ = w.Write(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))))
		_, _ = w.Write(msg)
		w.Header().Set("Grpc-Status", "0")
	}))
	var h2c http.Protocols
	h2c.SetUnencryptedHTTP2(true)
	srv.Config.Protocols = &h2c
	srv.Start()
	t.Cleanup(srv.Close)
	return port(t, srv.URL)
}

func TestGRPCProbesCallTheHealthServiceOverH2C(t *testing.T) {
	p := grpcHealthServer(t, map[string]uint64{"": grpcServing, "orders": 2 /* NOT_SERVING */})
	plain := listen(t) // a port that speaks no HTTP/2
	t.Cleanup(func() { plain.Close() })
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
			c.Close()
		}
	}()
	f := newFixture(t, withOptions(func(o *Options) {
		o.AppProbes = map[string]AppProbe{
			"/app-health/app/livez":    {GRPC: &GRPCProbe{Port: p}},
			"/app-health/app/readyz":   {GRPC: &GRPCProbe{Port: p, Service: "orders"}},
			"/app-health/app/startupz": {GRPC: &GRPCProbe{Port: p, Service: "unknown"}},
			"/app-health/http1/livez":  {GRPC: &GRPCProbe{Port: port(t, plain.Addr().String())}},
		}
	}))
	cases := []struct {
		name, path, body string
		status           int
	}{
		{name: "a SERVING server passes", path: "/app-health/app/livez", status: 200, body: "SERVING"},
		{name: "a NOT_SERVING service fails", path: "/app-health/app/readyz", status: 503, body: "status 2, not SERVING"},
		{name: "an unknown service (grpc-status NOT_FOUND) fails", path: "/app-health/app/startupz", status: 503, body: `grpc-status "5"`},
		{name: "a server that does not speak gRPC fails", path: "/app-health/http1/livez", status: 503, body: "failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := f.admin(tc.path)
			if r.status != tc.status || !strings.Contains(r.body, tc.body) {
				t.Fatalf("status %d %q, want %d containing %q", r.status, r.body, tc.status, tc.body)
			}
		})
	}
}

func TestHealthStatusDecoding(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want uint64
		bad  bool
	}{
		{name: "SERVING", in: []byte{0, 0, 0, 0, 2, 0x08, 1}, want: 1},
		{name: "an empty message is UNKNOWN", in: []byte{0, 0, 0, 0, 0}, want: 0},
		{name: "unknown string fields are skipped", in: []byte{0, 0, 0, 0, 5, 0x12, 1, 'x', 0x08, 1}, want: 1},
		{name: "a compressed message is refused", in: []byte{1, 0, 0, 0, 2, 0x08, 1}, bad: true},
		{name: "a truncated message is refused", in: []byte{0, 0, 0, 0, 9, 0x08, 1}, bad: true},
		{name: "a length past the end is refused", in: []byte{0, 0, 0, 0, 2, 0x12, 9}, bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := healthStatus(tc.in)
			if (err != nil) != tc.bad || got != tc.want {
				t.Fatalf("healthStatus = %d, %v; want %d, error %v", got, err, tc.want, tc.bad)
			}
		})
	}
}

// An HTTPS probe is sent with TLS verification off, as the kubelet sends it: the app's
// certificate names the pod, not 127.0.0.1.
func TestHTTPSProbesSkipCertificateVerification(t *testing.T) {
	app := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(app.Close)
	f := newFixture(t, withOptions(func(o *Options) {
		o.AppProbes = map[string]AppProbe{"/app-health/app/livez": {HTTPGet: &HTTPGetProbe{
			Path: "/healthz", Port: port(t, strings.TrimPrefix(app.URL, "https://")), Scheme: "HTTPS"}}}
	}))
	if r := f.admin("/app-health/app/livez"); r.status != http.StatusNoContent {
		t.Fatalf("status %d %q, want the app's 204", r.status, r.body)
	}
}
