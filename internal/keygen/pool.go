// Package keygen generates keys off the reconcile path. Cheap keys (EC, Ed25519) are made
// inline; RSA keys, which take up to seconds, are made by a small pool of background
// workers so a burst of RSA-4096 keys never stalls the reconciles of other objects.
package keygen

import (
	"context"
	"io"
	"sync"

	"github.com/tokenkeeper/tokenkeeper/internal/keys"
)

// Pool hands out fresh keys per owner (a SigningKey's namespace/name).
type Pool struct {
	rand    io.Reader
	onReady func(owner string) // called when a background key is ready for owner
	slots   *slots

	mu       sync.Mutex
	inflight map[string]keys.Params
	ready    map[string]result
	wg       sync.WaitGroup
	ctx      context.Context
}

type result struct {
	params keys.Params
	key    *keys.Key
	err    error
}

// New makes a pool of workers background generators. Note that since Go 1.26 the standard
// key generators ignore rand (they always use crypto/rand) unless GODEBUG cryptocustomrand=1. onReady is told when an owner's key is
// ready, so its reconcile can run again.
func New(ctx context.Context, rand io.Reader, workers int, onReady func(owner string)) *Pool {
	if workers < 1 {
		workers = 1
	}
	return &Pool{rand: rand, onReady: onReady, slots: newSlots(workers),
		inflight: map[string]keys.Params{}, ready: map[string]result{}, ctx: ctx}
}

// Get returns a fresh key for owner made with params, or nil while one is being generated
// in the background. A key is handed out once; a result for other params is discarded.
func (p *Pool) Get(owner string, params keys.Params) (*keys.Key, error) {
	params = params.Normalized()
	if !params.Expensive() {
		p.Forget(owner) // an RSA key still in the works for this owner is no longer wanted
		return keys.Generate(p.rand, params)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.ready[owner]; ok {
		delete(p.ready, owner)
		if r.params == params {
			return r.key, r.err
		}
	}
	if inflight, ok := p.inflight[owner]; ok && inflight == params {
		return nil, nil
	}
	p.inflight[owner] = params
	p.wg.Add(1)
	go p.generate(owner, params)
	return nil, nil
}

// Generating reports whether a background key is being made for owner.
func (p *Pool) Generating(owner string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.inflight[owner]
	return ok
}

// Forget drops whatever is ready or pending for a deleted owner.
func (p *Pool) Forget(owner string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.ready, owner)
	delete(p.inflight, owner)
}

// Wait blocks until background generation has stopped (for tests and shutdown).
func (p *Pool) Wait() { p.wg.Wait() }

func (p *Pool) generate(owner string, params keys.Params) {
	defer p.wg.Done()
	if !p.slots.acquire(p.ctx, params.RSABits) {
		p.Forget(owner)
		return
	}
	k, err := keys.Generate(p.rand, params)
	p.slots.release()
	p.mu.Lock()
	current, wanted := p.inflight[owner]
	if wanted && current == params {
		delete(p.inflight, owner)
		p.ready[owner] = result{params: params, key: k, err: err}
	}
	p.mu.Unlock()
	if wanted && current == params && p.onReady != nil {
		p.onReady(owner)
	}
}
