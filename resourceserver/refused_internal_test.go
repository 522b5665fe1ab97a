package resourceserver

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The remembered refusals are bounded however many distinct tokens are
// refused, and die at their deadline.
func TestRefusalCacheBoundsAndExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := refusalCache{max: 100}
	bad := errors.New("refused")
	key := func(i int) [32]byte { return sha256.Sum256([]byte(fmt.Sprint("token-", i))) }
	for i := range 1000 {
		c.put(key(i), bad, now.Add(time.Second), now)
		assert.LessOrEqual(t, len(c.m), 100)
	}
	assert.Equal(t, bad, c.get(key(999), now), "the newest entry is present")
	assert.Nil(t, c.get(key(999), now.Add(time.Second)), "an entry dies at its deadline")

	// Expired entries are dropped as new ones come.
	later := now.Add(time.Minute)
	c.put(key(1000), bad, later.Add(time.Second), later)
	assert.Less(t, len(c.m), 100, "room made from expired entries")
	assert.Equal(t, bad, c.get(key(1000), later))
}
