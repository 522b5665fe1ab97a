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

// evictLocked makes room for one entry.
func (c *tokenCache) evictLocked(now time.Time) {
	evictOne(c.m, func(e cacheEntry) bool { return !now.Before(e.until) })
}

// evictOne makes room in m for one entry in O(1) amortized time: it drops
// expired entries among the first few it meets and, failing that, one
// arbitrary entry (Go randomizes map iteration order).
func evictOne[K comparable, V any](m map[K]V, expired func(V) bool) {
	const scan = 32
	n := 0
	var victim K
	dropped := false
	for k, v := range m {
		if expired(v) {
			delete(m, k)
			dropped = true
		} else if n == 0 {
			victim = k
		}
		if n++; n >= scan {
			break
		}
	}
	if !dropped {
		delete(m, victim)
	}
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// refusalCache remembers, for a few seconds, the tokens introspection
// refused or could not judge, so that a client repeating one bad token
// costs one introspection call, not one per request: an anonymous client
// must not spend the server's client credentials against the
// authorization server's rate limits.
//
// Entries are keyed by the token's SHA-256, which cannot collide in
// practice, so an entry holds no token at all and costs the same whatever
// the token's size. The digest (under a microsecond) is only paid in the
// introspection modes, next to a network call it may save. Its owner
// guards it; it is not safe for concurrent use on its own.
type refusalCache struct {
	max int
	m   map[[32]byte]refusal
}

type refusal struct {
	err   error // wraps ErrInvalidToken or ErrUnavailable; holds no token
	until time.Time
}

func (c *refusalCache) get(key [32]byte, now time.Time) error {
	if r, ok := c.m[key]; ok && now.Before(r.until) {
		return r.err
	}
	return nil
}

func (c *refusalCache) put(key [32]byte, err error, until, now time.Time) {
	if c.m == nil {
		c.m = make(map[[32]byte]refusal)
	}
	if _, exists := c.m[key]; !exists && len(c.m) >= c.max {
		evictOne(c.m, func(r refusal) bool { return !now.Before(r.until) })
	}
	c.m[key] = refusal{err: err, until: until}
}
