package distribution_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution/disttest"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

const ns, name = "shop", "api"

func publicKey(t *testing.T) jose.JSONWebKey {
	t.Helper()
	k, err := keys.Generate(rand.Reader, keys.Params{Algorithm: "ES256"})
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicJWK()
}

// replica is a synced replica serving the policy shop/api with one key and the jtis revoked.
func replica(t *testing.T, key jose.JSONWebKey, rlVersion string, jtis ...string) *disttest.Replica {
	r := disttest.NewReplica(t, disttest.FastLimits())
	r.Feed(disttest.Policy(ns, name, "10", nil), disttest.JWKSConfigMap(t, ns, "sk-jwks", "11", key),
		disttest.RevocationList(ns, "logout", rlVersion, jtis))
	r.Hub.MarkSynced()
	return r
}

// clock is a settable clock for the client's timestamps.
type clock struct{ n atomic.Int64 }

func (c *clock) Now() time.Time  { return time.Unix(0, c.n.Load()) }
func (c *clock) Set(t time.Time) { c.n.Store(t.UnixNano()) }

func newClock(t0 time.Time) *clock {
	c := &clock{}
	c.Set(t0)
	return c
}

// at is an instant s seconds into a test.
func at(s int) time.Time { return time.Unix(1_900_000_000+int64(s), 0) }

// subscriber is a Client running against a Service, recording what it applied.
type subscriber struct {
	t     *testing.T
	c     *distribution.Client
	clock *clock
	logs  *syncBuffer

	mu      sync.Mutex
	applied []*distribution.Snapshot
	heard   []time.Time
	refuse  func(*distribution.Snapshot) error
}

func subscribe(t *testing.T, svc *disttest.Service, mod ...func(*distribution.ClientConfig)) *subscriber {
	t.Helper()
	s := &subscriber{t: t, clock: newClock(at(0)), logs: &syncBuffer{}}
	cfg := distribution.ClientConfig{
		URL: svc.URL, Namespace: ns, Name: name, TokenFile: svc.TokenFile, CAFile: svc.CAFile,
		Hold:       time.Second,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Now:    s.clock.Now,
		Logger: slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Apply: func(snap *distribution.Snapshot) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.refuse != nil {
				if err := s.refuse(snap); err != nil {
					return err
				}
			}
			s.applied = append(s.applied, snap)
			return nil
		},
		Heard: func(t time.Time) { s.mu.Lock(); s.heard = append(s.heard, t); s.mu.Unlock() },
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := distribution.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.c = c
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("client logs:\n%s", s.logs.String())
		}
	})
	return s
}

func (s *subscriber) stats() distribution.ClientStats { return s.c.Stats() }

func (s *subscriber) snapshots() []*distribution.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.applied)
}

func (s *subscriber) waitApplied(n int) *distribution.Snapshot {
	s.t.Helper()
	disttest.Eventually(s.t, fmt.Sprintf("%d snapshots applied", n), func() bool { return len(s.snapshots()) >= n })
	got := s.snapshots()
	if len(got) != n {
		s.t.Fatalf("%d snapshots applied, want %d", len(got), n)
	}
	return got[n-1]
}

func jtis(snap *distribution.Snapshot) []string {
	var out []string
	for _, t := range snap.Revocations.Tokens {
		out = append(out, t.JTI)
	}
	return out
}

