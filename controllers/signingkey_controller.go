// Package controllers reconciles the tokenkeeper.dev kinds. Each reconciler gathers what it
// needs, asks a pure package what to do, writes its outputs and then its status, once.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/keygen"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
)

// FieldManager owns every field tokenkeeper applies with server-side apply.
const FieldManager = "tokenkeeper"

// SecretType marks Secrets holding a SigningKey's keys.
const SecretType corev1.SecretType = "tokenkeeper.dev/signing-keys"

// LabelManagedBy selects what tokenkeeper renders; the manager's cache only holds those
// Secrets and ConfigMaps.
const LabelManagedBy = "app.kubernetes.io/managed-by"

// ManagedByValue is LabelManagedBy's value on tokenkeeper's outputs.
const ManagedByValue = "tokenkeeper"

// SigningKeyReconciler turns a SigningKey into a Secret of private keys and a JWKS ConfigMap,
// rotating keys as time passes. The Secret is the source of truth: on restart the reconciler
// adopts what it holds and never regenerates a key that exists.
type SigningKeyReconciler struct {
	Client client.Client
	// APIReader reads around the cache. It confirms that a Secret is really missing before
	// any key is generated, so a stale or filtered cache can never cause a regeneration.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Clock     clock.PassiveClock
	Keys      *keygen.Pool
	Metrics   *metrics.SigningKeys

	// keyReady receives an owner when a background key is ready.
	keyReady chan event.TypedGenericEvent[*tkv1.SigningKey]
}

