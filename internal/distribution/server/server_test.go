package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

const ns = "shop"

func newKey(t *testing.T) *keys.Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := keys.FromPrivate(priv, "ES256")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func policyObj(rv string) *tkv1.TokenPolicy {
	tp := &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api", ResourceVersion: rv}}
	tp.Spec.Issuer = "https://issuer.example"
	tp.Spec.Audiences = []string{"api"}
	tp.Spec.TrustedKeys = []tkv1.TrustedKeySource{{SigningKeyRef: &tkv1.LocalObjectReference{Name: "sk"}}}
	return tp
}

func jwksCM(t *testing.T, rv string, ks ...jsonKey) *corev1.ConfigMap {
	t.Helper()
	doc, err := json.Marshal(map[string]any{"keys": ks})
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sk-jwks", ResourceVersion: rv}, Data: map[string]string{"jwks.json": string(doc)}}
}

type jsonKey = any

func publicJWK(t *testing.T, k *keys.Key) jsonKey {
	t.Helper()
	raw, err := json.Marshal(k.PublicJWK())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return m
}

func revList(rv string, jtis ...string) *tkv1.RevocationList {
	rl := &tkv1.RevocationList{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "logout", ResourceVersion: rv}}
	for _, j := range jtis {
		rl.Spec.Tokens = append(rl.Spec.Tokens, tkv1.RevokedToken{JTI: j, ExpiresAt: metav1.NewTime(time.Unix(4102444800, 0))})
	}
	return rl
}

// replica is one manager replica's Hub behind a real HTTP server.
type replica struct {
	hub *Hub
	srv *httptest.Server
}

func newReplica(t *testing.T, lim Limits) *replica {
	t.Helper()
	hub := NewHub(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go hub.Run(ctx)
	srv := httptest.NewServer(&Handler{Hub: hub, Limits: lim})
	t.Cleanup(srv.Close)
	return &replica{hub: hub, srv: srv}
}

func fastLimits() Limits {
	l := DefaultLimits
	l.DefaultHold, l.MaxHold = 300*time.Millisecond, time.Second
	l.WriteTimeout = 500 * time.Millisecond
	return l
}

// poll GETs a snapshot and returns the status and, on 200, the resolved snapshot.
func poll(t *testing.T, base string, held *distribution.Snapshot) (int, *distribution.Snapshot) {
	t.Helper()
	v := ""
	if held != nil {
		v = held.Token.String()
	}
	resp, err := http.Get(base + distribution.Path + ns + "/api?version=" + v)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	var m distribution.Message
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	s, err := distribution.Resolve(&m, held)
	if err != nil {
		t.Fatalf("resolving the answer: %v", err)
	}
	return resp.StatusCode, s
}

func feed(h *Hub, objs ...object) {
	for _, o := range objs {
		h.Upsert(o)
	}
}

func TestASidecarFailingOverToALaggingReplicaNeverGoesBack(t *testing.T) {
	k := newKey(t)
	a, b := newReplica(t, fastLimits()), newReplica(t, fastLimits())
	// Replica a has seen the revocation of jti "stolen" (RevocationList rv 20); b has not.
	feed(a.hub, policyObj("10"), jwksCM(t, "11", publicJWK(t, k)), revList("20", "stolen"))
	feed(b.hub, policyObj("10"), jwksCM(t, "11", publicJWK(t, k)), revList("12"))
	a.hub.MarkSynced()
	b.hub.MarkSynced()

	status, fromA := poll(t, a.srv.URL, nil)
	if status != http.StatusOK || len(fromA.Revocations.Tokens) != 1 {
		t.Fatalf("replica a answered %d %+v, want the snapshot revoking stolen", status, fromA)
	}
	// Failing over to b, which lags: it must hold and answer 304, not its older snapshot.
	if status, s := poll(t, b.srv.URL, fromA); status != http.StatusNotModified {
		t.Fatalf("lagging replica b answered %d %+v, want 304", status, s)
	}
	// A fresh sidecar on b gets b's snapshot, and a sidecar holding it would refuse to go
	// back from a's.
	_, fromB := poll(t, b.srv.URL, nil)
	if distribution.Accepts(&fromA.Token, fromB.Token) {
		t.Fatalf("a sidecar holding %s accepted the older %s", fromA.Token, fromB.Token)
	}
	// b catches up while the sidecar waits on it: the poll is answered with the new state.
	done := make(chan *distribution.Snapshot, 1)
	go func() {
		_, s := poll(t, b.srv.URL, fromA)
		done <- s
	}()
	time.Sleep(50 * time.Millisecond)
	feed(b.hub, revList("20", "stolen"), revList("21", "stolen", "other"))
	select {
	case s := <-done:
		if s == nil || len(s.Revocations.Tokens) != 2 || !s.Token.Version.Dominates(fromA.Token.Version) {
			t.Fatalf("after catching up b answered %+v, want both revocations at a newer version", s)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("b never answered after catching up")
	}
}

func TestAPollIsAnsweredAtOnceWhenNewerAndHeldUntilAChangeOtherwise(t *testing.T) {
	k := newKey(t)
	r := newReplica(t, fastLimits())
	feed(r.hub, policyObj("10"), jwksCM(t, "11", publicJWK(t, k)), revList("12"))
	r.hub.MarkSynced()
	_, first := poll(t, r.srv.URL, nil)
	if status, _ := poll(t, r.srv.URL, first); status != http.StatusNotModified {
		t.Fatalf("an unchanged policy answered %d, want 304 at the hold timeout", status)
	}
	// An unrelated change raises the version but not the content: still nothing to send.
	feed(r.hub, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "x", ResourceVersion: "30"}})
	if status, _ := poll(t, r.srv.URL, first); status != http.StatusNotModified {
		t.Fatalf("an unrelated change answered %d, want 304", status)
	}
	start := time.Now()
	go func() { time.Sleep(100 * time.Millisecond); feed(r.hub, revList("31", "stolen")) }()
	status, next := poll(t, r.srv.URL, first)
	if status != http.StatusOK || len(next.Revocations.Tokens) != 1 {
		t.Fatalf("after a revocation the poll answered %d %+v", status, next)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Fatalf("the change took %v to reach the waiting poll", d)
	}
}

