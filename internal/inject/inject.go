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

	"github.com/tokenkeeper/tokenkeeper/internal/appprobe"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
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
	// AnnotationAllowNonLoopback "true" lets the app listen beyond 127.0.0.1 (sidecar flag
	// --allow-app-non-loopback): the app is then reachable around the sidecar unless a
	// NetworkPolicy blocks it.
	AnnotationAllowNonLoopback = "tokenkeeper.dev/allow-app-non-loopback"
	// LabelPolicy (the same key as AnnotationPolicy, as a label) selects a policy's
	// injected pods, for the manager's NetworkPolicy.
	LabelPolicy = AnnotationPolicy
)

// Names of what Mutate adds.
const (
	ContainerName = "tokenkeeper-sidecar"
	VolumeName    = "tokenkeeper-bundle"
	BundleMount   = "/etc/tokenkeeper/bundle"
	// AppProbesEnv passes the app's original probes to the sidecar (JSON, keyed by the
	// admin path each probe now calls).
	AppProbesEnv = appprobe.Env
	// The projected ServiceAccount token the sidecar shows the distribution server.
	DistributionVolume   = "tokenkeeper-token"
	DistributionMount    = "/var/run/secrets/tokenkeeper.dev/distribution"
	DistributionAudience = distribution.Audience
	NamespaceEnv         = distribution.NamespaceEnv
	distributionTokenTTL = int64(600)
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
	// DistributionURL is where sidecars fetch keys and revocations pushed by the manager
	// (empty: no distribution, the bundle ConfigMap only).
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

// Mutate returns the pod with the sidecar added, or unchanged with the reason.
func Mutate(in *corev1.Pod, cfg Config) (*corev1.Pod, Result, error) {
	// At CREATE this webhook is the only injector, so a pod that arrives claiming the sidecar
	// is either our own output (the API server calls webhooks again when a later one changed
	// the pod) or a forgery that would run unprotected: only the former is admitted.
	if claim := injectionClaim(in); claim != "" {
		if err := checkOwnOutput(in, cfg); err != nil {
			return nil, Result{}, fmt.Errorf("%w: %s, but %v: leave the sidecar to the webhook", ErrRefused, claim, err)
		}
		return in, Result{Skipped: "already injected"}, nil
	}
	if in.Annotations[AnnotationInject] != "true" {
		return in, Result{Skipped: "not opted in"}, nil
	}
	policy, err := policyOf(in)
	if err != nil {
		return nil, Result{}, err
	}
	if in.Spec.HostNetwork {
		return nil, Result{}, fmt.Errorf("%w: spec.hostNetwork is true: the app would listen on the node's addresses, reachable around the sidecar", ErrRefused)
	}
	pod := in.DeepCopy()
	target, err := choosePort(pod, in.Annotations[AnnotationPort])
	if err != nil {
		return nil, Result{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	if err := checkFree(pod, cfg.ListenPort, cfg.AdminPort); err != nil {
		return nil, Result{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}

	// Take over the app's port name: Services that target it by name now reach the sidecar,
	// with no change to the Service. The app keeps its port under a new name.
	app := &pod.Spec.Containers[target.container]
	port := app.Ports[target.port]
	originalName := port.Name
	if originalName != "" {
		app.Ports[target.port].Name = appPortName(originalName)
	}
	// A hostPort opens the app's port on the node: it moves to the sidecar, which verifies.
	app.Ports[target.port].HostPort, app.Ports[target.port].HostIP = 0, ""

	// The app's probes go through the sidecar's admin port, so the app can bind 127.0.0.1.
	probes, err := rewriteProbes(pod, cfg.AdminPort, originalName)
	if err != nil {
		return nil, Result{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}

	sidecar := container(cfg, sidecarInputs{
		policy:           policy,
		appPort:          port.ContainerPort,
		portName:         originalName,
		hostPort:         port.HostPort,
		hostIP:           port.HostIP,
		probes:           probes,
		allowNonLoopback: in.Annotations[AnnotationAllowNonLoopback] == "true",
	})
	// Native sidecar: an init container that keeps running starts before the app (once
	// ready) and stops after it.
	pod.Spec.InitContainers = append([]corev1.Container{sidecar}, pod.Spec.InitContainers...)
	pod.Spec.Volumes = append(pod.Spec.Volumes, volumes(cfg, policy)...)
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationStatus] = StatusInjected
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[LabelPolicy] = policy
	return pod, Result{Injected: true}, nil
}

// policyOf reads the TokenPolicy name, which must also be a valid label value.
func policyOf(pod *corev1.Pod) (string, error) {
	policy := pod.Annotations[AnnotationPolicy]
	if policy == "" {
		return "", fmt.Errorf("%w: annotation %s names no TokenPolicy", ErrRefused, AnnotationPolicy)
	}
	errs := validation.IsDNS1123Subdomain(policy)
	errs = append(errs, validation.IsValidLabelValue(policy)...)
	if len(errs) > 0 {
		return "", fmt.Errorf("%w: annotation %s=%q: %s", ErrRefused, AnnotationPolicy, policy, strings.Join(errs, "; "))
	}
	return policy, nil
}

// injectionClaim says how a pod claims to carry the sidecar already, or "".
func injectionClaim(pod *corev1.Pod) string {
	if v, ok := pod.Annotations[AnnotationStatus]; ok {
		return fmt.Sprintf("annotation %s=%q says the pod is injected", AnnotationStatus, v)
	}
	for _, f := range []struct {
		path string
		cs   []corev1.Container
	}{{"spec.initContainers", pod.Spec.InitContainers}, {"spec.containers", pod.Spec.Containers}} {
		for i, c := range f.cs {
			if c.Name == ContainerName {
				return fmt.Sprintf("%s[%d] is named %s like the sidecar", f.path, i, ContainerName)
			}
		}
	}
	return ""
}

// checkOwnOutput accepts a claimed pod only when it carries exactly the sidecar, volumes,
// annotation and label Mutate adds. The inputs Mutate took from the original pod (the app
// port, its name, the original probes) are read back from the sidecar, then the whole
// sidecar is rebuilt and compared, so any other image, argument, probe or securityContext
// fails.
func checkOwnOutput(pod *corev1.Pod, cfg Config) error {
	if pod.Annotations[AnnotationInject] != "true" {
		return fmt.Errorf("annotation %s is not \"true\"", AnnotationInject)
	}
	count := 0
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name == ContainerName {
				count++
			}
		}
	}
	if count != 1 || len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != ContainerName {
		return fmt.Errorf("spec.initContainers[0] is not the one container named %s", ContainerName)
	}
	if pod.Annotations[AnnotationStatus] != StatusInjected {
		return fmt.Errorf("annotation %s is not %q", AnnotationStatus, StatusInjected)
	}
	policy, err := policyOf(pod)
	if err != nil {
		return errors.Unwrap(err) // the caller wraps ErrRefused
	}
	if pod.Labels[LabelPolicy] != policy {
		return fmt.Errorf("label %s is not %q", LabelPolicy, policy)
	}
	if pod.Spec.HostNetwork {
		return errors.New("spec.hostNetwork is true")
	}
	got := pod.Spec.InitContainers[0]
	in := sidecarInputs{policy: policy, allowNonLoopback: pod.Annotations[AnnotationAllowNonLoopback] == "true"}
	for _, a := range got.Args {
		if v, ok := strings.CutPrefix(a, "--upstream=http://127.0.0.1:"); ok {
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return fmt.Errorf("spec.initContainers[0].args: upstream port %q is not a number", v)
			}
			in.appPort = int32(n)
		}
	}
	if !appHasPort(pod, in.appPort) {
		return fmt.Errorf("spec.initContainers[0].args: upstream port %d is no port of the app containers", in.appPort)
	}
	if len(got.Ports) > 0 {
		if got.Ports[0].Name != proxyPortName {
			in.portName = got.Ports[0].Name
		}
		in.hostPort, in.hostIP = got.Ports[0].HostPort, got.Ports[0].HostIP
	}
	for _, e := range got.Env {
		if e.Name == AppProbesEnv {
			in.probes = e.Value
		}
	}
	if want := container(cfg, in); !equality.Semantic.DeepEqual(want, withDefaultsOf(want, got)) {
		return errors.New("spec.initContainers[0] is not the sidecar this webhook injects")
	}
	if err := checkAppSide(pod, cfg, in); err != nil {
		return err
	}
	for _, want := range volumes(cfg, policy) {
		found := false
		for _, v := range pod.Spec.Volumes {
			if v.Name == want.Name {
				v := *v.DeepCopy()
				// The API server defaults defaultMode (on a reinvocation the pod is defaulted).
				if v.ConfigMap != nil && want.ConfigMap != nil && want.ConfigMap.DefaultMode == nil {
					v.ConfigMap.DefaultMode = nil
				}
				if v.Projected != nil && want.Projected != nil && want.Projected.DefaultMode == nil {
					v.Projected.DefaultMode = nil
				}
				found = equality.Semantic.DeepEqual(v, want)
			}
		}
		if !found {
			return fmt.Errorf("spec.volumes has no volume %s as the webhook adds it", want.Name)
		}
	}
	return nil
}

// checkAppSide checks what Mutate changes in the app containers: a real sidecar beside an
// app that still has its port name (so Services reach the app directly), a hostPort on the
// app port, or a probe that reaches the app on the pod IP leaves the app reachable around
// the sidecar.
func checkAppSide(pod *corev1.Pod, cfg Config, in sidecarInputs) error {
	renamed := ""
	if in.portName != "" {
		renamed = appPortName(in.portName)
	}
	found := false
	for i, c := range pod.Spec.Containers {
		for j, p := range c.Ports {
			if in.portName != "" && p.Name == in.portName {
				return fmt.Errorf("spec.containers[%d].ports[%d] still has the name %q the sidecar took over", i, j, p.Name)
			}
			if p.ContainerPort != in.appPort {
				continue
			}
			if p.HostPort != 0 || p.HostIP != "" {
				return fmt.Errorf("spec.containers[%d].ports[%d] has hostPort %d on the app port, which only the sidecar's port may have", i, j, p.HostPort)
			}
			found = found || p.Name == renamed
		}
	}
	if !found {
		return fmt.Errorf("no app container has port %d named %q behind the sidecar", in.appPort, renamed)
	}
	var originals map[string]json.RawMessage
	if in.probes != "" {
		if err := json.Unmarshal([]byte(in.probes), &originals); err != nil {
			return fmt.Errorf("spec.initContainers[0].env %s: %v", AppProbesEnv, err)
		}
	}
	through := 0
	for i, c := range pod.Spec.Containers {
		for _, k := range probeSlots(&c) {
			pr := k.probe
			path := appprobe.PathPrefix + c.Name + "/" + k.kind
			if g := pr.HTTPGet; g != nil && g.Port == intstr.FromInt32(cfg.AdminPort) && g.Path == path && onPod(g.Host) {
				if _, ok := originals[path]; !ok {
					return fmt.Errorf("spec.containers[%d].%s goes to %s, which %s does not forward", i, k.field, path, AppProbesEnv)
				}
				through++
				continue
			}
			if (pr.HTTPGet != nil && onPod(pr.HTTPGet.Host)) || (pr.TCPSocket != nil && onPod(pr.TCPSocket.Host)) || pr.GRPC != nil {
				return fmt.Errorf("spec.containers[%d].%s probes the app on the pod IP, not through the sidecar", i, k.field)
			}
		}
	}
	if through != len(originals) {
		return fmt.Errorf("%s forwards %d probes, the app containers have %d through the sidecar", AppProbesEnv, len(originals), through)
	}
	return nil
}

// withDefaultsOf returns got with the fields the API server defaults reset to want's, where
// want leaves them unset: when the API server calls the webhook again, the pod it sends has
// been defaulted. Only defaulted fields are reset; anything a forger could add (a command,
// another image, more args) still differs.
func withDefaultsOf(want, got corev1.Container) corev1.Container {
	got = *got.DeepCopy()
	if want.TerminationMessagePath == "" {
		got.TerminationMessagePath = ""
	}
	if want.TerminationMessagePolicy == "" {
		got.TerminationMessagePolicy = ""
	}
	if want.ImagePullPolicy == "" {
		got.ImagePullPolicy = ""
	}
	for _, pr := range []struct{ want, got *corev1.Probe }{
		{want.StartupProbe, got.StartupProbe}, {want.ReadinessProbe, got.ReadinessProbe}, {want.LivenessProbe, got.LivenessProbe},
	} {
		if pr.want == nil || pr.got == nil {
			continue
		}
		for _, f := range []struct{ want, got *int32 }{
			{&pr.want.TimeoutSeconds, &pr.got.TimeoutSeconds}, {&pr.want.PeriodSeconds, &pr.got.PeriodSeconds},
			{&pr.want.SuccessThreshold, &pr.got.SuccessThreshold}, {&pr.want.FailureThreshold, &pr.got.FailureThreshold},
		} {
			if *f.want == 0 {
				*f.got = 0
			}
		}
		if pr.want.HTTPGet != nil && pr.got.HTTPGet != nil && pr.want.HTTPGet.Scheme == "" {
			pr.got.HTTPGet.Scheme = ""
		}
	}
	return got
}

func appHasPort(pod *corev1.Pod, port int32) bool {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.ContainerPort == port {
				return true
			}
		}
	}
	return false
}

