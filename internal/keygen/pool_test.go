//go:debug cryptocustomrand=1

// Since Go 1.26 crypto/rsa, crypto/ecdsa and crypto/ed25519 ignore the caller's random source
// unless GODEBUG=cryptocustomrand=1. The directive above turns it on for this test binary, so
// the pool's injected rand is really used and a test can hold an RSA generation in flight
// with a gate instead of racing a real clock.

package keygen_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/keygen"
	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// patience bounds waits for background work, so a broken pool fails instead of hanging. It
// is no performance target: RSA-4096 can take seconds on a busy machine.
const patience = 2 * time.Minute

// gate is a random source whose first read blocks until the gate opens. The first reader is
// the first background generation; every later read (other generations, cheap keys made
// inline) passes straight to crypto/rand.
type gate struct {
	first     sync.Once
	parked    chan struct{}
	release   chan struct{}
	closeOnce sync.Once
}

func newGate() *gate { return &gate{parked: make(chan struct{}), release: make(chan struct{})} }

func (g *gate) Read(b []byte) (int, error) {
	held := false
	g.first.Do(func() { held = true })
	if held {
		close(g.parked)
		<-g.release
	}
	return rand.Read(b)
}

// waitParked returns once the first generation is blocked reading from the gate.
func (g *gate) waitParked(t *testing.T) {
	t.Helper()
	select {
	case <-g.parked:
	case <-time.After(patience):
		t.Fatal("no background generation read from the pool's rand (is cryptocustomrand=1 in effect?)")
	}
}

func (g *gate) open() { g.closeOnce.Do(func() { close(g.release) }) }

// readyLog records onReady calls.
type readyLog struct{ ch chan string }

func (r *readyLog) onReady(owner string) { r.ch <- owner }

// next waits for the next onReady call.
func (r *readyLog) next(t *testing.T) string {
	t.Helper()
	select {
	case o := <-r.ch:
		return o
	case <-time.After(patience):
		t.Fatal("onReady was not called")
		return ""
	}
}

// drained returns the owners onReady was called with so far, sorted.
func (r *readyLog) drained() []string {
	var out []string
	for {
		select {
		case o := <-r.ch:
			out = append(out, o)
		default:
			sort.Strings(out)
			return out
		}
	}
}

type poolOption func(*poolConfig)

type poolConfig struct {
	ctx     context.Context
	rand    *gate
	workers int
}

func withWorkers(n int) poolOption               { return func(c *poolConfig) { c.workers = n } }
func withGate(g *gate) poolOption                { return func(c *poolConfig) { c.rand = g } }
func withContext(ctx context.Context) poolOption { return func(c *poolConfig) { c.ctx = ctx } }

// newPool makes a pool (two workers, crypto/rand unless a gate is given) and its onReady log.
// Cleanup opens any gate and waits for all background work, so no test leaks a generation.
func newPool(t *testing.T, opts ...poolOption) (*keygen.Pool, *readyLog) {
	t.Helper()
	c := poolConfig{ctx: context.Background(), workers: 2}
	for _, o := range opts {
		o(&c)
	}
	log := &readyLog{ch: make(chan string, 64)}
	var p *keygen.Pool
	if c.rand != nil {
		p = keygen.New(c.ctx, c.rand, c.workers, log.onReady)
	} else {
		p = keygen.New(c.ctx, rand.Reader, c.workers, log.onReady)
	}
	// Cleanups run last-in first-out: the gate opens, then Wait.
	t.Cleanup(p.Wait)
	if c.rand != nil {
		t.Cleanup(c.rand.open)
	}
	return p, log
}

// params asks for alg at its default size.
func params(alg string) keys.Params { return keys.Params{Algorithm: alg} }

