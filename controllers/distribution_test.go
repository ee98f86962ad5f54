package controllers_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/certs"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

// distributionEnv is a manager with its snapshot server on loopback and a TokenPolicy in
// namespace ns whose bundle carries the server's CA.
type distributionEnv struct {
	ns, addr string
	mgr      *runningManager
	client   *http.Client
}

func startDistribution(t *testing.T) *distributionEnv {
	t.Helper()
	e := &distributionEnv{ns: newNamespace(t), addr: freeAddr(t)}
	e.mgr = startManager(t, operator.Options{
		DistributionAddr: e.addr, Namespace: newNamespace(t), WebhookCertSecret: "certs",
		DistributionCertHosts: []string{"127.0.0.1"},
	})
	create(t, newSigningKey(e.ns, "orders"))
	waitReady(t, e.ns, "orders", 30*time.Second)
	create(t, tokenPolicy(e.ns, "orders-api", tkv1.TrustedKeySource{SigningKeyRef: &tkv1.LocalObjectReference{Name: "orders"}}))
	var ca string
	eventually(t, 20*time.Second, "the bundle carries the distribution CA", func() error {
		data, err := bundle(e.ns, "orders-api")
		if err != nil {
			return err
		}
		if ca = data[distribution.CAKey]; ca == "" {
			return fmt.Errorf("no %s in the bundle", distribution.CAKey)
		}
		return nil
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(ca)) {
		t.Fatalf("bundle CA is not PEM: %q", ca)
	}
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	return e
}

func serviceAccountToken(t *testing.T, ns, name string, audience string, bound *corev1.Secret) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	_ = k8sClient.Create(context.Background(), sa) // may exist already
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600),
	}}
	if bound != nil {
		tr.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
	}
	if err := k8sClient.SubResource("token").Create(context.Background(), sa, tr); err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// get polls a snapshot; query is the raw query string.
func (e *distributionEnv) get(t *testing.T, ns, token, query string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "https://"+e.addr+distribution.Path+ns+"/orders-api?"+query, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// The snapshot server, over TLS from the manager's CA (found in the bundle), serves a
// policy to a service account of its namespace as TokenReview vouches for it, and refuses
// everyone else with a status that says why.
func TestDistributionServesOnlyTokenReviewedServiceAccountsOfTheNamespace(t *testing.T) {
	e := startDistribution(t)
	other := newNamespace(t)
	good := serviceAccountToken(t, e.ns, "app", distribution.Audience, nil)

	status, body := e.get(t, e.ns, good, "timeout=1")
	if status != http.StatusOK {
		t.Fatalf("own namespace: %d %s", status, body)
	}
	var m distribution.Message
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	snap, err := distribution.Resolve(&m, nil)
	if err != nil {
		t.Fatalf("the served snapshot does not validate: %v", err)
	}
	if !strings.Contains(string(snap.Keys), `"kid"`) || strings.Contains(string(body), `"d":`) {
		t.Errorf("keys: want public keys only, got %s", snap.Keys)
	}

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "binding"}}
	create(t, secret)
	unbound := serviceAccountToken(t, e.ns, "app", distribution.Audience, secret)
	if err := k8sClient.Delete(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, token string
		want        int
	}{
		{"no token", "", http.StatusUnauthorized},
		{"garbage", "a.b.c", http.StatusUnauthorized},
		{"a token of the API server's audience", serviceAccountToken(t, e.ns, "app", "https://kubernetes.default.svc.cluster.local", nil), http.StatusUnauthorized},
		{"a token whose bound object is gone (TokenReview refuses it)", unbound, http.StatusUnauthorized},
		{"another namespace's service account", serviceAccountToken(t, other, "intruder", distribution.Audience, nil), http.StatusForbidden},
	} {
		status, body := e.get(t, e.ns, c.token, "timeout=1")
		if status != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, status, body, c.want)
		} else {
			t.Logf("%s: %d %s", c.name, status, strings.TrimSpace(string(body)))
		}
	}
	if got := counterValue(t, e.mgr, "tokenkeeper_distribution_auth_total", map[string]string{"result": "forbidden"}); got < 1 {
		t.Errorf("auth metric: forbidden counted %v times", got)
	}
}

