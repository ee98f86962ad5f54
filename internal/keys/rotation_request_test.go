package keys

import (
	"testing"
	"time"
)

// A request written with whole seconds in the same second the active key was activated
// (kubectl annotate … $(date -u +%FT%TZ) right after a rotation) still rotates, and the
// replacement is not rotated out again by the same request.
func TestRotationRequestInTheSecondOfActivationRotatesOnce(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 1, 400_000_000, time.UTC) // k1 activated at :01.4
	pub := t0.Add(-time.Hour)
	p := Policy{Params: Params{Algorithm: "ES256"}, Interval: time.Hour, PublishAhead: 2 * time.Second, RetainFor: time.Hour}
	req := time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC) // made at :01.9, written as :01
	p.RotateRequestedAt = &req
	rs := []Record{{KID: "k1", Algorithm: "ES256", State: Active, CreatedAt: pub, PublishedAt: &pub, ActivatedAt: &t0}}

	now := t0.Add(500 * time.Millisecond)
	k2 := &Key{KID: "k2", Algorithm: "ES256"}
	st := Advance(rs, p, now, k2)
	if len(st.Changes) != 1 || st.Changes[0] != (Change{Generated, "k2"}) {
		t.Fatalf("changes %v, want k2 generated for the request", st.Changes)
	}
	rs, _ = MarkPublished(st.Records, now)

	now = now.Add(2 * time.Second)
	st = Advance(rs, p, now, nil)
	if find(st.Records, Active) < 0 || st.Records[find(st.Records, Active)].KID != "k2" {
		t.Fatalf("k2 not active after publishAhead: %+v", st.Records)
	}
	again := Advance(st.Records, p, now.Add(time.Second), nil)
	if again.NeedKey || len(again.Changes) != 0 {
		t.Errorf("the satisfied request rotated again: need=%v changes=%v", again.NeedKey, again.Changes)
	}
	if next := NextTransition(st.Records, p, now); !next.Equal(now.Add(time.Hour - 2*time.Second)) {
		t.Errorf("next transition %v, want the next scheduled key preparation", next)
	}
}
