package operator

import (
	"crypto/tls"
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/tokenkeeper/tokenkeeper/controllers"
	tkwebhook "github.com/tokenkeeper/tokenkeeper/internal/webhook"
)

// certSecret is where the webhook CA and serving certificate live.
func certSecret(o Options) types.NamespacedName {
	return types.NamespacedName{Namespace: o.Namespace, Name: o.WebhookCertSecret}
}

// webhookServer serves with the certificate from the Secret (see CertProvider); the
// provider's reader is set once the manager (and its cache) exists.
func webhookServer(o Options, tlsOpts []func(*tls.Config), provider *tkwebhook.CertProvider) webhook.Server {
	if o.WebhookPort == 0 {
		return nil
	}
	return webhook.NewServer(webhook.Options{Host: o.WebhookHost, Port: o.WebhookPort, TLSOpts: append(tlsOpts, func(c *tls.Config) {
		c.GetCertificate = provider.GetCertificate
		c.MinVersion = tls.VersionTLS12
	})})
}

// setupCerts registers the certificate controller: one CA and one serving certificate for
// the webhook's and the distribution server's names; provider (already given to the
// servers) gets the manager's cache to read the certificate from.
func setupCerts(mgr manager.Manager, o Options, provider *tkwebhook.CertProvider) error {
	hosts := append(slices.Clone(o.WebhookCertHosts), o.DistributionCertHosts...)
	if o.Namespace == "" || o.WebhookCertSecret == "" || len(hosts) == 0 {
		return fmt.Errorf("the webhook and the distribution server need the manager's namespace, a certificate Secret name and certificate hosts")
	}
	provider.Reader, provider.Secret = mgr.GetClient(), certSecret(o)
	certs := &controllers.WebhookCertReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Clock:     o.Clock,
		Secret:    certSecret(o),
		Hosts:     hosts,
		Recorder:  mgr.GetEventRecorder("tokenkeeper-manager"),
	}
	if o.WebhookPort != 0 {
		certs.MutatingWebhookConfigurations = []string{o.MutatingWebhookConfiguration}
	}
	if err := certs.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the certificate controller: %w", err)
	}
	return nil
}

// setupWebhook registers the injector.
func setupWebhook(mgr manager.Manager, o Options) error {
	excluded := map[string]bool{o.Namespace: true}
	for _, ns := range tkwebhook.SystemNamespaces {
		excluded[ns] = true
	}
	mgr.GetWebhookServer().Register(tkwebhook.PodInjectorPath, &webhook.Admission{Handler: &tkwebhook.PodInjector{
		Decoder:  admission.NewDecoder(mgr.GetScheme()),
		Config:   o.Inject,
		Reader:   mgr.GetClient(),
		Excluded: excluded,
	}})
	ctrl.Log.WithName("setup").Info("Registered the pod injection webhook", "port", o.WebhookPort, "sidecarImage", o.Inject.Image, "distributionURL", o.Inject.DistributionURL)
	return nil
}
