package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
)

// Remote JWKS are re-fetched as their Cache-Control says, within these bounds.
const (
	minRemoteRefresh = time.Minute
	maxRemoteRefresh = time.Hour
	defRemoteRefresh = 5 * time.Minute
)

// TokenPolicyReconciler renders, for each TokenPolicy, the bundle its sidecars start from:
// the policy, the public keys of every trusted source and the revocations that apply. It
// keeps the bundle current as keys rotate and says in conditions what is wrong.
type TokenPolicyReconciler struct {
	Client client.Client
	Clock  clock.PassiveClock
	// HTTP fetches remote JWKS (jwksURI) with a timeout.
	HTTP *http.Client

	// remote caches fetched JWKS until their Cache-Control says to refetch, so that the
	// reconciles every SigningKey change triggers do not each call the IdP.
	mu     sync.Mutex
	remote map[string]remoteEntry
}

type remoteEntry struct {
	keys  []jose.JSONWebKey
	until time.Time
}

// remoteKeys returns a remote JWKS's usable keys and when to fetch it again. Failures are
// not cached: the reconcile retries after minRemoteRefresh.
func (r *TokenPolicyReconciler) remoteKeys(ctx context.Context, uri string, allowed []string) ([]jose.JSONWebKey, time.Time, error) {
	key := uri + "|" + strings.Join(allowed, ",")
	now := r.Clock.Now()
	r.mu.Lock()
	e, ok := r.remote[key]
	r.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.keys, e.until, nil
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	keys, header, err := jwks.Fetch(fctx, r.HTTP, uri, allowed)
	if err != nil {
		return nil, now.Add(minRemoteRefresh), err
	}
	e = remoteEntry{keys: keys, until: now.Add(jwks.CacheLifetime(header, now, defRemoteRefresh, minRemoteRefresh, maxRemoteRefresh))}
	r.mu.Lock()
	if r.remote == nil {
		r.remote = map[string]remoteEntry{}
	}
	r.remote[key] = e
	r.mu.Unlock()
	return keys, e.until, nil
}

// +kubebuilder:rbac:groups=tokenkeeper.dev,resources=tokenpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokenkeeper.dev,resources=tokenpolicies/status,verbs=get;patch

// Reconcile renders one TokenPolicy's bundle.
func (r *TokenPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	tp := &tkv1.TokenPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, tp); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tp.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	original := tp.DeepCopy()
	now := r.Clock.Now()

	res := r.resolve(ctx, tp)
	lists, err := r.revocationLists(ctx, tp)
	if err != nil {
		return ctrl.Result{}, err
	}
	data, err := bundleData(tp, res.keys, lists)
	var writeErr error
	if err == nil {
		writeErr = r.applyBundle(ctx, tp, data)
	} else {
		writeErr = err
	}

	setTokenPolicyStatus(tp, res, writeErr)
	if !equality.Semantic.DeepEqual(original.Status, tp.Status) {
		if err := r.Client.Status().Patch(ctx, tp, client.MergeFrom(original)); err != nil {
			return ctrl.Result{}, err
		}
	}
	if writeErr != nil {
		return ctrl.Result{}, writeErr
	}
	if res.refreshAt.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: res.refreshAt.Sub(now)}, nil
}

// resolution is what the trusted key sources gave.
type resolution struct {
	keys      []jose.JSONWebKey
	problems  []string // KeysResolved=False when any
	reason    string
	retention []string // SigningKeys that drop retired keys too early
	refreshAt time.Time
}

func (r *TokenPolicyReconciler) resolve(ctx context.Context, tp *tkv1.TokenPolicy) resolution {
	var res resolution
	seen := map[string]bool{}
	add := func(ks []jose.JSONWebKey) {
		for _, k := range ks {
			if !seen[k.KeyID] {
				seen[k.KeyID] = true
				res.keys = append(res.keys, k)
			}
		}
	}
	problem := func(reason, format string, a ...any) {
		if res.reason == "" {
			res.reason = reason
		}
		res.problems = append(res.problems, fmt.Sprintf(format, a...))
	}
	for i, src := range tp.Spec.TrustedKeys {
		switch {
		case src.SigningKeyRef != nil:
			name := src.SigningKeyRef.Name
			sk := &tkv1.SigningKey{}
			if err := r.Client.Get(ctx, client.ObjectKey{Namespace: tp.Namespace, Name: name}, sk); err != nil {
				problem(tkv1.ReasonSigningKeyNotFound, "trustedKeys[%d]: SigningKey %s: %v", i, name, notFoundText(err))
				continue
			}
			cm := &corev1.ConfigMap{}
			if err := r.Client.Get(ctx, client.ObjectKey{Namespace: tp.Namespace, Name: sk.JWKSConfigMapName()}, cm); err != nil {
				problem(tkv1.ReasonSigningKeyNotReady, "trustedKeys[%d]: SigningKey %s has not published keys yet", i, name)
				continue
			}
			set, err := jwks.Parse([]byte(cm.Data[ConfigMapJWKS]))
			if err != nil {
				problem(tkv1.ReasonSigningKeyNotReady, "trustedKeys[%d]: SigningKey %s: %v", i, name, err)
				continue
			}
			add(set.Keys)
			if short := retentionTooShort(tp, sk); short != "" {
				res.retention = append(res.retention, short)
			}
		case src.JWKSURI != "":
			remote, until, err := r.remoteKeys(ctx, src.JWKSURI, allowedAlgorithms(tp))
			if err != nil {
				problem(tkv1.ReasonJWKSUnreachable, "trustedKeys[%d]: %v", i, err)
			} else {
				add(remote)
			}
			if res.refreshAt.IsZero() || until.Before(res.refreshAt) {
				res.refreshAt = until
			}
		}
	}
	return res
}

