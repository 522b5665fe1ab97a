package pgstate_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup/pgstate"
)

var _ govern.RefusalMemory = (*pgstate.Refusals)(nil)

func tokenAt(sub, client, jti string, iat time.Time) *resourceserver.Token {
	return &resourceserver.Token{Issuer: "https://as", Subject: sub, ClientID: client, JTI: jti, Claims: map[string]any{"iat": float64(iat.Unix())}}
}

// explain is Explain that must not fail.
func explain(t *testing.T, m govern.RefusalMemory, tok *resourceserver.Token, lacking ...string) bool {
	t.Helper()
	ok, err := m.Explain(t.Context(), tok, lacking)
	require.NoError(t, err)
	return ok
}

// The Postgres memory answers as govern's own in-memory one, case by
// case: the two run side by side on the same calls.
func TestRefusalsLikeMemory(t *testing.T) {
	_, a, _ := openPair(t)
	const ttl = 2 * time.Second
	memories := map[string]govern.RefusalMemory{
		"memory":   govern.NewRefusalMemory(100, ttl),
		"postgres": a.Refusals(100, ttl),
	}
	for name, m := range memories {
		t.Run(name, func(t *testing.T) {
			ctx := t.Context()
			now := time.Now()
			first := tokenAt("alice", "c", "j1", now)
			require.NoError(t, m.Remember(ctx, first, []string{"s"}))
			assert.False(t, explain(t, m, first, "s"), "the challenged token itself")
			assert.False(t, explain(t, m, tokenAt("alice", "other", "j2", now), "s"), "another client")
			assert.False(t, explain(t, m, tokenAt("bob", "c", "j2", now), "s"), "another user")
			assert.False(t, explain(t, m, tokenAt("alice", "c", "j2", now.Add(-time.Hour)), "s"), "a token issued before the challenge")
			assert.False(t, explain(t, m, tokenAt("alice", "c", "j2", now), "s", "t"), "a scope never challenged")
			noIAT := &resourceserver.Token{Issuer: "https://as", Subject: "alice", ClientID: "c", JTI: "j2"}
			assert.False(t, explain(t, m, noIAT, "s"), "a token without iat")
			assert.True(t, explain(t, m, tokenAt("alice", "c", "j2", now), "s"), "a newer token still lacks it")
			assert.False(t, explain(t, m, tokenAt("alice", "c", "j3", now), "s"), "answered once")

			// Without jti, tokens are told apart by iat.
			noJTI := tokenAt("carol", "c", "", now.Add(-2*time.Second))
			require.NoError(t, m.Remember(ctx, noJTI, []string{"s"}))
			assert.False(t, explain(t, m, tokenAt("carol", "c", "", now.Add(-2*time.Second)), "s"), "the same iat: the same token")
			assert.True(t, explain(t, m, tokenAt("carol", "c", "", now), "s"))

			// Two scopes challenged; a newer token holding one forgets it.
			require.NoError(t, m.Remember(ctx, first, []string{"s", "t"}))
			require.NoError(t, m.Forget(ctx, tokenAt("alice", "c", "j4", now), []string{"t"}))
			assert.False(t, explain(t, m, tokenAt("alice", "c", "j5", now), "s", "t"), "t was forgotten")
			assert.True(t, explain(t, m, tokenAt("alice", "c", "j5", now), "s"), "s was not")

			require.NoError(t, m.Remember(ctx, first, []string{"s"}))
			time.Sleep(ttl)
			assert.False(t, explain(t, m, tokenAt("alice", "c", "j6", time.Now()), "s"), "lapsed")
		})
	}
}

