package verify

import (
	"encoding/base64"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCacheSize is how many verified tokens a Verifier remembers by default.
const DefaultCacheSize = 10000

// DefaultCacheBytes bounds the verified-token cache by the size of what it holds, as
// entryCost counts it, as well as by entries: DefaultCacheSize tokens of ordinary size fit
// (about 15 MiB), while at MaxTokenBytes-sized tokens DefaultCacheSize entries would hold
// some 60 MiB and a flood of distinct large tokens could exhaust a sidecar.
const DefaultCacheBytes = 16 << 20

// cache remembers verified tokens by SHA-256 of the raw token, so the token itself is never
// kept as a key. It is bounded by entries and by bytes and evicts with CLOCK: a hit only
// sets a reference bit under the read lock, so concurrent hits do not serialise on a list
// update as LRU would. An entry is keyed by its canonical spelling (low-s for ECDSA) and
// may have one alias, its high-s twin, so both spellings hit without a second entry.
type cache struct {
	mu       sync.RWMutex
	index    map[[32]byte]int32
	slots    []slot
	free     []int32
	hand     int
	size     int
	bytes    int64 // sum of the cost of used slots
	maxBytes int64

	hits, misses atomic.Uint64
}

type slot struct {
	sum      [32]byte
	alias    [32]byte // the high-s twin's sum, when hasAlias
	hasAlias bool
	cost     int64
	claims   *Claims
	key      *pinnedKey
	set      *KeySet // the set key belongs to: while it is current, key needs no lookup
	// The entry answers only while from <= now < until (unix nanoseconds): never before
	// nbf/iat minus skew, never at or after exp plus skew.
	from, until int64
	used        bool
	ref         uint32 // CLOCK reference bit, set atomically by readers
}

func newCache(size int, maxBytes int64) *cache {
	if size <= 0 {
		return nil
	}
	if maxBytes <= 0 {
		maxBytes = DefaultCacheBytes
	}
	return &cache{index: make(map[[32]byte]int32, min(size, 1024)), size: size, maxBytes: maxBytes}
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

// entryCost is what an entry for raw is counted as against maxBytes: its decoded payload,
// which the parsed claims hold about once over, plus what every entry costs whatever its
// size (the claims map and struct, the slot, the index keys). Only the SHA-256 of raw is
// kept, not raw. Measured: 1.5 KB of heap per entry for a 400-byte token, 6.8 KB for a
// 7 KB one; both count a little more.
func entryCost(raw string) int64 {
	first := strings.IndexByte(raw, '.')
	last := strings.LastIndexByte(raw, '.')
	return entryOverhead + int64(base64.RawURLEncoding.DecodedLen(last-first-1))
}

const entryOverhead = 1536

// put remembers a verified token under sum, its canonical spelling, and alias (nil
// unless the token was the high-s twin of sum), evicting while over either bound. A token
// costing more than the whole budget is not cached.
func (c *cache) put(sum, alias *[32]byte, claims *Claims, key *pinnedKey, set *KeySet, from, until, now, cost int64) {
	if cost > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.index[*sum]
	if ok {
		c.bytes -= c.slots[i].cost
		c.slots[i].cost = 0 // not evicted below while being refilled
	}
	for c.bytes+cost > c.maxBytes {
		j := c.evict(now, i, ok)
		c.release(j)
	}
	switch {
	case ok:
	case len(c.free) > 0:
		i = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
	case len(c.slots) < c.size:
		c.slots = append(c.slots, slot{})
		i = int32(len(c.slots) - 1)
	default:
		i = c.evict(now, -1, false)
		c.unindex(i)
		c.bytes -= c.slots[i].cost
	}
	old := c.slots[i]
	c.slots[i] = slot{sum: *sum, claims: claims, key: key, set: set, from: from, until: until, cost: cost, used: true}
	c.bytes += cost
	c.index[*sum] = i
	switch {
	case ok && old.hasAlias:
		c.slots[i].alias, c.slots[i].hasAlias = old.alias, true
	case alias != nil:
		if j, taken := c.index[*alias]; !taken || j == i {
			c.slots[i].alias, c.slots[i].hasAlias = *alias, true
			c.index[*alias] = i
		}
	}
}

// evict picks one used slot to reuse or free: the first expired or unreferenced one after
// the hand, clearing reference bits as it passes (second chance). keep, when skip is set,
// is never picked. Called with mu held and at least one other slot used.
func (c *cache) evict(now int64, keep int32, skip bool) int32 {
	for range 2 * len(c.slots) {
		i := c.hand
		c.hand = (c.hand + 1) % len(c.slots)
		s := &c.slots[i]
		if !s.used || (skip && int32(i) == keep) {
			continue
		}
		if s.until <= now || s.ref == 0 {
			return int32(i)
		}
		s.ref = 0
	}
	panic("verify: cache eviction found no used slot") // one pass clears every bit
}

// unindex removes slot i's sums from the index.
func (c *cache) unindex(i int32) {
	s := &c.slots[i]
	delete(c.index, s.sum)
	if s.hasAlias {
		delete(c.index, s.alias)
	}
}

// release empties used slot i and puts it on the free list.
func (c *cache) release(i int32) {
	c.unindex(i)
	c.bytes -= c.slots[i].cost
	c.slots[i] = slot{}
	c.free = append(c.free, i)
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
		c.release(int32(i))
	}
}

// len is the number of entries; an alias is not one.
func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.slots) - len(c.free)
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
