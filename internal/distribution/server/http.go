package server

import (
	"crypto/sha256"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/tokenkeeper/tokenkeeper/internal/distribution"
)

// Limits bound what subscribers can hold of the server.
type Limits struct {
	MaxSubscribers     int           // long polls held at once, in total
	MaxPerNamespace    int           // long polls held at once per namespace
	MaxPerToken        int           // long polls held at once with one bearer token (a sidecar holds one)
	DefaultHold        time.Duration // how long a poll is held when nothing changes
	MaxHold            time.Duration // the most a client may ask for with ?timeout=
	WriteTimeout       time.Duration // to write one answer: a subscriber that does not read is cut off
	MaxRequestURIBytes int
}

// DefaultLimits suit 10 000 sidecars per replica, all of one namespace if need be (one
// large Deployment); no namespace can take more than half of a replica's polls.
var DefaultLimits = Limits{
	MaxSubscribers: 20000, MaxPerNamespace: 10000, MaxPerToken: 4,
	DefaultHold: 30 * time.Second, MaxHold: 60 * time.Second,
	WriteTimeout: 10 * time.Second, MaxRequestURIBytes: 1024,
}

// Handler serves GET /v1/snapshots/{namespace}/{policy}?version=<token>: at once when the
// Hub has a snapshot the caller should apply, else when one appears, else 304 at the hold
// timeout. Authorize decides who may read a namespace.
type Handler struct {
	Hub       *Hub
	Authorize func(r *http.Request, namespace string) (status int, reason string)
	Limits    Limits

	total    atomic.Int64
	mu       sync.Mutex
	perNS    map[string]int
	perToken map[[sha256.Size]byte]int
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	lim := h.Limits
	if r.Method != http.MethodGet {
		http.Error(w, "only GET", http.StatusMethodNotAllowed)
		return
	}
	if len(r.RequestURI) > lim.MaxRequestURIBytes {
		http.Error(w, "request URI too long", http.StatusRequestURITooLong)
		return
	}
	if r.ContentLength != 0 {
		http.Error(w, "a snapshot request has no body", http.StatusRequestEntityTooLarge)
		return
	}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, distribution.Path), "/")
	if !strings.HasPrefix(r.URL.Path, distribution.Path) || len(parts) != 2 || parts[0] == "" || parts[1] == "" {
		http.NotFound(w, r)
		return
	}
	key := types.NamespacedName{Namespace: parts[0], Name: parts[1]}
	if h.Authorize != nil {
		if status, reason := h.Authorize(r, key.Namespace); status != http.StatusOK {
			switch status {
			case http.StatusUnauthorized:
				w.Header().Set("WWW-Authenticate", `Bearer realm="tokenkeeper-distribution"`)
			case http.StatusServiceUnavailable:
				w.Header().Set("Retry-After", "1")
			}
			http.Error(w, reason, status)
			return
		}
	}
	held, err := distribution.ParseToken(r.URL.Query().Get("version"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	hold := lim.DefaultHold
	if t := r.URL.Query().Get("timeout"); t != "" {
		secs, err := strconv.Atoi(t)
		if err != nil || secs < 0 {
			http.Error(w, "timeout: want whole seconds", http.StatusBadRequest)
			return
		}
		hold = min(time.Duration(secs)*time.Second, lim.MaxHold)
	}
	// Keyed by the credential, so one token (one sidecar) cannot hold a namespace's share.
	tok := sha256.Sum256([]byte(r.Header.Get("Authorization")))
	if !h.acquire(key.Namespace, tok) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "too many subscribers", http.StatusServiceUnavailable)
		return
	}
	defer h.release(key.Namespace, tok)

	timer := time.NewTimer(hold)
	defer timer.Stop()
	for {
		cur, hist, changed, failing, ready := h.Hub.current(key)
		switch {
		case !ready:
			w.Header().Set("Retry-After", "1")
			http.Error(w, "caches have not synced yet", http.StatusServiceUnavailable)
			return
		case cur == nil && changed == nil:
			http.Error(w, "no TokenPolicy "+key.String(), http.StatusNotFound)
			return
		case cur != nil && distribution.Accepts(&held, cur.snap.Token):
			h.write(w, r, cur, hist, held) // the last good one is still newer than the caller's
			return
		case failing != "":
			// Not "nothing newer": the policy changed and this replica cannot render it,
			// so the caller is not current (its maxStaleness counts on).
			w.Header().Set("Retry-After", "5")
			http.Error(w, "the policy's snapshot cannot be built: "+failing, http.StatusServiceUnavailable)
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			w.WriteHeader(http.StatusNotModified)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (h *Handler) write(w http.ResponseWriter, r *http.Request, cur *built, hist []*built, held distribution.Token) {
	body := cur.full
	if held.Digest != "" && len(cur.snap.Revocations.Tokens)+len(cur.snap.Revocations.Subjects) >= DeltaMinEntries {
		for _, b := range hist {
			if b.snap.Token.Digest == held.Digest {
				if d, err := cur.delta(b); err == nil {
					body = d
				}
				break
			}
		}
	}
	// A subscriber that does not read is cut off here; the others never wait for it.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.Limits.WriteTimeout))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	data := body.plain
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		data = body.gz
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}

// Subscribers is how many polls are held open now.
func (h *Handler) Subscribers() int64 { return h.total.Load() }

func (h *Handler) acquire(ns string, tok [sha256.Size]byte) bool {
	if h.total.Add(1) > int64(h.Limits.MaxSubscribers) {
		h.total.Add(-1)
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.perNS == nil {
		h.perNS, h.perToken = map[string]int{}, map[[sha256.Size]byte]int{}
	}
	if h.perNS[ns] >= h.Limits.MaxPerNamespace || (h.Limits.MaxPerToken > 0 && h.perToken[tok] >= h.Limits.MaxPerToken) {
		h.total.Add(-1)
		return false
	}
	h.perNS[ns]++
	h.perToken[tok]++
	return true
}

func (h *Handler) release(ns string, tok [sha256.Size]byte) {
	h.total.Add(-1)
	h.mu.Lock()
	if h.perNS[ns]--; h.perNS[ns] <= 0 {
		delete(h.perNS, ns)
	}
	if h.perToken[tok]--; h.perToken[tok] <= 0 {
		delete(h.perToken, tok)
	}
	h.mu.Unlock()
}
