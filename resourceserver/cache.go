package resourceserver

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache remembers tokens that passed verification, so a client that
// sends the same token on every request pays for one signature check (or
// one introspection call) instead of one per request.
//
// Keys are SHA-256 digests of the raw token: the cache never holds a token
// itself, and a collision would need a second preimage. An entry lives no
// longer than the token's exp and the configured TTL.
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

	mu sync.RWMutex
	m  map[[sha256.Size]byte]cacheEntry
}

type cacheEntry struct {
	tok   *Token
	until time.Time
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: make(map[[sha256.Size]byte]cacheEntry)}
}

func (c *tokenCache) get(raw string, now time.Time) *Token {
	k := sha256.Sum256([]byte(raw))
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return nil
	}
	return e.tok
}

func (c *tokenCache) put(raw string, tok *Token, until, now time.Time) {
	k := sha256.Sum256([]byte(raw))
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, exists := c.m[k]; !exists && len(c.m) >= c.max {
		c.evictLocked(now)
	}
	c.m[k] = cacheEntry{tok: tok, until: until}
}

// evictLocked makes room for one entry in O(1) amortized time: it drops
// expired entries among the first few it meets and, failing that, one
// arbitrary entry (Go randomizes map iteration order).
func (c *tokenCache) evictLocked(now time.Time) {
	const scan = 32
	n := 0
	var victim [sha256.Size]byte
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
