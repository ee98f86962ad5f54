package controllers

import (
	"bytes"
	"context"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	admissionac "k8s.io/client-go/applyconfigurations/admissionregistration/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/tokenkeeper/tokenkeeper/internal/certs"
)

// WebhookCertReconciler issues and renews the webhooks' CA and serving certificate in a
// Secret and keeps the caBundle of the webhook configurations current. No cert-manager.
type WebhookCertReconciler struct {
	Client    client.Client
	APIReader client.Reader
	Clock     clock.PassiveClock
	Secret    types.NamespacedName
	// Hosts the serving certificate is valid for (the Service's DNS names, or an IP).
	Hosts []string
	// MutatingWebhookConfigurations whose every webhook gets the caBundle.
	MutatingWebhookConfigurations []string
	// Recorder reports stored entries that could not be used (optional).
	Recorder events.EventRecorder
}

// The caBundle is written only to the manager's own webhook configuration (its name in
// config/default, after kustomize's namePrefix); list and watch cannot be narrowed by name.
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=list;watch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;patch,resourceNames=tokenkeeper-mutating-webhook

// Reconcile makes the certificates current and the caBundles match.
func (r *WebhookCertReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	now := r.Clock.Now()
	secret := &corev1.Secret{}
	if err := r.Client.Get(ctx, r.Secret, secret); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		if err := r.APIReader.Get(ctx, r.Secret, secret); err != nil {
			if !apierrors.IsNotFound(err) {
				return ctrl.Result{}, err
			}
			secret = nil
		}
	}
	data := map[string][]byte{}
	basedOn := ""
	if secret != nil {
		basedOn = secret.ResourceVersion
		for k, v := range secret.Data {
			data[k] = v
		}
	}

	plan, err := certs.PlanCerts(data, "tokenkeeper-ca", r.Hosts, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(plan.Problems) > 0 && secret != nil && r.Recorder != nil {
		r.Recorder.Eventf(secret, nil, corev1.EventTypeWarning, "InvalidCertificateData", "Replace",
			"Replaced entries that could not be used: %s", strings.Join(plan.Problems, "; "))
	}
	if len(plan.Problems) > 0 {
		logger.Info("Replaced certificate entries that could not be used", "problems", plan.Problems)
	}
	if len(plan.Changes) > 0 {
		logger.Info("Certificates changed", "changes", plan.Changes, "hosts", r.Hosts)
	}
	data = plan.Data

	if secret == nil || !sameBytesMap(secret.Data, data) {
		ac := corev1ac.Secret(r.Secret.Name, r.Secret.Namespace).
			WithType(corev1.SecretTypeTLS).
			WithLabels(map[string]string{LabelManagedBy: ManagedByValue}).
			WithData(data)
		if basedOn != "" {
			ac.WithResourceVersion(basedOn)
		}
		if err := r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
			if apierrors.IsConflict(err) {
				return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil
			}
			return ctrl.Result{}, err
		}
	}

	bundle := certs.TrustBundle(data)
	for _, name := range r.MutatingWebhookConfigurations {
		if err := r.injectCABundle(ctx, name, bundle); err != nil {
			return ctrl.Result{}, err
		}
	}

	return ctrl.Result{RequeueAfter: plan.NextCheck.Sub(now)}, nil
}

func (r *WebhookCertReconciler) injectCABundle(ctx context.Context, name string, bundle []byte) error {
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, mwc); err != nil {
		if apierrors.IsNotFound(err) {
			log.FromContext(ctx).V(1).Info("Waiting for the webhook configuration to be created", "name", name)
			return nil
		}
		return err
	}
	ac := admissionac.MutatingWebhookConfiguration(name)
	changed := false
	for _, w := range mwc.Webhooks {
		if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
			changed = true
		}
		ac.WithWebhooks(admissionac.MutatingWebhook().WithName(w.Name).
			WithClientConfig(admissionac.WebhookClientConfig().WithCABundle(bundle...)))
	}
	if !changed {
		return nil
	}
	log.FromContext(ctx).Info("Updated the caBundle", "mutatingWebhookConfiguration", name)
	return r.Client.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership)
}

// SetupWithManager watches the Secret and the webhook configurations; every event maps to
// the same single request.
func (r *WebhookCertReconciler) SetupWithManager(mgr ctrl.Manager) error {
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: r.Secret}}
	})
	names := map[string]bool{}
	for _, n := range r.MutatingWebhookConfigurations {
		names[n] = true
	}
	isOurs := predicate.NewPredicateFuncs(func(o client.Object) bool {
		_, isSecret := o.(*corev1.Secret)
		if isSecret {
			return o.GetNamespace() == r.Secret.Namespace && o.GetName() == r.Secret.Name
		}
		return names[o.GetName()]
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("webhookcert").
		WatchesRawSource(sourceOnce(r.Secret)).
		Watches(&corev1.Secret{}, one, builder.WithPredicates(isOurs)).
		Watches(&admissionregistrationv1.MutatingWebhookConfiguration{}, one, builder.WithPredicates(isOurs)).
		Complete(r)
}

// sourceOnce enqueues key when the controller starts, so certificates are issued even
// before anything else happens.
func sourceOnce(key types.NamespacedName) source.Source {
	return source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		q.Add(reconcile.Request{NamespacedName: key})
		return nil
	})
}
