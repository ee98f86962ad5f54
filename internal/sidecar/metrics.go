package sidecar

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

const metricPrefix = "tokenkeeper_sidecar_"

// outcome is what became of a request, the label of the request metrics.
type outcome uint8

const (
	outcomeAllowed         outcome = iota // a valid token satisfied the route; the app answered
	outcomeAnonymous                      // an anonymous route; the app answered
	outcomeUnauthenticated                // 401: no valid token
	outcomeForbidden                      // 403: a valid token failed the route's rule
	outcomeUpstreamError                  // 502/504: the app could not be reached or was too slow
	outcomeUnavailable                    // 503: no policy or no keys loaded yet, or no word from the manager past maxStaleness
	outcomeBadRequest                     // 413, 405: refused before reaching the app
	outcomeClientClosed                   // the client went away before the app answered
	outcomeOverloaded                     // 503: MaxUpstreamRequests were in flight to the app
	numOutcomes
)

var outcomeNames = [numOutcomes]string{
	"allowed", "anonymous", "unauthenticated", "forbidden", "upstream_error", "unavailable",
	"bad_request", "client_closed", "overloaded",
}

func (o outcome) String() string { return outcomeNames[o] }

// rejectionReasons are every verify.Reason, so that their series exist from the start and
// the request path only reads a map.
var rejectionReasons = []verify.Reason{
	verify.ReasonMalformed, verify.ReasonOversized, verify.ReasonUnsupportedHeader,
	verify.ReasonAlgNotAllowed, verify.ReasonMissingKID, verify.ReasonUnknownKID,
	verify.ReasonAlgMismatch, verify.ReasonBadSignature, verify.ReasonWrongIssuer,
	verify.ReasonWrongAudience, verify.ReasonMissingExp, verify.ReasonExpired,
	verify.ReasonNotYetValid, verify.ReasonIssuedInFuture, verify.ReasonMissingIAT,
	verify.ReasonLifetimeExceeded, verify.ReasonMissingClaim, verify.ReasonClaimMismatch,
	verify.ReasonRevokedToken, verify.ReasonRevokedSubject, verify.ReasonRevokedKey,
	verify.ReasonMissingToken, verify.ReasonAmbiguousToken, verify.ReasonWrongTokenType,
}

// Files the sidecar reloads, the "file" label of the reload metric.
const (
	filePolicy      = "policy"
	fileJWKS        = "jwks"
	fileRevocations = "revocations"
)

// Results of reloads and fetches.
const (
	resultSuccess     = "success"
	resultError       = "error"
	resultNotModified = "not_modified"
	resultRateLimited = "rate_limited"
)

// Why a remote JWKS was fetched.
const (
	triggerScheduled  = "scheduled"
	triggerUnknownKID = "unknown_kid"
)

type metrics struct {
	reg *prometheus.Registry

	requests   [numOutcomes]prometheus.Counter
	durations  [numOutcomes]prometheus.Observer
	rejections map[verify.Reason]prometheus.Counter
	rejectVec  *prometheus.CounterVec // for a reason added to verify after this list

	reloads     *prometheus.CounterVec
	fetches     *prometheus.CounterVec
	rateLimited prometheus.Counter // fetches{trigger=unknown_kid,result=rate_limited}
	lastFetchOK *prometheus.GaugeVec
	keys        prometheus.Gauge
	// appPortExposed is 1 while the app port listens beyond loopback.
	appPortExposed *prometheus.GaugeVec
	revocations    prometheus.Gauge
}

