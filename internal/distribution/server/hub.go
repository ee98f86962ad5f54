// Package server is the manager's side of distribution: a Hub that keeps each TokenPolicy's
// current snapshot, built from the objects the manager's informers deliver, and an HTTP
// handler that long-polls it for sidecars, authenticated with TokenReview.
package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
)

// historyLen is how many past snapshots per policy a delta can start from.
const historyLen = 8

// DeltaMinEntries: below this many revocation entries a full snapshot is small enough.
const DeltaMinEntries = 256

// Hub holds the inputs of every snapshot, as the informers delivered them, and the current
// snapshot of each TokenPolicy. Feed it with Upsert and Delete from informer event handlers
// (one handler per kind, so each kind's events arrive in order), and call MarkSynced once
// the caches have synced: before that it serves nothing, since a snapshot built from a
// half-filled cache would lack revocations.
type Hub struct {
	log *slog.Logger

	buildMu sync.Mutex // one build at a time, so snapshots are published in version order
	mu      sync.Mutex
	version distribution.Version
	synced  bool
	inputs  map[string]*nsInputs // by namespace
	dirty   map[string]bool      // namespaces to rebuild
	wake    chan struct{}        // buffered 1: the builder has work
	entries map[types.NamespacedName]*entry
	builds  atomic.Int64 // namespace rebuilds, for metrics and tests
	// maxSnapshotBytes: a larger snapshot is a build failure (distribution.DefaultMaxBytes,
	// what a sidecar accepts).
	maxSnapshotBytes int
}

type nsInputs struct {
	policies   map[string]*tkv1.TokenPolicy
	lists      map[string]*tkv1.RevocationList
	configMaps map[string]*corev1.ConfigMap
}

// entry is one policy's current snapshot and the waiters for the next one.
type entry struct {
	cur     *built
	history []*built      // oldest first, cur last
	changed chan struct{} // closed when cur is replaced, the build starts or stops failing, or the policy goes
	gone    bool          // the TokenPolicy was deleted
	// failing is why the policy's latest inputs could not be built ("" when they could):
	// cur is then older than what the policy says, and polls are told so (503) instead
	// of "nothing newer".
	failing string
}

// built is an encoded snapshot, shared by every subscriber that gets it.
type built struct {
	snap   *distribution.Snapshot
	full   encoded
	mu     sync.Mutex
	deltas map[string]encoded // by base digest
}

type encoded struct{ plain, gz []byte }

// NewHub returns an empty Hub; Run builds snapshots until ctx ends.
func NewHub(log *slog.Logger) *Hub {
	return &Hub{
		log:     log,
		inputs:  map[string]*nsInputs{},
		dirty:   map[string]bool{},
		wake:    make(chan struct{}, 1),
		entries: map[types.NamespacedName]*entry{},

		maxSnapshotBytes: distribution.DefaultMaxBytes,
	}
}

func kindOf(obj any) int {
	switch obj.(type) {
	case *tkv1.TokenPolicy:
		return distribution.KindTokenPolicy
	case *tkv1.RevocationList:
		return distribution.KindRevocationList
	case *corev1.ConfigMap:
		return distribution.KindConfigMap
	}
	return -1
}

type object interface {
	GetNamespace() string
	GetName() string
	GetResourceVersion() string
}

// Upsert records an added or updated object (a TokenPolicy, RevocationList or ConfigMap).
// Objects are kept by reference and never modified.
func (h *Hub) Upsert(obj object) { h.record(obj, false) }

// Delete records a deleted object; its resourceVersion is the deletion's.
func (h *Hub) Delete(obj object) { h.record(obj, true) }

