package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/discovery"
)

// indexIssuerKey indexes SigningKeys by their normalised issuer, so a change to one claimant
// reaches every other claimant of the same issuer.
const indexIssuerKey = "tokenkeeper.dev/issuer-key"

func issuerKeyOf(obj client.Object) []string {
	sk, ok := obj.(*tkv1.SigningKey)
	if !ok || sk.Spec.Issuer == "" {
		return nil
	}
	k, err := discovery.IssuerKey(sk.Spec.Issuer)
	if err != nil {
		return nil
	}
	return []string{k.String()}
}

// issuerDecision is whether this SigningKey owns its issuer.
type issuerDecision struct {
	decided bool
	none    bool // no issuer: nothing to own
	owned   bool
	owner   discovery.Claimant
}

// decideIssuer reads every SigningKey claiming the same issuer (from the cache) and asks
// discovery.Owners, the one decision the discovery server also serves by.
func (r *SigningKeyReconciler) decideIssuer(ctx context.Context, sk *tkv1.SigningKey) (issuerDecision, error) {
	if sk.Spec.Issuer == "" {
		return issuerDecision{decided: true, none: true}, nil
	}
	keys := issuerKeyOf(sk)
	if len(keys) == 0 {
		return issuerDecision{}, fmt.Errorf("spec.issuer %q is not a URL", sk.Spec.Issuer)
	}
	var list tkv1.SigningKeyList
	if err := r.Client.List(ctx, &list, client.MatchingFields{indexIssuerKey: keys[0]}); err != nil {
		return issuerDecision{}, fmt.Errorf("listing SigningKeys with issuer %s: %w", sk.Spec.Issuer, err)
	}
	cs := discovery.ClaimantsOf(list.Items)
	found := false
	for i := range cs {
		if cs[i].UID == string(sk.UID) {
			cs[i], found = discovery.ClaimantOf(sk), true // the object we read is newest
		}
	}
	if !found {
		cs = append(cs, discovery.ClaimantOf(sk))
	}
	k, _ := discovery.IssuerKey(sk.Spec.Issuer)
	owner := discovery.Owners(cs)[k]
	return issuerDecision{decided: true, owned: owner.UID == string(sk.UID), owner: owner}, nil
}

// setIssuerStatus records the decision: the claim in status.servedIssuer and the condition.
// A conflict never names the owner's namespace: the status and events are readable by the
// claimant's tenant, and which namespaces exist (and who issues what) is not theirs to learn.
// The manager's log names both for the cluster admin.
func (r *SigningKeyReconciler) setIssuerStatus(ctx context.Context, sk *tkv1.SigningKey, d issuerDecision) {
	if !d.decided {
		return // left as last recorded: a failed read must not drop a claim
	}
	s := &sk.Status
	if d.none {
		s.ServedIssuer = ""
		meta.RemoveStatusCondition(&s.Conditions, tkv1.ConditionIssuerOwned)
		return
	}
	set := func(status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: tkv1.ConditionIssuerOwned, Status: status,
			Reason: reason, Message: msg, ObservedGeneration: sk.Generation})
	}
	if d.owned {
		s.ServedIssuer = sk.Spec.Issuer
		set(metav1.ConditionTrue, tkv1.ReasonIssuerOwner, fmt.Sprintf("The discovery server serves issuer %s with these keys", sk.Spec.Issuer))
		return
	}
	wasConflict := false // read before set, which changes the condition in place
	if c := meta.FindStatusCondition(s.Conditions, tkv1.ConditionIssuerOwned); c != nil {
		wasConflict = c.Reason == tkv1.ReasonIssuerConflict
	}
	s.ServedIssuer = ""
	msg := fmt.Sprintf("Issuer %s (spec.issuer) is owned by another SigningKey that claimed it first; "+
		"the discovery server does not serve this SigningKey's keys (the JWKS ConfigMap still holds them)", sk.Spec.Issuer)
	set(metav1.ConditionFalse, tkv1.ReasonIssuerConflict, msg)
	if !wasConflict {
		r.Recorder.Eventf(sk, nil, corev1.EventTypeWarning, tkv1.ReasonIssuerConflict, "Publish", msg)
		log.FromContext(ctx).Info("Refused an issuer already owned by another SigningKey", "issuer", sk.Spec.Issuer,
			"owner", d.owner.Namespace+"/"+d.owner.Name)
	}
}

// sameIssuer enqueues every SigningKey claiming the issuer of obj, so an owner's deletion
// or a new claimant settles ownership for all of them.
func (r *SigningKeyReconciler) sameIssuer(ctx context.Context, obj client.Object) []reconcile.Request {
	keys := issuerKeyOf(obj)
	if len(keys) == 0 {
		return nil
	}
	var list tkv1.SigningKeyList
	if err := r.Client.List(ctx, &list, client.MatchingFields{indexIssuerKey: keys[0]}); err != nil {
		log.FromContext(ctx).Error(err, "Failed to list SigningKeys with the same issuer", "issuer", keys[0])
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		if list.Items[i].UID != obj.GetUID() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

// issuerChanged passes the events that can change who owns an issuer.
var issuerChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return true },
	DeleteFunc:  func(event.DeleteEvent) bool { return true },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*tkv1.SigningKey)
		n, ok2 := e.ObjectNew.(*tkv1.SigningKey)
		return ok1 && ok2 && (o.Spec.Issuer != n.Spec.Issuer || o.Status.ServedIssuer != n.Status.ServedIssuer ||
			o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero())
	},
}
