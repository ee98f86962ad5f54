package sidecar

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"runtime/debug"
	"slices"
	"time"

	tkv1 "github.com/tokenkeeper/tokenkeeper/api/v1alpha1"
	"github.com/tokenkeeper/tokenkeeper/internal/jwks"
	"github.com/tokenkeeper/tokenkeeper/internal/policy"
	"github.com/tokenkeeper/tokenkeeper/internal/verify"
)

// maxFileBytes bounds what is read of a watched file: far above a ConfigMap's 1 MiB, low
// enough that a wrong path (a device, a log) cannot exhaust memory.
const maxFileBytes = 32 << 20

// rehashEvery: a file whose size and modification time look unchanged is still read and
// hashed every this many polls, in case it was rewritten in place with its mtime kept.
const rehashEvery = 10

// largeLoadEntries: after parsing a revocation set this large, the garbage it left (the
// decoded document, several times the set) is handed back to the OS at once instead of
// by the background scavenger over minutes: 100 000 entries otherwise kept a sidecar at
// 96 to 135 MiB of RSS, inside a 128 MiB limit.
const largeLoadEntries = 10000

// approxEntryBytes is about what one revocation takes in a file (a jti, an issuer, a date).
const approxEntryBytes = 80

func releaseAfterLargeLoad(entries int) {
	if entries >= largeLoadEntries {
		debug.FreeOSMemory()
	}
}

// errMissing is the error of a required file that does not exist.
var errMissing = errors.New("file is missing")

// watchedFile is one polled file and the state last applied from it.
type watchedFile struct {
	kind string // filePolicy, fileJWKS, fileRevocations
	path string // empty: not configured, never polled
	// load parses and applies the file's content; data is nil when the file is absent
	// (present false) or unreadable (readErr set). It returns log attributes on success.
	load     func(data []byte, present bool, readErr error) ([]any, error)
	applied  bool // a good state was applied at least once
	observed bool
	state    [32]byte // content hash, or a hash naming absence or the read error
	size     int64
	mod      time.Time
	polls    int
	// ignored: a change after the stream took over was logged (guarded by pollMu).
	ignored bool
}

var absentState = sha256.Sum256([]byte("\x00absent"))

// pollFiles checks every file and applies those whose content changed.
func (s *Sidecar) pollFiles() {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	for _, f := range s.files {
		if f.path == "" || f.ignored {
			continue
		}
		data, present, readErr, changed := f.check()
		if !changed {
			continue
		}
		if s.streamed.Load() {
			// The stream's snapshots are newer than any bundle the kubelet syncs.
			f.ignored = true
			s.log.Debug("Ignored a change of the "+f.kind+" file and will ignore the next ones: the distribution server's snapshots are the source now", "file", f.path)
			continue
		}
		attrs, err := f.load(data, present, readErr)
		if err != nil {
			s.metrics.reload(f.kind, false)
			if f.applied {
				s.log.Error("Rejected the "+f.kind+" file; kept the last good one", "file", f.path, "err", err)
			} else {
				s.log.Error("Rejected the "+f.kind+" file; none loaded yet, retrying at every change", "file", f.path, "err", err)
			}
			continue
		}
		f.applied = true
		s.metrics.reload(f.kind, true)
		s.log.Info("Loaded the "+f.kind+" file", append([]any{"file", f.path}, attrs...)...)
	}
}

// check reads the file when it may have changed and reports whether its state differs
// from the last one seen (applied or rejected alike: a bad file is reported once, not at
// every poll). Paths are resolved afresh each time, following the kubelet's symlink swaps.
func (f *watchedFile) check() (data []byte, present bool, readErr error, changed bool) {
	f.polls++
	fi, err := os.Stat(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, false, nil, f.transition(absentState)
	case err != nil:
		return nil, false, err, f.transition(sha256.Sum256([]byte("\x00error " + err.Error())))
	case f.observed && f.state != absentState && fi.Size() == f.size && fi.ModTime().Equal(f.mod) &&
		f.polls%rehashEvery != 0:
		return nil, false, nil, false
	}
	data, err = readFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil, f.transition(absentState)
	}
	if err != nil {
		return nil, false, err, f.transition(sha256.Sum256([]byte("\x00error " + err.Error())))
	}
	// Stat before read: a write in between changes the next stat, which reads again.
	f.size, f.mod = fi.Size(), fi.ModTime()
	return data, true, nil, f.transition(sha256.Sum256(data))
}

func (f *watchedFile) transition(state [32]byte) bool {
	if f.observed && f.state == state {
		return false
	}
	f.observed, f.state = true, state
	return true
}

func readFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxFileBytes)
	}
	return data, nil
}

