package keys

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The fake clock: every time in these tests is an offset from t0.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func atPtr(d time.Duration) *time.Time {
	t := at(d)
	return &t
}

const ns = time.Nanosecond

// recordOpt edits a Record fixture.
type recordOpt func(*Record)

// record is an ES256 key created at t0 in state s; options adjust it.
func record(kid string, s State, opts ...recordOpt) Record {
	r := Record{KID: kid, Algorithm: "ES256", State: s, CreatedAt: t0}
	for _, o := range opts {
		o(&r)
	}
	return r
}

func created(d time.Duration) recordOpt   { return func(r *Record) { r.CreatedAt = at(d) } }
func published(d time.Duration) recordOpt { return func(r *Record) { r.PublishedAt = atPtr(d) } }
func activated(d time.Duration) recordOpt { return func(r *Record) { r.ActivatedAt = atPtr(d) } }
func retired(d time.Duration) recordOpt   { return func(r *Record) { r.RetiredAt = atPtr(d) } }
func removeAt(d time.Duration) recordOpt  { return func(r *Record) { r.RemoveAt = atPtr(d) } }
func alg(a string, bits int) recordOpt {
	return func(r *Record) { r.Algorithm, r.RSABits = a, bits }
}

// policyOpt edits a Policy fixture.
type policyOpt func(*Policy)

// policy is ES256 keys, each Active for an hour, published 15m ahead and retained 30m.
func policy(opts ...policyOpt) Policy {
	p := Policy{Params: Params{Algorithm: "ES256"}, Interval: time.Hour, PublishAhead: 15 * time.Minute, RetainFor: 30 * time.Minute}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func withParams(alg string, bits int) policyOpt {
	return func(p *Policy) { p.Params = Params{Algorithm: alg, RSABits: bits} }
}
func rotateRequested(d time.Duration) policyOpt {
	return func(p *Policy) { p.RotateRequestedAt = atPtr(d) }
}
func revoked(kids ...string) policyOpt {
	return func(p *Policy) {
		p.Revoked = map[string]bool{}
		for _, k := range kids {
			p.Revoked[k] = true
		}
	}
}

// fresh is a newly generated key as Advance sees it: only its kid and alg matter.
func fresh(kid, alg string) *Key { return &Key{KID: kid, Algorithm: alg} }

// describe renders records as one line each, times as offsets from t0, so failures read as
// timelines and comparisons are exact to the nanosecond.
func describe(rs []Record) []string {
	off := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Sub(t0).String()
	}
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		c := r.CreatedAt
		line := fmt.Sprintf("%s %s created=%s published=%s activated=%s retired=%s removeAt=%s",
			r.KID, r.State, off(&c), off(r.PublishedAt), off(r.ActivatedAt), off(r.RetiredAt), off(r.RemoveAt))
		if r.Algorithm != "ES256" || r.RSABits != 0 {
			line += fmt.Sprintf(" alg=%s/%d", r.Algorithm, r.RSABits)
		}
		out = append(out, line)
	}
	return out
}

// line is the expected describe() line of one record.
func line(kid string, s State, created, published, activated, retired, removeAt string) string {
	return fmt.Sprintf("%s %s created=%s published=%s activated=%s retired=%s removeAt=%s", kid, s, created, published, activated, retired, removeAt)
}

func changes(cs ...any) []Change {
	var out []Change
	for i := 0; i < len(cs); i += 2 {
		out = append(out, Change{Kind: cs[i].(ChangeKind), KID: cs[i+1].(string)})
	}
	return out
}

