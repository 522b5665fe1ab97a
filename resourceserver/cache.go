package resourceserver

import (
	"hash/maphash"
	"sync"
	"time"
)

// tokenCache remembers tokens that passed verification, so a client that
// sends the same token on every request pays for one signature check (or
// one introspection call) instead of one per request.
//
// Entries are keyed by a 64-bit hash of the raw token (hash/maphash, with a
// random per-process seed, so keys cannot be predicted from outside), and a
// hit is confirmed by comparing the whole token, so a hash collision can
// only cost a miss, never admit another token. A cryptographic digest as
// the key would avoid keeping the token in the entry, but SHA-256 of a
// typical 800-byte token alone costs over 0.5 µs, most of the warm path's
// budget; the token stays in this process's memory either way, and the
// cache never logs or exposes it. An entry lives no longer than the token's
// exp and the configured TTL.
//
// The trade-off: within an entry's lifetime the token is not checked again.
// In ModeJWT that is the nature of JWTs anyway (a revoked JWT is valid until
// exp); the TTL also bounds how long a key withdrawn from the JWKS keeps
// its tokens working. In the introspection modes the TTL is
// Config.IntrospectionCacheTTL, which is how late a revocation can bite.
//
// It is safe for concurrent use.
type tokenCache struct {
	max int

	seed maphash.Seed

	mu sync.RWMutex
	m  map[uint64]cacheEntry
}

type cacheEntry struct {
	raw   string
	tok   *Token
	until time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, seed: maphash.MakeSeed(), m: make(map[uint64]cacheEntry)}
}

func (c *tokenCache) get(raw string, now time.Time) *Token {
	k := maphash.String(c.seed, raw)
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || e.raw != raw || !now.Before(e.until) {
		return nil
	}
	return e.tok
}

func (c *tokenCache) put(raw string, tok *Token, until, now time.Time) {
	k := maphash.String(c.seed, raw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, exists := c.m[k]; !exists && len(c.m) >= c.max {
		c.evictLocked(now)
	}
	// On a collision the newer token simply replaces the older one.
	c.m[k] = cacheEntry{raw: raw, tok: tok, until: until}
}

// evictLocked makes room for one entry in O(1) amortized time: it drops
// expired entries among the first few it meets and, failing that, one
// arbitrary entry (Go randomizes map iteration order).
func (c *tokenCache) evictLocked(now time.Time) {
	const scan = 32
	n := 0
	var victim uint64
	dropped := false
	for k, e := range c.m {
		if !now.Before(e.until) {
			delete(c.m, k)
			dropped = true
		} else if n == 0 {
			victim = k
		}
		if n++; n >= scan {
			break
		}
	}
	if !dropped {
		delete(c.m, victim)
	}
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
