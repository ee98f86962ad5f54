package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/controllers"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

// servedJWKS is the JWKS the discovery server answers for issuer.
func servedJWKS(issuer string) (string, error) {
	code, body, err := httpGet(issuer + "/.well-known/jwks.json")
	if err != nil {
		return "", err
	}
	if code != 200 {
		return "", fmt.Errorf("status %d", code)
	}
	return body, nil
}

func publishedJWKS(t *testing.T, ns, name string) string {
	t.Helper()
	cm, _, err := getJWKS(ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data[controllers.ConfigMapJWKS]
}

// Twenty tenants in twenty namespaces try to serve their keys under one team's issuer: ten
// with SigningKeys older than the owner's that switch their issuer to it afterwards, ten
// created after it, several spelling the issuer differently. The discovery server serves
// the owner's keys throughout, after a manager restart too, and hands the issuer to exactly
// one other claimant when the owner is deleted.
func TestAnIssuerHasExactlyOneOwnerWhateverTheSquattersDo(t *testing.T) {
	ctx := context.Background()
	addr := freeAddr(t)
	mgr := startManager(t, operator.Options{DiscoveryAddr: addr})
	ownerNS := newNamespace(t)
	issuer := fmt.Sprintf("http://%s/shared/team", addr) // no namespace in it: the messages must not name the owner's
	spellings := []string{issuer, fmt.Sprintf("http://%s//shared/team", addr), fmt.Sprintf("http://%s/shared/x/../team", addr)}

	type ref struct{ ns, name string }
	var squatters []ref
	for i := 0; i < 10; i++ { // older than the owner, with an issuer of their own for now
		ns := newNamespace(t)
		create(t, newSigningKey(ns, "early", withIssuer(fmt.Sprintf("http://%s/%s/early", addr, ns))))
		squatters = append(squatters, ref{ns, "early"})
	}
	for _, s := range squatters {
		waitReady(t, s.ns, s.name, 30*time.Second)
	}
	time.Sleep(1100 * time.Millisecond) // creationTimestamps have seconds: the owner is strictly younger
	create(t, newSigningKey(ownerNS, "owner", withIssuer(issuer)))
	waitReady(t, ownerNS, "owner", 30*time.Second)
	want := publishedJWKS(t, ownerNS, "owner")
	eventually(t, 10*time.Second, "the owner's keys served", func() error {
		got, err := servedJWKS(issuer)
		if err != nil || got != want {
			return fmt.Errorf("served %q (%v)", got, err)
		}
		return nil
	})

	for i, s := range squatters { // the old ones take the issuer now
		sk := getSK(t, s.ns, s.name)
		sk.Spec.Issuer = spellings[i%len(spellings)]
		if err := k8sClient.Update(ctx, sk); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 10; i++ { // and ten newcomers
		ns := newNamespace(t)
		create(t, newSigningKey(ns, "late", withIssuer(spellings[i%len(spellings)])))
		squatters = append(squatters, ref{ns, "late"})
	}
	refused := func() {
		t.Helper()
		for _, s := range squatters {
			eventually(t, 30*time.Second, s.ns+" refused the issuer", func() error {
				sk := getSK(t, s.ns, s.name)
				c := meta.FindStatusCondition(sk.Status.Conditions, tkv1.ConditionIssuerOwned)
				if c == nil || c.Status != "False" || c.Reason != tkv1.ReasonIssuerConflict || sk.Status.ServedIssuer != "" {
					return fmt.Errorf("condition %+v servedIssuer %q", c, sk.Status.ServedIssuer)
				}
				if _, ok := eventReasons(t, s.ns, s.name)[tkv1.ReasonIssuerConflict]; !ok {
					return fmt.Errorf("no %s event", tkv1.ReasonIssuerConflict)
				}
				return nil
			})
			// The owner's namespace is no business of another tenant.
			sk := getSK(t, s.ns, s.name)
			if c := meta.FindStatusCondition(sk.Status.Conditions, tkv1.ConditionIssuerOwned); c != nil && strings.Contains(c.Message, ownerNS) {
				t.Errorf("%s: the condition names the owner's namespace: %s", s.ns, c.Message)
			}
		}
	}
	refused()
	for i := 0; i < 20; i++ { // every answer, not just one, is the owner's
		if got, err := servedJWKS(issuer); err != nil || got != want {
			t.Fatalf("request %d: served %q (%v), want the owner's %q", i, got, err, want)
		}
	}
	if c := meta.FindStatusCondition(getSK(t, ownerNS, "owner").Status.Conditions, tkv1.ConditionIssuerOwned); c == nil || c.Status != "True" {
		t.Errorf("owner's IssuerOwned = %+v, want True", c)
	}

	// A restart decides the same.
	mgr.stop()
	startManager(t, operator.Options{DiscoveryAddr: addr})
	eventually(t, 20*time.Second, "the owner's keys served after a restart", func() error {
		got, err := servedJWKS(issuer)
		if err != nil || got != want {
			return fmt.Errorf("served %q (%v)", got, err)
		}
		return nil
	})
	refused()

	// Deleting the owner hands the issuer to exactly one claimant, whose keys are served.
	if err := k8sClient.Delete(ctx, getSK(t, ownerNS, "owner")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "exactly one new owner, served", func() error {
		var owners []ref
		for _, s := range squatters {
			sk := getSK(t, s.ns, s.name)
			if sk.Status.ServedIssuer != "" && meta.IsStatusConditionTrue(sk.Status.Conditions, tkv1.ConditionIssuerOwned) {
				owners = append(owners, s)
			}
		}
		if len(owners) != 1 {
			return fmt.Errorf("%d owners: %v", len(owners), owners)
		}
		if owners[0].name != "early" {
			return fmt.Errorf("owner %v is not one of the oldest", owners[0])
		}
		got, err := servedJWKS(issuer)
		if w := publishedJWKS(t, owners[0].ns, owners[0].name); err != nil || got != w {
			return fmt.Errorf("served %q (%v), want %v's %q", got, err, owners[0], w)
		}
		return nil
	})
}
