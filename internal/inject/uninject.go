package inject

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tokenkeeper/tokenkeeper/internal/sidecar"
)

// uninject takes out of an injected pod what inject put in, giving back a pod that inject
// turns into the same injected pod. checkInjected compares the two, so what uninject cannot
// undo exactly only makes a pod refused, never admitted.
func uninject(in *corev1.Pod, cfg Config) (*corev1.Pod, error) {
	pod := in.DeepCopy()
	for i, c := range pod.Spec.Containers {
		if c.Name == ContainerName {
			return nil, fmt.Errorf("spec.containers[%d] is named %s, which only the injected sidecar (the first init container) is", i, ContainerName)
		}
	}
	if len(pod.Spec.InitContainers) == 0 || pod.Spec.InitContainers[0].Name != ContainerName {
		return nil, fmt.Errorf("spec.initContainers[0] is not the sidecar %s", ContainerName)
	}
	sc := pod.Spec.InitContainers[0]
	pod.Spec.InitContainers = pod.Spec.InitContainers[1:]
	for i, c := range pod.Spec.InitContainers {
		if c.Name == ContainerName {
			return nil, fmt.Errorf("spec.initContainers[%d] is a second %s", i+1, ContainerName)
		}
	}
	var volumes []corev1.Volume
	for _, v := range pod.Spec.Volumes {
		if v.Name != VolumeName && v.Name != TokenVolumeName {
			volumes = append(volumes, v)
		}
	}
	pod.Spec.Volumes = volumes
	delete(pod.Annotations, AnnotationStatus)
	delete(pod.Labels, LabelPolicy)

	// The app port the sidecar took over: its number is the sidecar's upstream, its name
	// and hostPort are on the sidecar's proxy port.
	upstream := -1
	for _, a := range sc.Args {
		if v, ok := strings.CutPrefix(a, "--upstream=http://127.0.0.1:"); ok {
			upstream, _ = strconv.Atoi(v)
		}
	}
	if upstream < 0 || len(sc.Ports) == 0 {
		return nil, fmt.Errorf("the sidecar has no --upstream on loopback or no proxy port")
	}
	proxy := sc.Ports[0]
	name := proxy.Name
	if name == "tk-proxy" {
		name = ""
	}
	renamed := ""
	if name != "" {
		renamed = appPortName(name)
	}
	found := false
	for c := range pod.Spec.Containers {
		app := &pod.Spec.Containers[c]
		for p := range app.Ports {
			if found || int(app.Ports[p].ContainerPort) != upstream || app.Ports[p].Name != renamed {
				continue
			}
			found = true
			app.Ports[p].Name, app.Ports[p].HostPort, app.Ports[p].HostIP = name, proxy.HostPort, proxy.HostIP
			if name != "" {
				renameProbePorts(app, renamed, name)
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("no app container has port %d named %q behind the sidecar", upstream, renamed)
	}

	var env string
	for _, e := range sc.Env {
		if e.Name == sidecar.AppProbesEnv {
			env = e.Value
		}
	}
	probes, err := sidecar.ParseAppProbes(env)
	if err != nil {
		return nil, err
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		for _, k := range probeKinds(c) {
			pr := *k.probe
			if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Port != intstr.FromInt32(cfg.AdminPort) {
				continue
			}
			orig, ok := probes[pr.HTTPGet.Path]
			if !ok || pr.HTTPGet.Path != appHealthPathPrefix+c.Name+"/"+k.kind {
				continue
			}
			restored := pr.DeepCopy()
			restored.ProbeHandler = probeHandler(orig)
			*k.probe = restored
		}
	}
	return pod, nil
}

// probeHandler is the kubelet's form of a probe the sidecar forwards.
func probeHandler(p sidecar.AppProbe) corev1.ProbeHandler {
	switch {
	case p.HTTPGet != nil:
		g := &corev1.HTTPGetAction{Path: p.HTTPGet.Path, Port: intstr.FromInt(p.HTTPGet.Port), Scheme: corev1.URIScheme(p.HTTPGet.Scheme)}
		for _, h := range p.HTTPGet.HTTPHeaders {
			g.HTTPHeaders = append(g.HTTPHeaders, corev1.HTTPHeader{Name: h.Name, Value: h.Value})
		}
		return corev1.ProbeHandler{HTTPGet: g}
	case p.TCPSocket != nil:
		return corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(p.TCPSocket.Port)}}
	default:
		svc := p.GRPC.Service
		return corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: int32(p.GRPC.Port), Service: &svc}}
	}
}
