package controllers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/controllers"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
	"github.com/tokenkeeper/tokenkeeper/internal/operator"
)

func TestEveryAlgorithmBecomesReadyAndPublishesOnlyPublicKeys(t *testing.T) {
	ns := newNamespace(t)
	m := startManager(t, operator.Options{})
	cases := []struct {
		alg  tkv1.Algorithm
		bits int32
		key  func(any) bool
	}{
		{tkv1.RS256, 0, isRSA(2048)}, {tkv1.RS384, 3072, isRSA(3072)}, {tkv1.RS512, 4096, isRSA(4096)},
		{tkv1.PS256, 2048, isRSA(2048)}, {tkv1.PS384, 0, isRSA(2048)}, {tkv1.PS512, 4096, isRSA(4096)},
		{tkv1.ES256, 0, isEC(256)}, {tkv1.ES384, 0, isEC(384)}, {tkv1.ES512, 0, isEC(521)},
		{tkv1.EdDSA, 0, func(k any) bool { _, ok := k.(ed25519.PublicKey); return ok }},
	}
	for _, c := range cases {
		create(t, newSigningKey(ns, strings.ToLower(string(c.alg)), withAlgorithm(c.alg, c.bits)))
	}
	for _, c := range cases {
		t.Run(string(c.alg), func(t *testing.T) {
			name := strings.ToLower(string(c.alg))
			sk := waitReady(t, ns, name, 60*time.Second)
			s, err := getSecret(ns, name)
			if err != nil {
				t.Fatal(err)
			}
			if s.Type != controllers.SecretType {
				t.Errorf("Secret type %q, want %q", s.Type, controllers.SecretType)
			}
			if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != sk.UID {
				t.Errorf("Secret owner references %+v, want the SigningKey", s.OwnerReferences)
			}
			if got := string(s.Data[keys.FileActiveKID]); got != sk.Status.ActiveKID {
				t.Errorf("active.kid %q, status says %q", got, sk.Status.ActiveKID)
			}
			if _, ok := s.Data[keys.KeyFile(sk.Status.ActiveKID)]; !ok {
				t.Errorf("no %s entry", keys.KeyFile(sk.Status.ActiveKID))
			}
			cm, set, err := getJWKS(ns, name)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range cm.Data {
				if strings.Contains(v, `"d"`) || strings.Contains(v, "PRIVATE") {
					t.Errorf("ConfigMap entry %s holds private material", k)
				}
			}
			if len(set.Keys) != 1 {
				t.Fatalf("JWKS has %d keys, want 1", len(set.Keys))
			}
			pub := set.Keys[0]
			if pub.KeyID != sk.Status.ActiveKID || pub.Algorithm != string(c.alg) || pub.Use != "sig" {
				t.Errorf("JWKS key kid=%s alg=%s use=%s; want kid=%s alg=%s use=sig", pub.KeyID, pub.Algorithm, pub.Use, sk.Status.ActiveKID, c.alg)
			}
			if !c.key(pub.Key) {
				t.Errorf("published key is a %T of the wrong size", pub.Key)
			}
			// A token signed with the mounted active key verifies with the published key.
			tok := signWithSecret(t, s, jwt.Claims{Subject: "alice", Expiry: jwt.NewNumericDate(time.Now().Add(time.Minute))})
			parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(c.alg)})
			if err != nil {
				t.Fatal(err)
			}
			var claims jwt.Claims
			if err := parsed.Claims(pub.Key, &claims); err != nil || claims.Subject != "alice" {
				t.Errorf("token does not verify with the published key: %v", err)
			}
			if sk.Status.ObservedGeneration != sk.Generation {
				t.Errorf("observedGeneration %d, generation %d", sk.Status.ObservedGeneration, sk.Generation)
			}
		})
	}
	if v := gaugeValue(t, m, "tokenkeeper_signingkey_keys", map[string]string{"namespace": ns, "name": "es256", "state": "Active"}); v != 1 {
		t.Errorf("tokenkeeper_signingkey_keys{state=Active} = %v, want 1", v)
	}
}

