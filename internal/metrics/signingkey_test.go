package metrics_test

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"

	"github.com/tokenkeeper/tokenkeeper/internal/metrics"
)

const (
	keysMetric     = "tokenkeeper_signingkey_keys"
	rotationMetric = "tokenkeeper_signingkey_rotations_total"
	errorMetric    = "tokenkeeper_signingkey_reconcile_errors_total"
	untilMetric    = "tokenkeeper_signingkey_seconds_until_next_transition"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is the injected scrape-time clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newMetrics registers a fresh set of SigningKey metrics on a fresh registry, with a clock at t0.
func newMetrics(t *testing.T) (*metrics.SigningKeys, *prometheus.Registry, *fakeClock) {
	t.Helper()
	clock := &fakeClock{now: t0}
	m := metrics.NewSigningKeys(clock.Now)
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatalf("Register: %v", err)
	}
	return m, reg, clock
}

// value finds the value of the series name{labels} in one scrape of g.
func value(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; !ok || v != l.GetValue() {
					continue series
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			}
		}
	}
	return 0, false
}

// gatherAndCompare scrapes g and compares the families called names, in the text exposition
// format, with want. It works like testutil.GatherAndCompare, which cannot be used until
// go.mod requires github.com/kylelemons/godebug (a dependency of testutil only).
func gatherAndCompare(t *testing.T, g prometheus.Gatherer, want string, names ...string) {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var got bytes.Buffer
	for _, f := range families {
		if !slices.Contains(names, f.GetName()) {
			continue
		}
		if _, err := expfmt.MetricFamilyToText(&got, f); err != nil {
			t.Fatalf("encoding %s: %v", f.GetName(), err)
		}
	}
	if want = strings.TrimPrefix(want, "\n"); got.String() != want {
		t.Errorf("scrape of %v:\n%s\nwant:\n%s", names, got.String(), want)
	}
}

// seriesCount is how many series of name one scrape of g has.
func seriesCount(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return len(f.GetMetric())
		}
	}
	return 0
}

func TestObserveSetsKeyCountsByState(t *testing.T) {
	tests := []struct {
		name    string
		byState map[string]int
		want    map[string]float64
	}{
		{"one key in each state is counted", map[string]int{"Next": 1, "Active": 1, "Retired": 1}, map[string]float64{"Next": 1, "Active": 1, "Retired": 1}},
		{"several retired keys are counted", map[string]int{"Active": 1, "Retired": 3}, map[string]float64{"Next": 0, "Active": 1, "Retired": 3}},
		{"states without keys are reported as zero", map[string]int{"Active": 1}, map[string]float64{"Next": 0, "Active": 1, "Retired": 0}},
		{"no keys at all are reported as three zeros", nil, map[string]float64{"Next": 0, "Active": 0, "Retired": 0}},
		{"unknown states are not reported", map[string]int{"Active": 1, "Revoked": 2}, map[string]float64{"Next": 0, "Active": 1, "Retired": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg, _ := newMetrics(t)
			m.Observe("team-a", "api", tt.byState, t0.Add(time.Hour))
			for state, want := range tt.want {
				got, ok := value(t, reg, keysMetric, map[string]string{"namespace": "team-a", "name": "api", "state": state})
				if !ok || got != want {
					t.Errorf("keys{state=%q} = %v (present %v), want %v", state, got, ok, want)
				}
			}
			if n := seriesCount(t, reg, keysMetric); n != len(tt.want) {
				t.Errorf("%d %s series, want %d", n, keysMetric, len(tt.want))
			}
		})
	}
}

func TestObserveReplacesEarlierCounts(t *testing.T) {
	m, reg, _ := newMetrics(t)
	m.Observe("team-a", "api", map[string]int{"Next": 1, "Active": 1, "Retired": 2}, t0.Add(time.Hour))
	m.Observe("team-a", "api", map[string]int{"Active": 1}, t0.Add(time.Hour))

	want := `
# HELP tokenkeeper_signingkey_keys Key generations of a SigningKey by state (Next, Active, Retired).
# TYPE tokenkeeper_signingkey_keys gauge
tokenkeeper_signingkey_keys{name="api",namespace="team-a",state="Active"} 1
tokenkeeper_signingkey_keys{name="api",namespace="team-a",state="Next"} 0
tokenkeeper_signingkey_keys{name="api",namespace="team-a",state="Retired"} 0
`
	gatherAndCompare(t, reg, want, keysMetric)
}