func TestAClientAppliesTheSnapshotAndCountsA304AsWordFromTheManager(t *testing.T) {
	r := replica(t, publicKey(t), "12")
	svc := disttest.NewService(t, r)
	sub := subscribe(t, svc)
	first := sub.waitApplied(1)
	reqs := svc.Requests()
	if reqs[0].Version != "" || reqs[0].AcceptEncoding != "gzip" || reqs[0].Authorization != "Bearer sidecar-token-1" {
		t.Fatalf("first request %+v: want no version, gzip, the token file's bearer", reqs[0])
	}
	if st := sub.stats(); st.Version != first.Token || st.Applied != 1 || !st.LastHeard.Equal(at(0)) {
		t.Fatalf("stats after the first snapshot: %+v", st)
	}

	// Nothing changes: the server answers 304 at its hold, which is word from the manager.
	sub.clock.Set(at(40))
	disttest.Eventually(t, "a 304 heard", func() bool { return sub.stats().LastHeard.Equal(at(40)) })
	if st := sub.stats(); st.Applied != 1 || st.Rejected != 0 || st.Reconnects != 0 {
		t.Fatalf("after a 304: %+v, want nothing applied, rejected or retried", st)
	}
	if !slices.ContainsFunc(svc.Requests(), func(r disttest.Request) bool {
		return r.Status == 304 && r.Version == first.Token.String()
	}) {
		t.Fatalf("no 304 to the held version among %+v", svc.Requests())
	}
	sub.mu.Lock()
	heard := slices.Contains(sub.heard, at(40))
	sub.mu.Unlock()
	if !heard {
		t.Error("the Heard callback was not called for the 304")
	}

	// A revocation is pushed to the waiting poll.
	r.Feed(disttest.RevocationList(ns, "logout", "13", []string{"stolen"}))
	next := sub.waitApplied(2)
	if !slices.Equal(jtis(next), []string{"stolen"}) || !next.Token.Version.Dominates(first.Token.Version) {
		t.Fatalf("second snapshot %v at %s", jtis(next), next.Token)
	}
}

func TestTheTokenFileIsReadAtEveryRequest(t *testing.T) {
	r := replica(t, publicKey(t), "12")
	svc := disttest.NewService(t, r)
	sub := subscribe(t, svc)
	sub.waitApplied(1)
	// The kubelet rotates the projected token; the server accepts only the new one.
	disttest.WriteFile(t, svc.TokenFile, []byte("sidecar-token-2"))
	r.SetToken("sidecar-token-2")
	disttest.Eventually(t, "a request with the rotated token answered", func() bool {
		return slices.ContainsFunc(svc.Requests(), func(q disttest.Request) bool {
			return q.Authorization == "Bearer sidecar-token-2" && (q.Status == 304 || q.Status == 200)
		})
	})
	r.Feed(disttest.RevocationList(ns, "logout", "13", []string{"stolen"}))
	sub.waitApplied(2)
}

func manyJTIs(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("jti-%05d", i))
	}
	return out
}

func TestALargeSetChangeArrivesAsADeltaAndIsApplied(t *testing.T) {
	all := manyJTIs(300)
	r := replica(t, publicKey(t), "12", all...)
	svc := disttest.NewService(t, r)
	sub := subscribe(t, svc)
	first := sub.waitApplied(1)
	r.Feed(disttest.RevocationList(ns, "logout", "13", append(slices.Clone(all[1:]), "new")))
	next := sub.waitApplied(2)
	got := jtis(next)
	if len(got) != 300 || !slices.Contains(got, "new") || slices.Contains(got, "jti-00000") {
		t.Fatalf("after the delta the client holds %d jtis (new: %v, jti-00000: %v)", len(got),
			slices.Contains(got, "new"), slices.Contains(got, "jti-00000"))
	}
	last := svc.Requests()
	i := slices.IndexFunc(last, func(q disttest.Request) bool { return q.Status == 200 && q.Version == first.Token.String() })
	if i < 0 || last[i].Message == nil || last[i].Message.Delta == nil {
		t.Fatalf("the second snapshot did not travel as a delta: %+v", last)
	}
}

