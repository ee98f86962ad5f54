package controllers

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// The status rendering, case by case: what Ready, Published and KeysValid say, which keys
// are listed, and when observedGeneration moves. A failure never claims fewer keys than
// the last status listed.
func TestSigningKeyStatusRendering(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(kid string, st keys.State) keys.Record {
		return keys.Record{KID: kid, Algorithm: "ES256", State: st, CreatedAt: now}
	}
	previous := []tkv1.KeyStatus{{KID: "old", State: tkv1.KeyState(keys.Active)}}
	cases := []struct {
		name      string
		build     func(*statusBuilder)
		ok        bool
		ready     metav1.ConditionStatus
		reason    string
		published metav1.ConditionStatus
		keysValid metav1.ConditionStatus
		kids      int
		observed  int64
	}{
		{"an active key signs", func(b *statusBuilder) {
			b.ring = keys.Ring{Records: []keys.Record{rec("a", keys.Active), rec("n", keys.Next)}}
		}, true, metav1.ConditionTrue, tkv1.ReasonActive, metav1.ConditionTrue, metav1.ConditionTrue, 2, 7},
		{"only a next key, waiting for publishAhead", func(b *statusBuilder) {
			b.ring = keys.Ring{Records: []keys.Record{rec("n", keys.Next)}}
			b.next = now.Add(time.Minute)
		}, true, metav1.ConditionFalse, tkv1.ReasonWaitingForPublish, metav1.ConditionTrue, metav1.ConditionTrue, 1, 7},
		{"the first key is being generated", func(b *statusBuilder) { b.generating = true },
			true, metav1.ConditionFalse, tkv1.ReasonKeyGenerating, metav1.ConditionTrue, metav1.ConditionTrue, 0, 7},
		{"a repaired Secret", func(b *statusBuilder) {
			b.ring = keys.Ring{Records: []keys.Record{rec("a", keys.Active)}}
			b.problems = []string{"active.jwk unreadable"}
		}, true, metav1.ConditionTrue, tkv1.ReasonActive, metav1.ConditionTrue, metav1.ConditionFalse, 1, 7},
		{"inputs could not be read: keys as they were, conditions Unknown", func(b *statusBuilder) {
			b.fail(tkv1.ReasonNotGathered, "etcd is on fire")
		}, false, metav1.ConditionFalse, tkv1.ReasonNotGathered, metav1.ConditionUnknown, metav1.ConditionUnknown, 1, 3},
		{"the ConfigMap write failed: keys as they were", func(b *statusBuilder) {
			b.fail(tkv1.ReasonConfigMapFailed, "quota")
		}, false, metav1.ConditionFalse, tkv1.ReasonConfigMapFailed, metav1.ConditionUnknown, metav1.ConditionTrue, 1, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sk := &tkv1.SigningKey{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "keys", Generation: 7}}
			sk.Status.Keys = previous
			sk.Status.ObservedGeneration = 3
			b := &statusBuilder{sk: sk, now: now}
			c.build(b)
			out := b.finish(c.ok)
			for typ, want := range map[string]metav1.ConditionStatus{
				tkv1.ConditionReady: c.ready, tkv1.ConditionPublished: c.published, tkv1.ConditionKeysValid: c.keysValid,
			} {
				got := meta.FindStatusCondition(out.Status.Conditions, typ)
				if got == nil || got.Status != want {
					t.Errorf("%s: %+v, want %s", typ, got, want)
				}
			}
			if r := meta.FindStatusCondition(out.Status.Conditions, tkv1.ConditionReady); r == nil || r.Reason != c.reason {
				t.Errorf("Ready reason: %+v, want %s", r, c.reason)
			}
			if len(out.Status.Keys) != c.kids {
				t.Errorf("status lists %d keys, want %d", len(out.Status.Keys), c.kids)
			}
			if out.Status.ObservedGeneration != c.observed {
				t.Errorf("observedGeneration %d, want %d", out.Status.ObservedGeneration, c.observed)
			}
		})
	}
}