func volumes(cfg Config, policy string) []corev1.Volume {
	vs := []corev1.Volume{{
		Name: VolumeName,
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cfg.BundleConfigMap(policy)},
		}},
	}}
	if cfg.DistributionURL != "" {
		ttl := distributionTokenTTL
		vs = append(vs, corev1.Volume{
			Name: DistributionVolume,
			VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: DistributionAudience, ExpirationSeconds: &ttl, Path: "token",
				}}},
			}},
		})
	}
	return vs
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

// probeSlot is one of a container's probes, with its admin path kind and its field name.
type probeSlot struct {
	kind, field string
	probe       *corev1.Probe
}

// probeSlots lists the probes a container sets, in a fixed order.
func probeSlots(c *corev1.Container) []probeSlot {
	var out []probeSlot
	for _, k := range []probeSlot{{"livez", "livenessProbe", c.LivenessProbe}, {"readyz", "readinessProbe", c.ReadinessProbe}, {"startupz", "startupProbe", c.StartupProbe}} {
		if k.probe != nil {
			out = append(out, k)
		}
	}
	return out
}

// onPod says whether a probe host is the pod itself (the kubelet's default is the pod IP).
func onPod(host string) bool {
	return host == "" || host == "localhost" || host == "127.0.0.1"
}

// rewriteProbes points each httpGet, tcpSocket and grpc probe of the app containers that
// targets the pod at the sidecar's /app-health/<container>/<kind>, and returns the originals
// as the JSON of AppProbesEnv ("" when none). Probes with a foreign host and exec probes are
// left alone. takenOver is the original name of the port the sidecar took over: a probe
// naming it still means the app's port (now renamed).
func rewriteProbes(pod *corev1.Pod, adminPort int32, takenOver string) (string, error) {
	originals := map[string]appprobe.Probe{}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, k := range probeSlots(c) {
			pr := k.probe
			field := fmt.Sprintf("spec.containers[%d].%s", i, k.field)
			resolve := func(p intstr.IntOrString, path string) (int32, error) {
				if p.Type == intstr.Int {
					return p.IntVal, nil
				}
				for _, cp := range c.Ports {
					if cp.Name == p.StrVal || (takenOver != "" && p.StrVal == takenOver && cp.Name == appPortName(takenOver)) {
						return cp.ContainerPort, nil
					}
				}
				return 0, fmt.Errorf("%s.%s: container %s has no port named %q", field, path, c.Name, p.StrVal)
			}
			orig := appprobe.Probe{TimeoutSeconds: int(pr.TimeoutSeconds)}
			if orig.TimeoutSeconds == 0 {
				orig.TimeoutSeconds = 1 // the kubelet's default
			}
			switch {
			case pr.HTTPGet != nil && onPod(pr.HTTPGet.Host):
				port, err := resolve(pr.HTTPGet.Port, "httpGet.port")
				if err != nil {
					return "", err
				}
				h := &appprobe.HTTPGet{Path: pr.HTTPGet.Path, Port: int(port), Scheme: string(pr.HTTPGet.Scheme)}
				for _, hd := range pr.HTTPGet.HTTPHeaders {
					h.HTTPHeaders = append(h.HTTPHeaders, appprobe.Header{Name: hd.Name, Value: hd.Value})
				}
				if h.Path == "" {
					h.Path = "/"
				}
				if h.Scheme == "" {
					h.Scheme = string(corev1.URISchemeHTTP)
				}
				orig.HTTPGet = h
			case pr.TCPSocket != nil && onPod(pr.TCPSocket.Host):
				port, err := resolve(pr.TCPSocket.Port, "tcpSocket.port")
				if err != nil {
					return "", err
				}
				orig.TCPSocket = &appprobe.TCPSocket{Port: int(port)}
			case pr.GRPC != nil:
				g := &appprobe.GRPC{Port: int(pr.GRPC.Port)}
				if pr.GRPC.Service != nil {
					g.Service = *pr.GRPC.Service
				}
				orig.GRPC = g
			default:
				continue // exec, or a host elsewhere: not the app on this pod
			}
			path := appprobe.PathPrefix + c.Name + "/" + k.kind
			originals[path] = orig
			pr.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: path, Port: intstr.FromInt32(adminPort), Scheme: corev1.URISchemeHTTP,
			}}
		}
	}
	if len(originals) == 0 {
		return "", nil
	}
	raw, err := json.Marshal(originals) // map keys sorted: the same pod gives the same JSON
	if err != nil {
		return "", err
	}
	return string(raw), nil
}