func TestNoSnapshotCanCarryAPrivateKey(t *testing.T) {
	k := newKey(t)
	raw, err := json.Marshal(k.PrivateJWK())
	if err != nil {
		t.Fatal(err)
	}
	var priv map[string]any
	_ = json.Unmarshal(raw, &priv)
	lists := map[string]*tkv1.RevocationList{}
	cms := map[string]*corev1.ConfigMap{"sk-jwks": jwksCM(t, "1", priv)}
	if s, err := Build(policyObj("1"), lists, cms); err == nil {
		t.Fatalf("built a snapshot from a JWKS with a private key: %s", s.Keys)
	}
	// The sidecar's check refuses a private member even when the JOSE library is bypassed.
	doc := []byte(`{"keys":[{"kty":"oct","kid":"x","alg":"HS256","k":"c2VjcmV0"}]}`)
	if err := distribution.CheckKeys(doc); err == nil || !strings.Contains(err.Error(), `private member "k"`) {
		t.Fatalf("CheckKeys accepted a symmetric key: %v", err)
	}
	cms["sk-jwks"] = jwksCM(t, "1", publicJWK(t, k))
	s, err := Build(policyObj("1"), lists, cms)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(s.Keys), `"d"`) {
		t.Fatalf("snapshot keys carry a private member: %s", s.Keys)
	}
}

func TestARevokedKidLeavesTheKeysAtOnce(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	rl := revList("3")
	rl.Spec.Keys = []tkv1.RevokedKey{{KID: k1.PublicJWK().KeyID}}
	s, err := Build(policyObj("1"), map[string]*tkv1.RevocationList{"logout": rl},
		map[string]*corev1.ConfigMap{"sk-jwks": jwksCM(t, "2", publicJWK(t, k1), publicJWK(t, k2))})
	if err != nil {
		t.Fatal(err)
	}
	set, _ := jwks.Parse(s.Keys)
	if len(set.Keys) != 1 || set.Keys[0].KeyID != k2.PublicJWK().KeyID {
		t.Fatalf("keys after revoking %s: %s", k1.PublicJWK().KeyID, s.Keys)
	}
}