// newMetrics registers the sidecar's metrics in a registry of its own (with the Go and
// process collectors). s supplies the values read at scrape time.
func newMetrics(s *Sidecar) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{reg: reg, rejections: map[verify.Reason]prometheus.Counter{}}

	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "requests_total",
		Help: "Requests by outcome: allowed, anonymous, unauthenticated, forbidden, upstream_error, unavailable, bad_request, client_closed, overloaded.",
	}, []string{"outcome"})
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    metricPrefix + "request_duration_seconds",
		Help:    "Time from receiving a request's headers to the end of its response, by outcome.",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"outcome"})
	for o := range numOutcomes {
		m.requests[o] = requests.WithLabelValues(o.String())
		m.durations[o] = durations.WithLabelValues(o.String())
	}
	m.rejectVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "rejections_total",
		Help: "Requests refused (401 or 403), by the verifier's reason.",
	}, []string{"reason"})
	for _, r := range rejectionReasons {
		m.rejections[r] = m.rejectVec.WithLabelValues(string(r))
	}

	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "reloads_total",
		Help: "Changes of the policy, JWKS and revocations files, by whether they were applied (success) or rejected and the last good state kept (error).",
	}, []string{"file", "result"})
	for _, f := range []string{filePolicy, fileJWKS, fileRevocations} {
		for _, r := range []string{resultSuccess, resultError} {
			m.reloads.WithLabelValues(f, r)
		}
	}
	m.fetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: metricPrefix + "remote_jwks_fetches_total",
		Help: "Remote JWKS fetches by trigger (scheduled, unknown_kid) and result (success, not_modified, error; rate_limited: an unknown kid that did not fetch).",
	}, []string{"trigger", "result"})
	for _, t := range []string{triggerScheduled, triggerUnknownKID} {
		for _, r := range []string{resultSuccess, resultNotModified, resultError} {
			m.fetches.WithLabelValues(t, r)
		}
	}
	m.rateLimited = m.fetches.WithLabelValues(triggerUnknownKID, resultRateLimited)
	m.lastFetchOK = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "remote_jwks_last_success_timestamp_seconds",
		Help: "When each remote JWKS of the policy was last fetched successfully.",
	}, []string{"uri"})
	m.keys = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: metricPrefix + "keys_loaded",
		Help: "Public keys in the effective key set (the JWKS file's and every remote set's).",
	})
	m.revocations = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: metricPrefix + "revocations_loaded",
		Help: "Revocation entries (tokens, subjects, keys) in force.",
	})

	m.appPortExposed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: metricPrefix + "app_port_exposed",
		Help: "1 while the app port listens on a non-loopback address, where other pods reach the app without a token (the sidecar is then not ready).",
	}, []string{"port"})

	cacheHits := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: metricPrefix + "verify_cache_hits_total",
		Help: "Tokens answered from the verified-token cache.",
	}, func() float64 { h, _, _ := s.cacheStats(); return float64(h) })
	cacheMisses := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: metricPrefix + "verify_cache_misses_total",
		Help: "Tokens not in the verified-token cache (verified in full).",
	}, func() float64 { _, mi, _ := s.cacheStats(); return float64(mi) })
	cacheEntries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricPrefix + "verify_cache_entries",
		Help: "Tokens in the verified-token cache.",
	}, func() float64 { _, _, n := s.cacheStats(); return float64(n) })
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: metricPrefix + "ready",
		Help: "1 when a valid policy and at least one key are loaded, the distribution server was heard within the policy's maxStaleness (when both are set), the app port listens on loopback only (unless allowed otherwise) and the sidecar is not draining.",
	}, func() float64 {
		if ok, _ := s.Ready(); ok {
			return 1
		}
		return 0
	})

	reg.MustRegister(requests, durations, m.rejectVec, m.reloads, m.fetches, m.lastFetchOK,
		m.keys, m.revocations, m.appPortExposed, cacheHits, cacheMisses, cacheEntries, ready,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(distributionMetrics(s)...)
	return m
}

// Sources of what the sidecar enforces, the "source" label.
const (
	sourceBundle = "bundle"
	sourceStream = "stream"
)

// versionKinds label the components of a distribution.Version, in order.
var versionKinds = [...]string{
	distribution.KindTokenPolicy:    "TokenPolicy",
	distribution.KindRevocationList: "RevocationList",
	distribution.KindConfigMap:      "ConfigMap",
}

// distributionMetrics are read from the sidecar and its distribution client at scrape
// time: the source gauge always, the rest only with a distribution server.
func distributionMetrics(s *Sidecar) []prometheus.Collector {
	var out []prometheus.Collector
	for _, src := range []string{sourceBundle, sourceStream} {
		out = append(out, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        metricPrefix + "source",
			Help:        "1 for where the policy, keys and revocations in force come from: the mounted bundle files, or the distribution server's stream (once a snapshot was applied).",
			ConstLabels: prometheus.Labels{"source": src},
		}, func() float64 {
			if s.streamed.Load() == (src == sourceStream) {
				return 1
			}
			return 0
		}))
	}
	if s.dist == nil {
		return out
	}
	for k, kind := range versionKinds {
		out = append(out, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        metricPrefix + "distribution_snapshot_version",
			Help:        "Version of the snapshot applied last, one series per component: the highest resourceVersion of that kind the serving replica had seen (0 before the first snapshot). Compare across pods with min/max by kind.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(s.dist.Stats().Version.Version[k]) }))
	}
	for _, r := range []string{"applied", "rejected"} {
		out = append(out, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        metricPrefix + "distribution_snapshots_total",
			Help:        "Snapshots from the distribution server by result: applied, or rejected (unparsable, invalid, a delta that did not fit, or not applicable) with the last good one kept.",
			ConstLabels: prometheus.Labels{"result": r},
		}, func() float64 {
			st := s.dist.Stats()
			if r == "applied" {
				return float64(st.Applied)
			}
			return float64(st.Rejected)
		}))
	}
	out = append(out,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: metricPrefix + "distribution_reconnects_total",
			Help: "Failed polls of the distribution server (unreachable, TLS, refused token, 503, bad answer), each followed by a wait.",
		}, func() float64 { return float64(s.dist.Stats().Reconnects) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: metricPrefix + "distribution_seconds_since_heard",
			Help: "Seconds since the distribution server last said the sidecar is current (a snapshot or a 304), or since the start when it never did; past the policy's maxStaleness requests fail closed.",
		}, func() float64 { return s.now().Sub(s.heardAt()).Seconds() }),
	)
	return out
}

// request records a finished request. It allocates nothing.
func (m *metrics) request(o outcome, d time.Duration) {
	m.requests[o].Inc()
	m.durations[o].Observe(d.Seconds())
}

// rejection counts a refusal by reason.
func (m *metrics) rejection(r verify.Reason) {
	if c, ok := m.rejections[r]; ok {
		c.Inc()
		return
	}
	m.rejectVec.WithLabelValues(string(r)).Inc()
}

func (m *metrics) reload(file string, ok bool) {
	r := resultSuccess
	if !ok {
		r = resultError
	}
	m.reloads.WithLabelValues(file, r).Inc()
}