func TestSecondsUntilNextTransitionIsComputedAtScrapeTime(t *testing.T) {
	m, reg, clock := newMetrics(t)
	m.Observe("team-a", "api", map[string]int{"Active": 1}, t0.Add(90*time.Second))
	labels := map[string]string{"namespace": "team-a", "name": "api"}

	steps := []struct {
		name    string
		advance time.Duration
		want    float64
	}{
		{"a scrape at observation time sees the full wait", 0, 90},
		{"a scrape thirty seconds later sees thirty seconds less", 30 * time.Second, 60},
		{"a scrape at the transition sees zero", 60 * time.Second, 0},
		{"a scrape after an overdue transition sees a negative value", 40*time.Second + 500*time.Millisecond, -40.5},
	}
	for _, s := range steps {
		clock.Advance(s.advance)
		got, ok := value(t, reg, untilMetric, labels)
		if !ok || got != s.want {
			t.Errorf("%s: got %v (present %v), want %v", s.name, got, ok, s.want)
		}
	}

	want := `
# HELP tokenkeeper_signingkey_seconds_until_next_transition Seconds until the next key state change of a SigningKey (negative when overdue).
# TYPE tokenkeeper_signingkey_seconds_until_next_transition gauge
tokenkeeper_signingkey_seconds_until_next_transition{name="api",namespace="team-a"} -40.5
`
	gatherAndCompare(t, reg, want, untilMetric)
}

func TestSecondsUntilNextTransitionFollowsTheLatestObservation(t *testing.T) {
	tests := []struct {
		name    string
		next    time.Time
		want    float64
		present bool
	}{
		{"a later transition replaces the earlier one", t0.Add(10 * time.Minute), 600, true},
		{"an overdue transition is reported as negative at once", t0.Add(-5 * time.Second), -5, true},
		{"no next transition removes the series", time.Time{}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, reg, _ := newMetrics(t)
			m.Observe("team-a", "api", map[string]int{"Active": 1}, t0.Add(time.Minute))
			m.Observe("team-a", "api", map[string]int{"Active": 1}, tt.next)
			got, ok := value(t, reg, untilMetric, map[string]string{"namespace": "team-a", "name": "api"})
			if ok != tt.present || got != tt.want {
				t.Errorf("got %v (present %v), want %v (present %v)", got, ok, tt.want, tt.present)
			}
		})
	}
}

func TestRotatedCountsScheduledAndEmergencyRotations(t *testing.T) {
	m, reg, _ := newMetrics(t)
	m.Rotated("team-a", "api", false)
	m.Rotated("team-a", "api", false)
	m.Rotated("team-a", "api", true)
	m.Rotated("team-b", "web", false)

	want := `
# HELP tokenkeeper_signingkey_rotations_total Keys that became active, by kind (scheduled or emergency).
# TYPE tokenkeeper_signingkey_rotations_total counter
tokenkeeper_signingkey_rotations_total{kind="emergency",name="api",namespace="team-a"} 1
tokenkeeper_signingkey_rotations_total{kind="scheduled",name="api",namespace="team-a"} 2
tokenkeeper_signingkey_rotations_total{kind="scheduled",name="web",namespace="team-b"} 1
`
	gatherAndCompare(t, reg, want, rotationMetric)
}

func TestFailedCountsByReason(t *testing.T) {
	m, reg, _ := newMetrics(t)
	for _, reason := range []string{"SecretWriteFailed", "SecretWriteFailed", "ConfigMapWriteFailed", "SecretWriteFailed"} {
		m.Failed(reason)
	}

	want := `
# HELP tokenkeeper_signingkey_reconcile_errors_total SigningKey reconciles that failed, by reason.
# TYPE tokenkeeper_signingkey_reconcile_errors_total counter
tokenkeeper_signingkey_reconcile_errors_total{reason="ConfigMapWriteFailed"} 1
tokenkeeper_signingkey_reconcile_errors_total{reason="SecretWriteFailed"} 3
`
	gatherAndCompare(t, reg, want, errorMetric)
}

