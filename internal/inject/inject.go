// Package inject adds the verifying sidecar to a pod. Mutate is a pure function of the pod
// and the configuration, so every decision is tested with golden files of whole pods; the
// admission webhook around it only decodes, calls Mutate and patches.
package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tokenkeeper/tokenkeeper/internal/sidecar"
)

// Annotations a pod opts in with, and the one the webhook leaves behind.
const (
	AnnotationInject = "tokenkeeper.dev/inject" // "true" to get the sidecar
	AnnotationPolicy = "tokenkeeper.dev/policy" // the TokenPolicy (in the pod's namespace)
	// AnnotationPort names the app port the sidecar takes over (by name or number). Without
	// it, the pod's only named port, or else the port named "http", is taken.
	AnnotationPort = "tokenkeeper.dev/port"
	// AnnotationStatus marks an injected pod, so injecting again changes nothing.
	AnnotationStatus = "tokenkeeper.dev/status"
	StatusInjected   = "injected"
	// AnnotationAllowNonLoopback "true" lets the sidecar become ready although the app port
	// listens beyond loopback (then only a NetworkPolicy keeps other pods off the app).
	AnnotationAllowNonLoopback = "tokenkeeper.dev/allow-app-non-loopback"
	// LabelPolicy names the TokenPolicy on each injected pod, so the manager's per-policy
	// NetworkPolicy can select them.
	LabelPolicy = "tokenkeeper.dev/policy"
)

// Names of what Mutate adds.
const (
	ContainerName = "tokenkeeper-sidecar"
	VolumeName    = "tokenkeeper-bundle"
	BundleMount   = "/etc/tokenkeeper/bundle"
	// The projected ServiceAccount token the sidecar presents to the distribution server.
	TokenVolumeName     = "tokenkeeper-token"
	TokenMount          = "/var/run/secrets/tokenkeeper.dev/distribution"
	DistributionAud     = "tokenkeeper.dev/distribution"
	tokenExpirySeconds  = 600
	adminPortName       = "tk-admin"
	appHealthPathPrefix = "/app-health/"
	// sidecarBinary is the sidecar image's entrypoint, which the readiness exec probe runs.
	sidecarBinary = "/sidecar"
)

// Config is what the manager decides for every injected sidecar.
type Config struct {
	Image string
	// ListenPort is where the sidecar serves the app's traffic; AdminPort serves /healthz,
	// /readyz and /metrics. Both must not collide with the app's ports.
	ListenPort, AdminPort int32
	// BundleConfigMap names the policy bundle ConfigMap of a TokenPolicy.
	BundleConfigMap func(policy string) string
	Resources       corev1.ResourceRequirements
	// DistributionURL is the manager's push distribution endpoint; empty: no distribution.
	DistributionURL string
}

// DefaultConfig is the configuration of a manager started without flags.
func DefaultConfig() Config {
	return Config{
		Image:           "tokenkeeper/sidecar:dev",
		ListenPort:      15080,
		AdminPort:       15021,
		BundleConfigMap: func(policy string) string { return policy + "-bundle" },
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
	}
}

// Result says what Mutate did.
type Result struct {
	Injected bool
	// Skipped explains why a pod was left alone (not opted in, already injected).
	Skipped string
}

// ErrRefused wraps reasons to refuse a pod that asked for injection but cannot get it safely:
// admitting it unprotected would be worse than a clear error.
var ErrRefused = errors.New("tokenkeeper cannot inject this pod")

