package operator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution/server"
	tkwebhook "github.com/tokenkeeper/tokenkeeper/internal/webhook"
)

// tokenReviewQPS is the TokenReview client's own rate limit, apart from the controllers'
// budget: a replica that takes over thousands of sidecars reviews each of their tokens once.
const tokenReviewQPS, tokenReviewBurst = 200, 400

// setupDistribution adds the snapshot server: a Hub fed by this replica's informers and a
// TLS long-poll endpoint for sidecars, on every replica (not only the leader).
func setupDistribution(mgr manager.Manager, cfg *rest.Config, o Options, tlsOpts []func(*tls.Config), provider *tkwebhook.CertProvider) error {
	log := slog.New(logr.ToSlogHandler(ctrl.Log.WithName("distribution")))
	hub := server.NewHub(log)
	reviewCfg := rest.CopyConfig(cfg)
	reviewCfg.QPS, reviewCfg.Burst = tokenReviewQPS, tokenReviewBurst
	reviewClient, err := client.New(reviewCfg, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return fmt.Errorf("distribution: TokenReview client: %w", err)
	}
	m := newDistributionMetrics()
	authn := &server.Authenticator{
		Reviewer: server.TokenReviewer{Client: reviewClient},
		Now:      o.Clock.Now,
		Log:      log,
		Observe:  m.observeAuth,
	}
	h := &server.Handler{Hub: hub, Authorize: authn.Authorize, Limits: server.DefaultLimits}
	m.subscribers = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tokenkeeper_distribution_subscribers",
		Help: "Sidecar long polls this replica holds open.",
	}, func() float64 { return float64(h.Subscribers()) })
	m.rebuilds = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tokenkeeper_distribution_rebuilds_total",
		Help: "Namespace snapshot rebuilds after a change to an object a snapshot is built from.",
	}, func() float64 { return float64(hub.Rebuilds()) })
	if err := m.register(o.Registry); err != nil {
		return err
	}
	if err := mgr.Add(&hubFeeder{cache: mgr.GetCache(), hub: hub}); err != nil {
		return err
	}
	return mgr.Add(&httpServer{
		name: "distribution", addr: o.DistributionAddr, handler: h,
		longPoll: true,
		tls: tlsConfig(tlsOpts, func(c *tls.Config) {
			c.GetCertificate = provider.GetCertificate
			c.MinVersion = tls.VersionTLS12
		}),
	})
}

func tlsConfig(opts []func(*tls.Config), more ...func(*tls.Config)) *tls.Config {
	c := &tls.Config{}
	for _, f := range append(opts, more...) {
		f(c)
	}
	return c
}

// hubFeeder delivers the informers' events of every input kind to the Hub, and tells it
// when each handler has seen its initial list.
type hubFeeder struct {
	cache cache.Cache
	hub   *server.Hub
}

func (f *hubFeeder) NeedLeaderElection() bool { return false }

func (f *hubFeeder) Start(ctx context.Context) error {
	var synced []toolscache.InformerSynced
	for _, obj := range []client.Object{&tkv1.TokenPolicy{}, &tkv1.RevocationList{}, &corev1.ConfigMap{}} {
		inf, err := f.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("distribution: informer for %T: %w", obj, err)
		}
		reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { f.upsert(o) },
			UpdateFunc: func(_, o any) { f.upsert(o) },
			DeleteFunc: func(o any) {
				if t, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
					o = t.Obj
				}
				if obj, ok := o.(client.Object); ok {
					f.hub.Delete(obj)
				}
			},
		})
		if err != nil {
			return fmt.Errorf("distribution: event handler for %T: %w", obj, err)
		}
		synced = append(synced, reg.HasSynced)
	}
	go f.hub.Run(ctx)
	// Serving before every handler has seen its initial list would hand out snapshots
	// without revocations that exist.
	if !toolscache.WaitForCacheSync(ctx.Done(), synced...) {
		return errors.New("distribution: caches did not sync")
	}
	f.hub.MarkSynced()
	<-ctx.Done()
	return nil
}

func (f *hubFeeder) upsert(o any) {
	if obj, ok := o.(client.Object); ok {
		f.hub.Upsert(obj)
	}
}

type distributionMetrics struct {
	auth        *prometheus.CounterVec
	subscribers prometheus.GaugeFunc
	rebuilds    prometheus.CounterFunc
}

func newDistributionMetrics() *distributionMetrics {
	return &distributionMetrics{auth: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenkeeper_distribution_auth_total",
		Help: "Sidecar authentications by result (ok, unauthenticated, forbidden, error) and whether the TokenReview cache answered.",
	}, []string{"result", "cached"})}
}

func (m *distributionMetrics) observeAuth(result string, cached bool) {
	m.auth.WithLabelValues(result, fmt.Sprint(cached)).Inc()
}

func (m *distributionMetrics) register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.auth, m.subscribers, m.rebuilds} {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("registering distribution metrics: %w", err)
		}
	}
	return nil
}
