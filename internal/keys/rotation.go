package keys

import (
	"sort"
	"time"
)

// State is where a key generation is in its life.
type State string

const (
	Next    State = "Next"    // published, not signing yet
	Active  State = "Active"  // published, the one key that signs
	Retired State = "Retired" // published, verify-only until RemoveAt
)

// Record is the timeline of one key generation. It holds no private material.
type Record struct {
	KID         string     `json:"kid"`
	Algorithm   string     `json:"alg"`
	RSABits     int        `json:"rsaBits,omitempty"`
	State       State      `json:"state"`
	CreatedAt   time.Time  `json:"createdAt"`
	PublishedAt *time.Time `json:"publishedAt,omitempty"`
	ActivatedAt *time.Time `json:"activatedAt,omitempty"`
	RetiredAt   *time.Time `json:"retiredAt,omitempty"`
	RemoveAt    *time.Time `json:"removeAt,omitempty"`
	// RotationRequest is the rotation request this key's activation satisfied, so the same
	// request never rotates its own replacement out.
	RotationRequest *time.Time `json:"rotationRequest,omitempty"`
}

// Policy is the rotation timing and what the next key must be.
type Policy struct {
	Params       Params
	Interval     time.Duration // how long a key is Active
	PublishAhead time.Duration // how long a key is published before it signs
	RetainFor    time.Duration // how long a Retired key stays published
	// RotateRequestedAt asks for the active key to be replaced at that time, unless it was
	// activated after it.
	RotateRequestedAt *time.Time
	// Revoked kids are dropped at once; a revoked Active key is replaced at once.
	Revoked map[string]bool
}

// ChangeKind names what happened to a key in one step.
type ChangeKind string

const (
	Generated ChangeKind = "Generated"
	Activated ChangeKind = "Activated"
	// EmergencyActivated is the one exception to the publish-ahead rule: the active key was
	// revoked, so its replacement signs at once.
	EmergencyActivated ChangeKind = "EmergencyActivated"
	RetiredKey         ChangeKind = "Retired"
	Removed            ChangeKind = "Removed"
	RevokedKey         ChangeKind = "Revoked"
	Demoted            ChangeKind = "Demoted" // a duplicate Active or Next found after a hand edit
)

// Change is one thing a step did, for events, logs and timelines.
type Change struct {
	Kind ChangeKind
	KID  string
}

// Step is the result of Advance.
type Step struct {
	Records []Record
	Changes []Change
	// NeedKey says a fresh key is needed now and none was given: call Advance again with one.
	NeedKey bool
}

// Advance moves the keys forward to now. It is pure: the same input gives the same output,
// and calling it again on its own output changes nothing. fresh is a newly generated key
// (Algorithm per p.Params) to use if one is needed, or nil; Step.NeedKey reports a need.
//
// It keeps the invariants of the design: a key becomes Active only after it has been
// published for PublishAhead (except when the Active key is revoked); the key that signed
// stays published for RetainFor after it retired; exactly one key is Active once one exists.
func Advance(records []Record, p Policy, now time.Time, fresh *Key) Step {
	var st Step
	rs := make([]Record, 0, len(records)+1)
	emergency := false
	for _, r := range records {
		switch {
		case p.Revoked[r.KID]:
			st.Changes = append(st.Changes, Change{RevokedKey, r.KID})
			if r.State == Active {
				emergency = true
			}
		case r.State == Retired && r.RemoveAt != nil && !now.Before(*r.RemoveAt):
			st.Changes = append(st.Changes, Change{Removed, r.KID})
		default:
			rs = append(rs, r)
		}
	}
	rs = demoteDuplicates(rs, p, now, &st)

	active, next := find(rs, Active), find(rs, Next)
	if next >= 0 && !matches(rs[next], p.Params) {
		// The spec changed after this key was prepared; it never signed, so a fresh one replaces it.
		retire(&rs[next], now, p.RetainFor)
		st.Changes = append(st.Changes, Change{Demoted, rs[next].KID})
		next = -1
	}
	due, hasDue := rotationDue(rs, active, p, now)
	if active < 0 {
		due, hasDue = now, true
	}

	// Prepare the next key once rotation is PublishAhead away (or at once when overdue).
	if next < 0 && hasDue && !now.Before(due.Add(-p.PublishAhead)) {
		if fresh == nil {
			st.NeedKey = true
		} else {
			rs = append(rs, Record{KID: fresh.KID, Algorithm: fresh.Algorithm, RSABits: p.Params.Normalized().RSABits, State: Next, CreatedAt: now})
			next = len(rs) - 1
			st.Changes = append(st.Changes, Change{Generated, fresh.KID})
		}
	}

	if next >= 0 && hasDue && !now.Before(due) {
		ready := rs[next].PublishedAt != nil && !now.Before(rs[next].PublishedAt.Add(p.PublishAhead))
		if emergency || ready {
			kind := Activated
			if emergency && !ready {
				kind = EmergencyActivated
			}
			if active >= 0 {
				retire(&rs[active], now, p.RetainFor)
				st.Changes = append(st.Changes, Change{RetiredKey, rs[active].KID})
			}
			t := now
			rs[next].State, rs[next].ActivatedAt = Active, &t
			if r := p.RotateRequestedAt; r != nil && !r.After(now) {
				req := *r
				rs[next].RotationRequest = &req
			}
			st.Changes = append(st.Changes, Change{kind, rs[next].KID})
		}
	}
	sortRecords(rs)
	st.Records = rs
	return st
}

