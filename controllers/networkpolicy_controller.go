package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	networkingac "k8s.io/client-go/applyconfigurations/networking/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
)

// LabelPolicy is the label the injection webhook puts on every injected pod: the name of
// its TokenPolicy. The NetworkPolicy selects pods by it.
const LabelPolicy = "tokenkeeper.dev/policy"

// NetworkPolicyReconciler keeps, for each TokenPolicy with spec.networkPolicy.enabled, a
// NetworkPolicy admitting ingress to the policy's injected pods only on the sidecar's ports,
// so the app's own port cannot be reached around the sidecar where the CNI enforces it.
type NetworkPolicyReconciler struct {
	Client client.Client
	// Ports the sidecar listens on (traffic and admin), from the injection configuration.
	ListenPort, AdminPort int32
}

// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;patch;delete

// NetworkPolicyName is the NetworkPolicy kept for a TokenPolicy.
func NetworkPolicyName(policy string) string { return policy + "-tokenkeeper" }

// Reconcile applies or removes one TokenPolicy's NetworkPolicy.
func (r *NetworkPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tp := &tkv1.TokenPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, tp); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // owner references remove it
	}
	key := types.NamespacedName{Namespace: tp.Namespace, Name: NetworkPolicyName(tp.Name)}
	if !tp.DeletionTimestamp.IsZero() || tp.Spec.NetworkPolicy == nil || !tp.Spec.NetworkPolicy.Enabled {
		return ctrl.Result{}, r.remove(ctx, tp, key)
	}
	tcp := corev1.ProtocolTCP
	rule := networkingac.NetworkPolicyIngressRule()
	for _, p := range []int32{r.ListenPort, r.AdminPort} {
		rule.WithPorts(networkingac.NetworkPolicyPort().WithProtocol(tcp).WithPort(intstr.FromInt32(p)))
	}
	ac := networkingac.NetworkPolicy(key.Name, key.Namespace).
		WithLabels(map[string]string{LabelManagedBy: ManagedByValue}).
		WithOwnerReferences(metav1ac.OwnerReference().
			WithAPIVersion(tkv1.GroupVersion.String()).WithKind("TokenPolicy").
			WithName(tp.Name).WithUID(tp.UID).WithController(true).WithBlockOwnerDeletion(true)).
		WithSpec(networkingac.NetworkPolicySpec().
			WithPodSelector(metav1ac.LabelSelector().WithMatchLabels(map[string]string{LabelPolicy: tp.Name})).
			WithPolicyTypes(networkingv1.PolicyTypeIngress).
			WithIngress(rule))
	if err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return ctrl.Result{}, fmt.Errorf("applying NetworkPolicy %s: %w", key.Name, err)
	}
	return ctrl.Result{}, nil
}

// remove deletes the NetworkPolicy if this TokenPolicy owns it; one of the same name that
// someone else made is left alone.
func (r *NetworkPolicyReconciler) remove(ctx context.Context, tp *tkv1.TokenPolicy, key types.NamespacedName) error {
	np := &networkingv1.NetworkPolicy{}
	if err := r.Client.Get(ctx, key, np); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(np, tp) {
		return nil
	}
	err := r.Client.Delete(ctx, np, client.Preconditions{UID: &np.UID})
	if err == nil {
		log.FromContext(ctx).Info("Removed the NetworkPolicy", "networkPolicy", key.Name)
	}
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// SetupWithManager registers the controller.
func (r *NetworkPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&tkv1.TokenPolicy{}).
		Owns(&networkingv1.NetworkPolicy{}).
		Named("networkpolicy").
		Complete(r)
}