func isRSA(bits int) func(any) bool {
	return func(k any) bool { r, ok := k.(*rsa.PublicKey); return ok && r.N.BitLen() == bits }
}

func isEC(bits int) func(any) bool {
	return func(k any) bool { e, ok := k.(*ecdsa.PublicKey); return ok && e.Curve.Params().BitSize == bits }
}

func gaugeValue(t *testing.T, m *runningManager, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, metric := range mf.GetMetric() {
			if labelsMatch(metric.GetLabel(), labels) {
				return metric.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func labelsMatch(have []*dto.LabelPair, want map[string]string) bool {
	n := 0
	for _, l := range have {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// observer polls the Secret and ConfigMap and records when each kid was first seen
// published, first seen active, and last seen published.
type observer struct {
	firstPublished, firstActive, lastPublished, lastActive map[string]time.Time
	// violations of invariant 3 seen: a kid in the JWKS that the Secret does not hold.
	unsafe []string
	// noActive counts reads of the Secret without an active key after there was one.
	noActive int
	cancel   context.CancelFunc
	done     chan struct{}
}

// stop ends the polling and waits for it, so the maps can be read without a race.
func (o *observer) stop() {
	o.cancel()
	<-o.done
}

func observe(t *testing.T, ns, name string) *observer {
	ctx, cancel := context.WithCancel(context.Background())
	o := &observer{firstPublished: map[string]time.Time{}, firstActive: map[string]time.Time{}, lastPublished: map[string]time.Time{}, lastActive: map[string]time.Time{}}
	done := make(chan struct{})
	o.cancel, o.done = cancel, done
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			// Read the ConfigMap first: a kid published now must already be in the Secret.
			_, set, errCM := getJWKS(ns, name)
			s, errS := getSecret(ns, name)
			now := time.Now()
			if errCM == nil && errS == nil {
				held := map[string]bool{}
				ring, _ := keys.LoadRing(s.Data, keys.Repair{Now: now})
				for _, r := range ring.Records {
					held[r.KID] = true
				}
				for _, k := range set.Keys {
					if _, ok := o.firstPublished[k.KeyID]; !ok {
						o.firstPublished[k.KeyID] = now
					}
					o.lastPublished[k.KeyID] = now
					if !held[k.KeyID] {
						o.unsafe = append(o.unsafe, k.KeyID)
					}
				}
				if kid := string(s.Data[keys.FileActiveKID]); kid != "" {
					if _, ok := o.firstActive[kid]; !ok {
						o.firstActive[kid] = now
					}
					o.lastActive[kid] = now
				} else if len(o.firstActive) > 0 {
					// Invariant 4 as an issuer sees it: once there is an active key, the
					// Secret always names one.
					o.noActive++
				}
			}
			time.Sleep(25 * time.Millisecond)
		}
	}()
	t.Cleanup(o.stop)
	return o
}

func TestRotationPublishesAheadRetiresAndRemoves(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, operator.Options{})
	const interval, ahead, retain = 10 * time.Second, 3 * time.Second, 4 * time.Second
	obs := observe(t, ns, "rot")
	create(t, newSigningKey(ns, "rot", withRotation(interval, ahead, retain)))

	first := waitReady(t, ns, "rot", 20*time.Second).Status.ActiveKID
	var second string
	eventually(t, interval+ahead+10*time.Second, "a rotation", func() error {
		sk := getSK(t, ns, "rot")
		if sk.Status.ActiveKID == first || sk.Status.ActiveKID == "" {
			return fmt.Errorf("active still %s", sk.Status.ActiveKID)
		}
		second = sk.Status.ActiveKID
		return nil
	})
	eventually(t, retain+5*time.Second, "the retired key's removal", func() error {
		_, set, err := getJWKS(ns, "rot")
		if err != nil {
			return err
		}
		for _, k := range kidsOf(set) {
			if k == first {
				return fmt.Errorf("%s still published", first)
			}
		}
		return nil
	})
	obs.stop()

	const jitter = 250 * time.Millisecond // polling and API latency
	for _, kid := range []string{first, second} {
		pub, act := obs.firstPublished[kid], obs.firstActive[kid]
		if pub.IsZero() || act.IsZero() {
			t.Fatalf("%s: never observed published (%v) or active (%v)", kid, pub, act)
		}
		if act.Sub(pub) < ahead-jitter {
			t.Errorf("invariant 1: %s signed %v after it was published, want >= %v", kid, act.Sub(pub), ahead)
		}
	}
	// Invariant 2: the first key stayed published for retainFor after it stopped signing.
	if kept := obs.lastPublished[first].Sub(obs.lastActive[first]); kept < retain-jitter {
		t.Errorf("invariant 2: %s published %v after it last signed, want >= %v", first, kept, retain)
	}
	if len(obs.unsafe) > 0 {
		t.Errorf("invariant 3: kids published before the Secret held them: %v", obs.unsafe)
	}
	if obs.noActive > 0 {
		t.Errorf("invariant 4: the Secret named no active key in %d reads after it had one", obs.noActive)
	}
	// The Secret's own timeline agrees, to the nanosecond.
	s, err := getSecret(ns, "rot")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range secretRecords(t, s) {
		if r.ActivatedAt != nil && r.ActivatedAt.Sub(*r.PublishedAt) < ahead {
			t.Errorf("%s activated %v after publication, want >= %v", r.KID, r.ActivatedAt.Sub(*r.PublishedAt), ahead)
		}
	}
	sk := getSK(t, ns, "rot")
	if n := countActive(sk); n != 1 {
		t.Errorf("invariant 4: %d active keys in status", n)
	}
	if sk.Status.NextTransitionTime == nil || !sk.Status.NextTransitionTime.After(time.Now().Add(-time.Second)) {
		t.Errorf("nextTransitionTime %v is not in the future", sk.Status.NextTransitionTime)
	}
	reasons := eventReasons(t, ns, "rot")
	for _, r := range []string{tkv1.ReasonKeyGenerated, tkv1.ReasonRotated, tkv1.ReasonKeyRemoved} {
		if reasons[r] == "" {
			t.Errorf("no %s event; events: %v", r, reasons)
		}
	}
}

func countActive(sk *tkv1.SigningKey) int {
	n := 0
	for _, k := range sk.Status.Keys {
		if k.State == tkv1.KeyActive {
			n++
		}
	}
	return n
}

func TestManagerRestartInTheMiddleOfARotationRegeneratesNothing(t *testing.T) {
	ns := newNamespace(t)
	const interval, ahead, retain = 10 * time.Second, 5 * time.Second, 6 * time.Second
	obs := observe(t, ns, "restart")
	first := startManager(t, operator.Options{})
	create(t, newSigningKey(ns, "restart", withRotation(interval, ahead, retain)))
	oldActive := waitReady(t, ns, "restart", 20*time.Second).Status.ActiveKID

	// Wait until the next key is published but not yet active, then crash the manager.
	var next string
	eventually(t, interval+5*time.Second, "a Next key", func() error {
		next = getSK(t, ns, "restart").Status.NextKID
		if next == "" {
			return fmt.Errorf("no next key yet")
		}
		return nil
	})
	first.stop()
	before, err := getSecret(ns, "restart")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)

	startManager(t, operator.Options{})
	eventually(t, ahead+10*time.Second, next+" active", func() error {
		if kid := getSK(t, ns, "restart").Status.ActiveKID; kid != next {
			return fmt.Errorf("active is %s", kid)
		}
		return nil
	})
	after, err := getSecret(ns, "restart")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing regenerated: the keys from before the crash are byte-for-byte the same.
	for _, kid := range []string{oldActive, next} {
		if string(before.Data[keys.KeyFile(kid)]) != string(after.Data[keys.KeyFile(kid)]) {
			t.Errorf("key %s changed across the restart", kid)
		}
	}
	if n := len(secretRecords(t, after)); n != 2 {
		t.Errorf("%d keys after the restart, want 2 (old retired, next active)", n)
	}
	// Nothing published late: the next key signed only after publishAhead in the JWKS.
	obs.stop()
	if d := obs.firstActive[next].Sub(obs.firstPublished[next]); d < ahead-250*time.Millisecond {
		t.Errorf("%s signed %v after publication, want >= %v", next, d, ahead)
	}
	for _, r := range secretRecords(t, after) {
		if r.KID == oldActive && r.State != keys.Retired {
			t.Errorf("old active key is %s, want Retired", r.State)
		}
	}
	if len(obs.unsafe) > 0 {
		t.Errorf("invariant 3: kids published before the Secret held them: %v", obs.unsafe)
	}
}

func TestRotationRequestedByAnnotationWaitsPublishAhead(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, operator.Options{})
	create(t, newSigningKey(ns, "manual", withRotation(time.Hour, 2*time.Second, time.Hour)))
	old := waitReady(t, ns, "manual", 20*time.Second).Status.ActiveKID

	sk := getSK(t, ns, "manual")
	sk.Annotations = map[string]string{tkv1.AnnotationRotateRequestedAt: time.Now().UTC().Format(time.RFC3339)}
	if err := k8sClient.Update(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "a new active key", func() error {
		if kid := getSK(t, ns, "manual").Status.ActiveKID; kid == old {
			return fmt.Errorf("still %s", kid)
		}
		return nil
	})
	s, _ := getSecret(ns, "manual")
	act := activeRecord(secretRecords(t, s))
	if act.ActivatedAt.Sub(*act.PublishedAt) < 2*time.Second {
		t.Errorf("manual rotation skipped publishAhead: %v", act.ActivatedAt.Sub(*act.PublishedAt))
	}
	_, set, _ := getJWKS(ns, "manual")
	if !contains(kidsOf(set), old) {
		t.Errorf("the old key %s must stay published (retired), JWKS has %v", old, kidsOf(set))
	}

	// A malformed request is reported and ignored.
	sk = getSK(t, ns, "manual")
	sk.Annotations[tkv1.AnnotationRotateRequestedAt] = "yesterday"
	if err := k8sClient.Update(context.Background(), sk); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "an InvalidRotationRequest event", func() error {
		if eventReasons(t, ns, "manual")[tkv1.ReasonInvalidRotationTime] == "" {
			return fmt.Errorf("no event yet")
		}
		return nil
	})
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestHandDamagedSecretIsReportedAndRepairedWithoutLosingKeys(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, operator.Options{})
	create(t, newSigningKey(ns, "damaged", withRotation(time.Hour, time.Second, time.Hour)))
	active := waitReady(t, ns, "damaged", 20*time.Second).Status.ActiveKID

	// Someone deletes the timeline and adds junk.
	s, _ := getSecret(ns, "damaged")
	delete(s.Data, keys.FileState)
	s.Data["key-bogus.pem"] = []byte("not a key")
	if err := k8sClient.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the Secret repaired", func() error {
		s, err := getSecret(ns, "damaged")
		if err != nil {
			return err
		}
		if _, ok := s.Data[keys.FileState]; !ok {
			return fmt.Errorf("keys.json not restored")
		}
		return nil
	})
	reasons := eventReasons(t, ns, "damaged")
	if !strings.Contains(reasons[tkv1.ReasonSecretRepaired], "keys.json is missing") {
		t.Errorf("no SecretRepaired event naming keys.json; events: %v", reasons)
	}
	if kid := getSK(t, ns, "damaged").Status.ActiveKID; kid != active {
		t.Errorf("active key changed from %s to %s: a key was regenerated", active, kid)
	}

	// Now the active private key itself is destroyed: it stays published (verify-only) and a
	// replacement is published ahead before it signs.
	s, _ = getSecret(ns, "damaged")
	s.Data[keys.KeyFile(active)] = []byte("garbage")
	delete(s.Data, keys.FileActivePEM)
	if err := k8sClient.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "a replacement key active", func() error {
		sk := getSK(t, ns, "damaged")
		if sk.Status.ActiveKID == "" || sk.Status.ActiveKID == active {
			return fmt.Errorf("active is %q", sk.Status.ActiveKID)
		}
		return nil
	})
	_, set, err := getJWKS(ns, "damaged")
	if err != nil {
		t.Fatal(err)
	}
	if !contains(kidsOf(set), active) {
		t.Errorf("the damaged key %s was unpublished; tokens it signed would be rejected", active)
	}
	if !strings.Contains(eventReasons(t, ns, "damaged")[tkv1.ReasonSecretRepaired], "kept for verification only") {
		t.Errorf("no event saying the damaged key was kept for verification")
	}
}