// rotationDue is when the active key should be replaced: at the end of its interval, at a
// requested rotation time after its activation, or now when it no longer matches the policy.
func rotationDue(rs []Record, active int, p Policy, now time.Time) (time.Time, bool) {
	if active < 0 {
		return time.Time{}, false
	}
	a := rs[active]
	activated := a.CreatedAt
	if a.ActivatedAt != nil {
		activated = *a.ActivatedAt
	}
	due := activated.Add(p.Interval)
	// Requests carry whole seconds (RFC 3339 from `date`), so one made in the second the key
	// was activated counts as made after it, unless this very key's activation satisfied it.
	if r := p.RotateRequestedAt; r != nil && !r.Before(activated.Truncate(time.Second)) && r.Before(due) &&
		(a.RotationRequest == nil || !a.RotationRequest.Equal(*r)) {
		due = *r
	}
	if !matches(a, p.Params) {
		if now.Before(due) {
			due = now
		}
	}
	return due, true
}

// matches reports whether a key was made for the policy's algorithm and size.
func matches(r Record, want Params) bool {
	want = want.Normalized()
	return r.Algorithm == want.Algorithm && (want.RSABits == 0 || r.RSABits == 0 || r.RSABits == want.RSABits)
}

// demoteDuplicates repairs hand-edited state: one Active (the most recently activated) and
// one Next (the newest) survive; extras are retired, never dropped, since they may have signed.
func demoteDuplicates(rs []Record, p Policy, now time.Time, st *Step) []Record {
	for _, s := range []State{Active, Next} {
		keep := -1
		for i := range rs {
			if rs[i].State != s {
				continue
			}
			if keep < 0 || later(rs[i], rs[keep]) {
				keep = i
			}
		}
		for i := range rs {
			if rs[i].State == s && i != keep {
				retire(&rs[i], now, p.RetainFor)
				st.Changes = append(st.Changes, Change{Demoted, rs[i].KID})
			}
		}
	}
	return rs
}

func later(a, b Record) bool {
	ta, tb := a.CreatedAt, b.CreatedAt
	if a.ActivatedAt != nil {
		ta = *a.ActivatedAt
	}
	if b.ActivatedAt != nil {
		tb = *b.ActivatedAt
	}
	if ta.Equal(tb) {
		return a.KID > b.KID
	}
	return ta.After(tb)
}

func retire(r *Record, now time.Time, retainFor time.Duration) {
	t, until := now, now.Add(retainFor)
	r.State, r.RetiredAt, r.RemoveAt = Retired, &t, &until
}

func find(rs []Record, s State) int {
	for i := range rs {
		if rs[i].State == s {
			return i
		}
	}
	return -1
}

// sortRecords orders keys oldest first, so outputs are stable.
func sortRecords(rs []Record) {
	sort.SliceStable(rs, func(i, j int) bool {
		if !rs[i].CreatedAt.Equal(rs[j].CreatedAt) {
			return rs[i].CreatedAt.Before(rs[j].CreatedAt)
		}
		return rs[i].KID < rs[j].KID
	})
}

// MarkPublished records now as the publication time of every key not yet marked. Call it
// only after the JWKS holding them has been written: the recorded time is then never
// earlier than the real one, so a key can only become Active late, never early.
func MarkPublished(records []Record, now time.Time) ([]Record, bool) {
	out := append([]Record(nil), records...)
	changed := false
	for i := range out {
		if out[i].PublishedAt == nil {
			t := now
			out[i].PublishedAt = &t
			changed = true
		}
	}
	return out, changed
}

// NextTransition is the earliest future time at which Advance would change something, or
// the zero time when nothing is scheduled. Reconciles requeue exactly at it.
func NextTransition(records []Record, p Policy, now time.Time) time.Time {
	var soonest time.Time
	consider := func(t time.Time) {
		if t.After(now) && (soonest.IsZero() || t.Before(soonest)) {
			soonest = t
		}
	}
	active, next := find(records, Active), find(records, Next)
	due, hasDue := rotationDue(records, active, p, now)
	if active < 0 {
		due, hasDue = now, true
	}
	if hasDue {
		if next < 0 {
			consider(due.Add(-p.PublishAhead))
		} else {
			at := due
			if pub := records[next].PublishedAt; pub != nil && pub.Add(p.PublishAhead).After(at) {
				at = pub.Add(p.PublishAhead)
			}
			consider(at)
		}
	}
	for _, r := range records {
		if r.State == Retired && r.RemoveAt != nil {
			consider(*r.RemoveAt)
		}
	}
	return soonest
}
