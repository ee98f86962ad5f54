// Command manager runs tokenkeeper's controllers, webhooks and servers.
package main

import (
	"flag"
	"os"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/tokenkeeper/tokenkeeper/internal/inject"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

// serviceHosts are a Service's in-cluster DNS names.
func serviceHosts(service, namespace string) []string {
	return []string{service + "." + namespace + ".svc", service + "." + namespace + ".svc.cluster.local"}
}

func main() {
	var o operator.Options
	flag.StringVar(&o.MetricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint (0 disables).")
	flag.StringVar(&o.ProbeAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	flag.StringVar(&o.DiscoveryAddr, "discovery-bind-address", ":8082", "Address serving each issuer's OpenID discovery document and JWKS (empty disables).")
	flag.BoolVar(&o.LeaderElection, "leader-elect", false, "Elect a leader so only one replica writes.")
	flag.StringVar(&o.LeaderElectionNS, "leader-election-namespace", "", "Namespace of the leader election Lease (default: the pod's).")
	flag.BoolVar(&o.EnableHTTP2, "enable-http2", false, "Serve HTTP/2 on TLS endpoints (off by default).")
	flag.IntVar(&o.Concurrency, "concurrency", 4, "SigningKeys (and TokenPolicies) reconciled at once.")
	flag.BoolVar(&o.JWKSAllowLocalAddresses, "jwks-allow-local-addresses", false, "Let jwksURI fetches reach loopback, link-local and cloud metadata addresses (refused by default).")
	flag.IntVar(&o.KeygenWorkers, "keygen-workers", 0, "RSA keys generated at once in the background (0: CPUs - 1, at least 1).")
	flag.IntVar(&o.WebhookPort, "webhook-port", 9443, "Port of the admission webhooks (0 disables them).")
	flag.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Namespace the manager runs in (default $POD_NAMESPACE).")
	service := flag.String("webhook-service-name", "tokenkeeper-webhook", "Service in front of the webhooks; the serving certificate is issued for its DNS names.")
	flag.StringVar(&o.WebhookCertSecret, "webhook-cert-secret", "tokenkeeper-webhook-certs", "Secret holding the webhook CA and serving certificate.")
	flag.StringVar(&o.MutatingWebhookConfiguration, "mutating-webhook-configuration", "tokenkeeper-mutating-webhook", "MutatingWebhookConfiguration whose caBundle the manager keeps current.")
	o.Inject = inject.DefaultConfig()
	flag.StringVar(&o.Inject.Image, "sidecar-image", o.Inject.Image, "Image of the injected sidecar.")
	flag.StringVar(&o.DistributionAddr, "distribution-bind-address", ":8443", "Address of the TLS snapshot server sidecars subscribe to (empty disables it; needs --namespace).")
	distService := flag.String("distribution-service-name", "tokenkeeper-distribution", "Service in front of the snapshot server; the serving certificate is issued for its DNS names.")
	distHosts := flag.String("distribution-cert-hosts", "", "Extra comma-separated names or IPs the serving certificate is valid for (a sidecar outside the cluster).")
	flag.StringVar(&o.Inject.DistributionURL, "distribution-url", "", "URL injected sidecars subscribe to (default: https://<distribution-service-name>.<namespace>.svc when the snapshot server runs; \"none\": the bundle ConfigMap only).")
	qps := flag.Float64("kube-api-qps", 50, "Queries per second to the API server (client-side limit).")
	burst := flag.Int("kube-api-burst", 100, "Burst of queries to the API server.")
	zo := zap.Options{}
	zo.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zo)))
	log := ctrl.Log.WithName("setup")

	if o.WebhookPort != 0 && o.Namespace == "" {
		// Outside a cluster (make demo, benchmarks) there is no Service to call a webhook.
		log.Info("Webhooks disabled: no namespace (set --namespace or $POD_NAMESPACE to enable them)")
		o.WebhookPort = 0
	}
	if o.WebhookPort != 0 {
		o.WebhookCertHosts = serviceHosts(*service, o.Namespace)
	}
	if o.DistributionAddr != "" && o.Namespace == "" {
		log.Info("Snapshot server disabled: no namespace (set --namespace or $POD_NAMESPACE to enable it); sidecars read their bundle only")
		o.DistributionAddr = ""
	}
	if o.DistributionAddr != "" {
		o.DistributionCertHosts = serviceHosts(*distService, o.Namespace)
		for _, h := range strings.Split(*distHosts, ",") {
			if h = strings.TrimSpace(h); h != "" {
				o.DistributionCertHosts = append(o.DistributionCertHosts, h)
			}
		}
	}
	switch {
	case o.Inject.DistributionURL == "none":
		o.Inject.DistributionURL = ""
	case o.Inject.DistributionURL == "" && o.DistributionAddr != "":
		o.Inject.DistributionURL = "https://" + *distService + "." + o.Namespace + ".svc"
	}

	ctx := ctrl.SetupSignalHandler()
	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	mgr, err := operator.New(ctx, cfg, o)
	if err != nil {
		log.Error(err, "Failed to set up the manager")
		os.Exit(1)
	}
	log.Info("Starting the manager")
	if err := mgr.Start(ctx); err != nil {
		log.Error(err, "Manager stopped with an error")
		os.Exit(1)
	}
}
