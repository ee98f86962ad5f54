package controllers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/controllers"
	"github.com/tokenkeeper/tokenkeeper/internal/inject"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

func getNP(ns, name string) (*networkingv1.NetworkPolicy, error) {
	np := &networkingv1.NetworkPolicy{}
	err := k8sClient.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: controllers.NetworkPolicyName(name)}, np)
	return np, err
}

func wantNPSpec(policy string, ports ...int32) networkingv1.NetworkPolicySpec {
	tcp := corev1.ProtocolTCP
	var ps []networkingv1.NetworkPolicyPort
	for _, p := range ports {
		port := intstr.FromInt32(p)
		ps = append(ps, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &port})
	}
	return networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{controllers.LabelPolicy: policy}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress:     []networkingv1.NetworkPolicyIngressRule{{Ports: ps}},
	}
}

// The NetworkPolicy is opt-in per TokenPolicy, admits exactly the sidecar's two ports on the
// policy's injected pods, is put back when someone edits it, and goes when disabled.
func TestNetworkPolicyAdmitsOnlyTheSidecarPorts(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	cfg := inject.DefaultConfig()
	cfg.ListenPort, cfg.AdminPort = 16080, 16021
	startManager(t, operator.Options{Inject: cfg})

	create(t, newSigningKey(ns, "keys"))
	tp := tokenPolicy(ns, "orders", tkv1.TrustedKeySource{SigningKeyRef: &tkv1.LocalObjectReference{Name: "keys"}})
	create(t, tp)
	time.Sleep(time.Second)
	if _, err := getNP(ns, "orders"); !apierrors.IsNotFound(err) {
		t.Fatalf("a NetworkPolicy exists without opting in (err %v)", err)
	}

	tp = getTP(t, ns, "orders")
	tp.Spec.NetworkPolicy = &tkv1.NetworkPolicySpec{Enabled: true}
	if err := k8sClient.Update(ctx, tp); err != nil {
		t.Fatal(err)
	}
	want := wantNPSpec("orders", 16080, 16021)
	eventually(t, 20*time.Second, "the NetworkPolicy", func() error {
		np, err := getNP(ns, "orders")
		if err != nil {
			return err
		}
		if !equality.Semantic.DeepEqual(np.Spec, want) {
			return fmt.Errorf("spec %+v, want %+v", np.Spec, want)
		}
		if !metav1.IsControlledBy(np, tp) {
			return fmt.Errorf("owner references %+v", np.OwnerReferences)
		}
		return nil
	})

	// An edit opening the app port is undone.
	np, _ := getNP(ns, "orders")
	app := intstr.FromInt32(8080)
	np.Spec.Ingress[0].Ports = append(np.Spec.Ingress[0].Ports, networkingv1.NetworkPolicyPort{Port: &app})
	if err := k8sClient.Update(ctx, np); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the edit undone", func() error {
		np, err := getNP(ns, "orders")
		if err != nil {
			return err
		}
		if !equality.Semantic.DeepEqual(np.Spec, want) {
			return fmt.Errorf("spec %+v", np.Spec)
		}
		return nil
	})

	tp = getTP(t, ns, "orders")
	tp.Spec.NetworkPolicy.Enabled = false
	if err := k8sClient.Update(ctx, tp); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the NetworkPolicy removed", func() error {
		if _, err := getNP(ns, "orders"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("still there (err %v)", err)
		}
		return nil
	})
}