// mustWaitFor waits until cond holds (a state change made by a background goroutine).
func mustWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestCheapKeysComeBackAtOnce(t *testing.T) {
	tests := []struct {
		name   string
		params keys.Params
		alg    string
	}{
		{"an ES256 key is made inline", keys.Params{Algorithm: "ES256"}, "ES256"},
		{"an ES384 key is made inline", keys.Params{Algorithm: "ES384"}, "ES384"},
		{"an ES512 key is made inline", keys.Params{Algorithm: "ES512"}, "ES512"},
		{"an EdDSA key is made inline", keys.Params{Algorithm: "EdDSA"}, "EdDSA"},
		{"an RSA size given with an EC algorithm is ignored", keys.Params{Algorithm: "ES256", RSABits: 4096}, "ES256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, log := newPool(t)
			k, err := p.Get("team-a/api", tt.params)
			if err != nil || k == nil {
				t.Fatalf("Get(%+v) = %v, %v; want a key at once", tt.params, k, err)
			}
			if k.Algorithm != tt.alg || k.Private == nil || k.KID == "" {
				t.Errorf("got a key with alg %q, kid %q, private %v; want a complete %s key", k.Algorithm, k.KID, k.Private != nil, tt.alg)
			}
			again, err := p.Get("team-a/api", tt.params)
			if err != nil || again == nil || again.KID == k.KID {
				t.Errorf("a second Get gave %v, %v; want another fresh key", again, err)
			}
			if p.Generating("team-a/api") {
				t.Error("Generating is true for an owner that only asked for cheap keys")
			}
			p.Wait()
			if got := log.drained(); len(got) != 0 {
				t.Errorf("onReady was called for %v; cheap keys need no callback", got)
			}
		})
	}
}

func TestAnRSAKeyIsMadeInTheBackgroundAndHandedOutOnce(t *testing.T) {
	const owner = "team-a/api"
	p, log := newPool(t)

	k, err := p.Get(owner, params("RS256"))
	if k != nil || err != nil {
		t.Fatalf("the first Get returned %v, %v; want nil while the key is made in the background", k, err)
	}
	if !p.Generating(owner) {
		t.Fatal("Generating is false right after an RSA request")
	}
	if k, err := p.Get(owner, params("RS256")); k != nil || err != nil {
		t.Fatalf("a repeated Get while generating returned %v, %v; want nil", k, err)
	}

	if got := log.next(t); got != owner {
		t.Fatalf("onReady was called with %q, want %q", got, owner)
	}
	if p.Generating(owner) {
		t.Error("Generating is still true after onReady")
	}
	// Normalized params are the same request: RSABits 0 means 2048.
	first, err := p.Get(owner, keys.Params{Algorithm: "RS256", RSABits: 2048})
	if err != nil || first == nil {
		t.Fatalf("Get after onReady = %v, %v; want the key", first, err)
	}
	if first.Algorithm != "RS256" || first.Public.(*rsa.PublicKey).N.BitLen() != 2048 {
		t.Errorf("got a %s key of %d bits, want RS256 of 2048", first.Algorithm, first.Public.(*rsa.PublicKey).N.BitLen())
	}

	// The key was handed out; asking again starts a new generation.
	if k, err := p.Get(owner, params("RS256")); k != nil || err != nil {
		t.Fatalf("a Get after the key was taken returned %v, %v; want nil (a new generation)", k, err)
	}
	if !p.Generating(owner) {
		t.Fatal("a Get after the key was taken did not start a new generation")
	}
	p.Wait()
	if got := log.drained(); len(got) != 1 || got[0] != owner {
		t.Fatalf("onReady calls after the second request: %v, want exactly [%s]", got, owner)
	}
	second, err := p.Get(owner, params("RS256"))
	if err != nil || second == nil {
		t.Fatalf("Get after the second generation = %v, %v; want a key", second, err)
	}
	if second.KID == first.KID {
		t.Error("the second generation handed out the first key again")
	}
}

