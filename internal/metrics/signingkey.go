// Package metrics holds the manager's Prometheus metrics. It imports no Kubernetes client:
// controllers report plain values and the collectors turn them into series.
package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SigningKeys is the set of SigningKey metrics.
type SigningKeys struct {
	keys      *prometheus.GaugeVec
	rotations *prometheus.CounterVec
	errors    *prometheus.CounterVec
	until     *untilCollector
}

// NewSigningKeys creates the metrics; now is the clock used at scrape time.
func NewSigningKeys(now func() time.Time) *SigningKeys {
	return &SigningKeys{
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tokenkeeper_signingkey_keys",
			Help: "Key generations of a SigningKey by state (Next, Active, Retired).",
		}, []string{"namespace", "name", "state"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenkeeper_signingkey_rotations_total",
			Help: "Keys that became active, by kind (scheduled or emergency).",
		}, []string{"namespace", "name", "kind"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenkeeper_signingkey_reconcile_errors_total",
			Help: "SigningKey reconciles that failed, by reason.",
		}, []string{"reason"}),
		until: &untilCollector{now: now, at: map[[2]string]time.Time{}, desc: prometheus.NewDesc(
			"tokenkeeper_signingkey_seconds_until_next_transition",
			"Seconds until the next key state change of a SigningKey (negative when overdue).",
			[]string{"namespace", "name"}, nil)},
	}
}

// Register adds the metrics to a registry.
func (m *SigningKeys) Register(r prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.keys, m.rotations, m.errors, m.until} {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Observe records the key counts by state and the next transition of one SigningKey.
func (m *SigningKeys) Observe(namespace, name string, byState map[string]int, next time.Time) {
	for _, s := range []string{"Next", "Active", "Retired"} {
		m.keys.WithLabelValues(namespace, name, s).Set(float64(byState[s]))
	}
	m.until.set(namespace, name, next)
}

// Rotated counts a key that became active.
func (m *SigningKeys) Rotated(namespace, name string, emergency bool) {
	kind := "scheduled"
	if emergency {
		kind = "emergency"
	}
	m.rotations.WithLabelValues(namespace, name, kind).Inc()
}

// Failed counts a failed reconcile.
func (m *SigningKeys) Failed(reason string) { m.errors.WithLabelValues(reason).Inc() }

// Forget drops the series of a deleted SigningKey.
func (m *SigningKeys) Forget(namespace, name string) {
	m.keys.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
	m.rotations.DeletePartialMatch(prometheus.Labels{"namespace": namespace, "name": name})
	m.until.set(namespace, name, time.Time{})
}

// untilCollector computes "seconds until" at scrape time, so the value is never stale.
type untilCollector struct {
	now  func() time.Time
	desc *prometheus.Desc
	mu   sync.Mutex
	at   map[[2]string]time.Time
}

func (c *untilCollector) set(namespace, name string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.IsZero() {
		delete(c.at, [2]string{namespace, name})
		return
	}
	c.at[[2]string{namespace, name}] = t
}

func (c *untilCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *untilCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for k, t := range c.at {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, t.Sub(now).Seconds(), k[0], k[1])
	}
}