func (h *Hub) record(obj object, deleted bool) {
	kind := kindOf(obj)
	if kind < 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if rv, err := strconv.ParseUint(obj.GetResourceVersion(), 10, 64); err == nil && rv > h.version[kind] {
		h.version[kind] = rv
	}
	ns := h.inputs[obj.GetNamespace()]
	if ns == nil {
		ns = &nsInputs{policies: map[string]*tkv1.TokenPolicy{}, lists: map[string]*tkv1.RevocationList{}, configMaps: map[string]*corev1.ConfigMap{}}
		h.inputs[obj.GetNamespace()] = ns
	}
	name := obj.GetName()
	switch o := obj.(type) {
	case *tkv1.TokenPolicy:
		setOrDelete(ns.policies, name, o, deleted)
	case *tkv1.RevocationList:
		setOrDelete(ns.lists, name, o, deleted)
	case *corev1.ConfigMap:
		setOrDelete(ns.configMaps, name, o, deleted)
		if !ns.read(o) {
			// Kept for when a policy comes to read it, but no rebuild: the bundle the
			// leader writes after every change would otherwise rebuild the namespace
			// a second time, for the same content.
			return
		}
	}
	h.dirty[obj.GetNamespace()] = true
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// read reports whether a snapshot of the namespace is built from cm, as Build reads them:
// the JWKS of a trusted SigningKey, or the bundle of a policy that trusts a jwksURI (its
// remote keys are there).
func (in *nsInputs) read(cm *corev1.ConfigMap) bool {
	for _, tp := range in.policies {
		for _, src := range tp.Spec.TrustedKeys {
			switch {
			case src.SigningKeyRef != nil:
				sk := &tkv1.SigningKey{}
				sk.Name = src.SigningKeyRef.Name
				if sk.JWKSConfigMapName() == cm.Name {
					return true
				}
			case src.JWKSURI != "" && tp.BundleConfigMapName() == cm.Name:
				return true
			}
		}
	}
	return false
}

func setOrDelete[T any](m map[string]T, name string, v T, deleted bool) {
	if deleted {
		delete(m, name)
	} else {
		m[name] = v
	}
}

// MarkSynced says every informer has delivered its initial list.
func (h *Hub) MarkSynced() {
	h.mu.Lock()
	h.synced = true
	for ns := range h.inputs {
		h.dirty[ns] = true
	}
	h.mu.Unlock()
	h.rebuildDirty() // at once: a poll after MarkSynced sees every policy
}

// Run rebuilds the snapshots of changed namespaces, one namespace at a time, so bursts of
// events coalesce into one build and snapshots are published in version order.
func (h *Hub) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		h.rebuildDirty()
	}
}

// rebuildDirty builds every dirty namespace; exported to tests through Flush.
func (h *Hub) rebuildDirty() {
	h.buildMu.Lock()
	defer h.buildMu.Unlock()
	for {
		h.mu.Lock()
		if !h.synced || len(h.dirty) == 0 {
			h.mu.Unlock()
			return
		}
		var ns string
		for ns = range h.dirty {
			break
		}
		delete(h.dirty, ns)
		// The vector and the inputs are taken together: the content is exactly what the
		// vector says.
		version := h.version
		in := h.inputs[ns].clone()
		h.mu.Unlock()
		h.rebuild(ns, version, in)
	}
}

func (in *nsInputs) clone() nsInputs {
	out := nsInputs{policies: map[string]*tkv1.TokenPolicy{}, lists: map[string]*tkv1.RevocationList{}, configMaps: map[string]*corev1.ConfigMap{}}
	if in == nil {
		return out
	}
	for k, v := range in.policies {
		out.policies[k] = v
	}
	for k, v := range in.lists {
		out.lists[k] = v
	}
	for k, v := range in.configMaps {
		out.configMaps[k] = v
	}
	return out
}

// Rebuilds is how many times a namespace's snapshots were rebuilt.
func (h *Hub) Rebuilds() int64 { return h.builds.Load() }