// Two replicas on one database share the challenges: the client signs in
// again and its next call lands on the other replica.
func TestRefusalsAcrossReplicas(t *testing.T) {
	_, a, b := openPair(t)
	ra, rb := a.Refusals(0, 0), b.Refusals(0, 0)
	ctx := t.Context()
	now := time.Now()

	require.NoError(t, ra.Remember(ctx, tokenAt("alice", "c", "j1", now), []string{"crm.deals.read"}))
	assert.True(t, explain(t, rb, tokenAt("alice", "c", "j2", now), "crm.deals.read"), "B explains A's challenge")
	assert.False(t, explain(t, ra, tokenAt("alice", "c", "j3", now), "crm.deals.read"), "and A knows it was answered")

	// A token that holds the scope, on B, forgets A's challenge: B has
	// not read the list of challenged users yet, so it asks.
	require.NoError(t, ra.Remember(ctx, tokenAt("alice", "c", "j1", now), []string{"crm.deals.read"}))
	require.NoError(t, rb.Forget(ctx, tokenAt("alice", "c", "j2", now), []string{"crm.deals.read"}))
	assert.False(t, explain(t, ra, tokenAt("alice", "c", "j3", now), "crm.deals.read"), "forgotten on B, for A too")

	// B has read the list (no challenge of bob): A's newer challenge
	// reaches B's Forget within a second.
	require.NoError(t, ra.Remember(ctx, tokenAt("bob", "c", "j1", now), []string{"crm.deals.read"}))
	assert.Eventually(t, func() bool {
		require.NoError(t, rb.Forget(ctx, tokenAt("bob", "c", "j2", now), []string{"crm.deals.read"}))
		return !explain(t, ra, tokenAt("bob", "c", "j3", now), "crm.deals.read") // answered, or forgotten
	}, 5*time.Second, 100*time.Millisecond)
	require.NoError(t, ra.Remember(ctx, tokenAt("bob", "c", "j1", now), []string{"crm.deals.read"}))
	time.Sleep(1100 * time.Millisecond) // forgetHint
	require.NoError(t, rb.Forget(ctx, tokenAt("bob", "c", "j2", now), []string{"crm.deals.read"}))
	assert.False(t, explain(t, ra, tokenAt("bob", "c", "j3", now), "crm.deals.read"), "B's list of challenged users is at most a second old")
}

// What one user, and all users, can make the database hold is bounded,
// and expired challenges go.
func TestRefusalsBounded(t *testing.T) {
	url, a, b := openPair(t)
	ctx := t.Context()
	now := time.Now()
	ra, rb := a.Refusals(100, time.Second), b.Refusals(100, time.Second)

	for i := range 200 {
		r := []*pgstate.Refusals{ra, rb}[i%2] // through both replicas
		require.NoError(t, r.Remember(ctx, tokenAt("mallory", fmt.Sprint(i), "j", now), []string{"s"}))
	}
	assert.Equal(t, 64, count(t, url, "govern_refusals"), "64 per user, over all clients")
	assert.True(t, explain(t, ra, tokenAt("mallory", "199", "j2", now), "s"), "the newest are kept")
	assert.False(t, explain(t, ra, tokenAt("mallory", "0", "j2", now), "s"), "the oldest went")

	for i := range 300 {
		require.NoError(t, ra.Remember(ctx, tokenAt(fmt.Sprint("u", i), "c", "j", now), []string{"s", "t"}))
	}
	assert.LessOrEqual(t, count(t, url, "govern_refusals"), 100, "overall")
	assert.True(t, explain(t, rb, tokenAt("u299", "c", "j2", now), "s", "t"), "the newest are kept")

	time.Sleep(time.Second)
	require.NoError(t, rb.Remember(ctx, tokenAt("late", "c", "j", time.Now()), []string{"s"}))
	assert.Equal(t, 1, count(t, url, "govern_refusals"), "expired challenges are deleted")
}

// A memory that cannot reach its database says so: the Gate then answers
// with the standard 403.
func TestRefusalsDatabaseGone(t *testing.T) {
	_, a, _ := openPair(t)
	r := a.Refusals(0, 0)
	a.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	tok := tokenAt("alice", "c", "j", time.Now())
	assert.Error(t, r.Remember(ctx, tok, []string{"s"}))
	ok, err := r.Explain(ctx, tok, []string{"s"})
	assert.Error(t, err)
	assert.False(t, ok)
}