func TestRevokedActiveKeyIsReplacedAtOnceAndUnpublished(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, operator.Options{})
	create(t, newSigningKey(ns, "leaked", withRotation(time.Hour, 30*time.Second, time.Hour)))
	// First key waits 30s publishAhead; the test waits for it.
	leaked := waitReady(t, ns, "leaked", 45*time.Second).Status.ActiveKID

	create(t, &tkv1.RevocationList{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "incident"},
		Spec:       tkv1.RevocationListSpec{Keys: []tkv1.RevokedKey{{KID: leaked, Reason: "leaked in a log"}}},
	})
	// Far sooner than publishAhead (30s): an emergency rotation is immediate.
	eventually(t, 10*time.Second, "a replacement key", func() error {
		sk := getSK(t, ns, "leaked")
		if sk.Status.ActiveKID == "" || sk.Status.ActiveKID == leaked {
			return fmt.Errorf("active is %q", sk.Status.ActiveKID)
		}
		_, set, err := getJWKS(ns, "leaked")
		if err != nil {
			return err
		}
		if contains(kidsOf(set), leaked) {
			return fmt.Errorf("revoked key still published")
		}
		return nil
	})
	s, _ := getSecret(ns, "leaked")
	if _, ok := s.Data[keys.KeyFile(leaked)]; ok {
		t.Errorf("the revoked private key is still in the Secret")
	}
	reasons := eventReasons(t, ns, "leaked")
	if reasons[tkv1.ReasonEmergencyRotation] == "" || reasons[tkv1.ReasonKeyRevoked] == "" {
		t.Errorf("want EmergencyRotation and KeyRevoked events, got %v", reasons)
	}
}