func TestForgetRemovesTheSeriesOfThatSigningKeyOnly(t *testing.T) {
	m, reg, _ := newMetrics(t)
	// "api" exists in two namespaces, and team-a has a second SigningKey whose name starts
	// like the forgotten one's.
	for _, sk := range [][2]string{{"team-a", "api"}, {"team-a", "api-v2"}, {"team-b", "api"}} {
		m.Observe(sk[0], sk[1], map[string]int{"Active": 1, "Retired": 1}, t0.Add(2*time.Minute))
		m.Rotated(sk[0], sk[1], false)
	}
	m.Rotated("team-a", "api", true)
	m.Failed("SecretWriteFailed")

	m.Forget("team-a", "api")

	want := `
# HELP tokenkeeper_signingkey_keys Key generations of a SigningKey by state (Next, Active, Retired).
# TYPE tokenkeeper_signingkey_keys gauge
tokenkeeper_signingkey_keys{name="api",namespace="team-b",state="Active"} 1
tokenkeeper_signingkey_keys{name="api",namespace="team-b",state="Next"} 0
tokenkeeper_signingkey_keys{name="api",namespace="team-b",state="Retired"} 1
tokenkeeper_signingkey_keys{name="api-v2",namespace="team-a",state="Active"} 1
tokenkeeper_signingkey_keys{name="api-v2",namespace="team-a",state="Next"} 0
tokenkeeper_signingkey_keys{name="api-v2",namespace="team-a",state="Retired"} 1
# HELP tokenkeeper_signingkey_reconcile_errors_total SigningKey reconciles that failed, by reason.
# TYPE tokenkeeper_signingkey_reconcile_errors_total counter
tokenkeeper_signingkey_reconcile_errors_total{reason="SecretWriteFailed"} 1
# HELP tokenkeeper_signingkey_rotations_total Keys that became active, by kind (scheduled or emergency).
# TYPE tokenkeeper_signingkey_rotations_total counter
tokenkeeper_signingkey_rotations_total{kind="scheduled",name="api",namespace="team-b"} 1
tokenkeeper_signingkey_rotations_total{kind="scheduled",name="api-v2",namespace="team-a"} 1
# HELP tokenkeeper_signingkey_seconds_until_next_transition Seconds until the next key state change of a SigningKey (negative when overdue).
# TYPE tokenkeeper_signingkey_seconds_until_next_transition gauge
tokenkeeper_signingkey_seconds_until_next_transition{name="api",namespace="team-b"} 120
tokenkeeper_signingkey_seconds_until_next_transition{name="api-v2",namespace="team-a"} 120
`
	gatherAndCompare(t, reg, want, keysMetric, rotationMetric, errorMetric, untilMetric)
}

func TestForgetThenObserveStartsTheSeriesAgain(t *testing.T) {
	m, reg, _ := newMetrics(t)
	m.Observe("team-a", "api", map[string]int{"Active": 1}, t0.Add(time.Minute))
	m.Rotated("team-a", "api", false)
	m.Forget("team-a", "api")
	m.Observe("team-a", "api", map[string]int{"Next": 1}, t0.Add(3*time.Minute))

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{keysMetric, map[string]string{"namespace": "team-a", "name": "api", "state": "Next"}, 1},
		{keysMetric, map[string]string{"namespace": "team-a", "name": "api", "state": "Active"}, 0},
		{untilMetric, map[string]string{"namespace": "team-a", "name": "api"}, 180},
	} {
		if got, ok := value(t, reg, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := value(t, reg, rotationMetric, map[string]string{"namespace": "team-a", "name": "api", "kind": "scheduled"}); ok {
		t.Errorf("the forgotten rotation counter came back without a new rotation")
	}
}

func TestRegisteredMetricsPassTheLinter(t *testing.T) {
	m, reg, _ := newMetrics(t)
	m.Observe("team-a", "api", map[string]int{"Active": 1}, t0.Add(time.Minute))
	m.Rotated("team-a", "api", false)
	m.Failed("SecretWriteFailed")
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	problems, err := promlint.NewWithMetricFamilies(families).Lint()
	if err != nil {
		t.Fatalf("Lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestRegisterRefusesASecondRegistration(t *testing.T) {
	m, reg, _ := newMetrics(t)
	if err := m.Register(reg); err == nil {
		t.Error("registering the same metrics twice on one registry succeeded")
	}
	other := metrics.NewSigningKeys(time.Now)
	if err := other.Register(reg); err == nil {
		t.Error("registering a second set of SigningKey metrics on the same registry succeeded")
	}
}
