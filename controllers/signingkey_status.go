package controllers

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// statusBuilder gathers what a reconcile learnt and renders the status once, at the end.
type statusBuilder struct {
	sk         *tkv1.SigningKey
	now        time.Time
	ring       keys.Ring
	next       time.Time
	problems   []string
	generating bool
	skip       bool // nothing was decided: leave the status as it is
	failed     bool
	failReason string
	failMsg    string
}

func (b *statusBuilder) fail(reason, msg string) {
	b.failed, b.failReason, b.failMsg = true, reason, msg
}

// finish sets every condition, every time. On failure the last known keys stay in status and
// the conditions say what could not be done; observedGeneration moves only on success.
func (b *statusBuilder) finish(ok bool) *tkv1.SigningKey {
	sk := b.sk
	s := &sk.Status
	gen := sk.Generation
	set := func(t string, status metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	s.SecretName, s.JWKSConfigMapName = sk.SecretName(), sk.JWKSConfigMapName()

	if len(b.problems) > 0 {
		set(tkv1.ConditionKeysValid, metav1.ConditionFalse, tkv1.ReasonSecretRepaired, "Repaired the Secret: "+joinProblems(b.problems))
	} else {
		// Every failure but NotGathered (set Unknown below) comes after the Secret was read.
		set(tkv1.ConditionKeysValid, metav1.ConditionTrue, tkv1.ReasonSecretValid, "Every key in the Secret is readable")
	}

	if b.failed || !ok {
		set(tkv1.ConditionReady, metav1.ConditionFalse, b.failReason, b.failMsg)
		if b.failReason == tkv1.ReasonNotGathered {
			set(tkv1.ConditionKeysValid, metav1.ConditionUnknown, tkv1.ReasonNotGathered, b.failMsg)
			set(tkv1.ConditionPublished, metav1.ConditionUnknown, tkv1.ReasonNotGathered, b.failMsg)
		} else {
			set(tkv1.ConditionPublished, metav1.ConditionUnknown, b.failReason, "Publication was not reached: "+b.failMsg)
		}
		return sk
	}

	s.Keys = statusKeys(b.ring.Records)
	s.ActiveKID, s.NextKID = "", ""
	for _, r := range b.ring.Records {
		switch r.State {
		case keys.Active:
			s.ActiveKID = r.KID
		case keys.Next:
			s.NextKID = r.KID
		}
	}
	s.NextTransitionTime = nil
	if !b.next.IsZero() {
		s.NextTransitionTime = metaTime(&b.next)
	}
	set(tkv1.ConditionPublished, metav1.ConditionTrue, tkv1.ReasonPublished,
		fmt.Sprintf("%d public keys are in ConfigMap %s", len(b.ring.Records), sk.JWKSConfigMapName()))

	switch {
	case s.ActiveKID != "":
		set(tkv1.ConditionReady, metav1.ConditionTrue, tkv1.ReasonActive, fmt.Sprintf("Key %s signs", s.ActiveKID))
	case b.generating:
		set(tkv1.ConditionReady, metav1.ConditionFalse, tkv1.ReasonKeyGenerating, "Generating the first key")
	case s.NextKID != "":
		msg := fmt.Sprintf("Key %s is published and waits publishAhead before it signs", s.NextKID)
		if s.NextTransitionTime != nil {
			msg += " (at " + s.NextTransitionTime.UTC().Format(time.RFC3339) + ")"
		}
		set(tkv1.ConditionReady, metav1.ConditionFalse, tkv1.ReasonWaitingForPublish, msg)
	default:
		set(tkv1.ConditionReady, metav1.ConditionFalse, tkv1.ReasonPending, "No key yet")
	}
	s.ObservedGeneration = gen
	return sk
}

func statusKeys(rs []keys.Record) []tkv1.KeyStatus {
	out := make([]tkv1.KeyStatus, 0, len(rs))
	for _, r := range rs {
		out = append(out, tkv1.KeyStatus{
			KID:         r.KID,
			Algorithm:   tkv1.Algorithm(r.Algorithm),
			State:       tkv1.KeyState(r.State),
			CreatedAt:   metav1.NewTime(r.CreatedAt.Truncate(time.Second)),
			PublishedAt: metaTime(r.PublishedAt),
			ActivatedAt: metaTime(r.ActivatedAt),
			RetiredAt:   metaTime(r.RetiredAt),
			RemoveAt:    metaTime(r.RemoveAt),
		})
	}
	return out
}

// recordsFromStatus is the fallback timeline when the Secret's own is unreadable.
func recordsFromStatus(ks []tkv1.KeyStatus) []keys.Record {
	out := make([]keys.Record, 0, len(ks))
	for _, k := range ks {
		out = append(out, keys.Record{
			KID:         k.KID,
			Algorithm:   string(k.Algorithm),
			State:       keys.State(k.State),
			CreatedAt:   k.CreatedAt.Time,
			PublishedAt: goTime(k.PublishedAt),
			ActivatedAt: goTime(k.ActivatedAt),
			RetiredAt:   goTime(k.RetiredAt),
			RemoveAt:    goTime(k.RemoveAt),
		})
	}
	return out
}

func metaTime(t *time.Time) *metav1.Time {
	if t == nil {
		return nil
	}
	// The API stores seconds; truncating here keeps unchanged statuses equal, so no write.
	m := metav1.NewTime(t.Truncate(time.Second))
	return &m
}

func goTime(t *metav1.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := t.Time
	return &v
}

func joinProblems(ps []string) string { return strings.Join(ps, "; ") }

func equalStatus(a, b tkv1.SigningKeyStatus) bool { return equality.Semantic.DeepEqual(a, b) }