// loadJWKS applies the JWKS file. It is all or nothing: one bad key rejects the file.
func (s *Sidecar) loadJWKS(data []byte, present bool, readErr error) ([]any, error) {
	switch {
	case readErr != nil:
		return nil, readErr
	case !present:
		return nil, errMissing
	}
	if _, err := verify.ParseKeySet(data); err != nil {
		return nil, err
	}
	set, err := jwks.Parse(data)
	if err != nil {
		return nil, err // unreachable: ParseKeySet parses with it
	}
	effective := s.setFileKeys(set.Keys)
	return []any{"keys", len(set.Keys), "effectiveKeys", effective}, nil
}

// loadRevocations applies the revocations file. A file that never existed revokes nothing;
// one that disappears after it was loaded keeps its revocations (failing open would let
// revoked tokens back in), as a malformed one does.
func (s *Sidecar) loadRevocations(data []byte, present bool, readErr error) ([]any, error) {
	switch {
	case readErr != nil:
		return nil, readErr
	case !present && s.revocationsLoaded:
		return nil, errMissing
	case !present:
		s.setRevocations(nil)
		return []any{"entries", 0, "absent", true}, nil
	}
	rl, err := policy.ParseRevocationList(data)
	defer releaseAfterLargeLoad(len(data) / approxEntryBytes)
	if err != nil {
		return nil, err
	}
	if err := policy.ValidateRevocationList(rl); err != nil {
		return nil, err
	}
	r := policy.Revocations(s.now(), rl)
	s.setRevocations(r)
	s.revocationsLoaded = true
	// A file marked incomplete is applied (every revocation it holds counts) but does not
	// make the sidecar ready: tokens it omits would pass.
	if missing, ok := rl.Annotations[policy.AnnotationRevocationsIncomplete]; ok {
		s.revocationsIncomplete.Store(&missing)
		s.log.Warn("Loaded an incomplete revocations file; not ready until the complete set arrives", "file", s.opts.RevocationsFile, "incomplete", missing)
		return []any{"entries", r.Len(), "incomplete", missing}, nil
	}
	s.revocationsIncomplete.Store(nil)
	return []any{"entries", r.Len()}, nil
}

// loadPolicy applies the policy file: a new Verifier, and the remote JWKS it names.
func (s *Sidecar) loadPolicy(data []byte, present bool, readErr error) ([]any, error) {
	switch {
	case readErr != nil:
		return nil, readErr
	case !present:
		return nil, errMissing
	}
	tp, err := policy.ParseTokenPolicy(data)
	if err != nil {
		return nil, err
	}
	if want := s.opts.PolicyName; want != "" && tp.Name != "" && tp.Name != want {
		// The bundle is rendered for one policy; another name means a wrong mount. The
		// file still states what to enforce, so enforce it, loudly.
		s.log.Warn("Loaded a policy with another name than expected", "policy", tp.Name, "expected", want)
	}
	p, err := s.checkPolicy(tp)
	if err != nil {
		return nil, err
	}
	s.warnPlainHTTP(tp, p)
	if err := s.setPolicy(p); err != nil {
		return nil, err
	}
	return []any{"policy", tp.Name, "issuer", p.cfg.Issuer, "remoteJWKS", len(p.uris)}, nil
}

func (s *Sidecar) warnPlainHTTP(tp *tkv1.TokenPolicy, p loadedPolicy) {
	for _, i := range p.plainHTTP {
		s.log.Warn("Fetching a JWKS over plain http: anyone on the network path can substitute keys",
			"field", fmt.Sprintf("spec.trustedKeys[%d].jwksURI", i), "uri", tp.Spec.TrustedKeys[i].JWKSURI)
	}
}

// checkPolicy turns a TokenPolicy (from the file or a snapshot) into what setPolicy applies.
func (s *Sidecar) checkPolicy(tp *tkv1.TokenPolicy) (loadedPolicy, error) {
	cfg, err := policy.Config(tp)
	if err != nil {
		return loadedPolicy{}, err
	}
	p := loadedPolicy{cfg: cfg}
	for i, tk := range tp.Spec.TrustedKeys {
		if tk.JWKSURI == "" {
			continue // signingKeyRef: its keys arrive in the JWKS file
		}
		if err := checkJWKSURI(tk.JWKSURI); err != nil {
			return loadedPolicy{}, fmt.Errorf("spec.trustedKeys[%d].jwksURI: %w", i, err)
		}
		if jwks.PlainHTTP(tk.JWKSURI) {
			p.plainHTTP = append(p.plainHTTP, i)
		}
		if !slices.Contains(p.uris, tk.JWKSURI) {
			p.uris = append(p.uris, tk.JWKSURI)
		}
	}
	if d := tp.Spec.Distribution; d != nil && d.MaxStaleness != nil {
		if d.MaxStaleness.Duration <= 0 {
			return loadedPolicy{}, fmt.Errorf("spec.distribution.maxStaleness %s: must be positive", d.MaxStaleness.Duration)
		}
		p.maxStale = d.MaxStaleness.Duration
	}
	if p.spec, err = json.Marshal(tp.Spec); err != nil {
		return loadedPolicy{}, err
	}
	return p, nil
}

func checkJWKSURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}