// retentionTooShort explains when sk unpublishes retired keys before tokens this policy
// accepts could expire: such tokens would be rejected after a rotation.
func retentionTooShort(tp *tkv1.TokenPolicy, sk *tkv1.SigningKey) string {
	if tp.Spec.MaxTokenLifetime == nil {
		return ""
	}
	skew := time.Minute
	if tp.Spec.ClockSkew != nil {
		skew = tp.Spec.ClockSkew.Duration
	}
	retain := durationOr(sk.Spec.Rotation.RetainFor, 24*time.Hour)
	need := tp.Spec.MaxTokenLifetime.Duration + skew
	if retain >= need {
		return ""
	}
	return fmt.Sprintf("SigningKey %s keeps retired keys %v, but tokens may live %v plus %v skew", sk.Name, retain, tp.Spec.MaxTokenLifetime.Duration, skew)
}

func (r *TokenPolicyReconciler) revocationLists(ctx context.Context, tp *tkv1.TokenPolicy) ([]*tkv1.RevocationList, error) {
	var all tkv1.RevocationListList
	if err := r.Client.List(ctx, &all, client.InNamespace(tp.Namespace)); err != nil {
		return nil, fmt.Errorf("listing RevocationLists: %w", err)
	}
	wanted := map[string]bool{}
	for _, ref := range tp.Spec.RevocationLists {
		wanted[ref.Name] = true
	}
	var out []*tkv1.RevocationList
	for i := range all.Items {
		if len(wanted) == 0 || wanted[all.Items[i].Name] {
			out = append(out, &all.Items[i])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// bundleData renders the bundle's three files; revoked keys are left out of the JWKS.
func bundleData(tp *tkv1.TokenPolicy, keys []jose.JSONWebKey, lists []*tkv1.RevocationList) (map[string]string, error) {
	merged := policy.Merge(tp.Name, lists...)
	revoked := map[string]bool{}
	for _, k := range merged.Spec.Keys {
		revoked[k.KID] = true
	}
	var kept []jose.JSONWebKey
	for _, k := range keys {
		if !revoked[k.KeyID] {
			kept = append(kept, k)
		}
	}
	set, err := jwks.Marshal(kept)
	if err != nil {
		return nil, err
	}
	manifest := &tkv1.TokenPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: tkv1.GroupVersion.String(), Kind: "TokenPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: tp.Name, Namespace: tp.Namespace},
		Spec:       tp.Spec,
	}
	pol, err := yaml.Marshal(stripStatus(manifest))
	if err != nil {
		return nil, err
	}
	merged.Namespace = tp.Namespace
	revs, err := yaml.Marshal(stripStatus(merged))
	if err != nil {
		return nil, err
	}
	return map[string]string{policy.BundlePolicy: string(pol), policy.BundleJWKS: string(set), policy.BundleRevocations: string(revs)}, nil
}

// stripStatus renders a manifest without status and creation timestamp noise.
func stripStatus(obj any) map[string]any {
	raw, _ := yaml.Marshal(obj)
	var m map[string]any
	_ = yaml.Unmarshal(raw, &m)
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return m
}

func (r *TokenPolicyReconciler) applyBundle(ctx context.Context, tp *tkv1.TokenPolicy, data map[string]string) error {
	current := &corev1.ConfigMap{}
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: tp.Namespace, Name: tp.BundleConfigMapName()}, current)
	if err == nil && sameStringMap(current.Data, data) && current.Labels[tkv1.LabelTokenPolicy] == tp.Name {
		return nil
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	ac := corev1ac.ConfigMap(tp.BundleConfigMapName(), tp.Namespace).
		WithLabels(map[string]string{LabelManagedBy: ManagedByValue, tkv1.LabelTokenPolicy: tp.Name}).
		WithOwnerReferences(metav1ac.OwnerReference().WithAPIVersion(tkv1.GroupVersion.String()).WithKind("TokenPolicy").
			WithName(tp.Name).WithUID(tp.UID).WithController(true).WithBlockOwnerDeletion(true)).
		WithData(data)
	return r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership)
}

