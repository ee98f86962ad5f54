package controllers_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// Two replicas: one leader writes; the standby serves discovery; when the leader stops, the
// standby takes over and keeps reconciling.
func TestLeaderElectionHandsOverAndEveryReplicaServesDiscovery(t *testing.T) {
	ns := newNamespace(t)
	le := operator.Options{LeaderElection: true, LeaderElectionNS: ns,
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond}
	addrA, addrB := freeAddr(t), freeAddr(t)
	a := le
	a.DiscoveryAddr = addrA
	leader := startManager(t, a)
	holder := func() string {
		var lease coordinationv1.Lease
		if err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "manager.tokenkeeper.dev"}, &lease); err != nil || lease.Spec.HolderIdentity == nil {
			return ""
		}
		return *lease.Spec.HolderIdentity
	}
	var first string
	eventually(t, 20*time.Second, "a leader", func() error {
		if first = holder(); first == "" {
			return fmt.Errorf("no lease holder")
		}
		return nil
	})
	b := le
	b.DiscoveryAddr = addrB
	startManager(t, b)

	issuer := fmt.Sprintf("http://%s/%s/ha", addrB, ns)
	create(t, newSigningKey(ns, "ha", withIssuer(issuer)))
	waitReady(t, ns, "ha", 20*time.Second)
	// The standby serves the issuer too (every replica serves; only the leader writes).
	eventually(t, 10*time.Second, "discovery on the standby", func() error {
		code, body, err := httpGet(issuer + "/.well-known/openid-configuration")
		if err != nil || code != 200 || !strings.Contains(body, issuer) {
			return fmt.Errorf("status %d err %v", code, err)
		}
		return nil
	})
	if h := holder(); h != first {
		t.Fatalf("leadership moved from %s to %s while the leader ran", first, h)
	}

	leader.stop() // releases the lease on the way out
	eventually(t, 15*time.Second, "a new leader", func() error {
		if h := holder(); h == "" || h == first {
			return fmt.Errorf("holder %q", h)
		}
		return nil
	})
	create(t, newSigningKey(ns, "after-handover"))
	waitReady(t, ns, "after-handover", 20*time.Second)
}

func TestManagerServesProbesAndMetrics(t *testing.T) {
	ns := newNamespace(t)
	probes, metrics := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mgr, err := operator.New(ctx, cfg, operator.Options{ProbeAddr: probes, MetricsAddr: metrics, SkipNameValidation: true,
		Registry: nil})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() { cancel(); <-done }()

	create(t, newSigningKey(ns, "observed"))
	waitReady(t, ns, "observed", 20*time.Second)
	for _, path := range []string{"/healthz", "/readyz"} {
		eventually(t, 10*time.Second, path, func() error {
			code, _, err := httpGet("http://" + probes + path)
			if err != nil || code != 200 {
				return fmt.Errorf("status %d err %v", code, err)
			}
			return nil
		})
	}
	eventually(t, 10*time.Second, "the SigningKey in /metrics", func() error {
		_, body, err := httpGet("http://" + metrics + "/metrics")
		if err != nil {
			return err
		}
		want := fmt.Sprintf(`tokenkeeper_signingkey_keys{name="observed",namespace="%s",state="Active"} 1`, ns)
		if !strings.Contains(body, want) || !strings.Contains(body, "tokenkeeper_signingkey_seconds_until_next_transition") {
			return fmt.Errorf("metrics lack %s", want)
		}
		return nil
	})
}