func (h *Hub) rebuild(ns string, version distribution.Version, in nsInputs) {
	h.builds.Add(1)
	next := map[types.NamespacedName]*built{}
	failed := map[types.NamespacedName]string{}
	merged := map[string]tkv1.RevocationListSpec{} // by selection: policies share a merge
	for name, tp := range in.policies {
		key := types.NamespacedName{Namespace: ns, Name: name}
		sel := selection(tp)
		revs, ok := merged[sel]
		if !ok {
			revs = mergedRevocations(tp, in.lists)
			merged[sel] = revs
		}
		snap, err := buildWith(tp, revs, in.configMaps)
		if err != nil {
			// Keep the last good snapshot: a policy that cannot be rendered now (a bad
			// JWKS) must not take revocations away from its sidecars.
			h.log.Error("Failed to build a snapshot; kept the last one", "tokenPolicy", key.String(), "err", err)
			failed[key] = err.Error()
			continue
		}
		snap.Token.Version = version
		b, err := encode(snap)
		if err == nil && len(b.full.plain) > h.maxSnapshotBytes {
			// No sidecar would accept it; keeping it would only cost every replica memory.
			err = fmt.Errorf("the snapshot is %d bytes, over the %d a sidecar accepts: revoke fewer entries for one policy", len(b.full.plain), h.maxSnapshotBytes)
		}
		if err != nil {
			h.log.Error("Failed to encode a snapshot; kept the last one", "tokenPolicy", key.String(), "err", err)
			failed[key] = err.Error()
			continue
		}
		next[key] = b
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for key, e := range h.entries {
		if key.Namespace == ns && in.policies[key.Name] == nil && !e.gone {
			e.gone = true
			close(e.changed)
			delete(h.entries, key)
		}
	}
	for key, why := range failed {
		h.setFailingLocked(key, why)
	}
	for key, b := range next {
		e := h.entries[key]
		if e == nil {
			e = &entry{changed: make(chan struct{})}
			h.entries[key] = e
		}
		if e.failing != "" {
			e.failing = ""
			close(e.changed)
			e.changed = make(chan struct{})
		}
		if e.cur != nil && e.cur.snap.Token.Digest == b.snap.Token.Digest {
			// Same content at a newer version (a status or metadata change): relabel,
			// waking nobody, since holders of this content have nothing to learn. A
			// sidecar starting from a bundle rendered at the newer version (its floor)
			// needs the newer label to accept it.
			if n := len(e.history); n > 0 && e.history[n-1] == e.cur {
				e.history[n-1] = b
			}
			e.cur = b
			continue
		}
		if n := len(e.history); n > 0 && e.history[n-1] == e.cur {
			// A past snapshot is only ever a delta's base: history keeps its content, not
			// its encodings (a 100 000-entry set is 9 MB plain per snapshot). Polls that
			// still hold the old one keep it alive until they have written it.
			e.history[n-1] = &built{snap: e.cur.snap}
		}
		e.cur = b
		e.history = append(e.history, b)
		if len(e.history) > historyLen {
			e.history = e.history[len(e.history)-historyLen:]
		}
		close(e.changed)
		e.changed = make(chan struct{})
		h.log.Debug("Built a snapshot", "tokenPolicy", key.String(), "version", b.snap.Token.String())
	}
}

// setFailingLocked records that key's build fails, waking its polls when that changes.
func (h *Hub) setFailingLocked(key types.NamespacedName, why string) {
	e := h.entries[key]
	if e == nil {
		if why == "" {
			return
		}
		e = &entry{changed: make(chan struct{})}
		h.entries[key] = e
	}
	if e.failing == why {
		return
	}
	e.failing = why
	close(e.changed)
	e.changed = make(chan struct{})
}

// current returns a policy's snapshot, a channel closed when it changes, and why its
// latest inputs could not be built. ready is false while the Hub has not synced; b and
// changed are nil for an unknown policy.
func (h *Hub) current(key types.NamespacedName) (b *built, hist []*built, changed <-chan struct{}, failing string, ready bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.synced {
		return nil, nil, nil, "", false
	}
	e := h.entries[key]
	if e == nil {
		return nil, nil, nil, "", true
	}
	return e.cur, e.history, e.changed, e.failing, true
}

func encode(s *distribution.Snapshot) (*built, error) {
	revs := s.Revocations
	m := &distribution.Message{
		Namespace: s.Namespace, Name: s.Name, Version: s.Token.String(),
		Policy: s.Policy, Keys: s.Keys, Revocations: &revs,
	}
	full, err := encodeMessage(m)
	if err != nil {
		return nil, err
	}
	return &built{snap: s, full: full, deltas: map[string]encoded{}}, nil
}

func encodeMessage(m *distribution.Message) (encoded, error) {
	plain, err := json.Marshal(m)
	if err != nil {
		return encoded{}, err
	}
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	_, _ = w.Write(plain)
	if err := w.Close(); err != nil {
		return encoded{}, err
	}
	return encoded{plain: plain, gz: gz.Bytes()}, nil
}

// delta returns the encoded delta from base to b, computed once per base.
func (b *built) delta(base *built) (encoded, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.deltas[base.snap.Token.Digest]; ok {
		return e, nil
	}
	added, removed := distribution.Diff(&base.snap.Revocations, &b.snap.Revocations)
	m := &distribution.Message{
		Namespace: b.snap.Namespace, Name: b.snap.Name, Version: b.snap.Token.String(),
		Policy: b.snap.Policy, Keys: b.snap.Keys,
		Delta: &distribution.Delta{Base: base.snap.Token.Digest, Added: added, Removed: removed},
	}
	e, err := encodeMessage(m)
	if err != nil {
		return encoded{}, err
	}
	b.deltas[base.snap.Token.Digest] = e
	return e, nil
}
