package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"
	"sigs.k8s.io/yaml"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/certs"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
)

// TokenPolicyReconciler renders, for each TokenPolicy, the bundle its sidecars start from:
// the policy, the public keys of every trusted source and the revocations that apply. It
// keeps the bundle current as keys rotate and says in conditions what is wrong.
type TokenPolicyReconciler struct {
	Client client.Client
	Clock  clock.PassiveClock
	// Fetcher fetches remote JWKS (jwksURI) in the background: a reconcile only reads its
	// cache, so a slow or hanging IdP delays nobody's bundle. Its change events requeue
	// the policies that use a source.
	Fetcher *jwks.Fetcher
	// Concurrency is how many TokenPolicies reconcile at once (default 4).
	Concurrency int
	// CASecret is the certificate Secret whose CAs sign the distribution server's
	// certificate; each bundle carries them (distribution.CAKey), so a CA renewal reaches
	// running sidecars. Zero: no distribution server, no CA in bundles.
	CASecret types.NamespacedName

	events chan event.GenericEvent
}

func owner(tp client.ObjectKey) string { return tp.Namespace + "/" + tp.Name }

func sourceOf(src tkv1.TrustedKeySource) jwks.Source {
	return jwks.Source{URI: src.JWKSURI, CABundle: src.CABundle, AllowInsecureHTTP: src.AllowInsecureHTTP}
}

// +kubebuilder:rbac:groups=tokenkeeper.dev,resources=tokenpolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=tokenkeeper.dev,resources=tokenpolicies/status,verbs=get;patch

