package sidecar

import (
	"bytes"
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// retryAfterStale is the Retry-After of a request refused for want of word from the manager.
var retryAfterStale = []string{"5"}

// runDistribution subscribes until ctx is done (nothing without DistributionURL).
func (s *Sidecar) runDistribution(ctx context.Context) {
	if s.dist != nil {
		_ = s.dist.Run(ctx)
	}
}

// applySnapshot is the distribution client's Apply: it checks everything first, then
// switches policy, keys and revocations together. An error leaves the state as it was.
func (s *Sidecar) applySnapshot(snap *distribution.Snapshot) error {
	err := s.switchToSnapshot(snap)
	releaseAfterLargeLoad(len(snap.Revocations.Tokens) + len(snap.Revocations.Subjects))
	return err
}

func (s *Sidecar) switchToSnapshot(snap *distribution.Snapshot) error {
	tp := &tkv1.TokenPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: snap.Namespace, Name: snap.Name}, Spec: snap.Policy}
	p, err := s.checkPolicy(tp)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if _, err := verify.ParseKeySet(snap.Keys); err != nil {
		return fmt.Errorf("keys: %w", err)
	}
	set, err := jwks.Parse(snap.Keys)
	if err != nil {
		return fmt.Errorf("keys: %w", err) // unreachable: ParseKeySet parses with it
	}
	rl := &tkv1.RevocationList{Spec: snap.Revocations}
	if err := policy.ValidateRevocationList(rl); err != nil {
		return fmt.Errorf("revocations: %w", err)
	}
	revs := policy.Revocations(s.now(), rl)

	// pollMu first: no file load is under way, and none applies after this one.
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !s.streamed.Load()
	ownerChanged := !s.remoteByStream.Load()
	eng := s.engine.Load()
	sameSpec := eng != nil && bytes.Equal(p.spec, s.policySpec)
	if sameSpec {
		// The Verifier (and its cache) stays. Revocations before keys: a kid revoked in
		// this snapshot is refused from the moment before its key leaves.
		s.revs = revs
		eng.v.SetRevocations(revs)
		s.remoteByStream.Store(true)
		s.fileKeys = set.Keys
		s.applyKeysLocked()
	} else {
		oldKeys, oldRevs, oldOwner := s.fileKeys, s.revs, s.remoteByStream.Load()
		s.fileKeys, s.revs = set.Keys, revs
		s.remoteByStream.Store(true)
		if err := s.setPolicyLocked(p); err != nil { // one swap: new policy, keys, revocations
			s.fileKeys, s.revs = oldKeys, oldRevs
			s.remoteByStream.Store(oldOwner)
			return fmt.Errorf("policy: %w", err)
		}
		s.warnPlainHTTP(tp, p)
		go s.recheckTunnels()
	}
	if ownerChanged {
		s.forgetRemotesLocked() // the key set in force already leaves them out
	}
	s.streamed.Store(true)
	s.revocationsIncomplete.Store(nil) // a snapshot holds every revocation that applies
	s.metrics.revocations.Set(float64(revs.Len()))
	s.log.Info("Applied a snapshot from the distribution server", "version", snap.Token.String(),
		"keys", len(set.Keys), "revocations", revs.Len(), "policyChanged", !sameSpec, "first", first)
	if first {
		s.log.Info("The distribution server is the source of the policy, keys and revocations from now on; the bundle files are no longer applied")
	}
	if ownerChanged && !first {
		s.log.Info("Heard from the distribution server again; its snapshots carry the remote JWKS, own fetches paused")
	}
	return nil
}

// heardFromManager is the client's Heard: the manager answered, so it owns the remote
// JWKS again if a snapshot was applied.
func (s *Sidecar) heardFromManager(time.Time) {
	if s.streamed.Load() && !s.remoteByStream.Load() {
		s.updateRemoteOwner()
	}
}

// heardAt is when the manager last said the sidecar is current, or the start when never.
func (s *Sidecar) heardAt() time.Time {
	if t := s.dist.LastHeard(); !t.IsZero() {
		return t
	}
	return s.started
}

// updateRemoteOwner decides who fetches the remote JWKS: the manager while a snapshot was
// applied and it was heard within DistributionFallback, else the sidecar itself, and
// recomputes the key set when that changed.
func (s *Sidecar) updateRemoteOwner() {
	if s.dist == nil {
		return
	}
	s.mu.Lock()
	silent := s.now().Sub(s.heardAt())
	own := s.streamed.Load() && silent <= s.opts.DistributionFallback
	if own == s.remoteByStream.Load() {
		s.mu.Unlock()
		return
	}
	s.remoteByStream.Store(own)
	if own {
		s.forgetRemotesLocked()
	}
	s.applyKeysLocked()
	s.mu.Unlock()
	if own {
		s.log.Info("Heard from the distribution server again; its snapshots carry the remote JWKS, own fetches paused")
		return
	}
	s.log.Warn("No word from the distribution server; fetching the policy's remote JWKS itself until it answers",
		"silentFor", silent.Round(time.Second).String(), "fallbackAfter", s.opts.DistributionFallback.String())
	s.refreshDue()
}

// staleReason says why requests fail closed (spec.distribution.maxStaleness passed
// without word from the manager), or "" when they do not.
func (s *Sidecar) staleReason(eng *engine) string {
	if s.dist == nil || eng == nil || eng.maxStale <= 0 {
		return ""
	}
	since := s.now().Sub(s.heardAt())
	if since <= eng.maxStale {
		return ""
	}
	return fmt.Sprintf("no word from the distribution server for %s (maxStaleness %s)",
		since.Round(time.Second), eng.maxStale)
}

// checkDistribution runs at every PollInterval: the remote JWKS owner, and a log line when
// the sidecar starts or stops failing closed.
func (s *Sidecar) checkDistribution() {
	if s.dist == nil {
		return
	}
	s.updateRemoteOwner()
	why := s.staleReason(s.engine.Load())
	if stale := why != ""; stale != s.stale.Swap(stale) {
		if stale {
			s.log.Error("Failing closed: every request gets 503 until the distribution server answers", "reason", why)
		} else {
			s.log.Info("Heard from the distribution server again; serving")
		}
	}
}