// proxyPortName names the sidecar's proxy port when the app's port had no name.
const proxyPortName = "tk-proxy"

// sidecarInputs is what the sidecar container depends on besides the Config.
type sidecarInputs struct {
	policy           string
	appPort          int32
	portName         string // the taken-over port's name ("" when it had none)
	hostPort         int32  // moved from the app's port
	hostIP           string
	probes           string // JSON for AppProbesEnv, "" when no probe was rewritten
	allowNonLoopback bool
}

func container(cfg Config, in sidecarInputs) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	no, yes := false, true
	uid := int64(65532)
	admin := intstr.FromString("tk-admin")
	adminAddr := "127.0.0.1:" + strconv.Itoa(int(cfg.AdminPort))
	ports := []corev1.ContainerPort{
		{Name: in.portName, ContainerPort: cfg.ListenPort, Protocol: corev1.ProtocolTCP, HostPort: in.hostPort, HostIP: in.hostIP},
		{Name: "tk-admin", ContainerPort: cfg.AdminPort, Protocol: corev1.ProtocolTCP},
	}
	if in.portName == "" {
		ports[0].Name = proxyPortName
	}
	args := []string{
		"--listen=:" + strconv.Itoa(int(cfg.ListenPort)),
		"--admin-listen=:" + strconv.Itoa(int(cfg.AdminPort)),
		"--upstream=http://127.0.0.1:" + strconv.Itoa(int(in.appPort)),
		"--bundle-dir=" + BundleMount,
		"--policy-name=" + in.policy,
	}
	if in.allowNonLoopback {
		args = append(args, "--allow-app-non-loopback")
	}
	mounts := []corev1.VolumeMount{{Name: VolumeName, MountPath: BundleMount, ReadOnly: true}}
	if cfg.DistributionURL != "" {
		args = append(args, "--distribution-url="+cfg.DistributionURL, "--distribution-token-file="+DistributionMount+"/token")
		mounts = append(mounts, corev1.VolumeMount{Name: DistributionVolume, MountPath: DistributionMount, ReadOnly: true})
	}
	var env []corev1.EnvVar
	if in.probes != "" {
		env = []corev1.EnvVar{{Name: AppProbesEnv, Value: in.probes}}
	}
	if cfg.DistributionURL != "" {
		// The sidecar asks for its policy in its own namespace (the only one it is served).
		env = append(env, corev1.EnvVar{Name: NamespaceEnv, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
		}})
	}
	return corev1.Container{
		Name:          ContainerName,
		Image:         cfg.Image,
		RestartPolicy: &always,
		Args:          args,
		Env:           env,
		Ports:         ports,
		// The app starts only once the sidecar has keys and serves. /startupz leaves out the
		// loopback check, which can only see the app after it started.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/startupz", Port: admin}},
			PeriodSeconds:    1,
			FailureThreshold: 120,
		},
		// An exec probe, so that the kubelet's Event carries the reason (for example the app
		// listening beyond loopback) as "Readiness probe failed: ...". One failure is enough:
		// an app port exposed around the sidecar leaves the Service at the next probe.
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"/sidecar", "probe", "--admin=" + adminAddr, "/readyz"}}},
			PeriodSeconds:    5,
			FailureThreshold: 1,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: admin}},
			PeriodSeconds:    10,
			FailureThreshold: 3,
		},
		Resources:    cfg.Resources,
		VolumeMounts: mounts,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             &yes,
			RunAsUser:                &uid,
			RunAsGroup:               &uid,
			ReadOnlyRootFilesystem:   &yes,
			AllowPrivilegeEscalation: &no,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}
