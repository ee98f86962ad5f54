package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
)

// markerPrefix names the jti each measured change adds: markerPrefix + the round number.
const markerPrefix = "bench-change-"

// held is what a subscriber enforces: the snapshot and the highest change round in it.
type held struct {
	snap  *distribution.Snapshot
	round int
	delta bool // it came as a delta
}

// subscriber is one simulated sidecar: its own TLS connection (its own Transport), its own
// token, and the long-poll loop a sidecar runs.
type subscriber struct {
	id     int
	ns     string
	url    string // without the query
	token  string
	client *http.Client
	b      *bench

	cur      atomic.Pointer[held]
	inflight atomic.Bool // a poll has been sent and not answered yet
}

func newSubscriber(id int, ns, base, policy, token string, pool *x509.CertPool, b *bench) *subscriber {
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
		DisableCompression:  true, // Accept-Encoding is set by hand, so the wire bytes can be counted
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &subscriber{
		id: id, ns: ns, url: base + distribution.Path + ns + "/" + policy, token: token,
		client: &http.Client{Transport: tr, Timeout: 60 * time.Second}, b: b,
	}
}

// run polls until ctx ends. first is released after the first answer, whatever it was, so
// the caller can bound how many first contacts (TLS handshake + TokenReview) run at once.
func (s *subscriber) run(ctx context.Context, first func()) {
	defer s.client.CloseIdleConnections()
	released := false
	release := func() {
		if !released {
			released = true
			first()
		}
	}
	defer release()
	for ctx.Err() == nil {
		retry := s.poll(ctx)
		release()
		if retry > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
		}
	}
}

// poll sends one long poll and applies its answer; it returns how long to wait before the
// next one (0: at once).
func (s *subscriber) poll(ctx context.Context) time.Duration {
	q := "timeout=30"
	h := s.cur.Load()
	if h != nil {
		q += "&version=" + h.snap.Token.String()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"?"+q, nil)
	if err != nil {
		s.b.count(&s.b.errors, err)
		return time.Second
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Accept-Encoding", "gzip")
	s.inflight.Store(true)
	resp, err := s.client.Do(req)
	s.inflight.Store(false)
	if err != nil {
		if ctx.Err() == nil {
			s.b.count(&s.b.errors, err)
		}
		return time.Second
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	received := time.Now()
	s.b.wireBytes.Add(int64(len(raw)))
	if err != nil {
		s.b.count(&s.b.errors, err)
		return time.Second
	}
	switch resp.StatusCode {
	case http.StatusOK:
		s.b.ok.Add(1)
	case http.StatusNotModified:
		s.b.notModified.Add(1)
		return 0
	case http.StatusServiceUnavailable:
		s.b.count(&s.b.unavailable, fmt.Errorf("503 %s", strings.TrimSpace(string(raw))))
		return retryAfter(resp)
	default:
		s.b.count(&s.b.errors, fmt.Errorf("%d %s", resp.StatusCode, strings.TrimSpace(string(raw))))
		return time.Second
	}
	next, err := s.b.resolve(raw, resp.Header.Get("Content-Encoding") == "gzip", h)
	if err != nil {
		// A delta against something this subscriber does not hold: ask for a full snapshot.
		s.b.count(&s.b.resolveErrors, err)
		s.cur.Store(nil)
		return 0
	}
	if h != nil && !distribution.Accepts(&h.snap.Token, next.snap.Token) {
		s.b.notAccepted.Add(1)
		return 0
	}
	s.cur.Store(next)
	s.b.applied(s, next, len(raw), received, time.Now())
	return 0
}

func retryAfter(resp *http.Response) time.Duration {
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	return time.Second
}

// resolve turns an answer into what a subscriber holds: gunzip, decode,
// distribution.Resolve (which validates the digest and the keys), and the change round the
// snapshot includes. With sharing on, an answer whose bytes were resolved before against
// the same base is resolved once: 1000 copies of a 100 000-entry set would not fit in this
// process, and 1000 sorts and digests of it would measure this program's CPU, not the push.
func (b *bench) resolve(raw []byte, gz bool, h *held) (*held, error) {
	var base *distribution.Snapshot
	baseDigest := ""
	if h != nil {
		base, baseDigest = h.snap, h.snap.Token.Digest
	}
	if !b.share.Load() {
		return resolveBytes(raw, gz, base)
	}
	key := sha256.Sum256(append([]byte(baseDigest+"\x00"), raw...))
	b.cacheMu.Lock()
	f := b.cache[key]
	if f == nil {
		f = &future{done: make(chan struct{})}
		b.cache[key] = f
		b.cacheOrder = append(b.cacheOrder, key)
		if len(b.cacheOrder) > 16 {
			delete(b.cache, b.cacheOrder[0])
			b.cacheOrder = b.cacheOrder[1:]
		}
		b.cacheMu.Unlock()
		f.h, f.err = resolveBytes(raw, gz, base)
		close(f.done)
	} else {
		b.cacheMu.Unlock()
		<-f.done
	}
	return f.h, f.err
}

type future struct {
	done chan struct{}
	h    *held
	err  error
}

func resolveBytes(raw []byte, gz bool, base *distribution.Snapshot) (*held, error) {
	body := raw
	if gz {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, err
		}
		if body, err = io.ReadAll(zr); err != nil {
			return nil, err
		}
	}
	var m distribution.Message
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	snap, err := distribution.Resolve(&m, base)
	if err != nil {
		return nil, err
	}
	return &held{snap: snap, round: roundOf(snap), delta: m.Delta != nil}, nil
}

// roundOf is the highest change round whose marker jti the snapshot revokes (0: none).
func roundOf(s *distribution.Snapshot) int {
	best := 0
	for _, t := range s.Revocations.Tokens {
		if r, ok := strings.CutPrefix(t.JTI, markerPrefix); ok {
			if n, err := strconv.Atoi(r); err == nil && n > best {
				best = n
			}
		}
	}
	return best
}

// round is one measured change: per subscriber, the time from just before the API write
// of its namespace to the moment it applied a snapshot with the change.
type round struct {
	n       int
	start   map[string]*atomic.Int64 // namespace → unix nanoseconds just before its write
	applied []atomic.Int64           // by subscriber id, nanoseconds after start; 0: not yet
	recv    []atomic.Int64           // the same, when the answer's body was read
	count   atomic.Int64
	all     chan struct{}
	once    sync.Once
	full    atomic.Int64 // answers that delivered it: full snapshots
	deltas  atomic.Int64 // and deltas
	sizeMu  sync.Mutex
	sizes   map[int]int // wire size of the delivering answer → how many
}

func (b *bench) applied(s *subscriber, h *held, wire int, received, at time.Time) {
	r := b.round.Load()
	if r == nil || h.round < r.n {
		return
	}
	st := r.start[s.ns]
	if st == nil || st.Load() == 0 {
		return
	}
	start := time.Unix(0, st.Load())
	if !r.applied[s.id].CompareAndSwap(0, int64(max(at.Sub(start), 1))) {
		return
	}
	r.recv[s.id].Store(int64(max(received.Sub(start), 1)))
	if h.delta {
		r.deltas.Add(1)
	} else {
		r.full.Add(1)
	}
	r.sizeMu.Lock()
	r.sizes[wire]++
	r.sizeMu.Unlock()
	if r.count.Add(1) == int64(len(r.applied)) {
		r.once.Do(func() { close(r.all) })
	}
}

func (b *bench) count(c *atomic.Int64, err error) {
	if c.Add(1) <= 3 || b.verbose {
		b.logf("subscriber: %v", err)
	}
}
