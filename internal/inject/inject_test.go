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
	"sigs.k8s.io/yaml"
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
	if out.Spec.Containers[0].ReadinessProbe.HTTPGet.Port.StrVal != "app-http" {
		t.Error("the app's own probe no longer reaches the app")
	}
}
