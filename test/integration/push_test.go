// Package integration runs the real pieces together: a kube-apiserver and etcd (envtest),
// the manager's own wiring (operator.New, as cmd/manager runs it) and the sidecar as a
// separate process built from cmd/sidecar, talking over TLS and real TokenReviews.
package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
)

var (
	cfg        *rest.Config
	k8s        client.Client
	sidecarBin string
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		out, err := exec.Command("../../hack/kube-binaries.sh").Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "envtest assets unavailable (run make envtest-assets): %v\n", err)
			os.Exit(1)
		}
		os.Setenv("KUBEBUILDER_ASSETS", strings.TrimSpace(string(out)))
	}
	tmp, err := os.MkdirTemp("", "tokenkeeper-integration")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sidecarBin = filepath.Join(tmp, "sidecar")
	if out, err := exec.Command("go", "build", "-o", sidecarBin, "../../cmd/sidecar").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the sidecar: %v\n%s", err, out)
		os.Exit(1)
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "starting envtest: %v\n", err)
		os.Exit(1)
	}
	if k8s, err = client.New(cfg, client.Options{Scheme: operator.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	_ = env.Stop()
	_ = os.RemoveAll(tmp)
	os.Exit(code)
}

var nsCounter atomic.Int64

func newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := fmt.Sprintf("%s-%d", prefix, nsCounter.Add(1))
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return ns
}

func create(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func eventually(t *testing.T, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startManager runs the manager's wiring with its snapshot server on addr, until stop.
func startManager(t *testing.T, mgrNS, addr string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	mgr, err := operator.New(ctx, cfg, operator.Options{
		MetricsAddr: "0", ProbeAddr: "0", SkipNameValidation: true, Registry: prometheus.NewRegistry(),
		DistributionAddr: addr, Namespace: mgrNS, WebhookCertSecret: "certs", DistributionCertHosts: []string{"127.0.0.1"},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var stopped atomic.Bool
	stop = func() {
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
	return stop
}

// sign signs claims with the SigningKey's active key, as an issuer mounting its Secret.
func sign(t *testing.T, ns, sk string, claims map[string]any) string {
	t.Helper()
	s := &corev1.Secret{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: sk + "-signing-keys"}, s); err != nil {
		t.Fatal(err)
	}
	priv, err := keys.ParsePrivatePEM(s.Data[keys.FileActivePEM])
	if err != nil {
		t.Fatal(err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(s.Data[keys.FileActiveJWK]); err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(jwk.Algorithm), Key: jose.JSONWebKey{Key: priv, KeyID: jwk.KeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	all := map[string]any{"iss": "https://issuer.example", "aud": "api", "sub": "alice", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	for k, v := range claims {
		all[k] = v
	}
	tok, err := jwt.Signed(signer).Claims(all).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func sk0(ns string) *tkv1.SigningKey {
	return &tkv1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "issuer"}}
}

// pushEnv is a namespace with a SigningKey, a TokenPolicy, an empty RevocationList and a
// running sidecar subscribed to the manager, whose bundle files are written once and never
// again: whatever the sidecar learns later came through the push.
type pushEnv struct {
	ns, proxy, admin, bundleDir string
	mgrNS, addr                 string
	stopManager                 func()
}

func startPush(t *testing.T) *pushEnv {
	t.Helper()
	e := &pushEnv{ns: newNamespace(t, "push"), mgrNS: newNamespace(t, "manager"), addr: freeAddr(t)}
	e.stopManager = startManager(t, e.mgrNS, e.addr)
	sk := &tkv1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "issuer"}}
	sk.Spec.Rotation.Interval = &metav1.Duration{Duration: time.Hour}
	sk.Spec.Rotation.PublishAhead = &metav1.Duration{Duration: time.Second}
	sk.Spec.Rotation.RetainFor = &metav1.Duration{Duration: time.Hour}
	create(t, sk)
	create(t, &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "api"}, Spec: tkv1.TokenPolicySpec{
		Issuer: "https://issuer.example", Audiences: []string{"api"},
		TrustedKeys: []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "issuer"}}},
	}})
	create(t, &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "incidents"}})

	eventually(t, 60*time.Second, "the SigningKey Ready with an active key", func() error {
		sk := &tkv1.SigningKey{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(sk0(e.ns)), sk); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(sk.Status.Conditions, tkv1.ConditionReady) || sk.Status.ActiveKID == "" {
			return fmt.Errorf("not Ready: %+v", sk.Status.Conditions)
		}
		return nil
	})
	var data map[string]string
	eventually(t, 60*time.Second, "a bundle with keys and the distribution CA", func() error {
		tp := &tkv1.TokenPolicy{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "api"}, tp); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(tp.Status.Conditions, tkv1.ConditionReady) {
			return fmt.Errorf("policy not Ready: %+v", tp.Status.Conditions)
		}
		cm := &corev1.ConfigMap{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "api-bundle"}, cm); err != nil {
			return err
		}
		if cm.Data[distribution.CAKey] == "" || !strings.Contains(cm.Data[policy.BundleJWKS], `"kid"`) {
			return fmt.Errorf("bundle incomplete: %v", cm.Data)
		}
		data = cm.Data
		return nil
	})
	e.bundleDir = t.TempDir()
	for name, content := range data {
		if err := os.WriteFile(filepath.Join(e.bundleDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "app"}}
	create(t, sa)
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{distribution.Audience}, ExpirationSeconds: ptr.To[int64](600)}}
	if err := k8s.SubResource("token").Create(context.Background(), sa, tr); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		t.Fatal(err)
	}

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("app")) }))
	t.Cleanup(app.Close)
	e.proxy, e.admin = freeAddr(t), freeAddr(t)
	logFile, err := os.Create(filepath.Join(t.TempDir(), "sidecar.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sidecarBin, "--listen="+e.proxy, "--admin-listen="+e.admin, "--upstream="+app.URL,
		"--bundle-dir="+e.bundleDir, "--policy-name=api", "--namespace="+e.ns,
		"--distribution-url=https://"+e.addr, "--distribution-token-file="+tokenFile, "--log-format=text")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("sidecar log:\n%s", b)
		}
	})
	eventually(t, 30*time.Second, "the sidecar ready and subscribed", func() error {
		if got := status(t, "http://"+e.admin+"/readyz", ""); got != http.StatusOK {
			return fmt.Errorf("/readyz %d", got)
		}
		return e.streaming(t)
	})
	return e
}