// A poll that holds the current version is answered the moment a RevocationList changes,
// with the revocation in it: the push the sidecars wait on, on a real API server.
func TestDistributionPushesARevocationToAWaitingPoll(t *testing.T) {
	e := startDistribution(t)
	token := serviceAccountToken(t, e.ns, "app", distribution.Audience, nil)
	status, body := e.get(t, e.ns, token, "timeout=1")
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	var first distribution.Message
	if err := json.Unmarshal(body, &first); err != nil {
		t.Fatal(err)
	}
	held, err := distribution.Resolve(&first, nil)
	if err != nil {
		t.Fatal(err)
	}

	type answer struct {
		status int
		body   []byte
		at     time.Time
	}
	got := make(chan answer, 1)
	go func() {
		s, b := e.get(t, e.ns, token, "timeout=30&version="+held.Token.String())
		got <- answer{s, b, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // the poll is held
	written := time.Now()
	create(t, &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "leaks"}, Spec: tkv1.RevocationListSpec{
		Tokens: []tkv1.RevokedToken{{JTI: "stolen-1", ExpiresAt: metav1.NewTime(time.Now().Add(time.Hour))}},
	}})
	a := <-got
	if a.status != http.StatusOK {
		t.Fatalf("the held poll ended %d %s, want the pushed snapshot", a.status, a.body)
	}
	var m distribution.Message
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatal(err)
	}
	next, err := distribution.Resolve(&m, held)
	if err != nil {
		t.Fatal(err)
	}
	if !distribution.Accepts(&held.Token, next.Token) {
		t.Errorf("pushed %s does not supersede %s", next.Token, held.Token)
	}
	if len(next.Revocations.Tokens) != 1 || next.Revocations.Tokens[0].JTI != "stolen-1" {
		t.Errorf("pushed revocations: %+v", next.Revocations)
	}
	t.Logf("RevocationList created -> pushed snapshot received: %v", a.at.Sub(written).Round(time.Millisecond))

	// The bundle records its floor: a sidecar starting from it takes no snapshot below the
	// RevocationList it was rendered from.
	rl := &tkv1.RevocationList{}
	if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "leaks"}, rl); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the bundle's floor covering the RevocationList", func() error {
		data, err := bundle(e.ns, "orders-api")
		if err != nil {
			return err
		}
		floor, err := distribution.ParseVersion(data[distribution.VersionKey])
		if err != nil {
			return err
		}
		if rv, _ := strconv.ParseUint(rl.ResourceVersion, 10, 64); floor[distribution.KindRevocationList] < rv {
			return fmt.Errorf("floor %s below the RevocationList's resourceVersion %d", floor, rv)
		}
		if !next.Token.Version.Dominates(floor) {
			return fmt.Errorf("the pushed snapshot %s does not dominate the bundle's floor %s", next.Token, floor)
		}
		return nil
	})
}

// counterValue sums the counters of a metric whose labels include labels.
func counterValue(t *testing.T, m *runningManager, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, metric := range mf.GetMetric() {
			if labelsMatch(metric.GetLabel(), labels) {
				sum += metric.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// A certificate Secret holding an unusable CA is repaired, and an Event on it says what
// was replaced.
func TestAnUnusableCertificateSecretIsRepairedWithAnEvent(t *testing.T) {
	mgrNS := newNamespace(t)
	create(t, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: mgrNS, Name: "certs", Labels: map[string]string{"app.kubernetes.io/managed-by": "tokenkeeper"}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{"ca.crt": []byte("not a certificate"), "tls.crt": {}, "tls.key": {}},
	})
	startManager(t, operator.Options{
		DistributionAddr: freeAddr(t), Namespace: mgrNS, WebhookCertSecret: "certs",
		DistributionCertHosts: []string{"127.0.0.1"},
	})
	eventually(t, 20*time.Second, "the CA replaced and the Event", func() error {
		s := &corev1.Secret{}
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: mgrNS, Name: "certs"}, s); err != nil {
			return err
		}
		if _, err := certs.ParseCert(s.Data["ca.crt"]); err != nil {
			return fmt.Errorf("ca.crt: %v", err)
		}
		if msg := eventReasons(t, mgrNS, "certs")["InvalidCertificateData"]; !strings.Contains(msg, "ca.crt") {
			return fmt.Errorf("no InvalidCertificateData Event naming ca.crt: %q", msg)
		}
		return nil
	})
}