// Mutate returns the pod with the sidecar added, or unchanged with the reason. A pod that
// claims to be injected already (the status annotation, or a container named like the
// sidecar) is admitted unchanged only when it is exactly what Mutate makes of the pod it
// came from; anything else is refused, so nobody gets past injection by forging its marks.
func Mutate(in *corev1.Pod, cfg Config) (*corev1.Pod, Result, error) {
	if claimsInjection(in) {
		if err := checkInjected(in, cfg); err != nil {
			return nil, Result{}, fmt.Errorf("%w: the pod claims to be injected already (annotation %s or a container named %s) but %v: remove both and let the webhook inject it",
				ErrRefused, AnnotationStatus, ContainerName, err)
		}
		return in, Result{Skipped: "already injected"}, nil
	}
	if in.Annotations[AnnotationInject] != "true" {
		return in, Result{Skipped: "not opted in"}, nil
	}
	pod, err := inject(in, cfg)
	if err != nil {
		return nil, Result{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	return pod, Result{Injected: true}, nil
}

func claimsInjection(pod *corev1.Pod) bool {
	_, marked := pod.Annotations[AnnotationStatus]
	return marked || hasContainer(pod, ContainerName)
}

// checkInjected takes the injection out of pod and injects the result again: a real
// injected pod comes back unchanged.
func checkInjected(pod *corev1.Pod, cfg Config) error {
	orig, err := uninject(pod, cfg)
	if err != nil {
		return err
	}
	if orig.Annotations[AnnotationInject] != "true" {
		return fmt.Errorf("it does not opt in (annotation %s)", AnnotationInject)
	}
	want, err := inject(orig, cfg)
	if err != nil {
		return err
	}
	if !equality.Semantic.DeepEqual(want, pod) {
		return errors.New("it differs from what the webhook injects")
	}
	return nil
}

func inject(in *corev1.Pod, cfg Config) (*corev1.Pod, error) {
	policy := in.Annotations[AnnotationPolicy]
	if policy == "" {
		return nil, fmt.Errorf("annotation %s names no TokenPolicy", AnnotationPolicy)
	}
	if errs := validation.IsDNS1123Subdomain(policy); len(errs) > 0 {
		return nil, fmt.Errorf("annotation %s=%q: %s", AnnotationPolicy, policy, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(policy); len(errs) > 0 {
		return nil, fmt.Errorf("annotation %s=%q cannot be the value of label %s: %s", AnnotationPolicy, policy, LabelPolicy, strings.Join(errs, "; "))
	}
	if in.Spec.HostNetwork {
		// On the host network the app's port is the node's: nothing keeps clients off it.
		return nil, errors.New("spec.hostNetwork: a pod on the node's network cannot be protected (its app port is reachable on the node); run it without hostNetwork")
	}
	switch v := in.Annotations[AnnotationAllowNonLoopback]; v {
	case "", "true", "false":
	default:
		return nil, fmt.Errorf("annotation %s=%q: want \"true\" or \"false\"", AnnotationAllowNonLoopback, v)
	}
	pod := in.DeepCopy()
	target, err := choosePort(pod, in.Annotations[AnnotationPort])
	if err != nil {
		return nil, err
	}
	if err := checkFree(pod, cfg.ListenPort, cfg.AdminPort); err != nil {
		return nil, err
	}
	probes, err := rewriteProbes(pod, cfg.AdminPort)
	if err != nil {
		return nil, err
	}

	// Take over the app's port name: Services that target it by name now reach the sidecar,
	// with no change to the Service. The app keeps its port under a new name.
	app := &pod.Spec.Containers[target.container]
	port := app.Ports[target.port]
	if port.Name != "" {
		renamed := appPortName(port.Name)
		app.Ports[target.port].Name = renamed
		renameProbePorts(app, port.Name, renamed)
	}
	// A hostPort on the app port would reach the app around the sidecar: it moves to the
	// sidecar's port, so the node's port still serves the app, verified.
	app.Ports[target.port].HostPort, app.Ports[target.port].HostIP = 0, ""

	sidecar, err := container(cfg, pod, policy, port, probes)
	if err != nil {
		return nil, err
	}
	// Native sidecar: an init container that keeps running starts before the app (once
	// ready) and stops after it.
	pod.Spec.InitContainers = append([]corev1.Container{sidecar}, pod.Spec.InitContainers...)
	mode := int32(0o644)
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name: VolumeName,
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cfg.BundleConfigMap(policy)},
			DefaultMode:          &mode,
		}},
	})
	if cfg.DistributionURL != "" {
		expiry := int64(tokenExpirySeconds)
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
			Name: TokenVolumeName,
			VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: DistributionAud, ExpirationSeconds: &expiry, Path: "token",
				}}},
				DefaultMode: &mode,
			}},
		})
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationStatus] = StatusInjected
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[LabelPolicy] = policy
	return pod, nil
}

type portRef struct{ container, port int }

// choosePort finds the app port to protect: the annotated one, else the pod's only named
// port, else the one named "http".
func choosePort(pod *corev1.Pod, want string) (portRef, error) {
	var named []portRef
	for c := range pod.Spec.Containers {
		for p, port := range pod.Spec.Containers[c].Ports {
			if want != "" && (port.Name == want || strconv.Itoa(int(port.ContainerPort)) == want) {
				return portRef{c, p}, nil
			}
			if port.Name != "" {
				named = append(named, portRef{c, p})
			}
		}
	}
	if want != "" {
		return portRef{}, fmt.Errorf("annotation %s=%q matches no container port", AnnotationPort, want)
	}
	if len(named) == 1 {
		return named[0], nil
	}
	for _, r := range named {
		if pod.Spec.Containers[r.container].Ports[r.port].Name == "http" {
			return r, nil
		}
	}
	return portRef{}, fmt.Errorf("cannot tell which port to protect (%d named ports): set annotation %s", len(named), AnnotationPort)
}