func TestACorruptDeltaIsRejectedAndAFullSnapshotAskedFor(t *testing.T) {
	all := manyJTIs(300)
	r := replica(t, publicKey(t), "12", all...)
	svc := disttest.NewService(t, r)
	sub := subscribe(t, svc)
	first := sub.waitApplied(1)
	// A delta that lost an entry on the way: patching would leave a set the manager never had.
	svc.Tamper(func(m *distribution.Message, plain []byte) []byte {
		if m == nil || m.Delta == nil {
			return plain
		}
		m.Delta.Added.Tokens = nil
		b, _ := json.Marshal(m)
		return b
	})
	r.Feed(disttest.RevocationList(ns, "logout", "13", append(slices.Clone(all[1:]), "new")))
	next := sub.waitApplied(2)
	if got := jtis(next); len(got) != 300 || !slices.Contains(got, "new") {
		t.Fatalf("after the full snapshot the client holds %d jtis, new: %v", len(got), slices.Contains(got, "new"))
	}
	if st := sub.stats(); st.Rejected != 1 {
		t.Fatalf("rejected %d, want the one corrupt delta", st.Rejected)
	}
	reqs := svc.Requests()
	i := slices.IndexFunc(reqs, func(q disttest.Request) bool { return q.Message != nil && q.Message.Delta != nil })
	if i < 0 || i+1 >= len(reqs) {
		t.Fatalf("no delta was sent, or nothing after it: %+v", reqs)
	}
	asked, err := distribution.ParseToken(reqs[i+1].Version)
	if err != nil || asked.Version != first.Token.Version || asked.Digest == first.Token.Digest {
		t.Fatalf("after the corrupt delta the client asked %q (%v), want the held version with a digest the server cannot patch from", reqs[i+1].Version, err)
	}
	if m := reqs[i+1].Message; m == nil || m.Delta != nil || m.Revocations == nil {
		t.Fatalf("the answer to that was not a full snapshot: %+v", m)
	}
}

func TestAClientFailingOverToALaggingReplicaNeverAppliesAnOlderSnapshot(t *testing.T) {
	key := publicKey(t)
	a := replica(t, key, "20", "stolen") // a has seen the revocation of "stolen"
	b := replica(t, key, "12")           // b has not, yet
	svc := disttest.NewService(t, a)
	sub := subscribe(t, svc)
	fromA := sub.waitApplied(1)

	svc.Route(nil) // a goes away
	disttest.Eventually(t, "a reconnect", func() bool { return sub.stats().Reconnects > 0 })
	svc.Route(b)
	sub.clock.Set(at(50))
	disttest.Eventually(t, "b's 304 to a's version", func() bool {
		return slices.ContainsFunc(svc.Requests(), func(q disttest.Request) bool {
			return q.Status == 304 && q.Version == fromA.Token.String()
		})
	})
	if st := sub.stats(); st.Applied != 1 || st.Version != fromA.Token || !st.LastHeard.Equal(at(50)) {
		t.Fatalf("on the lagging replica: %+v, want a's snapshot kept and b's 304 heard", st)
	}

	// A replica that ignores the version answers its older snapshot at once: refused,
	// and still word from the manager (nothing newer there).
	svc.StripVersion(true)
	sub.clock.Set(at(60))
	disttest.Eventually(t, "b's older snapshot refused", func() bool { return sub.stats().LastHeard.Equal(at(60)) })
	if st := sub.stats(); st.Applied != 1 || st.Version != fromA.Token || st.Rejected != 0 {
		t.Fatalf("after b sent its older snapshot: %+v, want a's kept", st)
	}
	if !slices.ContainsFunc(svc.Requests(), func(q disttest.Request) bool {
		return q.Status == 200 && q.Message != nil && q.Message.Version != fromA.Token.String()
	}) {
		t.Fatal("b never sent its older snapshot: the test proves nothing")
	}
	svc.StripVersion(false)

	// b catches up past a: the client moves on.
	b.Feed(disttest.RevocationList(ns, "logout", "21", []string{"stolen", "other"}))
	next := sub.waitApplied(2)
	if !next.Token.Version.Dominates(fromA.Token.Version) || len(next.Revocations.Tokens) != 2 {
		t.Fatalf("after b caught up: %v at %s", jtis(next), next.Token)
	}
}

