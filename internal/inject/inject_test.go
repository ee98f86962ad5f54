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
			out, res, err := Mutate(pod, DefaultConfig())
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

			checkForwardedProbes(t, out, DefaultConfig())

			// Injecting the injected pod again changes nothing.
			again, res2, err := Mutate(out, DefaultConfig())
			if err != nil || res2.Injected || !equality.Semantic.DeepEqual(again, out) {
				t.Errorf("second injection changed the pod (result %+v, err %v)", res2, err)
			}
		})
	}
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
	if sc.StartupProbe == nil || sc.Resources.Limits.Memory().IsZero() {
		t.Error("sidecar lacks a startup probe or a memory limit")
	}
	if out.Spec.Containers[0].Ports[0].Name != "app-http" || sc.Ports[0].Name != "http" {
		t.Errorf("port not taken over: app %q, sidecar %q", out.Spec.Containers[0].Ports[0].Name, sc.Ports[0].Name)
	}
	if h := out.Spec.Containers[0].ReadinessProbe.HTTPGet; h == nil || h.Path != "/app-health/orders/readyz" || h.Port.IntVal != DefaultConfig().AdminPort {
		t.Errorf("the app's readiness probe does not go through the sidecar: %+v", h)
	}
}

// A pod arriving with the sidecar must be exactly Mutate's output; anything else would run
// unprotected while looking protected.
func TestClaimedPodsAreAdmittedOnlyWhenTheyAreMutatesOwnOutput(t *testing.T) {
	out, _, err := Mutate(readPod(t, "testdata/one-named-port.yaml"), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		change func(*corev1.Pod)
		want   string // "" admits
	}{
		{"the webhook's own output, changed by a later webhook elsewhere, is admitted", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = append(p.Spec.Containers[0].Env, corev1.EnvVar{Name: "OTEL", Value: "1"})
			p.Labels["team"] = "shop"
		}, ""},
		{"a sidecar with another image is refused", func(p *corev1.Pod) { p.Spec.InitContainers[0].Image = "busybox" }, "is not the sidecar this webhook injects"},
		{"a sidecar that does not verify is refused", func(p *corev1.Pod) { p.Spec.InitContainers[0].Args[4] = "--policy-name=open" }, "is not the sidecar this webhook injects"},
		{"a sidecar with its loopback check switched off behind the annotation's back is refused", func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Args = append(p.Spec.InitContainers[0].Args, "--allow-app-non-loopback")
		}, "is not the sidecar this webhook injects"},
		{"a sidecar proxying to a port the app does not have is refused", func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Args[2] = "--upstream=http://127.0.0.1:9999"
		}, "upstream port 9999 is no port of the app containers"},
		{"a sidecar that is not the first init container is refused", func(p *corev1.Pod) {
			p.Spec.InitContainers = append([]corev1.Container{{Name: "setup", Image: "busybox"}}, p.Spec.InitContainers...)
		}, "is not the one container named"},
		{"a second container named like the sidecar is refused", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: ContainerName, Image: "busybox"})
		}, "is not the one container named"},
		{"a bundle volume from another ConfigMap is refused", func(p *corev1.Pod) {
			p.Spec.Volumes[0].ConfigMap.Name = "forged-bundle"
		}, "spec.volumes has no volume tokenkeeper-bundle"},
		{"a policy label naming another policy is refused", func(p *corev1.Pod) { p.Labels[LabelPolicy] = "other" }, "label tokenkeeper.dev/policy"},
		{"the sidecar without the status annotation is refused", func(p *corev1.Pod) { delete(p.Annotations, AnnotationStatus) }, "is named tokenkeeper-sidecar like the sidecar, but annotation tokenkeeper.dev/status"},
		{"the app port left under its own name, so Services reach the app directly, is refused", func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports[0].Name = "http"
		}, "still has the name \"http\" the sidecar took over"},
		{"a hostPort left on the app port is refused", func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].HostPort = 8080 }, "has hostPort 8080 on the app port"},
		{"an app probe aimed at the pod IP again is refused", func(p *corev1.Pod) {
			p.Spec.Containers[0].ReadinessProbe.HTTPGet = &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt(8080)}
		}, "readinessProbe probes the app on the pod IP"},
		{"an app probe to a path the sidecar does not forward is refused", func(p *corev1.Pod) {
			p.Spec.InitContainers[0].Env = nil
		}, "which TOKENKEEPER_APP_PROBES does not forward"},
		{"hostNetwork added after injection is refused", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "spec.hostNetwork is true"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := out.DeepCopy()
			tc.change(p)
			_, res, err := Mutate(p, DefaultConfig())
			if tc.want == "" {
				if err != nil || res.Injected || res.Skipped != "already injected" {
					t.Fatalf("want it admitted as already injected, got %+v, %v", res, err)
				}
				return
			}
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want a refusal containing %q, got %+v, %v", tc.want, res, err)
			}
		})
	}
}

