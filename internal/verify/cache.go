package verify

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCacheSize is how many verified tokens a Verifier remembers by default.
const DefaultCacheSize = 10000

// cache remembers verified tokens by SHA-256 of the raw token, so the token itself is never
// kept as a key. It is bounded and evicts with CLOCK: a hit only sets a reference bit under
// the read lock, so concurrent hits do not serialise on a list update as LRU would.
type cache struct {
	mu    sync.RWMutex
	index map[[32]byte]int32
	slots []slot
	free  []int32
	hand  int
	size  int

	hits, misses atomic.Uint64
}

type slot struct {
	sum    [32]byte
	claims *Claims
	key    *pinnedKey
	set    *KeySet // the set key belongs to: while it is current, key needs no lookup
	// The entry answers only while from <= now < until (unix nanoseconds): never before
	// nbf/iat minus skew, never at or after exp plus skew.
	from, until int64
	used        bool
	ref         uint32 // CLOCK reference bit, set atomically by readers
}

func newCache(size int) *cache {
	if size <= 0 {
		return nil
	}
	return &cache{index: make(map[[32]byte]int32, min(size, 1024)), size: size}
}

// get returns the entry for sum if it is within its validity window at now.
func (c *cache) get(sum *[32]byte, now int64) (*Claims, *pinnedKey, *KeySet, bool) {
	c.mu.RLock()
	i, ok := c.index[*sum]
	if !ok {
		c.mu.RUnlock()
		c.misses.Add(1)
		return nil, nil, nil, false
	}
	s := &c.slots[i]
	if now < s.from || now >= s.until {
		c.mu.RUnlock()
		c.misses.Add(1)
		return nil, nil, nil, false
	}
	if atomic.LoadUint32(&s.ref) == 0 {
		atomic.StoreUint32(&s.ref, 1) // skip the write when set: keeps the cache line shared
	}
	claims, key, set := s.claims, s.key, s.set
	c.mu.RUnlock()
	c.hits.Add(1)
	return claims, key, set, true
}

// put remembers a verified token, evicting when full.
func (c *cache) put(sum *[32]byte, claims *Claims, key *pinnedKey, set *KeySet, from, until, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.index[*sum]
	switch {
	case ok:
	case len(c.free) > 0:
		i = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
	case len(c.slots) < c.size:
		c.slots = append(c.slots, slot{})
		i = int32(len(c.slots) - 1)
	default:
		i = c.evict(now)
	}
	c.slots[i] = slot{sum: *sum, claims: claims, key: key, set: set, from: from, until: until, used: true}
	c.index[*sum] = i
}

// evict frees one slot: the first expired or unreferenced one after the hand, clearing
// reference bits as it passes (second chance). Called with mu held and every slot used.
func (c *cache) evict(now int64) int32 {
	for range 2 * len(c.slots) {
		i := c.hand
		c.hand = (c.hand + 1) % len(c.slots)
		s := &c.slots[i]
		if s.until <= now || s.ref == 0 {
			delete(c.index, s.sum)
			return int32(i)
		}
		s.ref = 0
	}
	// Unreachable: one full pass clears every bit. Evict at the hand regardless.
	i := c.hand
	delete(c.index, c.slots[i].sum)
	return int32(i)
}

// rebind points entries at the keys of a new KeySet and drops those whose key is gone or
// changed, so a swap frees memory at once. Verify also checks the key on every hit, which
// covers a verification that raced the swap and inserts afterwards.
func (c *cache) rebind(ks *KeySet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.slots {
		s := &c.slots[i]
		if !s.used {
			continue
		}
		if nk := ks.lookup(s.key.kid); nk != nil && nk.same(s.key) {
			s.key, s.set = nk, ks
			continue
		}
		delete(c.index, s.sum)
		c.slots[i] = slot{}
		c.free = append(c.free, int32(i))
	}
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.index)
}

// Bounds of the time range representable as int64 nanoseconds; beyond them times saturate.
var (
	minNanoTime = time.Unix(0, math.MinInt64)
	maxNanoTime = time.Unix(0, math.MaxInt64)
)

func unixNanos(t time.Time) int64 {
	switch {
	case t.Before(minNanoTime):
		return math.MinInt64
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}
