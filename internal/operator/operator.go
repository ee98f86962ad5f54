// Package operator wires the manager: the cache, the controllers, the discovery server and
// the metrics. cmd/manager parses flags and calls New; tests call New to run the very same
// wiring against envtest.
package operator

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/controllers"
	"github.com/tokenkeeper/tokenkeeper/internal/discovery"
	"github.com/tokenkeeper/tokenkeeper/internal/inject"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keygen"
	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
	tkwebhook "github.com/tokenkeeper/tokenkeeper/internal/webhook"
)

// Options configure the manager.
type Options struct {
	MetricsAddr      string // "0" disables
	ProbeAddr        string // "0" disables
	DiscoveryAddr    string // "" disables the OIDC discovery / JWKS server
	LeaderElection   bool
	LeaderElectionNS string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election (zero: defaults).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	EnableHTTP2                               bool
	// Concurrency is how many SigningKeys reconcile at once.
	Concurrency int
	// KeygenWorkers is how many RSA keys are generated at once in the background.
	KeygenWorkers int
	Clock         clock.PassiveClock
	Rand          io.Reader
	// Registry for metrics; the controller-runtime registry when nil.
	Registry crmetrics.RegistererGatherer
	// SkipNameValidation lets tests run several managers in one process.
	SkipNameValidation bool

	// Webhook: the pod injector and the certificates it serves with.
	WebhookPort int    // 0 disables the webhook server and its certificate controller
	WebhookHost string // bind address ("" = all)
	// Namespace the manager runs in: the webhook certificate Secret lives there and no pod
	// in it gets a sidecar.
	Namespace string
	// WebhookCertHosts are the serving certificate's names (the webhook Service's DNS names).
	WebhookCertHosts []string
	// WebhookCertSecret names the Secret holding the webhook CA and serving certificate.
	WebhookCertSecret string
	// MutatingWebhookConfiguration gets its caBundle kept current.
	MutatingWebhookConfiguration string
	// Inject configures the injected sidecar.
	Inject inject.Config
	// DistributionAddr is where the snapshot server listens for sidecars, over TLS with
	// the certificate of WebhookCertSecret ("" disables it).
	DistributionAddr string
	// DistributionCertHosts are the names the serving certificate adds for it (the
	// distribution Service's DNS names, or an IP).
	DistributionCertHosts []string
	// JWKSAllowLocalAddresses lets jwksURI fetches reach loopback, link-local and cloud
	// metadata addresses, refused by default (SSRF).
	JWKSAllowLocalAddresses bool
}

// Scheme knows the built-in kinds and tokenkeeper's.
func Scheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = tkv1.AddToScheme(s)
	return s
}

