package inject

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/tokenkeeper/tokenkeeper/internal/sidecar"
)

var update = flag.Bool("update", false, "rewrite golden files")

func readPod(t *testing.T, path string) *corev1.Pod {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{}
	if err := yaml.UnmarshalStrict(data, pod); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pod
}

// Each testdata/<case>.yaml is a pod as submitted; <case>.golden.yaml is the whole pod the
// webhook admits. Cases named *.error.yaml must be refused; <case>.error.golden holds the message.
func TestMutateMatchesGoldenPods(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.yaml")
	for _, in := range inputs {
		if strings.HasSuffix(in, ".golden.yaml") {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			pod := readPod(t, in)
			cfg := configFor(name)
			out, res, err := Mutate(pod, cfg)
			if strings.HasSuffix(name, ".error") {
				if !errors.Is(err, ErrRefused) {
					t.Fatalf("want a refusal, got err=%v result=%+v", err, res)
				}
				compare(t, strings.TrimSuffix(in, ".yaml")+".golden", []byte(err.Error()+"\n"))
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := yaml.Marshal(out)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, strings.TrimSuffix(in, ".yaml")+".golden.yaml", got)

			checkForwardedProbes(t, out, cfg)

			// Injecting the injected pod again changes nothing.
			again, res2, err := Mutate(out, cfg)
			if err != nil || res2.Injected || !equality.Semantic.DeepEqual(again, out) {
				t.Errorf("second injection changed the pod (result %+v, err %v)", res2, err)
			}
		})
	}
}

// testDistributionURL is the distribution server of the cases named distribution*.
const testDistributionURL = "https://tokenkeeper-distribution.tokenkeeper-system.svc:8443"

func configFor(name string) Config {
	cfg := DefaultConfig()
	if strings.HasPrefix(name, "distribution") {
		cfg.DistributionURL = testDistributionURL
	}
	return cfg
}

func compare(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./internal/inject -update writes it)", err)
	}
	if string(want) != string(got) {
		t.Errorf("%s differs:\n--- got ---\n%s", path, got)
	}
}