func TestALargeSetTravelsAsADeltaThatReproducesTheDigest(t *testing.T) {
	k := newKey(t)
	r := newReplica(t, fastLimits())
	var jtis []string
	for i := range 5000 {
		jtis = append(jtis, fmt.Sprintf("jti-%05d", i))
	}
	feed(r.hub, policyObj("10"), jwksCM(t, "11", publicJWK(t, k)), revList("12", jtis...))
	r.hub.MarkSynced()
	_, first := poll(t, r.srv.URL, nil)
	feed(r.hub, revList("13", append(jtis[1:], "new")...))

	resp, err := http.Get(r.srv.URL + distribution.Path + ns + "/api?timeout=5&version=" + first.Token.String())
	if err != nil {
		t.Fatal(err)
	}
	var m distribution.Message
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if m.Delta == nil || len(m.Delta.Added.Tokens) != 1 || len(m.Delta.Removed.Tokens) != 1 {
		t.Fatalf("want a delta of one added and one removed jti, got %+v", m.Delta)
	}
	next, err := distribution.Resolve(&m, first)
	if err != nil || len(next.Revocations.Tokens) != 5000 {
		t.Fatalf("applying the delta: %v", err)
	}
	// The same delta on another base fails the digest check instead of applying.
	other := *first
	other.Token.Digest = strings.Repeat("0", 64)
	if _, err := distribution.Resolve(&m, &other); err == nil {
		t.Fatal("a delta applied to a base it was not computed from")
	}
	tampered := *first
	// Lacks jti-00005, which the delta does not touch.
	tampered.Revocations.Tokens = append(append([]tkv1.RevokedToken{}, first.Revocations.Tokens[:5]...), first.Revocations.Tokens[6:]...)
	if _, err := distribution.Resolve(&m, &tampered); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Fatalf("a delta on a different set passed the digest check: %v", err)
	}
}

func TestASubscriberThatNeverReadsDoesNotStallTheOthers(t *testing.T) {
	k := newKey(t)
	r := newReplica(t, fastLimits())
	var jtis []string
	for i := range 60000 { // a full snapshot of several MB, more than socket buffers hold
		jtis = append(jtis, fmt.Sprintf("jti-%06d-%s", i, strings.Repeat("x", 40)))
	}
	feed(r.hub, policyObj("10"), jwksCM(t, "11", publicJWK(t, k)), revList("12", jtis...))
	r.hub.MarkSynced()
	// The slow one asks for a full snapshot, without gzip, and never reads.
	conn, err := net.Dial("tcp", r.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096)
	}
	fmt.Fprintf(conn, "GET %s%s/api HTTP/1.1\r\nHost: x\r\n\r\n", distribution.Path, ns)
	time.Sleep(100 * time.Millisecond)

	// Time to the answer's headers: decoding megabytes under -race is not the server's.
	start := time.Now()
	resp, err := http.Get(r.srv.URL + distribution.Path + ns + "/api")
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another subscriber got %d", resp.StatusCode)
	}
	if d > 400*time.Millisecond {
		t.Fatalf("another subscriber waited %v behind the one that never reads", d)
	}
}

func TestTheServerServesNothingBeforeItsCachesSynced(t *testing.T) {
	r := newReplica(t, fastLimits())
	feed(r.hub, policyObj("10"))
	if status, _ := poll(t, r.srv.URL, nil); status != http.StatusServiceUnavailable {
		t.Fatalf("before sync: %d, want 503", status)
	}
}

// Only the ConfigMaps a snapshot is built from rebuild their namespace: the bundle the
// leader writes after each change (for a policy without remote keys) does not, and a
// trusted SigningKey's JWKS does.
func TestOnlyConfigMapsASnapshotReadsRebuildIt(t *testing.T) {
	k := newKey(t)
	h := NewHub(slog.New(slog.NewTextHandler(io.Discard, nil)))
	feed(h, policyObj("1"), jwksCM(t, "2", publicJWK(t, k)), revList("3"))
	h.MarkSynced()
	base := h.Rebuilds()
	bundle := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "api-bundle", ResourceVersion: "4"}}
	h.Upsert(bundle)
	h.Upsert(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unrelated", ResourceVersion: "5"}})
	h.rebuildDirty()
	if got := h.Rebuilds() - base; got != 0 {
		t.Errorf("ConfigMaps no snapshot reads caused %d rebuilds", got)
	}
	h.Upsert(jwksCM(t, "6", publicJWK(t, k), publicJWK(t, newKey(t))))
	h.rebuildDirty()
	if got := h.Rebuilds() - base; got != 1 {
		t.Errorf("the trusted JWKS changing caused %d rebuilds, want 1", got)
	}
	// A policy that trusts a jwksURI reads its bundle (the remote keys the leader fetched).
	remote := policyObj("7")
	remote.Spec.TrustedKeys = append(remote.Spec.TrustedKeys, tkv1.TrustedKeySource{JWKSURI: "https://idp.example/jwks"})
	h.Upsert(remote)
	h.rebuildDirty()
	before := h.Rebuilds()
	bundle = bundle.DeepCopy()
	bundle.ResourceVersion = "8"
	h.Upsert(bundle)
	h.rebuildDirty()
	if got := h.Rebuilds() - before; got != 1 {
		t.Errorf("the bundle of a policy with remote keys caused %d rebuilds, want 1", got)
	}
}