func TestDeletedSecretAndEditedJWKSAreRepairedWithoutUnpublishingKeys(t *testing.T) {
	ns := newNamespace(t)
	startManager(t, operator.Options{})
	create(t, newSigningKey(ns, "gone", withRotation(time.Hour, 2*time.Second, time.Hour)))
	old := waitReady(t, ns, "gone", 20*time.Second).Status.ActiveKID

	// A hand edit of the published JWKS is undone.
	cm, _, err := getJWKS(ns, "gone")
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[controllers.ConfigMapJWKS] = `{"keys":[]}`
	if err := k8sClient.Update(context.Background(), cm); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the JWKS restored", func() error {
		_, set, err := getJWKS(ns, "gone")
		if err != nil {
			return err
		}
		if !contains(kidsOf(set), old) {
			return fmt.Errorf("JWKS has %v", kidsOf(set))
		}
		return nil
	})

	// The whole Secret is deleted: the private key is gone, but tokens it signed must still
	// verify, so its public half (recovered from the JWKS) stays published while a new key
	// is published ahead and takes over.
	s, _ := getSecret(ns, "gone")
	if err := k8sClient.Delete(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "a new active key", func() error {
		sk := getSK(t, ns, "gone")
		if sk.Status.ActiveKID == "" || sk.Status.ActiveKID == old {
			return fmt.Errorf("active is %q", sk.Status.ActiveKID)
		}
		return nil
	})
	_, set, err := getJWKS(ns, "gone")
	if err != nil {
		t.Fatal(err)
	}
	if !contains(kidsOf(set), old) {
		t.Errorf("the key %s whose private half was deleted is no longer published; its tokens would be rejected", old)
	}
	s, err = getSecret(ns, "gone")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range secretRecords(t, s) {
		if r.KID == old && r.State != keys.Retired {
			t.Errorf("the deleted key is %s, want Retired (verify-only)", r.State)
		}
	}
	if !strings.Contains(eventReasons(t, ns, "gone")[tkv1.ReasonSecretRepaired], "missing") {
		t.Errorf("no SecretRepaired event about the missing Secret")
	}
}