// +kubebuilder:rbac:groups=tokenkeeper.dev,resources=signingkeys,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokenkeeper.dev,resources=signingkeys/status,verbs=get;patch
// +kubebuilder:rbac:groups=tokenkeeper.dev,resources=revocationlists,verbs=get;list;watch
// Outputs are written with server-side apply (patch; create when apply creates), never update.
// +kubebuilder:rbac:groups="",resources=secrets;configmaps,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one SigningKey's keys up to date.
func (r *SigningKeyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (res ctrl.Result, err error) {
	logger := log.FromContext(ctx)
	sk := &tkv1.SigningKey{}
	if err := r.Client.Get(ctx, req.NamespacedName, sk); err != nil {
		if apierrors.IsNotFound(err) {
			r.Keys.Forget(req.String())
			r.Metrics.Forget(req.Namespace, req.Name)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !sk.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil // owner references remove the outputs
	}

	now := r.Clock.Now()
	original := sk.DeepCopy()
	st := &statusBuilder{sk: sk, now: now}
	var issuer issuerDecision
	defer func() {
		if err != nil {
			var fe *failure
			if errors.As(err, &fe) {
				st.fail(fe.reason, fe.Error())
				r.Metrics.Failed(fe.reason)
			} else {
				st.fail(tkv1.ReasonNotGathered, err.Error())
				r.Metrics.Failed(tkv1.ReasonNotGathered)
			}
		}
		if st.skip {
			return
		}
		r.setIssuerStatus(ctx, sk, issuer)
		if perr := r.patchStatus(ctx, original, st.finish(err == nil)); perr != nil && err == nil {
			err = perr
		}
	}()

	if issuer, err = r.decideIssuer(ctx, sk); err != nil {
		return ctrl.Result{}, err
	}
	in, err := r.gather(ctx, sk, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	if in.badRequest != "" {
		r.Recorder.Eventf(sk, nil, corev1.EventTypeWarning, tkv1.ReasonInvalidRotationTime, "Rotate", in.badRequest)
	}
	if len(in.problems) > 0 {
		st.problems = in.problems
		r.Recorder.Eventf(sk, nil, corev1.EventTypeWarning, tkv1.ReasonSecretRepaired, "Repair",
			"Repaired the Secret %s: %s", sk.SecretName(), joinProblems(in.problems))
		logger.Info("Repaired a damaged Secret", "secret", sk.SecretName(), "problems", in.problems)
	}

	ring := in.ring
	step := keys.Advance(ring.Records, in.policy, now, nil)
	if step.NeedKey {
		fresh, err := r.Keys.Get(req.String(), in.policy.Params)
		if err != nil {
			return ctrl.Result{}, &failure{tkv1.ReasonKeyGenerating, err}
		}
		if fresh == nil {
			logger.V(1).Info("Waiting for a background key generation", "algorithm", in.policy.Params.Algorithm)
			st.generating = true
		} else {
			ring.Keys[fresh.KID] = fresh
			step = keys.Advance(ring.Records, in.policy, now, fresh)
		}
	}
	ring.Records = step.Records

	// Invariant 3: the Secret holds every key the ConfigMap publishes, at every instant. So
	// the Secret is written first with the new keys and still with the ones leaving the
	// JWKS, then the ConfigMap, then the Secret without the departed keys.
	departing := departingRecords(in.ring.Records, ring.Records, in.configMap)
	first := keys.Ring{Records: append(append([]keys.Record(nil), ring.Records...), departing...), Keys: ring.Keys}
	var basedOn string
	if in.secret != nil {
		basedOn = in.secret.ResourceVersion
	}
	rv, err := r.applySecret(ctx, sk, in.secret, basedOn, first)
	if apierrors.IsConflict(err) {
		// Our cache is behind a newer write; decide again from fresh data.
		logger.V(1).Info("Secret changed since it was read; retrying", "secret", sk.SecretName())
		st.skip = true
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
	}
	if err != nil {
		return ctrl.Result{}, &failure{tkv1.ReasonSecretWriteFailed, err}
	}
	r.recordChanges(ctx, sk, step.Changes)
	if err := r.applyJWKS(ctx, sk, in.configMap, ring); err != nil {
		return ctrl.Result{}, &failure{tkv1.ReasonConfigMapFailed, err}
	}
	// Only now is the publication real; record it so activation counts from here.
	marked, changed := keys.MarkPublished(ring.Records, now)
	if changed || len(departing) > 0 {
		published := ring // what the ConfigMap publishes; the Secret holds all of it
		ring.Records = marked
		if _, err := r.applySecret(ctx, sk, nil, rv, ring); apierrors.IsConflict(err) {
			// Someone wrote in between: the next pass finishes, recording publication later,
			// which can only delay an activation. Status shows the keys that exist now,
			// never an empty ring.
			st.ring, st.next = published, keys.NextTransition(published.Records, in.policy, now)
			return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
		} else if err != nil {
			return ctrl.Result{}, &failure{tkv1.ReasonSecretWriteFailed, err}
		}
	}

	next := keys.NextTransition(ring.Records, in.policy, now)
	st.ring, st.next = ring, next
	r.Metrics.Observe(sk.Namespace, sk.Name, countStates(ring.Records), next)
	if next.IsZero() {
		return ctrl.Result{}, nil
	}
	// Requeue exactly at the next transition; no polling.
	return ctrl.Result{RequeueAfter: next.Sub(now)}, nil
}

// departingRecords are the keys the ConfigMap still publishes that the new ring dropped
// (removed or revoked): the Secret keeps them until the ConfigMap no longer does.
func departingRecords(before, after []keys.Record, cm *corev1.ConfigMap) []keys.Record {
	if cm == nil {
		return nil
	}
	kept := map[string]bool{}
	for _, r := range after {
		kept[r.KID] = true
	}
	var out []keys.Record
	for _, r := range before {
		if !kept[r.KID] && strings.Contains(cm.Data[ConfigMapJWKS], `"`+r.KID+`"`) {
			r.State = keys.Retired // never named active again, even for the moment it remains
			out = append(out, r)
		}
	}
	return out
}

// failure carries the condition reason of a failed step.
type failure struct {
	reason string
	err    error
}

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// input is everything a reconcile decides on.
type input struct {
	secret     *corev1.Secret
	configMap  *corev1.ConfigMap
	ring       keys.Ring
	problems   []string
	policy     keys.Policy
	badRequest string
}

func (r *SigningKeyReconciler) gather(ctx context.Context, sk *tkv1.SigningKey, now time.Time) (*input, error) {
	in := &input{policy: policyFor(sk)}
	if raw, ok := sk.Annotations[tkv1.AnnotationRotateRequestedAt]; ok {
		t, err := time.Parse(time.RFC3339, raw)
		if err != nil {
			in.badRequest = fmt.Sprintf("Ignored annotation %s=%q: not an RFC 3339 time", tkv1.AnnotationRotateRequestedAt, raw)
		} else {
			in.policy.RotateRequestedAt = &t
		}
	}

	revoked, err := r.revokedKIDs(ctx, sk.Namespace)
	if err != nil {
		return nil, fmt.Errorf("listing RevocationLists: %w", err)
	}
	in.policy.Revoked = revoked

	secret, err := r.getSecret(ctx, types.NamespacedName{Namespace: sk.Namespace, Name: sk.SecretName()})
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", sk.SecretName(), err)
	}
	in.secret = secret
	cm := &corev1.ConfigMap{}
	if err := r.Client.Get(ctx, types.NamespacedName{Namespace: sk.Namespace, Name: sk.JWKSConfigMapName()}, cm); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("reading ConfigMap %s: %w", sk.JWKSConfigMapName(), err)
		}
		cm = nil
	}
	in.configMap = cm

	var data map[string][]byte
	if secret != nil {
		data = secret.Data
	}
	var published []byte
	if cm != nil {
		published = []byte(cm.Data[ConfigMapJWKS])
	}
	in.ring, in.problems = keys.LoadRing(data, keys.Repair{
		Now:             now,
		RetainFor:       in.policy.RetainFor,
		Fallback:        recordsFromStatus(sk.Status.Keys),
		Published:       published,
		PreferredRSAAlg: string(sk.Spec.Algorithm),
	})
	return in, nil
}

