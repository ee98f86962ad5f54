package keys

import (
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// sim drives the rotation machine the way the controller does, with a fake clock, a Secret
// and a ConfigMap held in memory, crashes injected between writes, and a signer that signs a
// token with the mounted active key at every instant. It checks the four invariants of the
// design at every step and writes a timeline that is compared with a golden file.
type sim struct {
	t      *testing.T
	start  time.Time
	now    time.Time
	policy Policy
	// tokenLifetime is how long the signer's tokens live; retainFor must cover it.
	tokenLifetime time.Duration

	secret    map[string][]byte // the Secret's data, as last written
	published map[string]bool   // the JWKS ConfigMap's kids, as last written
	firstSeen map[string]time.Time
	labels    map[string]string // real kid → k1, k2 … so the timeline is deterministic
	tokens    []token
	everReady bool
	emergency map[string]bool // keys activated by an emergency rotation
	log       strings.Builder
}

type token struct {
	kid      string
	signedAt time.Time
}

// crash points: the reconcile stops right after the named write.
const (
	noCrash = iota
	crashAfterSecret
	crashAfterConfigMap
)

func newSim(t *testing.T, p Policy) *sim {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &sim{t: t, start: start, now: start, policy: p, tokenLifetime: p.RetainFor,
		secret: map[string][]byte{}, published: map[string]bool{}, firstSeen: map[string]time.Time{}, labels: map[string]string{}, emergency: map[string]bool{}}
}

func (s *sim) label(kid string) string {
	if l, ok := s.labels[kid]; ok {
		return l
	}
	l := fmt.Sprintf("k%d", len(s.labels)+1)
	s.labels[kid] = l
	return l
}

func (s *sim) logf(format string, a ...any) {
	d := s.now.Sub(s.start)
	fmt.Fprintf(&s.log, "%-9s %s\n", fmtDur(d), fmt.Sprintf(format, a...))
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("+%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}

// reconcile is one pass of the controller, optionally crashing after a write.
func (s *sim) reconcile(crash int) {
	s.t.Helper()
	ring, problems := LoadRing(s.secret, Repair{Now: s.now, RetainFor: s.policy.RetainFor})
	for _, p := range problems {
		s.t.Fatalf("%s: unexpected damage: %s", fmtDur(s.now.Sub(s.start)), p)
	}
	step := Advance(ring.Records, s.policy, s.now, nil)
	if step.NeedKey {
		k, err := Generate(rand.Reader, s.policy.Params)
		if err != nil {
			s.t.Fatal(err)
		}
		s.label(k.KID)
		ring.Keys[k.KID] = k
		step = Advance(ring.Records, s.policy, s.now, k)
	}
	ring.Records = step.Records
	for _, c := range step.Changes {
		if c.Kind == EmergencyActivated {
			s.emergency[c.KID] = true
		}
		s.logf("%s %s", c.Kind, s.label(c.KID))
	}
	s.writeSecret(ring)
	if crash == crashAfterSecret {
		s.logf("crash after Secret write")
		return
	}
	s.writeConfigMap(ring)
	if crash == crashAfterConfigMap {
		s.logf("crash after ConfigMap write")
		return
	}
	if marked, changed := MarkPublished(ring.Records, s.now); changed {
		ring.Records = marked
		s.writeSecret(ring)
	}
	s.checkInvariants(ring)
}

func (s *sim) writeSecret(ring Ring) {
	live := map[string]*Key{}
	for _, r := range ring.Records {
		live[r.KID] = ring.Keys[r.KID]
	}
	data, err := Ring{Records: ring.Records, Keys: live}.SecretData()
	if err != nil {
		s.t.Fatal(err)
	}
	s.secret = data
}

// writeConfigMap publishes the public keys. Invariant 3: every published key is already in
// the Secret.
func (s *sim) writeConfigMap(ring Ring) {
	inSecret, _, err := parseState(s.secret[FileState])
	if err != nil {
		s.t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, r := range inSecret {
		stored[r.KID] = true
	}
	s.published = map[string]bool{}
	for _, k := range ring.PublicKeys() {
		if !stored[k.KID] {
			s.t.Fatalf("%s: invariant 3 broken: %s published before the Secret held it", fmtDur(s.now.Sub(s.start)), s.label(k.KID))
		}
		s.published[k.KID] = true
		if _, ok := s.firstSeen[k.KID]; !ok {
			s.firstSeen[k.KID] = s.now
		}
	}
}

// sign is the issuer: it signs with whatever active key the Secret holds right now.
func (s *sim) sign() {
	if kid := string(s.secret[FileActiveKID]); kid != "" {
		s.tokens = append(s.tokens, token{kid: kid, signedAt: s.now})
	}
}

func (s *sim) checkInvariants(ring Ring) {
	s.t.Helper()
	at := fmtDur(s.now.Sub(s.start))
	actives := 0
	for _, r := range ring.Records {
		if r.State != Active {
			continue
		}
		actives++
		first, ok := s.firstSeen[r.KID]
		if !s.emergency[r.KID] && (!ok || r.ActivatedAt.Before(first.Add(s.policy.PublishAhead))) {
			s.t.Fatalf("%s: invariant 1 broken: %s active at %s, published at %v", at, s.label(r.KID), fmtDur(r.ActivatedAt.Sub(s.start)), first)
		}
	}
	if actives == 1 {
		s.everReady = true
	}
	if s.everReady && actives != 1 {
		s.t.Fatalf("%s: invariant 4 broken: %d active keys", at, actives)
	}
	for _, tok := range s.tokens {
		valid := s.now.Before(tok.signedAt.Add(s.tokenLifetime))
		if valid && !s.published[tok.kid] && !s.policy.Revoked[tok.kid] {
			s.t.Fatalf("%s: invariant 2 broken: token signed at %s by %s still valid but key unpublished", at, fmtDur(tok.signedAt.Sub(s.start)), s.label(tok.kid))
		}
	}
}

func (s *sim) snapshot() string {
	ring, _ := LoadRing(s.secret, Repair{Now: s.now, RetainFor: s.policy.RetainFor})
	parts := make([]string, 0, len(ring.Records))
	for _, r := range ring.Records {
		pub := "unpublished"
		if s.published[r.KID] {
			pub = "published"
		}
		parts = append(parts, fmt.Sprintf("%s:%s:%s:%s", s.label(r.KID), r.Algorithm, r.State, pub))
	}
	return strings.Join(parts, " ")
}

// runUntil advances the clock through every transition the machine schedules, and through
// the scripted events, until end.
func (s *sim) runUntil(end time.Duration, script map[time.Duration]func()) {
	var marks []time.Duration
	for d := range script {
		marks = append(marks, d)
	}
	sort.Slice(marks, func(i, j int) bool { return marks[i] < marks[j] })
	for steps := 0; ; steps++ {
		if steps > 10000 {
			s.t.Fatal("no progress")
		}
		s.sign()
		if len(marks) > 0 && s.now.Sub(s.start) == marks[0] {
			script[marks[0]]()
			marks = marks[1:]
		} else {
			s.reconcile(noCrash)
		}
		s.logf("  %s", s.snapshot())
		ring, _ := LoadRing(s.secret, Repair{Now: s.now, RetainFor: s.policy.RetainFor})
		next := NextTransition(ring.Records, s.policy, s.now)
		if len(marks) > 0 && (next.IsZero() || s.start.Add(marks[0]).Before(next)) {
			next = s.start.Add(marks[0])
		}
		if next.IsZero() || next.Sub(s.start) > end {
			return
		}
		if !next.After(s.now) {
			s.t.Fatalf("%s: next transition %v is not in the future", fmtDur(s.now.Sub(s.start)), next)
		}
		s.now = next
	}
}

func TestRotationTimelineMatchesGolden(t *testing.T) {
	s := newSim(t, Policy{
		Params:       Params{Algorithm: "ES256"},
		Interval:     time.Hour,
		PublishAhead: 15 * time.Minute,
		RetainFor:    30 * time.Minute,
	})
	s.runUntil(9*time.Hour, map[time.Duration]func(){
		// The manager dies at the moment k2 is generated, between writing the Secret and
		// publishing: the restart adopts k2 from the Secret and publishes it, without
		// generating another, and k2 activates a minute later than planned.
		1 * time.Hour:             func() { s.logf("event: crash injected"); s.reconcile(crashAfterSecret) },
		1*time.Hour + time.Minute: func() { s.logf("event: manager restarted"); s.reconcile(noCrash) },
		// Crash after publishing k3 but before recording the publication time: the restart
		// records a later time, so activation is delayed, never brought forward.
		2*time.Hour + time.Minute:   func() { s.logf("event: crash injected"); s.reconcile(crashAfterConfigMap) },
		2*time.Hour + 6*time.Minute: func() { s.logf("event: manager restarted"); s.reconcile(noCrash) },
		// A manual rotation: the next key is still published for publishAhead first.
		3*time.Hour + 40*time.Minute: func() {
			t := s.now
			s.policy.RotateRequestedAt = &t
			s.logf("event: rotation requested")
			s.reconcile(noCrash)
		},
		// An algorithm change rotates the active key out on the normal schedule.
		5*time.Hour + 5*time.Minute: func() {
			s.policy.Params = Params{Algorithm: "EdDSA"}
			s.logf("event: algorithm changed to EdDSA")
			s.reconcile(noCrash)
		},
		// A restart in the middle of everything reloads only from the Secret.
		6*time.Hour + 50*time.Minute: func() { s.logf("event: manager restarted"); s.reconcile(noCrash) },
	})
	compareGolden(t, "rotation.golden", s.log.String())
}

func TestEmergencyRevocationTimelineMatchesGolden(t *testing.T) {
	s := newSim(t, Policy{
		Params:       Params{Algorithm: "ES256"},
		Interval:     time.Hour,
		PublishAhead: 15 * time.Minute,
		RetainFor:    30 * time.Minute,
	})
	s.runUntil(3*time.Hour, map[time.Duration]func(){
		// The active key leaks: revoking it drops it from the JWKS and a replacement signs at
		// once (the one explicit exception to publish-ahead).
		1*time.Hour + 20*time.Minute: func() {
			ring, _ := LoadRing(s.secret, Repair{Now: s.now, RetainFor: s.policy.RetainFor})
			s.policy.Revoked = map[string]bool{ring.Active().KID: true}
			s.logf("event: active key revoked")
			s.reconcile(noCrash)
		},
	})
	compareGolden(t, "emergency.golden", s.log.String())
}

func compareGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/keys -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("timeline differs from %s (go test ./internal/keys -run Golden -update, then review the diff)\n--- got ---\n%s", path, got)
	}
}