func checkFree(pod *corev1.Pod, ports ...int32) error {
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				for _, q := range ports {
					if p.ContainerPort == q {
						return fmt.Errorf("container %s already uses port %d, which the sidecar needs", c.Name, q)
					}
				}
			}
		}
	}
	return nil
}

// appPortName renames the app's port, within the 15 characters a port name may have.
func appPortName(name string) string {
	n := "app-" + name
	if len(n) > 15 {
		n = strings.TrimRight(n[:15], "-")
	}
	return n
}

// probeKinds are the probes of a container, by the name of the sidecar's path for each.
func probeKinds(c *corev1.Container) []struct {
	field, kind string
	probe       **corev1.Probe
} {
	return []struct {
		field, kind string
		probe       **corev1.Probe
	}{
		{"livenessProbe", "livez", &c.LivenessProbe},
		{"readinessProbe", "readyz", &c.ReadinessProbe},
		{"startupProbe", "startupz", &c.StartupProbe},
	}
}

// onPod says whether a probe's host is the pod itself (the kubelet's default, the pod IP),
// which the sidecar reaches on loopback.
func onPod(host string) bool { return host == "" || host == "localhost" || host == "127.0.0.1" }

// rewriteProbes points each httpGet, tcpSocket and grpc probe the app containers have on the
// pod at the sidecar's admin port, /app-health/<container>/<kind>, and returns the originals
// by that path, ports as numbers, for the sidecar to forward on loopback. Without this the
// kubelet probes the pod IP, so the app would have to listen beyond loopback, where other
// pods reach it without a token.
func rewriteProbes(pod *corev1.Pod, adminPort int32) (map[string]sidecar.AppProbe, error) {
	probes := map[string]sidecar.AppProbe{}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, k := range probeKinds(c) {
			pr := *k.probe
			if pr == nil {
				continue
			}
			field := fmt.Sprintf("spec.containers[%d].%s", i, k.field)
			resolve := func(sub string, p intstr.IntOrString) (int, error) {
				n, err := portNumber(c, p)
				if err != nil {
					return 0, fmt.Errorf("%s.%s.port: %v", field, sub, err)
				}
				return n, nil
			}
			var orig sidecar.AppProbe
			switch h := pr.ProbeHandler; {
			case h.HTTPGet != nil && onPod(h.HTTPGet.Host):
				n, err := resolve("httpGet", h.HTTPGet.Port)
				if err != nil {
					return nil, err
				}
				scheme := string(h.HTTPGet.Scheme)
				if scheme == "" {
					scheme = string(corev1.URISchemeHTTP)
				}
				g := &sidecar.HTTPGetProbe{Path: h.HTTPGet.Path, Port: n, Scheme: scheme}
				for _, hd := range h.HTTPGet.HTTPHeaders {
					g.HTTPHeaders = append(g.HTTPHeaders, sidecar.HTTPHeader{Name: hd.Name, Value: hd.Value})
				}
				orig.HTTPGet = g
			case h.TCPSocket != nil && onPod(h.TCPSocket.Host):
				n, err := resolve("tcpSocket", h.TCPSocket.Port)
				if err != nil {
					return nil, err
				}
				orig.TCPSocket = &sidecar.TCPSocketProbe{Port: n}
			case h.GRPC != nil:
				n, err := resolve("grpc", intstr.FromInt32(h.GRPC.Port))
				if err != nil {
					return nil, err
				}
				orig.GRPC = &sidecar.GRPCProbe{Port: n}
				if h.GRPC.Service != nil {
					orig.GRPC.Service = *h.GRPC.Service
				}
			default: // exec, or a probe of another host: the kubelet runs it as it is
				continue
			}
			orig.TimeoutSeconds = int(pr.TimeoutSeconds)
			path := appHealthPathPrefix + c.Name + "/" + k.kind
			probes[path] = orig
			rewritten := pr.DeepCopy()
			rewritten.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(adminPort), Scheme: corev1.URISchemeHTTP,
			}}
			*k.probe = rewritten
		}
	}
	return probes, nil
}

// portNumber resolves a probe's port in its container, as the kubelet would.
func portNumber(c *corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		if p.IntVal < 1 || p.IntVal > 65535 {
			return 0, fmt.Errorf("%d is not a port number", p.IntVal)
		}
		return int(p.IntVal), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil && n >= 1 && n <= 65535 {
		return n, nil
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}

// renameProbePorts keeps the probes left to the kubelet (another host) that name the
// taken-over port pointing at the app, by its new name.
func renameProbePorts(c *corev1.Container, from, to string) {
	fix := func(p *intstr.IntOrString) {
		if p.Type == intstr.String && p.StrVal == from {
			*p = intstr.FromString(to)
		}
	}
	for _, k := range probeKinds(c) {
		pr := *k.probe
		if pr == nil {
			continue
		}
		if pr.HTTPGet != nil {
			fix(&pr.HTTPGet.Port)
		}
		if pr.TCPSocket != nil {
			fix(&pr.TCPSocket.Port)
		}
	}
}

func hasContainer(pod *corev1.Pod, name string) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name == name {
				return true
			}
		}
	}
	return false
}