// Reconcile renders one TokenPolicy's bundle.
func (r *TokenPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, reterr error) {
	tp := &tkv1.TokenPolicy{}
	if err := r.Client.Get(ctx, req.NamespacedName, tp); err != nil {
		if apierrors.IsNotFound(err) {
			r.Fetcher.Track(owner(req.NamespacedName), nil)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !tp.DeletionTimestamp.IsZero() {
		r.Fetcher.Track(owner(req.NamespacedName), nil)
		return ctrl.Result{}, nil
	}
	original := tp.DeepCopy()

	// Status is written once, whatever happens below: every condition every time, Unknown
	// when an input could not be read.
	var inputsErr, writeErr error
	var res resolution
	var omitted string
	defer func() {
		setTokenPolicyStatus(tp, res, omitted, inputsErr, writeErr)
		if equality.Semantic.DeepEqual(original.Status, tp.Status) {
			return
		}
		if err := r.Client.Status().Patch(ctx, tp, client.MergeFrom(original)); err != nil && reterr == nil {
			reterr = err
		}
	}()

	res = r.resolve(ctx, tp)
	lists, err := r.revocationLists(ctx, tp)
	if err != nil {
		inputsErr = err
		return ctrl.Result{}, inputsErr
	}
	ca, err := r.distributionCA(ctx)
	if err != nil {
		inputsErr = fmt.Errorf("reading the distribution CA: %w", err)
		return ctrl.Result{}, inputsErr
	}
	data, omit, err := bundleData(tp, res.keys, lists, ca)
	if err == nil {
		err = r.applyBundle(ctx, tp, data)
	}
	writeErr, omitted = err, omit
	// Remote keys changing requeue through the Fetcher's events, not a timer.
	return ctrl.Result{}, writeErr
}

// resolution is what the trusted key sources gave.
type resolution struct {
	keys      []jose.JSONWebKey
	problems  []string // KeysResolved=False when any
	reason    string
	retention []string // SigningKeys that drop retired keys too early
}

func (r *TokenPolicyReconciler) resolve(ctx context.Context, tp *tkv1.TokenPolicy) resolution {
	var res resolution
	var remotes []jwks.Source
	for _, src := range tp.Spec.TrustedKeys {
		if src.JWKSURI != "" {
			remotes = append(remotes, sourceOf(src))
		}
	}
	r.Fetcher.Track(owner(client.ObjectKeyFromObject(tp)), remotes)
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
			field := fmt.Sprintf("trustedKeys[%d].jwksURI", i)
			rs := sourceOf(src)
			if err := rs.Check(); err != nil {
				problem(tkv1.ReasonJWKSUnreachable, "%s: %v", field, err)
				continue
			}
			e, ok := r.Fetcher.Get(rs)
			switch {
			case !ok || !e.Attempted:
				problem(tkv1.ReasonJWKSPending, "%s: waiting for the first fetch", field)
				continue
			case e.Err != nil && e.Doc == nil:
				problem(tkv1.ReasonJWKSUnreachable, "%s: %v", field, e.Err)
				continue
			case e.Err != nil:
				problem(tkv1.ReasonJWKSUnreachable, "%s: %v; kept the keys fetched at %s", field, e.Err, e.FetchedAt.UTC().Format(time.RFC3339))
			}
			remote, err := e.Keys(allowedAlgorithms(tp))
			if err != nil {
				problem(tkv1.ReasonJWKSUnreachable, "%s: %v", field, err)
				continue
			}
			add(remote)
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
// omitted, when not empty, says which revocations did not fit.
// distributionCA is what bundles carry of CASecret: every CA a client must trust (the
// signing one, the next and the previous, certs.TrustBundle). nil before the certificate controller has written the Secret
// (its write requeues every policy).
func (r *TokenPolicyReconciler) distributionCA(ctx context.Context) ([]byte, error) {
	if r.CASecret.Name == "" {
		return nil, nil
	}
	s := &corev1.Secret{}
	if err := r.Client.Get(ctx, r.CASecret, s); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return certs.TrustBundle(s.Data), nil
}

func bundleData(tp *tkv1.TokenPolicy, keys []jose.JSONWebKey, lists []*tkv1.RevocationList, ca []byte) (data map[string]string, omitted string, err error) {
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
		return nil, "", err
	}
	manifest := &tkv1.TokenPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: tkv1.GroupVersion.String(), Kind: "TokenPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: tp.Name, Namespace: tp.Namespace},
		Spec:       tp.Spec,
	}
	pol, err := yaml.Marshal(stripStatus(manifest))
	if err != nil {
		return nil, "", err
	}
	merged.Namespace = tp.Namespace
	budget := maxBundleBytes - len(pol) - len(set) - len(ca)
	revs, omitted, err := fitRevocations(merged, budget)
	if err != nil {
		return nil, "", err
	}
	data = map[string]string{policy.BundlePolicy: string(pol), policy.BundleJWKS: string(set), policy.BundleRevocations: string(revs)}
	if len(ca) > 0 {
		data[distribution.CAKey] = string(ca)
	}
	data[distribution.VersionKey] = bundleFloor(tp, lists).String()
	return data, omitted, nil
}

// bundleFloor is how far the bundle's inputs had come: the policy's resourceVersion and the
// highest of the RevocationLists'. A sidecar applies no snapshot below it, so a replica
// whose caches lag behind this bundle cannot take back a revocation it carries. (Keys are
// left at 0: a revoked kid is in the revocations.)
func bundleFloor(tp *tkv1.TokenPolicy, lists []*tkv1.RevocationList) distribution.Version {
	var v distribution.Version
	v[distribution.KindTokenPolicy] = resourceVersion(tp)
	for _, l := range lists {
		v[distribution.KindRevocationList] = max(v[distribution.KindRevocationList], resourceVersion(l))
	}
	return v
}

func resourceVersion(obj client.Object) uint64 {
	n, _ := strconv.ParseUint(obj.GetResourceVersion(), 10, 64)
	return n
}

// maxBundleBytes is what the bundle's three files may take: a ConfigMap holds at most 1 MiB,
// less room for keys other areas add (the distribution CA) and the object's metadata.
const maxBundleBytes = 1<<20 - 32<<10

// fitRevocations renders the merged revocations within budget bytes. Keys and policy come
// first and are never cut: past the budget, subjects then tokens are dropped from the end
// and the file is marked incomplete (policy.AnnotationRevocationsIncomplete), so revocation
// volume can never stop a key from being published. omitted says what was left out.
func fitRevocations(merged *tkv1.RevocationList, budget int) ([]byte, string, error) {
	// JSON, which is YAML too (policy.ParseRevocationList reads either): a list near 1 MiB
	// renders in milliseconds as JSON, where the YAML round trips took seconds under -race.
	render := func(rl *tkv1.RevocationList) ([]byte, error) {
		// Typed, in one pass: through a map (stripStatus) 100 000 entries cost three
		// encodings and a tree of maps.
		return json.Marshal(revocationsManifest{
			APIVersion: tkv1.GroupVersion.String(), Kind: "RevocationList",
			Metadata: manifestMeta{Name: rl.Name, Namespace: rl.Namespace, Annotations: rl.Annotations},
			Spec:     rl.Spec,
		})
	}
	out, err := render(merged)
	if err != nil || len(out) <= budget {
		return out, "", err
	}
	tokens, subjects := merged.Spec.Tokens, merged.Spec.Subjects
	total := len(tokens) + len(subjects)
	try := func(n int) (*tkv1.RevocationList, []byte, error) {
		rl := merged.DeepCopy()
		rl.Spec.Subjects = subjects[:min(n, len(subjects))]
		rl.Spec.Tokens = tokens[:max(0, n-len(subjects))]
		rl.Annotations = map[string]string{policy.AnnotationRevocationsIncomplete: fmt.Sprintf("%d of %d token and subject revocations fit the bundle", n, total)}
		b, err := render(rl)
		return rl, b, err
	}
	// As many entries as fit (subjects first: "log out everywhere" covers most), guessed
	// from the average entry size and narrowed by a few renders: each render of a large
	// list costs tens of milliseconds, so no search over every count.
	n := total * budget / len(out)
	var b []byte
	for {
		_, b, err = try(n)
		if err != nil {
			return nil, "", err
		}
		if len(b) <= budget || n == 0 {
			break
		}
		n = min(n-1, n*budget/len(b)*99/100)
	}
	lo := n
	return b, fmt.Sprintf("%d of %d token and subject revocations did not fit the bundle (1 MiB)", total-lo, total), nil
}

// revocationsManifest is a RevocationList as the bundle carries it: no status, no server
// metadata.
type revocationsManifest struct {
	APIVersion string                  `json:"apiVersion"`
	Kind       string                  `json:"kind"`
	Metadata   manifestMeta            `json:"metadata"`
	Spec       tkv1.RevocationListSpec `json:"spec"`
}

type manifestMeta struct {
	Annotations map[string]string `json:"annotations,omitempty"`
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
}

// stripStatus renders a manifest without status and creation timestamp noise.
// It goes through encoding/json only (what sigs.k8s.io/yaml does underneath, without its two
// YAML conversions), so a large RevocationList stays cheap.
func stripStatus(obj any) map[string]any {
	raw, _ := json.Marshal(obj)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
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
// inputsErr is an input that could not be read (the reconcile failed before the bundle was
// rendered); writeErr a bundle that could not be rendered or written. observedGeneration
// follows every reconcile that succeeded, whether or not the policy is Ready.
func setTokenPolicyStatus(tp *tkv1.TokenPolicy, res resolution, omitted string, inputsErr, writeErr error) {
	s := &tp.Status
	gen := tp.Generation
	set := func(t string, st metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: t, Status: st, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	if inputsErr == nil && writeErr == nil {
		s.ObservedGeneration = gen
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
	case inputsErr != nil:
		set(tkv1.ConditionRevocationsComplete, metav1.ConditionUnknown, tkv1.ReasonInputsUnreadable, inputsErr.Error())
	case writeErr != nil:
		set(tkv1.ConditionRevocationsComplete, metav1.ConditionUnknown, tkv1.ReasonNotGathered, "The bundle was not written")
	case omitted != "":
		set(tkv1.ConditionRevocationsComplete, metav1.ConditionFalse, tkv1.ReasonRevocationsTruncated,
			omitted+": keys are published; sidecars starting from the bundle alone stay unready until distribution delivers the rest")
	default:
		set(tkv1.ConditionRevocationsComplete, metav1.ConditionTrue, tkv1.ReasonRevocationsFit, "Every revocation fits the bundle")
	}
	switch {
	case inputsErr != nil:
		// The bundle in place (if any) still serves; whether it is current is unknown.
		set(tkv1.ConditionReady, metav1.ConditionUnknown, tkv1.ReasonInputsUnreadable, inputsErr.Error())
	case writeErr != nil:
		set(tkv1.ConditionReady, metav1.ConditionFalse, tkv1.ReasonBundleWriteFailed, writeErr.Error())
	case len(res.keys) == 0:
		set(tkv1.ConditionReady, metav1.ConditionFalse, tkv1.ReasonNoKeys, "No key to verify with yet; sidecars stay unready")
	default:
		set(tkv1.ConditionReady, metav1.ConditionTrue, tkv1.ReasonBundleWritten, fmt.Sprintf("Bundle %s holds %d keys", tp.BundleConfigMapName(), len(res.keys)))
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
	if r.Fetcher == nil {
		return errors.New("TokenPolicyReconciler needs a JWKS Fetcher")
	}
	if r.Concurrency <= 0 {
		r.Concurrency = 4
	}
	r.events = make(chan event.GenericEvent, 1024)
	r.Fetcher.Subscribe(func(_ jwks.Source, owners []string) {
		for _, o := range owners {
			ns, name, _ := strings.Cut(o, "/")
			tp := &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
			r.events <- event.GenericEvent{Object: tp}
		}
	})
	return ctrl.NewControllerManagedBy(mgr).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Concurrency}).
		WatchesRawSource(source.Channel(r.events, &handler.EnqueueRequestForObject{})).
		For(&tkv1.TokenPolicy{}).
		Owns(&corev1.ConfigMap{}).
		Watches(&tkv1.SigningKey{}, handler.EnqueueRequestsFromMapFunc(r.policiesInNamespace)).
		Watches(&corev1.ConfigMap{}, handler.EnqueueRequestsFromMapFunc(r.policiesForJWKS)).
		Watches(&tkv1.RevocationList{}, handler.EnqueueRequestsFromMapFunc(r.policiesInNamespace)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.policiesForCA)).
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

// policiesForCA maps the certificate Secret to every policy: each bundle carries its CA.
func (r *TokenPolicyReconciler) policiesForCA(ctx context.Context, obj client.Object) []reconcile.Request {
	if r.CASecret.Name == "" || client.ObjectKeyFromObject(obj) != r.CASecret {
		return nil
	}
	var list tkv1.TokenPolicyList
	if err := r.Client.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "Failed to list TokenPolicies")
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

// insecureKeySources names the jwksURIs fetched over plain http: those opted in with
// allowInsecureHTTP (an in-cluster issuer may serve only http); the policy says what that
// costs. Plain http without the opt-in is not fetched at all (KeysResolved says so).
func insecureKeySources(srcs []tkv1.TrustedKeySource) []string {
	var out []string
	for i, src := range srcs {
		if jwks.PlainHTTP(src.JWKSURI) && src.AllowInsecureHTTP {
			out = append(out, fmt.Sprintf("trustedKeys[%d].jwksURI %s", i, src.JWKSURI))
		}
	}
	return out
}