func TestACARenewalReachesTheClientThroughTheCAFile(t *testing.T) {
	r := replica(t, publicKey(t), "12")
	svc := disttest.NewService(t, r)
	sub := subscribe(t, svc)
	sub.waitApplied(1)

	newCA := svc.RenewCA(t) // the server's new certificate, not yet in the sidecar's bundle
	svc.Srv.CloseClientConnections()
	disttest.Eventually(t, "handshakes failing on the new CA", func() bool {
		return sub.stats().Reconnects >= 2 && strings.Contains(sub.logs.String(), "certificate")
	})
	r.Feed(disttest.RevocationList(ns, "logout", "13", []string{"stolen"}))
	time.Sleep(200 * time.Millisecond)
	if n := len(sub.snapshots()); n != 1 {
		t.Fatalf("%d snapshots applied through a certificate the CA file does not trust", n)
	}
	disttest.WriteFile(t, svc.CAFile, newCA)
	next := sub.waitApplied(2)
	if !slices.Equal(jtis(next), []string{"stolen"}) {
		t.Fatalf("after the CA renewal: %v", jtis(next))
	}
	if !strings.Contains(sub.logs.String(), "Loaded a changed CA file") {
		t.Error("the CA change was not logged")
	}
}

func TestAGarbageAnswerIsRejectedAndTheLastGoodKept(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		body       []byte
	}{
		{"not JSON", "decoding the answer", []byte("{not json")},
		{"larger than the cap once decoded", "larger than 1 MiB decoded", bytes.Repeat([]byte(" "), 2<<20)},
		{"a snapshot whose digest does not match", "does not match the content", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := replica(t, publicKey(t), "12")
			svc := disttest.NewService(t, r)
			sub := subscribe(t, svc, func(c *distribution.ClientConfig) { c.MaxBytes = 1 << 20 })
			first := sub.waitApplied(1)
			svc.Tamper(func(m *distribution.Message, plain []byte) []byte {
				if tc.body != nil {
					return tc.body
				}
				m.Revocations.Tokens = nil // the content without its revocation
				b, _ := json.Marshal(m)
				return b
			})
			r.Feed(disttest.RevocationList(ns, "logout", "13", []string{"stolen"}))
			disttest.Eventually(t, "a rejection", func() bool { return sub.stats().Rejected >= 1 })
			if st := sub.stats(); st.Version != first.Token || len(sub.snapshots()) != 1 {
				t.Fatalf("after a bad answer: %+v, want the first snapshot kept", st)
			}
			if !strings.Contains(sub.logs.String(), tc.want) {
				t.Fatalf("logs do not say %q", tc.want)
			}
			svc.Tamper(nil)
			if next := sub.waitApplied(2); !slices.Equal(jtis(next), []string{"stolen"}) {
				t.Fatalf("after the server recovered: %v", jtis(next))
			}
		})
	}
}

func TestASnapshotApplyRefusesIsNotAskedForAgainAndIsNotCurrent(t *testing.T) {
	r := replica(t, publicKey(t), "12")
	svc := disttest.NewService(t, r)
	sub := subscribe(t, svc)
	sub.waitApplied(1)
	sub.mu.Lock()
	sub.refuse = func(s *distribution.Snapshot) error {
		if s.Policy.Issuer == "https://bad.example" {
			return errors.New("an issuer this sidecar cannot use")
		}
		return nil
	}
	sub.mu.Unlock()
	r.Feed(disttest.Policy(ns, name, "13", func(s *tkv1.TokenPolicySpec) { s.Issuer = "https://bad.example" }))
	disttest.Eventually(t, "the refusal", func() bool { return sub.stats().Rejected == 1 })
	sub.clock.Set(at(70))
	before := len(svc.Requests())
	time.Sleep(1500 * time.Millisecond) // a hold or so
	reqs := svc.Requests()[before:]
	if len(reqs) > 4 {
		t.Fatalf("%d polls in 1.5s after a refusal: the refused snapshot is asked for again and again", len(reqs))
	}
	if st := sub.stats(); st.Rejected != 1 || st.LastHeard.Equal(at(70)) {
		t.Fatalf("after the refusal: %+v, want one rejection and no word counted (the client is not current)", st)
	}
	// The change is undone: the content held, at a newer version. Nothing to apply, the
	// client is current again and resumes from that version.
	r.Feed(disttest.Policy(ns, name, "14", nil))
	disttest.Eventually(t, "word counted again", func() bool { return sub.stats().LastHeard.Equal(at(70)) })
	if st := sub.stats(); st.Version.Version[distribution.KindTokenPolicy] != 14 || st.Applied != 1 {
		t.Fatalf("after the change was undone: %+v, want the held content at TokenPolicy version 14", st)
	}
	r.Feed(disttest.Policy(ns, name, "15", func(s *tkv1.TokenPolicySpec) { s.Audiences = []string{"api", "web"} }))
	if next := sub.waitApplied(2); len(next.Policy.Audiences) != 2 {
		t.Fatalf("applied %+v", next.Policy)
	}
}