// setTokenPolicyStatus sets every condition, every time.
func setTokenPolicyStatus(tp *tkv1.TokenPolicy, res resolution, writeErr error) {
	s := &tp.Status
	gen := tp.Generation
	set := func(t string, st metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: t, Status: st, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	s.BundleConfigMapName = tp.BundleConfigMapName()
	s.KeyCount = int32(len(res.keys))
	if len(res.problems) > 0 {
		set(tkv1.ConditionKeysResolved, metav1.ConditionFalse, res.reason, strings.Join(res.problems, "; "))
	} else {
		set(tkv1.ConditionKeysResolved, metav1.ConditionTrue, tkv1.ReasonResolved, fmt.Sprintf("%d keys from %d sources", len(res.keys), len(tp.Spec.TrustedKeys)))
	}
	switch {
	case len(res.retention) > 0:
		set(tkv1.ConditionRetentionCoversTokens, metav1.ConditionFalse, tkv1.ReasonRetentionTooShort,
			strings.Join(res.retention, "; ")+": valid tokens would be rejected after a rotation")
	case tp.Spec.MaxTokenLifetime == nil:
		set(tkv1.ConditionRetentionCoversTokens, metav1.ConditionUnknown, tkv1.ReasonNoLifetimeCap,
			"Without maxTokenLifetime, whether retired keys outlive tokens cannot be checked")
	default:
		set(tkv1.ConditionRetentionCoversTokens, metav1.ConditionTrue, tkv1.ReasonRetentionSufficient, "Every SigningKey keeps retired keys longer than tokens live")
	}
	if insecure := insecureKeySources(tp.Spec.TrustedKeys); len(insecure) > 0 {
		set(tkv1.ConditionKeySourcesSecure, metav1.ConditionFalse, tkv1.ReasonInsecureJWKSURI,
			strings.Join(insecure, "; ")+": fetched over plain http, anyone on the network path can substitute keys and forge tokens; use https")
	} else {
		set(tkv1.ConditionKeySourcesSecure, metav1.ConditionTrue, tkv1.ReasonSecureKeySources, "Every key source is local or fetched over https")
	}
	switch {
	case writeErr != nil:
		set(tkv1.ConditionReady, metav1.ConditionFalse, tkv1.ReasonBundleWriteFailed, writeErr.Error())
	case len(res.keys) == 0:
		set(tkv1.ConditionReady, metav1.ConditionFalse, tkv1.ReasonNoKeys, "No key to verify with yet; sidecars stay unready")
	default:
		set(tkv1.ConditionReady, metav1.ConditionTrue, tkv1.ReasonBundleWritten, fmt.Sprintf("Bundle %s holds %d keys", tp.BundleConfigMapName(), len(res.keys)))
		s.ObservedGeneration = gen
	}
}

func notFoundText(err error) string {
	if apierrors.IsNotFound(err) {
		return "not found"
	}
	return err.Error()
}

// allowedAlgorithms is the policy's list, or every supported algorithm.
func allowedAlgorithms(tp *tkv1.TokenPolicy) []string {
	if len(tp.Spec.AllowedAlgorithms) == 0 {
		return keys.Algorithms
	}
	out := make([]string, 0, len(tp.Spec.AllowedAlgorithms))
	for _, a := range tp.Spec.AllowedAlgorithms {
		out = append(out, string(a))
	}
	return out
}

// SetupWithManager watches what a bundle is made of: the policy, SigningKeys and their JWKS
// ConfigMaps, RevocationLists, and the bundle itself.
func (r *TokenPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.HTTP == nil {
		return errors.New("TokenPolicyReconciler needs an HTTP client")
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&tkv1.TokenPolicy{}).
		Owns(&corev1.ConfigMap{}).
		Watches(&tkv1.SigningKey{}, handler.EnqueueRequestsFromMapFunc(r.policiesInNamespace)).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.policiesForJWKS)).
		Watches(&tkv1.RevocationList{}, handler.EnqueueRequestsFromMapFunc(r.policiesInNamespace)).
		Named("tokenpolicy").
		Complete(r)
}

func (r *TokenPolicyReconciler) policiesInNamespace(ctx context.Context, obj client.Object) []reconcile.Request {
	var list tkv1.TokenPolicyList
	if err := r.Client.List(ctx, &list, client.InNamespace(obj.GetNamespace())); err != nil {
		log.FromContext(ctx).Error(err, "Failed to list TokenPolicies", "namespace", obj.GetNamespace())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// policiesForJWKS maps a SigningKey's JWKS ConfigMap to the policies of its namespace.
func (r *TokenPolicyReconciler) policiesForJWKS(ctx context.Context, obj client.Object) []reconcile.Request {
	if obj.GetLabels()[tkv1.LabelSigningKey] == "" {
		return nil
	}
	return r.policiesInNamespace(ctx, obj)
}

// insecureKeySources names the jwksURIs fetched over plain http. They stay allowed (an
// in-cluster issuer may serve only http), but the policy says what that costs.
func insecureKeySources(srcs []tkv1.TrustedKeySource) []string {
	var out []string
	for i, src := range srcs {
		if jwks.PlainHTTP(src.JWKSURI) {
			out = append(out, fmt.Sprintf("trustedKeys[%d].jwksURI %s", i, src.JWKSURI))
		}
	}
	return out
}
