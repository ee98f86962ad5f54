package controllers_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

func generatedRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	b, err := os.ReadFile("../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(b, role); err != nil {
		t.Fatal(err)
	}
	return role
}

// The generated role grants no verb the manager does not use: no update (it applies), no
// delete except of the NetworkPolicies it removes, and the webhook configuration it writes
// only by name.
func TestGeneratedRoleIsNarrow(t *testing.T) {
	for _, r := range generatedRole(t).Rules {
		for _, res := range r.Resources {
			for _, v := range r.Verbs {
				switch {
				case v == "*" || v == "update" || v == "deletecollection":
					t.Errorf("%v %s: verb %s must not be granted", r.APIGroups, res, v)
				case v == "delete" && res != "networkpolicies":
					t.Errorf("%v %s: delete must not be granted", r.APIGroups, res)
				case res == "mutatingwebhookconfigurations" && (v == "patch" || v == "get") && len(r.ResourceNames) == 0:
					t.Errorf("%s %s is granted for every webhook configuration, not only the manager's", v, res)
				case (res == "secrets" || res == "configmaps") && v != "get" && v != "list" && v != "watch" && v != "create" && v != "patch":
					t.Errorf("%s: unexpected verb %s", res, v)
				}
			}
		}
	}
}

// The manager runs on the generated role alone (not envtest's admin): a SigningKey becomes
// Ready, its issuer is served and its status claims it, and a NetworkPolicy is applied.
func TestManagerWorksWithTheGeneratedRoleAlone(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	role := generatedRole(t)
	role.ObjectMeta = metav1.ObjectMeta{Name: "manager-role-" + ns}
	create(t, role)
	user := "system:serviceaccount:" + ns + ":manager"
	create(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}})
	t.Cleanup(func() {
		_ = k8sClient.Delete(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name}})
		_ = k8sClient.Delete(ctx, role)
	})
	as := rest.CopyConfig(cfg)
	as.Impersonate = rest.ImpersonationConfig{UserName: user}

	addr := freeAddr(t)
	startManagerWith(t, as, operator.Options{DiscoveryAddr: addr})
	issuer := fmt.Sprintf("http://%s/rbac", addr)
	create(t, newSigningKey(ns, "keys", withIssuer(issuer)))
	waitReady(t, ns, "keys", 30*time.Second)
	eventually(t, 10*time.Second, "the issuer served", func() error {
		if _, err := servedJWKS(issuer); err != nil {
			return err
		}
		if got := getSK(t, ns, "keys").Status.ServedIssuer; got != issuer {
			return fmt.Errorf("servedIssuer %q", got)
		}
		return nil
	})
	tp := tokenPolicy(ns, "orders", tkv1.TrustedKeySource{SigningKeyRef: &tkv1.LocalObjectReference{Name: "keys"}})
	tp.Spec.NetworkPolicy = &tkv1.NetworkPolicySpec{Enabled: true}
	create(t, tp)
	eventually(t, 20*time.Second, "the NetworkPolicy", func() error {
		_, err := getNP(ns, "orders")
		return err
	})
}