// getSecret reads the Secret from the cache and, when the cache says it is missing, from the
// API server: generating keys because of a stale cache would lose the existing ones.
func (r *SigningKeyReconciler) getSecret(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.Client.Get(ctx, key, s)
	if err == nil {
		return s, nil
	}
	if !apierrors.IsNotFound(err) {
		return nil, err
	}
	if err := r.APIReader.Get(ctx, key, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	return s, nil
}

func (r *SigningKeyReconciler) revokedKIDs(ctx context.Context, namespace string) (map[string]bool, error) {
	var lists tkv1.RevocationListList
	if err := r.Client.List(ctx, &lists, client.InNamespace(namespace)); err != nil {
		return nil, err
	}
	revoked := map[string]bool{}
	for _, l := range lists.Items {
		for _, k := range l.Spec.Keys {
			revoked[k.KID] = true
		}
	}
	return revoked, nil
}

// policyFor turns the spec (already defaulted by the API server) into rotation timing.
func policyFor(sk *tkv1.SigningKey) keys.Policy {
	p := keys.Policy{
		Params:       keys.Params{Algorithm: string(sk.Spec.Algorithm)},
		Interval:     durationOr(sk.Spec.Rotation.Interval, 24*time.Hour),
		PublishAhead: durationOr(sk.Spec.Rotation.PublishAhead, time.Hour),
		RetainFor:    durationOr(sk.Spec.Rotation.RetainFor, 24*time.Hour),
	}
	if p.Params.Algorithm == "" {
		p.Params.Algorithm = string(tkv1.ES256)
	}
	if sk.Spec.RSAKeySize != nil {
		p.Params.RSABits = int(*sk.Spec.RSAKeySize)
	}
	return p
}

// durationOr applies a default again here, so objects stored before a default existed work.
func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil || d.Duration <= 0 {
		return def
	}
	return d.Duration
}

