// Package inject adds the verifying sidecar to a pod. Mutate is a pure function of the pod
// and the configuration, so every decision is tested with golden files of whole pods; the
// admission webhook around it only decodes, calls Mutate and patches.
package inject

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
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
)

// Names of what Mutate adds.
const (
	ContainerName = "tokenkeeper-sidecar"
	VolumeName    = "tokenkeeper-bundle"
	BundleMount   = "/etc/tokenkeeper/bundle"
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
	if in.Annotations[AnnotationInject] != "true" {
		return in, Result{Skipped: "not opted in"}, nil
	}
	if in.Annotations[AnnotationStatus] == StatusInjected || hasContainer(in, ContainerName) {
		return in, Result{Skipped: "already injected"}, nil
	}
	policy := in.Annotations[AnnotationPolicy]
	if policy == "" {
		return nil, Result{}, fmt.Errorf("%w: annotation %s names no TokenPolicy", ErrRefused, AnnotationPolicy)
	}
	if errs := validation.IsDNS1123Subdomain(policy); len(errs) > 0 {
		return nil, Result{}, fmt.Errorf("%w: annotation %s=%q: %s", ErrRefused, AnnotationPolicy, policy, strings.Join(errs, "; "))
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
		renamed := appPortName(originalName)
		app.Ports[target.port].Name = renamed
		renameProbePorts(pod, originalName, renamed)
	}

	sidecar := container(cfg, policy, port.ContainerPort, originalName)
	// Native sidecar: an init container that keeps running starts before the app (once
	// ready) and stops after it.
	pod.Spec.InitContainers = append([]corev1.Container{sidecar}, pod.Spec.InitContainers...)
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name: VolumeName,
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cfg.BundleConfigMap(policy)},
		}},
	})
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationStatus] = StatusInjected
	return pod, Result{Injected: true}, nil
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

// renameProbePorts keeps the app's own probes pointing at the app (by its new port name).
func renameProbePorts(pod *corev1.Pod, from, to string) {
	fix := func(p *intstr.IntOrString) {
		if p.Type == intstr.String && p.StrVal == from {
			*p = intstr.FromString(to)
		}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
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

func container(cfg Config, policy string, appPort int32, portName string) corev1.Container {
	always := corev1.ContainerRestartPolicyAlways
	no, yes := false, true
	uid := int64(65532)
	admin := intstr.FromString("tk-admin")
	ports := []corev1.ContainerPort{
		{Name: portName, ContainerPort: cfg.ListenPort, Protocol: corev1.ProtocolTCP},
		{Name: "tk-admin", ContainerPort: cfg.AdminPort, Protocol: corev1.ProtocolTCP},
	}
	if portName == "" {
		ports[0].Name = "tk-proxy"
	}
	return corev1.Container{
		Name:          ContainerName,
		Image:         cfg.Image,
		RestartPolicy: &always,
		Args: []string{
			"--listen=:" + strconv.Itoa(int(cfg.ListenPort)),
			"--admin-listen=:" + strconv.Itoa(int(cfg.AdminPort)),
			"--upstream=http://127.0.0.1:" + strconv.Itoa(int(appPort)),
			"--bundle-dir=" + BundleMount,
			"--policy-name=" + policy,
		},
		Ports: ports,
		// The app starts only once the sidecar has keys and serves.
		StartupProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: admin}},
			PeriodSeconds:    1,
			FailureThreshold: 120,
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: admin}},
			PeriodSeconds: 5,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: admin}},
			PeriodSeconds:    10,
			FailureThreshold: 3,
		},
		Resources:    cfg.Resources,
		VolumeMounts: []corev1.VolumeMount{{Name: VolumeName, MountPath: BundleMount, ReadOnly: true}},
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