func TestDistributionAddsTheProjectedTokenAndTheSidecarArgs(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DistributionURL = "https://tokenkeeper-distribution.tokenkeeper-system.svc"
	out, _, err := Mutate(readPod(t, "testdata/one-named-port.yaml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc := out.Spec.InitContainers[0]
	// The sidecar asks for its own namespace's policy: the downward API tells it which.
	nsEnv := false
	for _, e := range sc.Env {
		nsEnv = nsEnv || (e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace")
	}
	if !nsEnv {
		t.Errorf("no POD_NAMESPACE from the downward API: %+v", sc.Env)
	}
	args := strings.Join(sc.Args, " ")
	for _, want := range []string{
		"--distribution-url=" + cfg.DistributionURL,
		"--distribution-token-file=/var/run/secrets/tokenkeeper.dev/distribution/token",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("sidecar args %q lack %s", args, want)
		}
	}
	var vol *corev1.Volume
	for i := range out.Spec.Volumes {
		if out.Spec.Volumes[i].Name == "tokenkeeper-token" {
			vol = &out.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.Projected == nil || len(vol.Projected.Sources) != 1 {
		t.Fatalf("no projected token volume: %+v", out.Spec.Volumes)
	}
	tok := vol.Projected.Sources[0].ServiceAccountToken
	if tok == nil || tok.Audience != "tokenkeeper.dev/distribution" || tok.ExpirationSeconds == nil || *tok.ExpirationSeconds != 600 || tok.Path != "token" {
		t.Errorf("projected token is not the contract's: %+v", tok)
	}
	mounted := false
	for _, m := range sc.VolumeMounts {
		mounted = mounted || (m.Name == "tokenkeeper-token" && m.MountPath == "/var/run/secrets/tokenkeeper.dev/distribution" && m.ReadOnly)
	}
	if !mounted {
		t.Errorf("token not mounted read-only: %+v", sc.VolumeMounts)
	}
	// The injected pod is still recognized as the webhook's own output.
	if _, res, err := Mutate(out, cfg); err != nil || res.Skipped != "already injected" {
		t.Errorf("reinjection: %+v, %v", res, err)
	}
	// Without a URL nothing of it appears.
	plain, _, _ := Mutate(readPod(t, "testdata/one-named-port.yaml"), DefaultConfig())
	if len(plain.Spec.Volumes) != 1 || strings.Contains(strings.Join(plain.Spec.InitContainers[0].Args, " "), "distribution") {
		t.Errorf("distribution parts without a URL: %+v", plain.Spec.Volumes)
	}
}

// checkForwardedProbes parses the sidecar's TOKENKEEPER_APP_PROBES with the sidecar's own
// parser (the other side of the contract) and checks that every probe pointed at the admin
// port has its original there.
func checkForwardedProbes(t *testing.T, pod *corev1.Pod, cfg Config) {
	t.Helper()
	if pod.Annotations[AnnotationStatus] != StatusInjected {
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