func TestAServerNotReadyIsRetriedAfterItsRetryAfter(t *testing.T) {
	r := disttest.NewReplica(t, disttest.FastLimits())
	r.Feed(disttest.Policy(ns, name, "10", nil), disttest.JWKSConfigMap(t, ns, "sk-jwks", "11", publicKey(t)))
	svc := disttest.NewService(t, r)
	sub := subscribe(t, svc) // backoff 10ms..50ms: without Retry-After it would retry every 50ms
	time.Sleep(700 * time.Millisecond)
	if n := len(svc.Requests()); n != 1 || svc.Requests()[0].Status != 503 {
		t.Fatalf("%d requests in 700ms to a server saying Retry-After: 1 (%+v)", n, svc.Requests())
	}
	r.Hub.MarkSynced()
	sub.waitApplied(1)
}

func TestNewClientRefusesWhatCannotWork(t *testing.T) {
	apply := func(*distribution.Snapshot) error { return nil }
	for _, tc := range []struct {
		cfg  distribution.ClientConfig
		want string
	}{
		{distribution.ClientConfig{URL: "http://x", Namespace: ns, Name: name, CAFile: "ca", Apply: apply}, "want https"},
		{distribution.ClientConfig{URL: "https://x", Name: name, CAFile: "ca", Apply: apply}, "namespace and name"},
		{distribution.ClientConfig{URL: "https://x", Namespace: ns, Name: name, Apply: apply}, "CA file"},
		{distribution.ClientConfig{URL: "https://x", Namespace: ns, Name: name, CAFile: "ca"}, "Apply"},
	} {
		if _, err := distribution.NewClient(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A sidecar restarting from a bundle that already carries a revocation must not apply an
// older snapshot from a replica that lags behind that bundle: before it holds a snapshot
// it asks from the bundle's floor, and refuses one below it even from a server that
// ignores the version. Once the replica catches up, its snapshot is applied.
func TestAClientNeverAppliesASnapshotOlderThanItsBundle(t *testing.T) {
	key := publicKey(t)
	lagging := replica(t, key, "12") // has not seen RevocationList version 20 yet
	svc := disttest.NewService(t, lagging)
	floor := distribution.Version{10, 20, 0} // the bundle was rendered from the list at 20
	sub := subscribe(t, svc, func(c *distribution.ClientConfig) { c.Floor = floor })
	disttest.Eventually(t, "a poll from the floor", func() bool {
		return slices.ContainsFunc(svc.Requests(), func(q disttest.Request) bool {
			return strings.HasPrefix(q.Version, floor.String()+".")
		})
	})
	svc.StripVersion(true) // a server that answers its older snapshot at once
	disttest.Eventually(t, "the older snapshot sent", func() bool {
		return slices.ContainsFunc(svc.Requests(), func(q disttest.Request) bool { return q.Status == 200 })
	})
	if st := sub.stats(); st.Applied != 0 {
		t.Fatalf("applied a snapshot older than the bundle: %+v", st)
	}
	svc.StripVersion(false)
	lagging.Feed(disttest.RevocationList(ns, "logout", "21", []string{"stolen"}))
	if got := sub.waitApplied(1); !got.Token.Version.Dominates(floor) || len(got.Revocations.Tokens) != 1 {
		t.Fatalf("after the replica caught up: %v at %s", jtis(got), got.Token)
	}
}