func TestAResultForOtherParamsIsDiscarded(t *testing.T) {
	const owner = "team-a/api"

	t.Run("an algorithm change while generating discards the old generation", func(t *testing.T) {
		g := newGate()
		p, log := newPool(t, withGate(g))
		if k, _ := p.Get(owner, params("RS256")); k != nil {
			t.Fatal("RS256 came back at once")
		}
		g.waitParked(t) // the RS256 generation is in flight

		if k, err := p.Get(owner, params("PS256")); k != nil || err != nil {
			t.Fatalf("Get(PS256) while RS256 is in flight = %v, %v; want nil", k, err)
		}
		g.open()
		p.Wait()

		if got := log.drained(); len(got) != 1 || got[0] != owner {
			t.Fatalf("onReady calls: %v, want exactly one for %s (the RS256 result must not be announced)", got, owner)
		}
		k, err := p.Get(owner, params("PS256"))
		if err != nil || k == nil {
			t.Fatalf("Get(PS256) = %v, %v; want the PS256 key", k, err)
		}
		if k.Algorithm != "PS256" {
			t.Errorf("handed out a %s key for a PS256 request", k.Algorithm)
		}
	})

	t.Run("a ready key for old params is dropped and a new one started", func(t *testing.T) {
		p, log := newPool(t)
		p.Get(owner, params("RS256"))
		log.next(t) // an RS256 key is ready, but the owner now wants PS384

		if k, err := p.Get(owner, params("PS384")); k != nil || err != nil {
			t.Fatalf("Get(PS384) with an RS256 key ready = %v, %v; want nil", k, err)
		}
		if !p.Generating(owner) {
			t.Fatal("no PS384 generation was started")
		}
		if got := log.next(t); got != owner {
			t.Fatalf("onReady(%q), want %q", got, owner)
		}
		k, err := p.Get(owner, params("PS384"))
		if err != nil || k == nil || k.Algorithm != "PS384" {
			t.Fatalf("Get(PS384) = %v, %v; want a PS384 key", k, err)
		}
		// The RS256 key is gone for good.
		if k, _ := p.Get(owner, params("RS256")); k != nil {
			t.Errorf("the discarded RS256 key (%s) was handed out later", k.KID)
		}
	})
}

func TestForgetDropsPendingAndReadyWork(t *testing.T) {
	t.Run("a generation in flight for a forgotten owner is finished but never announced", func(t *testing.T) {
		g := newGate()
		p, log := newPool(t, withGate(g))
		p.Get("team-a/deleted", params("RS256"))
		g.waitParked(t)
		p.Get("team-a/kept", params("RS256"))

		p.Forget("team-a/deleted")
		if p.Generating("team-a/deleted") {
			t.Error("Generating is still true after Forget")
		}
		// Forget does not interrupt the generation itself: Wait still waits for it.
		g.open()
		p.Wait()

		if got := log.drained(); len(got) != 1 || got[0] != "team-a/kept" {
			t.Fatalf("onReady calls: %v, want only [team-a/kept]", got)
		}
		if k, err := p.Get("team-a/kept", params("RS256")); k == nil || err != nil {
			t.Errorf("the other owner's key was lost: %v, %v", k, err)
		}
		// Nothing was kept for the forgotten owner: asking again starts over.
		if k, err := p.Get("team-a/deleted", params("RS256")); k != nil || err != nil {
			t.Fatalf("Get for the forgotten owner = %v, %v; want nil and a new generation", k, err)
		}
		if !p.Generating("team-a/deleted") {
			t.Error("no new generation was started for the forgotten owner")
		}
	})

	t.Run("a ready key that was not collected is dropped", func(t *testing.T) {
		p, log := newPool(t)
		p.Get("team-a/deleted", params("RS384"))
		if got := log.next(t); got != "team-a/deleted" {
			t.Fatalf("onReady(%q)", got)
		}
		p.Forget("team-a/deleted")
		if k, err := p.Get("team-a/deleted", params("RS384")); k != nil || err != nil {
			t.Fatalf("Get after Forget = %v, %v; want nil (the ready key was dropped)", k, err)
		}
	})

	t.Run("forgetting an unknown owner is harmless", func(t *testing.T) {
		p, _ := newPool(t)
		p.Forget("team-a/never-seen")
		if p.Generating("team-a/never-seen") {
			t.Error("Generating is true for an owner that never asked")
		}
	})
}