func TestAdvance(t *testing.T) {
	tests := []struct {
		name        string
		records     []Record
		policy      Policy
		now         time.Duration
		fresh       *Key
		want        []string
		wantChanges []Change
		wantNeedKey bool
	}{
		{
			name:        "no keys and no fresh key asks for a key",
			policy:      policy(),
			wantNeedKey: true,
		},
		{
			name:        "no keys and a fresh key adds it as Next without activating it",
			policy:      policy(),
			fresh:       fresh("k1", "ES256"),
			want:        []string{line("k1", Next, "0s", "-", "-", "-", "-")},
			wantChanges: changes(Generated, "k1"),
		},
		{
			name:        "a fresh RSA key is recorded with the policy's normalized size",
			policy:      policy(withParams("RS256", 0)),
			fresh:       fresh("k1", "RS256"),
			want:        []string{line("k1", Next, "0s", "-", "-", "-", "-") + " alg=RS256/2048"},
			wantChanges: changes(Generated, "k1"),
		},
		{
			name:    "the first key does not activate a nanosecond before publishAhead",
			records: []Record{record("k1", Next, published(0))},
			policy:  policy(),
			now:     15*time.Minute - ns,
			want:    []string{line("k1", Next, "0s", "0s", "-", "-", "-")},
		},
		{
			name:        "the first key activates exactly publishAhead after publication",
			records:     []Record{record("k1", Next, published(0))},
			policy:      policy(),
			now:         15 * time.Minute,
			want:        []string{line("k1", Active, "0s", "0s", "15m0s", "-", "-")},
			wantChanges: changes(Activated, "k1"),
		},
		{
			name:    "an unpublished first key never activates",
			records: []Record{record("k1", Next)},
			policy:  policy(),
			now:     10 * time.Hour,
			want:    []string{line("k1", Next, "0s", "-", "-", "-", "-")},
		},
		{
			name:    "an active key not yet due keeps signing and no key is prepared",
			records: []Record{record("k1", Active, published(0), activated(0))},
			policy:  policy(),
			now:     45*time.Minute - ns,
			fresh:   fresh("k2", "ES256"),
			want:    []string{line("k1", Active, "0s", "0s", "0s", "-", "-")},
		},
		{
			name:        "the next key is prepared exactly publishAhead before the active key is due",
			records:     []Record{record("k1", Active, published(0), activated(0))},
			policy:      policy(),
			now:         45 * time.Minute,
			fresh:       fresh("k2", "ES256"),
			want:        []string{line("k1", Active, "0s", "0s", "0s", "-", "-"), line("k2", Next, "45m0s", "-", "-", "-", "-")},
			wantChanges: changes(Generated, "k2"),
		},
		{
			name:        "an active key due for a successor without a fresh key asks for one",
			records:     []Record{record("k1", Active, published(0), activated(0))},
			policy:      policy(),
			now:         45 * time.Minute,
			want:        []string{line("k1", Active, "0s", "0s", "0s", "-", "-")},
			wantNeedKey: true,
		},
		{
			name: "a Next published for less than publishAhead does not activate even when rotation is due",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(50*time.Minute), published(50*time.Minute)),
			},
			policy: policy(),
			now:    65*time.Minute - ns,
			want:   []string{line("k1", Active, "0s", "0s", "0s", "-", "-"), line("k2", Next, "50m0s", "50m0s", "-", "-", "-")},
		},
		{
			name: "a Next published exactly publishAhead ago activates and retires the old Active for retainFor",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(50*time.Minute), published(50*time.Minute)),
			},
			policy:      policy(),
			now:         65 * time.Minute,
			want:        []string{line("k1", Retired, "0s", "0s", "0s", "1h5m0s", "1h35m0s"), line("k2", Active, "50m0s", "50m0s", "1h5m0s", "-", "-")},
			wantChanges: changes(RetiredKey, "k1", Activated, "k2"),
		},
		{
			name: "a Next published long ago activates exactly when the active key is due, not before",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
			},
			policy: policy(),
			now:    time.Hour - ns,
			want:   []string{line("k1", Active, "0s", "0s", "0s", "-", "-"), line("k2", Next, "45m0s", "45m0s", "-", "-", "-")},
		},
		{
			name: "a Next published long ago activates at the end of the interval",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
			},
			policy:      policy(),
			now:         time.Hour,
			want:        []string{line("k1", Retired, "0s", "0s", "0s", "1h0m0s", "1h30m0s"), line("k2", Active, "45m0s", "45m0s", "1h0m0s", "-", "-")},
			wantChanges: changes(RetiredKey, "k1", Activated, "k2"),
		},
		{
			name: "a Retired key is kept a nanosecond before RemoveAt",
			records: []Record{
				record("k0", Retired, created(-2*time.Hour), published(-2*time.Hour), activated(-time.Hour), retired(0), removeAt(30*time.Minute)),
				record("k1", Active, published(-15*time.Minute), activated(0)),
			},
			policy: policy(),
			now:    30*time.Minute - ns,
			want: []string{
				line("k0", Retired, "-2h0m0s", "-2h0m0s", "-1h0m0s", "0s", "30m0s"),
				line("k1", Active, "0s", "-15m0s", "0s", "-", "-"),
			},
		},
		{
			name: "a Retired key is removed exactly at RemoveAt",
			records: []Record{
				record("k0", Retired, created(-2*time.Hour), published(-2*time.Hour), activated(-time.Hour), retired(0), removeAt(30*time.Minute)),
				record("k1", Active, published(-15*time.Minute), activated(0)),
			},
			policy:      policy(),
			now:         30 * time.Minute,
			want:        []string{line("k1", Active, "0s", "-15m0s", "0s", "-", "-")},
			wantChanges: changes(Removed, "k0"),
		},
		{
			name: "a Retired key without RemoveAt is never removed",
			records: []Record{
				record("k0", Retired, created(-2*time.Hour)),
				record("k1", Active, published(0), activated(0)),
			},
			policy: policy(),
			now:    40 * time.Minute,
			want:   []string{line("k0", Retired, "-2h0m0s", "-", "-", "-", "-"), line("k1", Active, "0s", "0s", "0s", "-", "-")},
		},
		{
			name:        "a rotation requested after activation prepares the next key at once",
			records:     []Record{record("k1", Active, published(0), activated(0))},
			policy:      policy(rotateRequested(20 * time.Minute)),
			now:         20 * time.Minute,
			fresh:       fresh("k2", "ES256"),
			want:        []string{line("k1", Active, "0s", "0s", "0s", "-", "-"), line("k2", Next, "20m0s", "-", "-", "-", "-")},
			wantChanges: changes(Generated, "k2"),
		},
		{
			name: "a rotation requested after activation still waits publishAhead",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(20*time.Minute), published(20*time.Minute)),
			},
			policy: policy(rotateRequested(20 * time.Minute)),
			now:    35*time.Minute - ns,
			want:   []string{line("k1", Active, "0s", "0s", "0s", "-", "-"), line("k2", Next, "20m0s", "20m0s", "-", "-", "-")},
		},
		{
			name: "a rotation requested after activation completes publishAhead later, before the interval ends",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(20*time.Minute), published(20*time.Minute)),
			},
			policy:      policy(rotateRequested(20 * time.Minute)),
			now:         35 * time.Minute,
			want:        []string{line("k1", Retired, "0s", "0s", "0s", "35m0s", "1h5m0s"), line("k2", Active, "20m0s", "20m0s", "35m0s", "-", "-")},
			wantChanges: changes(RetiredKey, "k1", Activated, "k2"),
		},
		{
			name:    "a rotation requested before activation is ignored",
			records: []Record{record("k1", Active, published(-5*time.Minute), activated(10*time.Minute))},
			policy:  policy(rotateRequested(5 * time.Minute)),
			now:     20 * time.Minute,
			fresh:   fresh("k2", "ES256"),
			want:    []string{line("k1", Active, "0s", "-5m0s", "10m0s", "-", "-")},
		},
		{
			name:        "a rotation requested at the very instant of activation counts",
			records:     []Record{record("k1", Active, published(-15*time.Minute), activated(0))},
			policy:      policy(rotateRequested(0)),
			now:         20 * time.Minute,
			fresh:       fresh("k2", "ES256"),
			want:        []string{line("k1", Active, "0s", "-15m0s", "0s", "-", "-"), line("k2", Next, "20m0s", "-", "-", "-", "-")},
			wantChanges: changes(Generated, "k2"),
		},
		{
			name:        "a rotation requested in the second of activation counts: requests carry whole seconds",
			records:     []Record{record("k1", Active, published(-5*time.Minute), activated(10*time.Minute+400*time.Millisecond))},
			policy:      policy(rotateRequested(10 * time.Minute)),
			now:         20 * time.Minute,
			fresh:       fresh("k2", "ES256"),
			want:        []string{line("k1", Active, "0s", "-5m0s", "10m0.4s", "-", "-"), line("k2", Next, "20m0s", "-", "-", "-", "-")},
			wantChanges: changes(Generated, "k2"),
		},
		{
			name:    "a rotation requested in the second before activation is ignored",
			records: []Record{record("k1", Active, published(-5*time.Minute), activated(10*time.Minute+400*time.Millisecond))},
			policy:  policy(rotateRequested(10*time.Minute - ns)),
			now:     20 * time.Minute,
			fresh:   fresh("k2", "ES256"),
			want:    []string{line("k1", Active, "0s", "-5m0s", "10m0.4s", "-", "-")},
		},
		{
			// A rotation requested ahead of time: its Next was prepared publishAhead before and
			// activates exactly at the requested instant. The request is then satisfied; the
			// machine must be at rest (Advance idempotent) rather than wanting yet another key.
			name: "a rotation requested ahead of time activates its Next at the requested instant and is then at rest",
			records: []Record{
				record("k1", Active, published(-15*time.Minute), activated(0)),
				record("k2", Next, created(5*time.Minute), published(5*time.Minute)),
			},
			policy:      policy(rotateRequested(20 * time.Minute)),
			now:         20 * time.Minute,
			want:        []string{line("k1", Retired, "0s", "-15m0s", "0s", "20m0s", "50m0s"), line("k2", Active, "5m0s", "5m0s", "20m0s", "-", "-")},
			wantChanges: changes(RetiredKey, "k1", Activated, "k2"),
		},
		{
			name: "a revoked Next is dropped",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(10*time.Minute), published(10*time.Minute)),
			},
			policy:      policy(revoked("k2")),
			now:         20 * time.Minute,
			want:        []string{line("k1", Active, "0s", "0s", "0s", "-", "-")},
			wantChanges: changes(RevokedKey, "k2"),
		},
		{
			name: "a revoked Next due for promotion is dropped and replaced by a fresh Next",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
			},
			policy:      policy(revoked("k2")),
			now:         time.Hour,
			fresh:       fresh("k3", "ES256"),
			want:        []string{line("k1", Active, "0s", "0s", "0s", "-", "-"), line("k3", Next, "1h0m0s", "-", "-", "-", "-")},
			wantChanges: changes(RevokedKey, "k2", Generated, "k3"),
		},
		{
			name: "a revoked Retired key is dropped before its RemoveAt",
			records: []Record{
				record("k0", Retired, created(-time.Hour), published(-time.Hour), activated(-45*time.Minute), retired(0), removeAt(30*time.Minute)),
				record("k1", Active, published(-15*time.Minute), activated(0)),
			},
			policy:      policy(revoked("k0")),
			now:         5 * time.Minute,
			want:        []string{line("k1", Active, "0s", "-15m0s", "0s", "-", "-")},
			wantChanges: changes(RevokedKey, "k0"),
		},
		{
			name: "a revoked Active key is replaced at once by the existing Next, even unpublished",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(50*time.Minute)),
			},
			policy:      policy(revoked("k1")),
			now:         50 * time.Minute,
			fresh:       fresh("k3", "ES256"),
			want:        []string{line("k2", Active, "50m0s", "-", "50m0s", "-", "-")},
			wantChanges: changes(RevokedKey, "k1", EmergencyActivated, "k2"),
		},
		{
			name: "a revoked Active key is replaced at once by an existing Next published only a minute ago",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(49*time.Minute), published(49*time.Minute)),
			},
			policy:      policy(revoked("k1")),
			now:         50 * time.Minute,
			want:        []string{line("k2", Active, "49m0s", "49m0s", "50m0s", "-", "-")},
			wantChanges: changes(RevokedKey, "k1", EmergencyActivated, "k2"),
		},
		{
			name: "a revoked Active key replaced by a Next published publishAhead ago is an ordinary activation",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(40*time.Minute), published(40*time.Minute)),
			},
			policy:      policy(revoked("k1")),
			now:         55 * time.Minute,
			want:        []string{line("k2", Active, "40m0s", "40m0s", "55m0s", "-", "-")},
			wantChanges: changes(RevokedKey, "k1", Activated, "k2"),
		},
		{
			name: "a revoked Active key without a Next is replaced at once by the fresh key",
			records: []Record{
				record("k0", Retired, created(-time.Hour), published(-time.Hour), activated(-45*time.Minute), retired(0), removeAt(30*time.Minute)),
				record("k1", Active, published(-15*time.Minute), activated(0)),
			},
			policy: policy(revoked("k1")),
			now:    20 * time.Minute,
			fresh:  fresh("k2", "ES256"),
			want: []string{
				line("k0", Retired, "-1h0m0s", "-1h0m0s", "-45m0s", "0s", "30m0s"),
				line("k2", Active, "20m0s", "-", "20m0s", "-", "-"),
			},
			wantChanges: changes(RevokedKey, "k1", Generated, "k2", EmergencyActivated, "k2"),
		},
		{
			name: "a revoked Active key without a Next or fresh key leaves no Active and asks for a key",
			records: []Record{
				record("k0", Retired, created(-time.Hour), published(-time.Hour), activated(-45*time.Minute), retired(0), removeAt(30*time.Minute)),
				record("k1", Active, published(-15*time.Minute), activated(0)),
			},
			policy:      policy(revoked("k1")),
			now:         20 * time.Minute,
			want:        []string{line("k0", Retired, "-1h0m0s", "-1h0m0s", "-45m0s", "0s", "30m0s")},
			wantChanges: changes(RevokedKey, "k1"),
			wantNeedKey: true,
		},
		{
			name: "a revoked Active key whose Next has the wrong algorithm is replaced by the fresh key",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
			},
			policy: policy(withParams("EdDSA", 0), revoked("k1")),
			now:    50 * time.Minute,
			fresh:  fresh("k3", "EdDSA"),
			want: []string{
				line("k2", Retired, "45m0s", "45m0s", "-", "50m0s", "1h20m0s"),
				line("k3", Active, "50m0s", "-", "50m0s", "-", "-") + " alg=EdDSA/0",
			},
			wantChanges: changes(RevokedKey, "k1", Demoted, "k2", Generated, "k3", EmergencyActivated, "k3"),
		},
		{
			name: "two Active keys after a hand edit keep the later activated and demote the other",
			records: []Record{
				record("k1", Active, published(-30*time.Minute), activated(0)),
				record("k2", Active, created(time.Minute), published(time.Minute), activated(10*time.Minute)),
			},
			policy: policy(),
			now:    20 * time.Minute,
			want: []string{
				line("k1", Retired, "0s", "-30m0s", "0s", "20m0s", "50m0s"),
				line("k2", Active, "1m0s", "1m0s", "10m0s", "-", "-"),
			},
			wantChanges: changes(Demoted, "k1"),
		},
		{
			name: "two Active keys keep the later activated whatever their order",
			records: []Record{
				record("k2", Active, created(time.Minute), published(time.Minute), activated(10*time.Minute)),
				record("k1", Active, published(-30*time.Minute), activated(0)),
			},
			policy: policy(),
			now:    20 * time.Minute,
			want: []string{
				line("k1", Retired, "0s", "-30m0s", "0s", "20m0s", "50m0s"),
				line("k2", Active, "1m0s", "1m0s", "10m0s", "-", "-"),
			},
			wantChanges: changes(Demoted, "k1"),
		},
		{
			name: "three Active keys leave exactly one and retire, never drop, the others",
			records: []Record{
				record("ka", Active, published(0), activated(5*time.Minute)),
				record("kb", Active, published(0), activated(15*time.Minute)),
				record("kc", Active, published(0), activated(10*time.Minute)),
			},
			policy: policy(),
			now:    20 * time.Minute,
			want: []string{
				line("ka", Retired, "0s", "0s", "5m0s", "20m0s", "50m0s"),
				line("kb", Active, "0s", "0s", "15m0s", "-", "-"),
				line("kc", Retired, "0s", "0s", "10m0s", "20m0s", "50m0s"),
			},
			wantChanges: changes(Demoted, "ka", Demoted, "kc"),
		},
		{
			name: "two Next keys keep the newer and demote the other",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
				record("k3", Next, created(46*time.Minute), published(46*time.Minute)),
			},
			policy: policy(),
			now:    50 * time.Minute,
			want: []string{
				line("k1", Active, "0s", "0s", "0s", "-", "-"),
				line("k2", Retired, "45m0s", "45m0s", "-", "50m0s", "1h20m0s"),
				line("k3", Next, "46m0s", "46m0s", "-", "-", "-"),
			},
			wantChanges: changes(Demoted, "k2"),
		},
		{
			name: "a Next of the wrong algorithm after a spec change is demoted and replaced",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
			},
			policy: policy(withParams("EdDSA", 0)),
			now:    50 * time.Minute,
			fresh:  fresh("k3", "EdDSA"),
			want: []string{
				line("k1", Active, "0s", "0s", "0s", "-", "-"),
				line("k2", Retired, "45m0s", "45m0s", "-", "50m0s", "1h20m0s"),
				line("k3", Next, "50m0s", "-", "-", "-", "-") + " alg=EdDSA/0",
			},
			wantChanges: changes(Demoted, "k2", Generated, "k3"),
		},
		{
			name: "a Next of the wrong RSA size after a spec change is demoted and replaced",
			records: []Record{
				record("k1", Active, published(0), activated(0), alg("RS256", 2048)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute), alg("RS256", 2048)),
			},
			policy: policy(withParams("RS256", 3072)),
			now:    50 * time.Minute,
			fresh:  fresh("k3", "RS256"),
			want: []string{
				line("k1", Active, "0s", "0s", "0s", "-", "-") + " alg=RS256/2048",
				line("k2", Retired, "45m0s", "45m0s", "-", "50m0s", "1h20m0s") + " alg=RS256/2048",
				line("k3", Next, "50m0s", "-", "-", "-", "-") + " alg=RS256/3072",
			},
			wantChanges: changes(Demoted, "k2", Generated, "k3"),
		},
		{
			name: "a Next without a recorded size matches any size of its algorithm",
			records: []Record{
				record("k1", Active, published(0), activated(0), alg("RS256", 2048)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute), alg("RS256", 0)),
			},
			policy: policy(withParams("RS256", 3072)),
			now:    50 * time.Minute,
			fresh:  fresh("k3", "RS256"),
			want: []string{
				line("k1", Active, "0s", "0s", "0s", "-", "-") + " alg=RS256/2048",
				line("k2", Next, "45m0s", "45m0s", "-", "-", "-") + " alg=RS256/0",
			},
		},
		{
			name:        "an Active key of the wrong algorithm gets a successor at once",
			records:     []Record{record("k1", Active, published(0), activated(0))},
			policy:      policy(withParams("EdDSA", 0)),
			now:         10 * time.Minute,
			fresh:       fresh("k2", "EdDSA"),
			want:        []string{line("k1", Active, "0s", "0s", "0s", "-", "-"), line("k2", Next, "10m0s", "-", "-", "-", "-") + " alg=EdDSA/0"},
			wantChanges: changes(Generated, "k2"),
		},
		{
			name: "an Active key of the wrong algorithm is replaced only after its successor was published publishAhead",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(10*time.Minute), published(10*time.Minute), alg("EdDSA", 0)),
			},
			policy: policy(withParams("EdDSA", 0)),
			now:    25 * time.Minute,
			want: []string{
				line("k1", Retired, "0s", "0s", "0s", "25m0s", "55m0s"),
				line("k2", Active, "10m0s", "10m0s", "25m0s", "-", "-") + " alg=EdDSA/0",
			},
			wantChanges: changes(RetiredKey, "k1", Activated, "k2"),
		},
		{
			name: "records come out oldest first whatever the input order",
			records: []Record{
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
				record("k1", Active, published(0), activated(0)),
				record("k0", Retired, created(-time.Hour), retired(0), removeAt(30*time.Minute)),
			},
			policy: policy(),
			now:    20 * time.Minute,
			want: []string{
				line("k0", Retired, "-1h0m0s", "-", "-", "0s", "30m0s"),
				line("k1", Active, "0s", "0s", "0s", "-", "-"),
				line("k2", Next, "45m0s", "45m0s", "-", "-", "-"),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := describe(tc.records)
			now := at(tc.now)
			step := Advance(tc.records, tc.policy, now, tc.fresh)

			if got := describe(step.Records); !reflect.DeepEqual(got, nonNil(tc.want)) {
				t.Errorf("records:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
			if !reflect.DeepEqual(step.Changes, tc.wantChanges) {
				t.Errorf("changes = %v, want %v", step.Changes, tc.wantChanges)
			}
			if step.NeedKey != tc.wantNeedKey {
				t.Errorf("NeedKey = %v, want %v", step.NeedKey, tc.wantNeedKey)
			}
			if after := describe(tc.records); !reflect.DeepEqual(after, before) {
				t.Errorf("Advance modified its input:\n was %v\n now %v", before, after)
			}
			checkStepInvariants(t, tc.records, tc.policy, now, step)

			// Idempotent: Advance on its own output at the same instant changes nothing.
			again := Advance(step.Records, tc.policy, now, nil)
			if got, want := describe(again.Records), describe(step.Records); !reflect.DeepEqual(got, want) {
				t.Errorf("a second Advance changed the records:\n got %v\nwant %v", got, want)
			}
			if len(again.Changes) != 0 {
				t.Errorf("a second Advance reported changes %v", again.Changes)
			}
			if again.NeedKey != step.NeedKey {
				t.Errorf("a second Advance has NeedKey %v, first had %v", again.NeedKey, step.NeedKey)
			}
		})
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// checkStepInvariants checks the design's invariants across one Advance.
func checkStepInvariants(t *testing.T, in []Record, p Policy, now time.Time, step Step) {
	t.Helper()
	out := map[string]Record{}
	actives := 0
	for _, r := range step.Records {
		if _, dup := out[r.KID]; dup {
			t.Errorf("kid %s appears twice in the output", r.KID)
		}
		out[r.KID] = r
		if r.State == Active {
			actives++
		}
	}
	if actives > 1 {
		t.Errorf("%d Active keys in the output", actives)
	}
	emergency := map[string]bool{}
	for _, c := range step.Changes {
		if c.Kind == EmergencyActivated {
			emergency[c.KID] = true
		}
	}
	was := map[string]Record{}
	for _, r := range in {
		was[r.KID] = r
		// Invariant 2: a key is dropped only when revoked or past its RemoveAt.
		if _, kept := out[r.KID]; !kept && !p.Revoked[r.KID] && (r.State != Retired || r.RemoveAt == nil || now.Before(*r.RemoveAt)) {
			t.Errorf("key %s (%s) was dropped though it may still verify tokens", r.KID, r.State)
		}
	}
	for _, r := range step.Records {
		if p.Revoked[r.KID] {
			t.Errorf("revoked key %s is still present", r.KID)
		}
		// Invariant 1: a newly Active key was published for PublishAhead, unless in an emergency.
		if r.State == Active && was[r.KID].State != Active && !emergency[r.KID] {
			if r.PublishedAt == nil || now.Before(r.PublishedAt.Add(p.PublishAhead)) {
				t.Errorf("key %s became Active without being published for publishAhead", r.KID)
			}
		}
		if r.State == Retired && was[r.KID].State != Retired {
			if r.RemoveAt == nil || r.RemoveAt.Before(now.Add(p.RetainFor)) {
				t.Errorf("key %s retired with RemoveAt %v, want now+retainFor", r.KID, r.RemoveAt)
			}
		}
	}
}

func TestAdvanceEmergencyActivationNeedsAFreshKeyCall(t *testing.T) {
	// The controller's pattern: Advance without a key, generate when asked, Advance again
	// with the same input. The second call must do the whole emergency rotation.
	records := []Record{record("k1", Active, published(-15*time.Minute), activated(0))}
	p := policy(revoked("k1"))
	first := Advance(records, p, at(20*time.Minute), nil)
	if !first.NeedKey || find(first.Records, Active) >= 0 {
		t.Fatalf("first step: NeedKey=%v records=%v, want a key asked for and no Active", first.NeedKey, describe(first.Records))
	}
	second := Advance(records, p, at(20*time.Minute), fresh("k2", "ES256"))
	if second.NeedKey {
		t.Error("NeedKey set although a fresh key was given")
	}
	if got, want := describe(second.Records), []string{line("k2", Active, "20m0s", "-", "20m0s", "-", "-")}; !reflect.DeepEqual(got, want) {
		t.Errorf("records = %v, want %v", got, want)
	}
}

func TestMarkPublished(t *testing.T) {
	tests := []struct {
		name        string
		records     []Record
		now         time.Duration
		want        []string
		wantChanged bool
	}{
		{
			name:    "no records is no change",
			records: nil,
			now:     time.Minute,
			want:    []string{},
		},
		{
			name:        "a key not yet published is marked now",
			records:     []Record{record("k1", Next)},
			now:         time.Minute,
			want:        []string{line("k1", Next, "0s", "1m0s", "-", "-", "-")},
			wantChanged: true,
		},
		{
			name: "only the missing times are set; earlier times are never moved",
			records: []Record{
				record("k1", Active, published(-20*time.Minute), activated(-5*time.Minute)),
				record("k2", Next, created(10*time.Minute)),
				record("k0", Retired, created(-time.Hour), retired(0), removeAt(30*time.Minute)),
			},
			now: 11 * time.Minute,
			want: []string{
				line("k1", Active, "0s", "-20m0s", "-5m0s", "-", "-"),
				line("k2", Next, "10m0s", "11m0s", "-", "-", "-"),
				line("k0", Retired, "-1h0m0s", "11m0s", "-", "0s", "30m0s"),
			},
			wantChanged: true,
		},
		{
			name: "keys all published already is no change",
			records: []Record{
				record("k1", Active, published(-20*time.Minute), activated(-5*time.Minute)),
				record("k2", Next, created(10*time.Minute), published(10*time.Minute)),
			},
			now: 11 * time.Minute,
			want: []string{
				line("k1", Active, "0s", "-20m0s", "-5m0s", "-", "-"),
				line("k2", Next, "10m0s", "10m0s", "-", "-", "-"),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := describe(tc.records)
			got, changed := MarkPublished(tc.records, at(tc.now))
			if d := describe(got); !reflect.DeepEqual(d, tc.want) {
				t.Errorf("records:\n got %v\nwant %v", d, tc.want)
			}
			if changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			if after := describe(tc.records); !reflect.DeepEqual(after, before) {
				t.Errorf("MarkPublished modified its input:\n was %v\n now %v", before, after)
			}
			again, changedAgain := MarkPublished(got, at(tc.now+time.Hour))
			if changedAgain || !reflect.DeepEqual(describe(again), describe(got)) {
				t.Errorf("marking again changed something: %v", describe(again))
			}
		})
	}
}

func TestMarkPublishedTimesAreIndependent(t *testing.T) {
	got, _ := MarkPublished([]Record{record("k1", Next), record("k2", Next)}, at(time.Minute))
	*got[0].PublishedAt = at(time.Hour)
	if !got[1].PublishedAt.Equal(at(time.Minute)) {
		t.Errorf("records share one publication time: editing one moved the other to %v", got[1].PublishedAt)
	}
}

func TestNextTransition(t *testing.T) {
	tests := []struct {
		name    string
		records []Record
		policy  Policy
		now     time.Duration
		want    time.Duration
		wantNil bool // the zero time: nothing scheduled
	}{
		{
			name:    "no keys schedules nothing (Advance asks for a key at once instead)",
			policy:  policy(),
			wantNil: true,
		},
		{
			name:    "an Active key alone: the next key is prepared publishAhead before the interval ends",
			records: []Record{record("k1", Active, published(0), activated(0))},
			policy:  policy(),
			now:     10 * time.Minute,
			want:    45 * time.Minute,
		},
		{
			name:    "an Active key without an activation time counts from its creation",
			records: []Record{record("k1", Active, created(5*time.Minute), published(5*time.Minute))},
			policy:  policy(),
			now:     10 * time.Minute,
			want:    50 * time.Minute,
		},
		{
			name: "a Next published early is promoted when the interval ends",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
			},
			policy: policy(),
			now:    50 * time.Minute,
			want:   time.Hour,
		},
		{
			name: "a Next published late is promoted publishAhead after its publication",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(55*time.Minute), published(55*time.Minute)),
			},
			policy: policy(),
			now:    56 * time.Minute,
			want:   70 * time.Minute,
		},
		{
			name: "an unpublished Next is scheduled at the end of the interval",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute)),
			},
			policy: policy(),
			now:    50 * time.Minute,
			want:   time.Hour,
		},
		{
			name:    "the first Next is promoted publishAhead after publication",
			records: []Record{record("k1", Next, published(0))},
			policy:  policy(),
			now:     time.Minute,
			want:    15 * time.Minute,
		},
		{
			name:    "an unpublished first Next schedules nothing (MarkPublished comes first)",
			records: []Record{record("k1", Next)},
			policy:  policy(),
			now:     time.Minute,
			wantNil: true,
		},
		{
			name: "a removal before the preparation time comes first",
			records: []Record{
				record("k0", Retired, created(-time.Hour), retired(0), removeAt(30*time.Minute)),
				record("k1", Active, published(-15*time.Minute), activated(0)),
			},
			policy: policy(),
			now:    10 * time.Minute,
			want:   30 * time.Minute,
		},
		{
			name: "a removal after the preparation time comes second",
			records: []Record{
				record("k0", Retired, created(-time.Hour), retired(0), removeAt(50*time.Minute)),
				record("k1", Active, published(-15*time.Minute), activated(0)),
			},
			policy: policy(),
			now:    10 * time.Minute,
			want:   45 * time.Minute,
		},
		{
			name: "the earliest of several removals counts",
			records: []Record{
				record("k0", Retired, created(-2*time.Hour), removeAt(25*time.Minute)),
				record("kx", Retired, created(-time.Hour), removeAt(20*time.Minute)),
				record("k1", Active, published(-15*time.Minute), activated(0)),
			},
			policy: policy(),
			now:    10 * time.Minute,
			want:   20 * time.Minute,
		},
		{
			name: "a removal time already past is not returned",
			records: []Record{
				record("k0", Retired, created(-time.Hour), removeAt(5*time.Minute)),
				record("k1", Active, published(-15*time.Minute), activated(0)),
			},
			policy: policy(),
			now:    10 * time.Minute,
			want:   45 * time.Minute,
		},
		{
			name:    "a removal time equal to now is not returned",
			records: []Record{record("k0", Retired, created(-time.Hour), removeAt(10*time.Minute)), record("k1", Active, published(0), activated(0))},
			policy:  policy(),
			now:     10 * time.Minute,
			want:    45 * time.Minute,
		},
		{
			name:    "a rotation requested after activation brings preparation forward",
			records: []Record{record("k1", Active, published(0), activated(0))},
			policy:  policy(rotateRequested(30 * time.Minute)),
			now:     10 * time.Minute,
			want:    15 * time.Minute,
		},
		{
			name: "a rotation requested after activation brings promotion forward, but not before publishAhead",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(20*time.Minute), published(20*time.Minute)),
			},
			policy: policy(rotateRequested(20 * time.Minute)),
			now:    20 * time.Minute,
			want:   35 * time.Minute,
		},
		{
			name:    "a rotation requested before activation is ignored",
			records: []Record{record("k1", Active, published(-20*time.Minute), activated(10*time.Minute))},
			policy:  policy(rotateRequested(5 * time.Minute)),
			now:     20 * time.Minute,
			want:    55 * time.Minute,
		},
		{
			name: "an Active key of the wrong algorithm: its successor is promoted publishAhead after publication",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(10*time.Minute), published(10*time.Minute), alg("EdDSA", 0)),
			},
			policy: policy(withParams("EdDSA", 0)),
			now:    12 * time.Minute,
			want:   25 * time.Minute,
		},
		{
			name: "a promotion due now is not returned; only a later removal is",
			records: []Record{
				record("k0", Retired, created(-time.Hour), removeAt(80*time.Minute)),
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
			},
			policy: policy(),
			now:    time.Hour,
			want:   80 * time.Minute,
		},
		{
			name: "a promotion due now with nothing else scheduled returns the zero time",
			records: []Record{
				record("k1", Active, published(0), activated(0)),
				record("k2", Next, created(45*time.Minute), published(45*time.Minute)),
			},
			policy:  policy(),
			now:     time.Hour,
			wantNil: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := NextTransition(tc.records, tc.policy, at(tc.now))
			switch {
			case tc.wantNil && !got.IsZero():
				t.Errorf("NextTransition = +%v, want the zero time", got.Sub(t0))
			case !tc.wantNil && got.IsZero():
				t.Errorf("NextTransition = zero, want +%v", tc.want)
			case !tc.wantNil && !got.Equal(at(tc.want)):
				t.Errorf("NextTransition = +%v, want +%v", got.Sub(t0), tc.want)
			}
		})
	}
}

