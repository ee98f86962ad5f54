package sidecar

import (
	"strconv"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution/disttest"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// streamFixture is a sidecar subscribed to a real distribution Handler over TLS. The
// replica serves the policy default/app, which the bundle files hold too.
type streamFixture struct {
	*fixture
	r    *disttest.Replica
	svc  *disttest.Service
	rv   int // the last resourceVersion fed
	test *testing.T
}

// newStreamFixture starts the replica (synced, serving tp and the keys as the SigningKey
// "app"'s JWKS) and the sidecar; routed false keeps the Service down at first.
func newStreamFixture(t *testing.T, tp *tkv1.TokenPolicy, jwksKeys []*keys.Key, routed bool, opts ...fixtureOpt) *streamFixture {
	t.Helper()
	sf := &streamFixture{r: disttest.NewReplica(t, disttest.FastLimits()), rv: 10, test: t}
	sf.setPolicy(tp)
	sf.setKeys("app-jwks", jwksKeys...)
	sf.r.Hub.MarkSynced()
	sf.svc = disttest.NewService(t, nil)
	if routed {
		sf.svc.Route(sf.r)
	}
	opts = append([]fixtureOpt{withOptions(func(o *Options) {
		o.DistributionURL, o.DistributionTokenFile, o.DistributionCAFile = sf.svc.URL, sf.svc.TokenFile, sf.svc.CAFile
		o.Namespace = "default"
		o.distributionMaxBackoff = 50 * time.Millisecond
	})}, opts...)
	sf.fixture = newFixture(t, opts...)
	return sf
}

func (sf *streamFixture) nextRV() string {
	sf.rv++
	return itoa(sf.rv)
}

func itoa(n int) string { return strconv.Itoa(n) }

// distributionSnapshot is a snapshot of default/app as a server would send it.
func distributionSnapshot(t *testing.T, spec tkv1.TokenPolicySpec, keys []byte, revs tkv1.RevocationListSpec) *distribution.Snapshot {
	t.Helper()
	s := &distribution.Snapshot{Namespace: "default", Name: "app"}
	s.Policy, s.Keys, s.Revocations = spec, keys, revs
	distribution.Normalize(&s.Revocations)
	var err error
	if s.Token.Digest, err = s.Digest(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (sf *streamFixture) setPolicy(tp *tkv1.TokenPolicy) {
	tp = tp.DeepCopy()
	tp.ResourceVersion = sf.nextRV()
	sf.r.Feed(tp)
}

func (sf *streamFixture) setKeys(configMap string, ks ...*keys.Key) {
	var pub []jose.JSONWebKey
	for _, k := range ks {
		pub = append(pub, k.PublicJWK())
	}
	sf.r.Feed(disttest.JWKSConfigMap(sf.test, "default", configMap, sf.nextRV(), pub...))
}

func (sf *streamFixture) revoke(jtis []string, kids ...string) {
	sf.r.Feed(disttest.RevocationList("default", "logout", sf.nextRV(), jtis, kids...))
}

// applied waits until the sidecar applied n stream snapshots.
func (sf *streamFixture) applied(n uint64) {
	sf.t.Helper()
	eventually(sf.t, itoa(int(n))+" stream snapshots applied", func() bool { return sf.sc.dist.Stats().Applied >= n })
	if got := sf.sc.dist.Stats().Applied; got != n {
		sf.t.Fatalf("%d stream snapshots applied, want %d", got, n)
	}
}

func TestAStreamSnapshotTakesOverFromTheBundleAndTheBundleIsIgnoredAfter(t *testing.T) {
	primary, pushed := testKey(t, "primary"), testKey(t, "pushed")
	incomplete := revocationList(nil, nil)
	incomplete.Annotations = map[string]string{policy.AnnotationRevocationsIncomplete: "1200 tokens"}
	sf := newStreamFixture(t, basePolicy(), []*keys.Key{primary, pushed}, false, withRevocations(incomplete))

	// From the bundle: its key only, and not ready (the bundle's revocations are partial).
	sf.wantStatus(newToken(t, primary), 200, "")
	sf.wantStatus(newToken(t, pushed), 401, verify.ReasonUnknownKID)
	if ok, why := sf.sc.Ready(); ok || !strings.Contains(why, "revocations incomplete") {
		t.Fatalf("ready %v %q with incomplete bundle revocations", ok, why)
	}
	if m := sf.admin("/metrics").body; !strings.Contains(m, `tokenkeeper_sidecar_source{source="bundle"} 1`) {
		t.Fatalf("source metric before the stream:\n%s", grepLines(m, "source"))
	}

	sf.revoke([]string{"stolen"})
	sf.svc.Route(sf.r)
	sf.applied(1)
	sf.wantStatus(newToken(t, pushed), 200, "")
	sf.wantStatus(newToken(t, primary, withClaim("jti", "stolen")), 401, verify.ReasonRevokedToken)
	if ok, why := sf.sc.Ready(); !ok {
		t.Fatalf("not ready after a complete snapshot: %s", why)
	}

	// The kubelet syncs an older bundle: ignored, and said so once.
	sf.write(policy.BundleJWKS, jwksDoc(t, testKey(t, "bundle-only")))
	sf.write(policy.BundlePolicy, marshalYAML(t, basePolicy(func(tp *tkv1.TokenPolicy) { tp.Spec.Audiences = []string{"other"} })))
	sf.poll()
	sf.poll()
	sf.wantStatus(newToken(t, pushed), 200, "")
	if n := strings.Count(sf.logs.String(), "Ignored a change of the jwks file"); n != 1 {
		t.Fatalf("the ignored JWKS change was logged %d times, want once", n)
	}
	m := sf.admin("/metrics").body
	for _, want := range []string{
		`tokenkeeper_sidecar_source{source="bundle"} 0`, `tokenkeeper_sidecar_source{source="stream"} 1`,
		`tokenkeeper_sidecar_distribution_snapshots_total{result="applied"} 1`,
		`tokenkeeper_sidecar_distribution_snapshots_total{result="rejected"} 0`,
		`tokenkeeper_sidecar_distribution_snapshot_version{kind="TokenPolicy"} 11`,
		`tokenkeeper_sidecar_distribution_snapshot_version{kind="ConfigMap"} 12`,
		`tokenkeeper_sidecar_distribution_snapshot_version{kind="RevocationList"} 13`,
		`tokenkeeper_sidecar_distribution_seconds_since_heard 0`,
		`tokenkeeper_sidecar_distribution_reconnects_total`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(m, "distribution_", "source"))
		}
	}
}

func grepLines(text string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) && !strings.HasPrefix(l, "#") {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

func TestAStreamSnapshotWithTheSamePolicyKeepsTheVerifierAndAnEmergencyRevocationBitesAtOnce(t *testing.T) {
	primary, next := testKey(t, "primary"), testKey(t, "next")
	sf := newStreamFixture(t, basePolicy(), []*keys.Key{primary, next}, true)
	sf.applied(1)
	eng := sf.sc.engine.Load()
	tok := newToken(t, primary)
	sf.wantStatus(tok, 200, "") // cached now

	// The primary key is revoked: the manager's snapshot drops it from the keys and names
	// it in the revocations. The cached token must not pass.
	sf.revoke(nil, primary.KID)
	sf.applied(2)
	if sf.sc.engine.Load() != eng {
		t.Fatal("a snapshot with the same policy replaced the Verifier (and its cache)")
	}
	if resp := sf.do("/api", bearer(tok)); resp.status != 401 {
		t.Fatalf("a token of the revoked key got %d", resp.status)
	}
	sf.wantStatus(newToken(t, next), 200, "")

	// Another policy: a new Verifier, with the snapshot's keys and revocations.
	snapPolicy := basePolicy()
	snapPolicy.Spec.Audiences = []string{"api", "web"}
	sf.setPolicy(snapPolicy)
	sf.applied(3)
	if sf.sc.engine.Load() == eng {
		t.Fatal("a snapshot with another policy kept the old Verifier")
	}
	sf.wantStatus(newToken(t, next, withClaim("aud", "web")), 200, "")
	sf.wantStatus(newToken(t, primary), 401, verify.ReasonUnknownKID)
}

func TestARevokedKidInASnapshotIsRefusedEvenWhileItsKeyIsStillListed(t *testing.T) {
	primary := testKey(t, "primary")
	sf := newStreamFixture(t, basePolicy(), []*keys.Key{primary}, false)
	// Straight through the client's Apply: a snapshot the manager would not build (it
	// drops revoked kids from the keys), to show the revocations alone refuse the kid.
	snap := distributionSnapshot(t, basePolicy().Spec, jwksDoc(t, primary), tkv1.RevocationListSpec{Keys: []tkv1.RevokedKey{{KID: primary.KID}}})
	if err := sf.sc.applySnapshot(snap); err != nil {
		t.Fatal(err)
	}
	sf.wantStatus(newToken(t, primary), 401, verify.ReasonRevokedKey)
}

func TestASnapshotTheSidecarCannotApplyIsRejectedAndTheLastGoodKept(t *testing.T) {
	primary := testKey(t, "primary")
	sf := newStreamFixture(t, basePolicy(), []*keys.Key{primary}, true)
	sf.applied(1)
	sf.setPolicy(basePolicy(func(tp *tkv1.TokenPolicy) { tp.Spec.Issuer = "" }))
	eventually(t, "the rejection", func() bool { return sf.sc.dist.Stats().Rejected >= 1 })
	sf.wantStatus(newToken(t, primary), 200, "")
	if m := sf.admin("/metrics").body; !strings.Contains(m, `tokenkeeper_sidecar_distribution_snapshots_total{result="rejected"} 1`) {
		t.Fatalf("rejected snapshots not counted:\n%s", grepLines(m, "snapshots_total"))
	}
	if !strings.Contains(sf.logs.String(), "spec.issuer: required") {
		t.Fatal("the rejection does not say why")
	}
}

func TestWhileTheManagerIsHeardItsSnapshotsOwnTheRemoteJWKS(t *testing.T) {
	a, b := testKey(t, "idp-a"), testKey(t, "idp-b")
	p := newIDP(t, a, b)
	tp := basePolicy(trusting(p.url()))
	sf := newStreamFixture(t, tp, nil, false, withoutJWKS(), withPolicy(trusting(p.url())))
	sf.setKeys("app-bundle", a, b) // what the manager fetched from the IdP
	eventually(t, "the sidecar's own first fetch", func() bool { ok, _ := sf.sc.Ready(); return ok })
	sf.svc.Route(sf.r)
	sf.applied(1)
	sf.wantStatus(newToken(t, b), 200, "")

	// The IdP withdraws b; the manager's next fetch sees it first and pushes. The
	// sidecar's own last fetch still has b, and an unknown kid must not fetch it back.
	sf.setKeys("app-bundle", a)
	sf.applied(2)
	fetches := p.requests.Load()
	sf.wantStatus(newToken(t, b), 401, verify.ReasonUnknownKID)
	sf.wantStatus(newToken(t, a), 200, "")
	sf.clock.Advance(time.Hour) // any scheduled refresh is due
	sf.sc.refreshDue()
	time.Sleep(50 * time.Millisecond)
	sf.clock.Advance(-time.Hour)
	if n := p.requests.Load(); n != fetches {
		t.Fatalf("the sidecar fetched the remote JWKS %d times while the manager owned it", n-fetches)
	}

	// The manager goes silent past the fallback window: the sidecar fetches itself again.
	sf.svc.Down()
	sf.clock.Advance(DefaultDistributionFallback + time.Second)
	sf.sc.checkDistribution()
	eventually(t, "the sidecar's own fetch", func() bool { return p.requests.Load() > fetches })
	sf.wantStatus(newToken(t, b), 200, "")
	if !strings.Contains(sf.logs.String(), "fetching the policy's remote JWKS itself") {
		t.Error("the fallback was not logged")
	}

	// It answers again: its keys rule again.
	sf.svc.Route(sf.r)
	eventually(t, "the manager owning the remote JWKS again", func() bool { return sf.sc.remoteByStream.Load() })
	sf.wantStatus(newToken(t, b), 401, verify.ReasonUnknownKID)
}

func staleAfter(d time.Duration) policyOpt {
	return func(tp *tkv1.TokenPolicy) {
		tp.Spec.Distribution = &tkv1.DistributionSpec{MaxStaleness: &metav1.Duration{Duration: d}}
	}
}

func TestPastMaxStalenessWithoutWordFromTheManagerRequestsFailClosedUntilItAnswers(t *testing.T) {
	primary := testKey(t, "primary")
	tp := basePolicy(staleAfter(30 * time.Second))
	sf := newStreamFixture(t, tp, []*keys.Key{primary}, true, withPolicy(staleAfter(30*time.Second)))
	sf.applied(1)
	tok := newToken(t, primary)
	sf.wantStatus(tok, 200, "")

	sf.svc.Down()
	sf.clock.Advance(20 * time.Second)
	sf.wantStatus(tok, 200, "") // within the bound
	sf.clock.Advance(11 * time.Second)
	resp := sf.do("/api", bearer(tok))
	if resp.status != 503 || resp.header.Get("Retry-After") == "" ||
		!strings.Contains(resp.body, "no word from the distribution server for 31s (maxStaleness 30s)") {
		t.Fatalf("stale: %d %q Retry-After %q", resp.status, resp.body, resp.header.Get("Retry-After"))
	}
	if r := sf.do("/healthz"); r.status != 503 {
		t.Fatalf("an anonymous route got %d while stale", r.status)
	}
	if r := sf.admin("/readyz"); r.status != 503 || !strings.Contains(r.body, "no word from the distribution server") {
		t.Fatalf("/readyz while stale: %d %q", r.status, r.body)
	}
	if r := sf.admin("/startupz"); r.status != 200 {
		t.Fatalf("/startupz while stale: %d %q (a restart would only lose the last good snapshot)", r.status, r.body)
	}
	if m := sf.admin("/metrics").body; !strings.Contains(m, "tokenkeeper_sidecar_distribution_seconds_since_heard 31") {
		t.Fatalf("seconds since heard:\n%s", grepLines(m, "since_heard"))
	}
	sf.sc.checkDistribution()
	if !strings.Contains(sf.logs.String(), "Failing closed") {
		t.Error("failing closed was not logged")
	}

	// The manager answers (a 304 at the end of its hold): serving again.
	sf.svc.Route(sf.r)
	eventually(t, "word from the manager", func() bool { ok, _ := sf.sc.Ready(); return ok })
	sf.wantStatus(tok, 200, "")
}

func TestMaxStalenessCountsFromTheStartWhenTheManagerNeverAnswered(t *testing.T) {
	primary := testKey(t, "primary")
	sf := newStreamFixture(t, basePolicy(), []*keys.Key{primary}, false, withPolicy(staleAfter(30*time.Second)))
	tok := newToken(t, primary)
	sf.wantStatus(tok, 200, "")
	sf.clock.Advance(31 * time.Second)
	if r := sf.do("/api", bearer(tok)); r.status != 503 {
		t.Fatalf("never heard, past maxStaleness: %d", r.status)
	}
}

func TestMaxStalenessIsIgnoredWithoutADistributionServer(t *testing.T) {
	f := newFixture(t, withPolicy(staleAfter(30*time.Second)))
	f.clock.Advance(time.Hour)
	f.wantStatus(f.token(withClaim("exp", t0.Add(2*time.Hour).Unix())), 200, "")
}
