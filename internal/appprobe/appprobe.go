// Package appprobe is the contract between the injection webhook and the sidecar for the
// app's probes: the webhook points each app probe at the sidecar's admin port and passes the
// original in the environment variable Env, which the sidecar reads back. One set of types
// for both sides, with no Kubernetes imports, so the sidecar stays free of them.
package appprobe

// Env is the environment variable holding the app's original probes: a JSON object keyed by
// the admin path each probe now calls (PathPrefix + "<container>/<livez|readyz|startupz>").
const Env = "TOKENKEEPER_APP_PROBES"

// PathPrefix starts the admin paths that forward a probe to the app.
const PathPrefix = "/app-health/"

// Probe is one of the app's probes as the webhook took it from the pod: exactly one of
// HTTPGet, TCPSocket and GRPC. Field names follow corev1's JSON; ports are numbers.
type Probe struct {
	HTTPGet        *HTTPGet   `json:"httpGet,omitempty"`
	TCPSocket      *TCPSocket `json:"tcpSocket,omitempty"`
	GRPC           *GRPC      `json:"grpc,omitempty"`
	TimeoutSeconds int        `json:"timeoutSeconds,omitempty"`
}

// HTTPGet is corev1.HTTPGetAction without host (the app is probed on 127.0.0.1).
type HTTPGet struct {
	Path        string   `json:"path,omitempty"`
	Port        int      `json:"port"`
	Scheme      string   `json:"scheme,omitempty"` // HTTP (default) or HTTPS
	HTTPHeaders []Header `json:"httpHeaders,omitempty"`
}

// Header is one header an httpGet probe sends.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// TCPSocket succeeds when a TCP connect to the port does.
type TCPSocket struct {
	Port int `json:"port"`
}

// GRPC calls grpc.health.v1.Health/Check for Service on the port.
type GRPC struct {
	Port    int    `json:"port"`
	Service string `json:"service,omitempty"`
}