// A policy whose latest inputs cannot be built (a corrupt JWKS) is not "nothing newer":
// a poll holding the last good snapshot gets 503 with the reason, so the sidecar does not
// count itself current, and it gets the next good snapshot once the inputs are fixed.
func TestAPolicyThatCannotBeBuiltIsNotReportedCurrent(t *testing.T) {
	k := newKey(t)
	r := newReplica(t, fastLimits())
	feed(r.hub, policyObj("1"), jwksCM(t, "2", publicJWK(t, k)), revList("3"))
	r.hub.MarkSynced()
	_, first := poll(t, r.srv.URL, nil)
	if status, _ := poll(t, r.srv.URL, first); status != http.StatusNotModified {
		t.Fatalf("an unchanged policy: %d, want 304", status)
	}
	bad := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "sk-jwks", ResourceVersion: "4"}, Data: map[string]string{"jwks.json": "{not json"}}
	feed(r.hub, bad)
	var status int
	var body string
	for range 50 {
		resp, err := http.Get(r.srv.URL + distribution.Path + ns + "/api?version=" + first.Token.String())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		status, body = resp.StatusCode, string(b)
		if status != http.StatusNotModified {
			break
		}
	}
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "cannot be built") {
		t.Fatalf("a corrupt JWKS: %d %q, want 503 saying the snapshot cannot be built", status, body)
	}
	feed(r.hub, jwksCM(t, "5", publicJWK(t, k), publicJWK(t, newKey(t))))
	var next *distribution.Snapshot
	for range 50 {
		if status, next = poll(t, r.srv.URL, first); status == http.StatusOK {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if next == nil || !distribution.Accepts(&first.Token, next.Token) {
		t.Fatalf("after the fix: %d", status)
	}
}

// One bearer token holds at most MaxPerToken polls: a tenant's single credential cannot
// take its namespace's share of the replica; another token still gets its poll.
func TestOneTokenHoldsAFewPollsOnly(t *testing.T) {
	k := newKey(t)
	lim := fastLimits()
	lim.MaxPerToken, lim.DefaultHold, lim.MaxHold = 2, 2*time.Second, 2*time.Second
	r := newReplica(t, lim)
	feed(r.hub, policyObj("1"), jwksCM(t, "2", publicJWK(t, k)), revList("3"))
	r.hub.MarkSynced()
	_, first := poll(t, r.srv.URL, nil)
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, r.srv.URL+distribution.Path+ns+"/api?version="+first.Token.String(), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	held := make(chan int, 2)
	for range 2 {
		go func() { held <- get("one") }()
	}
	time.Sleep(300 * time.Millisecond) // both polls are held
	if got := get("one"); got != http.StatusServiceUnavailable {
		t.Errorf("a third poll with the same token: %d, want 503", got)
	}
	if got := get("two"); got != http.StatusNotModified {
		t.Errorf("another token: %d, want its poll held until 304", got)
	}
	for range 2 {
		if got := <-held; got != http.StatusNotModified {
			t.Errorf("a held poll ended %d", got)
		}
	}
}

// A rebuild merges the revocations once for every policy of a namespace that applies the
// same lists, and past snapshots keep their content for deltas but not their encodings:
// a tenant with a large set and many policies costs one merge and one set of encodings.
func TestPoliciesShareAMergeAndHistoryKeepsNoEncodings(t *testing.T) {
	k := newKey(t)
	h := NewHub(slog.New(slog.NewTextHandler(io.Discard, nil)))
	second := policyObj("2")
	second.Name = "api2"
	feed(h, policyObj("1"), second, jwksCM(t, "3", publicJWK(t, k)), revList("4", "a", "b"))
	h.MarkSynced()
	one := h.entries[types.NamespacedName{Namespace: ns, Name: "api"}].cur.snap
	two := h.entries[types.NamespacedName{Namespace: ns, Name: "api2"}].cur.snap
	if &one.Revocations.Tokens[0] != &two.Revocations.Tokens[0] {
		t.Error("two policies applying the same lists merged them twice")
	}
	feed(h, revList("5", "a", "b", "c"))
	h.rebuildDirty()
	e := h.entries[types.NamespacedName{Namespace: ns, Name: "api"}]
	if len(e.history) != 2 || e.history[1] != e.cur {
		t.Fatalf("history %d entries", len(e.history))
	}
	if old := e.history[0]; old.full.plain != nil || old.full.gz != nil || old.snap == nil {
		t.Errorf("a past snapshot kept its encodings (%d + %d bytes) or lost its content", len(old.full.plain), len(old.full.gz))
	}
}

// An update that leaves the content as it was (a status or metadata change) relabels the
// snapshot with the newer version: a sidecar whose bundle was rendered after that update
// asks from it as its floor, and must be answered, not held.
func TestUnchangedContentIsRelabelledForAFloorAboveIt(t *testing.T) {
	k := newKey(t)
	r := newReplica(t, fastLimits())
	feed(r.hub, policyObj("1"), jwksCM(t, "2", publicJWK(t, k)), revList("3"))
	r.hub.MarkSynced()
	_, first := poll(t, r.srv.URL, nil)
	feed(r.hub, policyObj("9")) // a status update: same spec, new resourceVersion
	r.hub.rebuildDirty()
	floor := distribution.Token{Version: distribution.Version{9, 3, 0}, Digest: strings.Repeat("0", 64)}
	resp, err := http.Get(r.srv.URL + distribution.Path + ns + "/api?version=" + floor.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a poll from a floor above the old label: %d, want the relabelled snapshot", resp.StatusCode)
	}
	var m distribution.Message
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	got, err := distribution.Resolve(&m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Token.Digest != first.Token.Digest || !got.Token.Version.Dominates(floor.Version) {
		t.Errorf("relabelled %s, first %s: want the same content at a version above %s", got.Token, first.Token, floor.Version)
	}
	// Holders of the first label are not woken for it: nothing to learn.
	if status, _ := poll(t, r.srv.URL, first); status != http.StatusNotModified {
		t.Errorf("a holder of the same content: %d, want 304", status)
	}
}

// A snapshot larger than a sidecar accepts is a build failure: not kept (memory on every
// replica), and its polls are told why (503), with the last good snapshot kept.
func TestASnapshotTooLargeForASidecarIsAFailure(t *testing.T) {
	k := newKey(t)
	r := newReplica(t, fastLimits())
	feed(r.hub, policyObj("1"), jwksCM(t, "2", publicJWK(t, k)), revList("3", "a"))
	r.hub.MarkSynced()
	_, first := poll(t, r.srv.URL, nil)
	r.hub.mu.Lock()
	r.hub.maxSnapshotBytes = len(r.hub.entries[types.NamespacedName{Namespace: ns, Name: "api"}].cur.full.plain) + 100
	r.hub.mu.Unlock()
	feed(r.hub, revList("4", "a", "b", "c", "d", "e", "f", "g", "h"))
	var status int
	for range 50 {
		if status, _ = poll(t, r.srv.URL, first); status != http.StatusNotModified {
			break
		}
	}
	if status != http.StatusServiceUnavailable {
		t.Fatalf("an oversized snapshot: %d, want 503", status)
	}
	r.hub.mu.Lock()
	defer r.hub.mu.Unlock()
	if e := r.hub.entries[types.NamespacedName{Namespace: ns, Name: "api"}]; e.cur.snap.Token.Digest != first.Token.Digest || !strings.Contains(e.failing, "over the") {
		t.Errorf("kept %s (want the last good %s), failing %q", e.cur.snap.Token, first.Token, e.failing)
	}
}