// New builds a manager with every tokenkeeper component registered.
func New(ctx context.Context, cfg *rest.Config, o Options) (manager.Manager, error) {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.KeygenWorkers <= 0 {
		// Leave a core for everything else, so RSA generation never starves reconciles.
		o.KeygenWorkers = max(1, runtime.NumCPU()-1)
	}
	if o.Registry == nil {
		o.Registry = crmetrics.Registry
	}
	tlsOpts := []func(*tls.Config){}
	if !o.EnableHTTP2 {
		// HTTP/2 stays off by default: rapid-reset style attacks (CVE-2023-44487, CVE-2023-39325).
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}

	// Only tokenkeeper's own Secrets and ConfigMaps are cached: a cluster's every Secret
	// would cost memory and widen what a compromised manager process holds.
	certProvider := &tkwebhook.CertProvider{}
	managed := labels.SelectorFromSet(labels.Set{controllers.LabelManagedBy: controllers.ManagedByValue})
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsAddr, TLSOpts: tlsOpts},
		HealthProbeBindAddress:  o.ProbeAddr,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        "manager.tokenkeeper.dev",
		LeaderElectionNamespace: o.LeaderElectionNS,
		// The leader steps down cleanly on SIGTERM so a standby takes over without waiting
		// for the lease to expire.
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 nonZero(o.LeaseDuration),
		RenewDeadline:                 nonZero(o.RenewDeadline),
		RetryPeriod:                   nonZero(o.RetryPeriod),
		Controller:                    config.Controller{SkipNameValidation: &o.SkipNameValidation},
		WebhookServer:                 webhookServer(o, tlsOpts, certProvider),
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}:              {Label: managed},
			&corev1.ConfigMap{}:           {Label: managed},
			&networkingv1.NetworkPolicy{}: {Label: managed},
		}},
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}

	m := metrics.NewSigningKeys(o.Clock.Now)
	if err := m.Register(o.Registry); err != nil {
		return nil, fmt.Errorf("registering metrics: %w", err)
	}
	sk := &controllers.SigningKeyReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("tokenkeeper-manager"),
		Clock:     o.Clock,
		Metrics:   m,
	}
	sk.Keys = keygen.New(ctx, o.Rand, o.KeygenWorkers, sk.KeyReady)
	if err := sk.SetupWithManager(mgr, o.Concurrency); err != nil {
		return nil, fmt.Errorf("setting up the SigningKey controller: %w", err)
	}

	fetcher := jwks.NewFetcher(jwks.FetcherOptions{
		Policy: jwks.FetchPolicy{AllowLocalAddresses: o.JWKSAllowLocalAddresses},
		Now:    o.Clock.Now,
		Log:    ctrl.Log.WithName("jwks-fetcher"),
	})
	if err := mgr.Add(fetcher); err != nil {
		return nil, err
	}
	tp := &controllers.TokenPolicyReconciler{
		Client:      mgr.GetClient(),
		Clock:       o.Clock,
		Fetcher:     fetcher,
		Concurrency: o.Concurrency,
	}
	if o.DistributionAddr != "" {
		tp.CASecret = certSecret(o) // sidecars trust the distribution server through their bundle
	}
	if err := tp.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the TokenPolicy controller: %w", err)
	}

	// The sidecar's ports come from the injection configuration, the one source.
	ports := o.Inject
	if ports.ListenPort == 0 || ports.AdminPort == 0 {
		ports = inject.DefaultConfig()
	}
	np := &controllers.NetworkPolicyReconciler{Client: mgr.GetClient(), ListenPort: ports.ListenPort, AdminPort: ports.AdminPort}
	if err := np.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the NetworkPolicy controller: %w", err)
	}

	if o.WebhookPort != 0 || o.DistributionAddr != "" {
		if err := setupCerts(mgr, o, certProvider); err != nil {
			return nil, err
		}
	}
	if o.WebhookPort != 0 {
		if err := setupWebhook(mgr, o); err != nil {
			return nil, err
		}
	}
	if o.DistributionAddr != "" {
		if err := setupDistribution(mgr, cfg, o, tlsOpts, certProvider); err != nil {
			return nil, err
		}
	}

	if o.DiscoveryAddr != "" {
		h := &discovery.Handler{
			Source: discovery.FromCluster(mgr.GetClient(), controllers.ConfigMapJWKS, controllers.ConfigMapDiscovery),
			Log:    ctrl.Log.WithName("discovery"),
		}
		if err := mgr.Add(&httpServer{name: "discovery", addr: o.DiscoveryAddr, handler: h}); err != nil {
			return nil, err
		}
	}
	if o.ProbeAddr != "0" && o.ProbeAddr != "" {
		if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
			return nil, err
		}
		if err := mgr.AddReadyzCheck("readyz", func(req *http.Request) error {
			if !mgr.GetCache().WaitForCacheSync(req.Context()) {
				return errors.New("cache not synced")
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return mgr, nil
}

// httpServer is a plain HTTP server run by every replica (not only the leader), stopped
// gracefully with the manager.
type httpServer struct {
	name    string
	addr    string
	handler http.Handler
	tls     *tls.Config // nil: plain HTTP
	// longPoll: requests are held open. A ReadTimeout would cancel them (the connection's
	// background read times out) and a WriteTimeout cut them; the handler bounds both.
	longPoll bool
}

func (s *httpServer) NeedLeaderElection() bool { return false }

func (s *httpServer) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("%s server: %w", s.name, err)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		TLSConfig:         s.tls,
	}
	if s.longPoll {
		srv.ReadTimeout, srv.WriteTimeout = 0, 0
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	ctrl.Log.WithName(s.name).Info("Started serving", "address", ln.Addr().String())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-done:
		return err
	}
}

func nonZero(d time.Duration) *time.Duration {
	if d == 0 {
		return nil
	}
	return &d
}