func (r *SigningKeyReconciler) recordChanges(ctx context.Context, sk *tkv1.SigningKey, changes []keys.Change) {
	logger := log.FromContext(ctx)
	for _, c := range changes {
		switch c.Kind {
		case keys.Generated:
			r.Recorder.Eventf(sk, nil, corev1.EventTypeNormal, tkv1.ReasonKeyGenerated, "Generate", "Generated key %s, published ahead of use", c.KID)
		case keys.Activated:
			r.Metrics.Rotated(sk.Namespace, sk.Name, false)
			r.Recorder.Eventf(sk, nil, corev1.EventTypeNormal, tkv1.ReasonRotated, "Rotate", "Key %s is now active", c.KID)
		case keys.EmergencyActivated:
			r.Metrics.Rotated(sk.Namespace, sk.Name, true)
			r.Recorder.Eventf(sk, nil, corev1.EventTypeWarning, tkv1.ReasonEmergencyRotation, "Rotate", "Key %s is active at once: the previous active key was revoked", c.KID)
		case keys.RetiredKey:
			r.Recorder.Eventf(sk, nil, corev1.EventTypeNormal, tkv1.ReasonRotated, "Retire", "Key %s retired; it stays published for verification", c.KID)
		case keys.Removed:
			r.Recorder.Eventf(sk, nil, corev1.EventTypeNormal, tkv1.ReasonKeyRemoved, "Remove", "Key %s removed after its retention", c.KID)
		case keys.RevokedKey:
			r.Recorder.Eventf(sk, nil, corev1.EventTypeWarning, tkv1.ReasonKeyRevoked, "Revoke", "Key %s revoked and unpublished", c.KID)
		case keys.Demoted:
			r.Recorder.Eventf(sk, nil, corev1.EventTypeWarning, tkv1.ReasonSecretRepaired, "Retire", "Key %s retired: it no longer matches the spec or duplicated another", c.KID)
		}
		logger.Info("Changed key state", "change", string(c.Kind), "kid", c.KID)
	}
}

func countStates(rs []keys.Record) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		m[string(r.State)]++
	}
	return m
}

func (r *SigningKeyReconciler) patchStatus(ctx context.Context, original, updated *tkv1.SigningKey) error {
	if equalStatus(original.Status, updated.Status) {
		return nil
	}
	return r.Client.Status().Patch(ctx, updated, client.MergeFrom(original))
}

// SetupWithManager registers the controller. Key generation results come back through a
// channel source, so a reconcile never waits for an RSA key.
func (r *SigningKeyReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	r.keyReady = make(chan event.TypedGenericEvent[*tkv1.SigningKey], 1024)
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &tkv1.SigningKey{}, indexIssuerKey, issuerKeyOf); err != nil {
		return fmt.Errorf("indexing SigningKeys by issuer: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&tkv1.SigningKey{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		Owns(&corev1.Secret{}).
		Owns(&corev1.ConfigMap{}).
		Watches(&tkv1.RevocationList{}, handler.EnqueueRequestsFromMapFunc(r.signingKeysInNamespace)).
		// Other claimants of the same issuer: ownership is decided among them.
		Watches(&tkv1.SigningKey{}, handler.EnqueueRequestsFromMapFunc(r.sameIssuer), builder.WithPredicates(issuerChanged)).
		WatchesRawSource(source.Channel(r.keyReady, &handler.TypedEnqueueRequestForObject[*tkv1.SigningKey]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Named("signingkey").
		Complete(r)
}

// KeyReady tells the controller that a background key for owner ("namespace/name") is ready.
func (r *SigningKeyReconciler) KeyReady(owner string) {
	ns, name, ok := strings.Cut(owner, "/")
	if !ok || r.keyReady == nil {
		return
	}
	r.keyReady <- event.TypedGenericEvent[*tkv1.SigningKey]{Object: &tkv1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}}
}

func (r *SigningKeyReconciler) signingKeysInNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var list tkv1.SigningKeyList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "Failed to list SigningKeys for a RevocationList change", "namespace", obj.GetNamespace())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, sk := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&sk)})
	}
	return reqs
}