// streaming reports whether the sidecar enforces a snapshot from the stream.
func (e *pushEnv) streaming(t *testing.T) error {
	t.Helper()
	resp, err := http.Get("http://" + e.admin + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if !strings.Contains(b.String(), `tokenkeeper_sidecar_source{source="stream"} 1`) {
		return fmt.Errorf("the sidecar does not enforce a pushed snapshot yet")
	}
	return nil
}

func status(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

func (e *pushEnv) api(t *testing.T, token string) int {
	return status(t, "http://"+e.proxy+"/api", token)
}

// revoke changes the RevocationList and returns how long until the sidecar answered
// token with 401.
func (e *pushEnv) revoke(t *testing.T, what, token string, change func(*tkv1.RevocationListSpec)) time.Duration {
	t.Helper()
	if got := e.api(t, token); got != http.StatusOK {
		t.Fatalf("%s: %d before the revocation", what, got)
	}
	rl := &tkv1.RevocationList{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "incidents"}, rl); err != nil {
		t.Fatal(err)
	}
	change(&rl.Spec)
	t0 := time.Now()
	if err := k8s.Update(context.Background(), rl); err != nil {
		t.Fatal(err)
	}
	for time.Since(t0) < 20*time.Second {
		if e.api(t, token) == http.StatusUnauthorized {
			took := time.Since(t0)
			t.Logf("%s: rejected %v after the RevocationList write", what, took.Round(time.Millisecond))
			return took
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: still accepted 20s after the RevocationList write", what)
	return 0
}

// A jti, a subject and a kid revoked through the API server are each rejected by a real
// sidecar process through the push (its bundle files never change); an emergency key
// revocation leaves no moment in which the revoked key verifies again, and the replacement
// key verifies once it signs.
func TestRevocationsReachARealSidecarThroughThePush(t *testing.T) {
	e := startPush(t)
	bundleBefore := readDir(t, e.bundleDir)

	e.revoke(t, "jti", sign(t, e.ns, "issuer", map[string]any{"jti": "leaked-1"}), func(s *tkv1.RevocationListSpec) {
		s.Tokens = append(s.Tokens, tkv1.RevokedToken{JTI: "leaked-1", ExpiresAt: metav1.NewTime(time.Now().Add(time.Hour))})
	})
	e.revoke(t, "subject", sign(t, e.ns, "issuer", map[string]any{"sub": "bob", "iat": time.Now().Add(-5 * time.Second).Unix()}), func(s *tkv1.RevocationListSpec) {
		s.Subjects = append(s.Subjects, tkv1.RevokedSubject{Subject: "bob", NotBefore: metav1.NewTime(time.Now())})
	})
	sk := &tkv1.SigningKey{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "issuer"}, sk); err != nil {
		t.Fatal(err)
	}
	leaked := sk.Status.ActiveKID
	old := sign(t, e.ns, "issuer", nil)
	e.revoke(t, "kid", old, func(s *tkv1.RevocationListSpec) {
		s.Keys = append(s.Keys, tkv1.RevokedKey{KID: leaked, Reason: "integration"})
	})

	// From its first rejection on, the revoked key never verifies again while the manager
	// replaces it and pushes the new key.
	var replaced time.Duration
	t0 := time.Now()
	for time.Since(t0) < 5*time.Second {
		if got := e.api(t, old); got != http.StatusUnauthorized {
			t.Fatalf("the revoked key's token answered %d %v after its first rejection", got, time.Since(t0))
		}
		if replaced == 0 {
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "issuer"}, sk); err != nil {
				t.Fatal(err)
			}
			if sk.Status.ActiveKID != "" && sk.Status.ActiveKID != leaked && e.api(t, sign(t, e.ns, "issuer", nil)) == http.StatusOK {
				replaced = time.Since(t0)
				t.Logf("the emergency replacement key verified %v after the revoked key was first rejected", replaced.Round(time.Millisecond))
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if replaced == 0 {
		t.Error("the replacement key's tokens were not accepted within 5s")
	}
	if after := readDir(t, e.bundleDir); after != bundleBefore {
		t.Fatal("the bundle files changed: the test proves nothing about the push")
	}
}

// With the manager stopped the sidecar keeps enforcing its last snapshot (valid tokens
// pass, revoked ones stay refused); when a manager returns it resubscribes and enforces
// what changed meanwhile and after.
func TestASidecarOutlivesTheManagerAndResubscribes(t *testing.T) {
	e := startPush(t)
	revoked := sign(t, e.ns, "issuer", map[string]any{"jti": "before-outage"})
	e.revoke(t, "jti before the outage", revoked, func(s *tkv1.RevocationListSpec) {
		s.Tokens = append(s.Tokens, tkv1.RevokedToken{JTI: "before-outage", ExpiresAt: metav1.NewTime(time.Now().Add(time.Hour))})
	})
	good := sign(t, e.ns, "issuer", nil)

	e.stopManager()
	t0 := time.Now()
	for time.Since(t0) < 3*time.Second {
		if got := e.api(t, good); got != http.StatusOK {
			t.Fatalf("manager down: a valid token got %d", got)
		}
		if got := e.api(t, revoked); got != http.StatusUnauthorized {
			t.Fatalf("manager down: the revoked token got %d", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := status(t, "http://"+e.admin+"/readyz", ""); got != http.StatusOK {
		t.Errorf("manager down: /readyz %d (no maxStaleness is set: the sidecar keeps serving)", got)
	}

	// A change while no manager serves reaches the sidecar once one does.
	during := sign(t, e.ns, "issuer", map[string]any{"jti": "during-outage"})
	rl := &tkv1.RevocationList{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "incidents"}, rl); err != nil {
		t.Fatal(err)
	}
	rl.Spec.Tokens = append(rl.Spec.Tokens, tkv1.RevokedToken{JTI: "during-outage", ExpiresAt: metav1.NewTime(time.Now().Add(time.Hour))})
	if err := k8s.Update(context.Background(), rl); err != nil {
		t.Fatal(err)
	}
	if got := e.api(t, during); got != http.StatusOK {
		t.Fatalf("with no manager the sidecar cannot know of the new revocation, yet answered %d", got)
	}
	restarted := time.Now()
	e.stopManager = startManager(t, e.mgrNS, e.addr)
	eventually(t, 30*time.Second, "the revocation made during the outage enforced", func() error {
		if got := e.api(t, during); got != http.StatusUnauthorized {
			return fmt.Errorf("answered %d", got)
		}
		return nil
	})
	t.Logf("resubscribed and enforced the outage's revocation %v after the manager restarted", time.Since(restarted).Round(time.Millisecond))
	e.revoke(t, "jti after the outage", sign(t, e.ns, "issuer", map[string]any{"jti": "after-outage"}), func(s *tkv1.RevocationListSpec) {
		s.Tokens = append(s.Tokens, tkv1.RevokedToken{JTI: "after-outage", ExpiresAt: metav1.NewTime(time.Now().Add(time.Hour))})
	})
}

func readDir(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s\n%s\n", e.Name(), data)
	}
	return b.String()
}
