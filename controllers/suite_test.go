package controllers_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

// The suite runs the real manager wiring against a real kube-apiserver and etcd (envtest),
// built from source by hack/kube-binaries.sh.
var (
	cfg       *rest.Config
	k8sClient client.Client
	nsCounter atomic.Int64
)

func TestMain(m *testing.M) {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapLevel())))
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		// Same assets `make test` uses; built once and cached under bin/.
		out, err := exec.Command("../hack/kube-binaries.sh").Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "envtest assets unavailable (run make envtest-assets): %v\n", err)
			os.Exit(1)
		}
		os.Setenv("KUBEBUILDER_ASSETS", strings.TrimSpace(string(out)))
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	cfg, err = env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting envtest: %v\n", err)
		os.Exit(1)
	}
	k8sClient, err = client.New(cfg, client.Options{Scheme: operator.Scheme()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	os.Exit(code)
}

func zapLevel() zapcore.Level {
	if os.Getenv("TEST_VERBOSE_MANAGER") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel // set TEST_VERBOSE_MANAGER=1 to see the manager's logs
}

// newNamespace makes a fresh namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", nsCounter.Add(1), strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	if len(name) > 60 {
		name = name[:60]
	}
	name = strings.TrimRight(name, "-")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return name
}

// runningManager is a manager started for one test; stop() is a crash as far as the
// cluster can tell (no cleanup of any object).
type runningManager struct {
	stop     func()
	registry *prometheus.Registry
}

func startManager(t *testing.T, o operator.Options) *runningManager {
	t.Helper()
	return startManagerWith(t, cfg, o)
}

// startManagerWith runs the manager with the rights of restCfg's user.
func startManagerWith(t *testing.T, cfg *rest.Config, o operator.Options) *runningManager {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o.MetricsAddr, o.ProbeAddr, o.SkipNameValidation = "0", "0", true
	reg := prometheus.NewRegistry()
	o.Registry = reg
	mgr, err := operator.New(ctx, cfg, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var stopped atomic.Bool
	stop := func() {
		if stopped.Swap(true) {
			return
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager stopped with error: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("manager did not stop within 30s")
		}
	}
	t.Cleanup(stop)
	return &runningManager{stop: stop, registry: reg}
}

// eventually retries f until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