// TestNextTransitionIsExactlyWhenAdvanceActsNext drives the machine as the controller does
// (Advance, generate when asked, MarkPublished) through many rotations and checks that once
// there is an Active key a transition is always scheduled, that Advance does nothing a
// nanosecond before it, and that it does something at it.
func TestNextTransitionIsExactlyWhenAdvanceActsNext(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy Policy
	}{
		{name: "a long interval with short publish-ahead and retention", policy: policy()},
		{name: "retention longer than the interval", policy: policy(func(p *Policy) { p.RetainFor = 150 * time.Minute })},
		{name: "publish-ahead equal to retention", policy: policy(func(p *Policy) { p.PublishAhead, p.RetainFor = 20*time.Minute, 20*time.Minute })},
		{name: "a rotation requested mid-interval", policy: policy(rotateRequested(2*time.Hour + 7*time.Minute))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.policy
			var records []Record
			now := t0
			serial := 0
			reconcile := func() []Change {
				step := Advance(records, p, now, nil)
				if step.NeedKey {
					serial++
					step = Advance(records, p, now, fresh(fmt.Sprintf("k%02d", serial), p.Params.Algorithm))
					if step.NeedKey {
						t.Fatalf("+%v: NeedKey despite a fresh key", now.Sub(t0))
					}
				}
				records, _ = MarkPublished(step.Records, now)
				return step.Changes
			}
			reconcile()
			for i := 0; i < 40; i++ {
				next := NextTransition(records, p, now)
				if next.IsZero() {
					if find(records, Active) >= 0 {
						t.Fatalf("+%v: nothing scheduled although a key is Active: %v", now.Sub(t0), describe(records))
					}
					// Before the first activation the only thing to wait for is publication.
					t.Fatalf("+%v: nothing scheduled: %v", now.Sub(t0), describe(records))
				}
				if !next.After(now) {
					t.Fatalf("+%v: next transition +%v is not in the future", now.Sub(t0), next.Sub(t0))
				}
				just := Advance(records, p, next.Add(-ns), nil)
				if len(just.Changes) != 0 || just.NeedKey {
					t.Fatalf("+%v: Advance acts a nanosecond before the scheduled +%v: %v NeedKey=%v", now.Sub(t0), next.Sub(t0), just.Changes, just.NeedKey)
				}
				if step := Advance(records, p, next, nil); len(step.Changes) == 0 && !step.NeedKey {
					t.Fatalf("+%v: nothing happens at the scheduled +%v: %v", now.Sub(t0), next.Sub(t0), describe(records))
				}
				now = next
				reconcile()
				if n := countState(records, Active); now.Sub(t0) >= p.PublishAhead && n != 1 {
					t.Fatalf("+%v: %d Active keys", now.Sub(t0), n)
				}
			}
			if serial < 5 {
				t.Errorf("only %d keys generated over %v", serial, now.Sub(t0))
			}
		})
	}
}

func countState(rs []Record, s State) int {
	n := 0
	for _, r := range rs {
		if r.State == s {
			n++
		}
	}
	return n
}