// container is the sidecar. Fields the API server would default are set, so that an injected
// pod read back from it is still exactly what Mutate makes (see checkInjected).
func container(cfg Config, pod *corev1.Pod, policy string, app corev1.ContainerPort, probes map[string]sidecar.AppProbe) (corev1.Container, error) {
	always := corev1.ContainerRestartPolicyAlways
	no, yes := false, true
	uid := int64(65532)
	admin := intstr.FromString(adminPortName)
	proxy := corev1.ContainerPort{Name: app.Name, ContainerPort: cfg.ListenPort, Protocol: corev1.ProtocolTCP, HostPort: app.HostPort, HostIP: app.HostIP}
	if proxy.Name == "" {
		proxy.Name = "tk-proxy"
	}
	args := []string{
		"--listen=:" + strconv.Itoa(int(cfg.ListenPort)),
		"--admin-listen=:" + strconv.Itoa(int(cfg.AdminPort)),
		"--upstream=http://127.0.0.1:" + strconv.Itoa(int(app.ContainerPort)),
		"--bundle-dir=" + BundleMount,
		"--policy-name=" + policy,
	}
	if pod.Annotations[AnnotationAllowNonLoopback] == "true" {
		args = append(args, "--allow-app-non-loopback")
	}
	mounts := []corev1.VolumeMount{{Name: VolumeName, MountPath: BundleMount, ReadOnly: true}}
	if cfg.DistributionURL != "" {
		args = append(args, "--distribution-url="+cfg.DistributionURL, "--distribution-token-file="+TokenMount+"/token")
		mounts = append(mounts, corev1.VolumeMount{Name: TokenVolumeName, MountPath: TokenMount, ReadOnly: true})
	}
	var env []corev1.EnvVar
	if len(probes) > 0 {
		// encoding/json sorts map keys: the same pod always gets the same value.
		raw, err := json.Marshal(probes)
		if err != nil {
			return corev1.Container{}, err
		}
		env = []corev1.EnvVar{{Name: sidecar.AppProbesEnv, Value: string(raw)}}
	}
	httpProbe := func(path string) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: admin, Scheme: corev1.URISchemeHTTP}}
	}
	return corev1.Container{
		Name:          ContainerName,
		Image:         cfg.Image,
		RestartPolicy: &always,
		Args:          args,
		Env:           env,
		Ports:         []corev1.ContainerPort{proxy, {Name: adminPortName, ContainerPort: cfg.AdminPort, Protocol: corev1.ProtocolTCP}},
		// The app starts only once the sidecar has keys and serves. /startupz leaves out the
		// check that the app listens on loopback only: the app is not running yet.
		StartupProbe: &corev1.Probe{
			ProbeHandler:  httpProbe("/startupz"),
			PeriodSeconds: 1, FailureThreshold: 120, TimeoutSeconds: 1, SuccessThreshold: 1,
		},
		// An exec probe, so the kubelet's Event carries the sidecar's reason (such as "bind it
		// to 127.0.0.1"); an httpGet probe's Event has only the status code.
		ReadinessProbe: &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{
				sidecarBinary, "probe", "--admin=127.0.0.1:" + strconv.Itoa(int(cfg.AdminPort)), "/readyz",
			}}},
			PeriodSeconds: 5, TimeoutSeconds: 2, SuccessThreshold: 1, FailureThreshold: 3,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:  httpProbe("/healthz"),
			PeriodSeconds: 10, FailureThreshold: 3, TimeoutSeconds: 1, SuccessThreshold: 1,
		},
		Resources:                cfg.Resources,
		VolumeMounts:             mounts,
		TerminationMessagePath:   corev1.TerminationMessagePathDefault,
		TerminationMessagePolicy: corev1.TerminationMessageReadFile,
		ImagePullPolicy:          pullPolicy(cfg.Image),
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             &yes,
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}, nil
}

// pullPolicy is the API server's default: Always for :latest or no tag, else IfNotPresent.
func pullPolicy(image string) corev1.PullPolicy {
	if strings.Contains(image, "@") {
		return corev1.PullIfNotPresent
	}
	name := image[strings.LastIndex(image, "/")+1:]
	if i := strings.LastIndex(name, ":"); i < 0 || name[i+1:] == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}