// TestRSADoesNotStallOtherOwners holds an RSA-4096 generation in the only worker and shows
// that cheap keys for other owners still come back from Get while it is in flight.
func TestRSADoesNotStallOtherOwners(t *testing.T) {
	const rsaOwner, queuedOwner = "team-a/big-rsa", "team-b/small-rsa"
	g := newGate()
	p, log := newPool(t, withGate(g), withWorkers(1))

	big := keys.Params{Algorithm: "RS512", RSABits: 4096}
	if k, err := p.Get(rsaOwner, big); k != nil || err != nil {
		t.Fatalf("Get(RSA-4096) = %v, %v; want nil", k, err)
	}
	g.waitParked(t) // the only worker is busy with RSA-4096
	if k, err := p.Get(queuedOwner, params("PS256")); k != nil || err != nil {
		t.Fatalf("Get(PS256) for a second owner = %v, %v; want nil (queued)", k, err)
	}

	for i, alg := range []string{"ES256", "ES384", "ES512", "EdDSA"} {
		owner := "team-c/ec-" + strings.ToLower(alg)
		k, err := p.Get(owner, keys.Params{Algorithm: alg})
		if err != nil || k == nil {
			t.Fatalf("Get(%s) while RSA-4096 is in flight = %v, %v; want a key at once", alg, k, err)
		}
		if !p.Generating(rsaOwner) {
			t.Fatalf("RSA-4096 finished before the %s key (#%d) came back: the test proved nothing", alg, i+1)
		}
	}
	if !p.Generating(queuedOwner) {
		t.Error("the queued RSA owner is not generating")
	}

	g.open()
	p.Wait()
	if got, want := log.drained(), []string{rsaOwner, queuedOwner}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("onReady calls: %v, want %v", got, want)
	}
	k, err := p.Get(rsaOwner, big)
	if err != nil || k == nil {
		t.Fatalf("Get(RSA-4096) after onReady = %v, %v", k, err)
	}
	if bits := k.Public.(*rsa.PublicKey).N.BitLen(); bits != 4096 || k.Algorithm != "RS512" {
		t.Errorf("got %s with %d bits, want RS512 with 4096", k.Algorithm, bits)
	}
}

func TestWaitReturnsAfterAllWork(t *testing.T) {
	p, log := newPool(t, withWorkers(2))
	want := map[string]string{"team-a/one": "RS256", "team-a/two": "PS384", "team-b/three": "RS512"}
	for owner, alg := range want {
		p.Get(owner, params(alg))
	}
	p.Wait()

	got := log.drained()
	if len(got) != len(want) {
		t.Fatalf("onReady calls after Wait: %v, want one per owner of %v", got, want)
	}
	for owner, alg := range want {
		if p.Generating(owner) {
			t.Errorf("%s is still generating after Wait", owner)
		}
		k, err := p.Get(owner, params(alg))
		if err != nil || k == nil || k.Algorithm != alg {
			t.Errorf("Get(%s, %s) after Wait = %v, %v; want a %s key", owner, alg, k, err, alg)
		}
	}
}

func TestACancelledContextStopsQueuedGenerations(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := newGate()
	p, log := newPool(t, withGate(g), withWorkers(1), withContext(ctx))

	p.Get("team-a/running", params("RS256"))
	g.waitParked(t) // holds the only worker
	p.Get("team-a/queued", params("PS256"))
	p.Get("team-b/queued", params("RS384"))

	cancel()
	mustWaitFor(t, "the queued generations gave up", func() bool {
		return !p.Generating("team-a/queued") && !p.Generating("team-b/queued")
	})

	// The generation already running is not interrupted and is still delivered.
	g.open()
	p.Wait()
	if got := log.drained(); len(got) != 1 || got[0] != "team-a/running" {
		t.Fatalf("onReady calls: %v, want only [team-a/running]", got)
	}
	if k, err := p.Get("team-a/running", params("RS256")); k == nil || err != nil {
		t.Errorf("Get for the running owner = %v, %v; want its key", k, err)
	}
}

func TestAGenerationErrorIsHandedOutOnceLikeAKey(t *testing.T) {
	const owner = "team-a/api"
	p, log := newPool(t)
	bad := keys.Params{Algorithm: "RS256", RSABits: 1024}

	if k, err := p.Get(owner, bad); k != nil || err != nil {
		t.Fatalf("Get(RSA-1024) = %v, %v; want nil while the background attempt runs", k, err)
	}
	log.next(t)
	k, err := p.Get(owner, bad)
	if err == nil || k != nil {
		t.Fatalf("Get after onReady = %v, %v; want the generation error", k, err)
	}
	if !strings.Contains(err.Error(), "1024") {
		t.Errorf("error %q does not name the bad size", err)
	}
	if k, err := p.Get(owner, bad); k != nil || err != nil {
		t.Errorf("the error was handed out twice: %v, %v", k, err)
	}
}