func TestMutateKeepsTheSubmittedPodUntouched(t *testing.T) {
	pod := readPod(t, "testdata/one-named-port.yaml")
	before := pod.DeepCopy()
	if _, _, err := Mutate(pod, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if !equality.Semantic.DeepEqual(pod, before) {
		t.Error("Mutate changed its input")
	}
}

func TestInjectedSidecarIsHardenedAndStartsFirst(t *testing.T) {
	out, _, err := Mutate(readPod(t, "testdata/one-named-port.yaml"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	sc := out.Spec.InitContainers[0]
	if sc.Name != ContainerName || sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("first init container %s is not a native sidecar", sc.Name)
	}
	s := sc.SecurityContext
	if s == nil || !*s.RunAsNonRoot || !*s.ReadOnlyRootFilesystem || *s.AllowPrivilegeEscalation || len(s.Capabilities.Drop) != 1 || s.Capabilities.Drop[0] != "ALL" {
		t.Errorf("sidecar securityContext is not hardened: %+v", s)
	}
	if sc.StartupProbe == nil || sc.StartupProbe.HTTPGet == nil || sc.StartupProbe.HTTPGet.Path != "/startupz" || sc.Resources.Limits.Memory().IsZero() {
		t.Error("sidecar lacks a startup probe on /startupz or a memory limit")
	}
	// The readiness probe is an exec of the sidecar itself, so the kubelet's Event carries
	// the sidecar's reason for not being ready.
	if r := sc.ReadinessProbe; r == nil || r.Exec == nil || strings.Join(r.Exec.Command, " ") != "/sidecar probe --admin=127.0.0.1:15021 /readyz" {
		t.Errorf("sidecar readiness probe is not the exec probe of the contract: %+v", r)
	}
	if out.Labels[LabelPolicy] != "orders-api" {
		t.Errorf("pod not labelled %s=orders-api: %v", LabelPolicy, out.Labels)
	}
	if out.Spec.Containers[0].Ports[0].Name != "app-http" || sc.Ports[0].Name != "http" {
		t.Errorf("port not taken over: app %q, sidecar %q", out.Spec.Containers[0].Ports[0].Name, sc.Ports[0].Name)
	}
	if got := out.Spec.Containers[0].ReadinessProbe.HTTPGet; got.Path != "/app-health/orders/readyz" || got.Port.IntVal != DefaultConfig().AdminPort {
		t.Errorf("the app's readiness probe does not go through the sidecar: %+v", got)
	}
}

// A pod that claims the injection must be exactly what Mutate makes: every way of forging the
// marks, or of loosening a real injected pod before submitting it, is refused.
func TestForgedInjectedPodsAreRefused(t *testing.T) {
	injected := func(t *testing.T) *corev1.Pod {
		out, _, err := Mutate(readPod(t, "testdata/probe-httpget-headers.yaml"), DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	cases := []struct {
		name   string
		tamper func(p *corev1.Pod)
	}{
		{"a sidecar of another image", func(p *corev1.Pod) { p.Spec.InitContainers[0].Image = "evil/passthrough:1" }},
		{"a sidecar with a command of its own", func(p *corev1.Pod) { p.Spec.InitContainers[0].Command = []string{"sleep", "infinity"} }},
		{"a sidecar without its policy argument", func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Args = p.Spec.InitContainers[0].Args[:4]
		}},
		{"a sidecar that skips the loopback check the pod did not opt out of", func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Args = append(p.Spec.InitContainers[0].Args, "--allow-app-non-loopback")
		}},
		{"an app port left under its own name, so Services bypass the sidecar", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports[0].Name = "http"
			p.Spec.InitContainers[0].Ports[0].Name = "tk-proxy"
		}},
		{"a hostPort left on the app port", func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].HostPort = 8080 }},
		{"an app probe aimed at the pod IP again", func(p *corev1.Pod) {
			p.Spec.Containers[0].ReadinessProbe.HTTPGet = &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt(8080)}
		}},
		{"probes forwarded somewhere else", func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Env[0].Value = `{"/app-health/orders/readyz":{"tcpSocket":{"port":22}}}`
		}},
		{"the sidecar moved behind another init container", func(p *corev1.Pod) {
			p.Spec.InitContainers = append([]corev1.Container{{Name: "setup", Image: "busybox"}}, p.Spec.InitContainers...)
		}},
		{"a second container named like the sidecar", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ContainerName, Image: "busybox"})
		}},
		{"the opt-in annotation removed", func(p *corev1.Pod) { delete(p.Annotations, AnnotationInject) }},
		{"the bundle of another policy", func(p *corev1.Pod) { p.Spec.Volumes[0].ConfigMap.Name = "other-bundle" }},
		{"the status annotation without the sidecar", func(p *corev1.Pod) { p.Spec.InitContainers = nil }},
		{"the sidecar without the status annotation", func(p *corev1.Pod) { delete(p.Annotations, AnnotationStatus) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := injected(t)
			c.tamper(pod)
			_, res, err := Mutate(pod, DefaultConfig())
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "claims to be injected already") {
				t.Fatalf("want a refusal, got err=%v result=%+v", err, res)
			}
		})
	}
	t.Run("the pod Mutate made is admitted unchanged", func(t *testing.T) {
		pod := injected(t)
		out, res, err := Mutate(pod, DefaultConfig())
		if err != nil || res.Injected || res.Skipped != "already injected" || !equality.Semantic.DeepEqual(out, pod) {
			t.Fatalf("got result %+v, err %v", res, err)
		}
	})
}

// checkForwardedProbes parses the sidecar's TOKENKEEPER_APP_PROBES with the sidecar's own
// parser and checks that every probe pointed at the admin port has its original there.
func checkForwardedProbes(t *testing.T, pod *corev1.Pod, cfg Config) {
	t.Helper()
	if !injected(pod) {
		return
	}
	var env string
	for _, e := range pod.Spec.InitContainers[0].Env {
		if e.Name == sidecar.AppProbesEnv {
			env = e.Value
		}
	}
	probes, err := sidecar.ParseAppProbes(env)
	if err != nil {
		t.Fatalf("the sidecar cannot parse the probes the webhook passes it: %v", err)
	}
	seen := 0
	for _, c := range pod.Spec.Containers {
		for _, pr := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Port.IntVal != cfg.AdminPort {
				continue
			}
			seen++
			if _, ok := probes[pr.HTTPGet.Path]; !ok {
				t.Errorf("container %s probes %s, which the sidecar has no original for", c.Name, pr.HTTPGet.Path)
			}
		}
	}
	if seen != len(probes) {
		t.Errorf("%d probes go through the sidecar, %d originals passed", seen, len(probes))
	}
}

func injected(pod *corev1.Pod) bool { return pod.Annotations[AnnotationStatus] == StatusInjected }
