package govern

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

func tokenAt(sub, client, jti string, iat time.Time) *resourceserver.Token {
	return &resourceserver.Token{Issuer: "https://as", Subject: sub, ClientID: client, JTI: jti, Claims: map[string]any{"iat": float64(iat.Unix())}}
}

func TestRefusalMemory(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	m := NewRefusalMemory(100, time.Minute).(*memRefusals)
	m.now = func() time.Time { return now }

	first := tokenAt("alice", "c", "j1", now)
	require.NoError(t, m.Remember(ctx, first, []string{"s"}))
	ok, _ := m.Explain(ctx, first, []string{"s"})
	assert.False(t, ok, "the challenged token itself")
	ok, _ = m.Explain(ctx, tokenAt("alice", "other", "j2", now), []string{"s"})
	assert.False(t, ok, "another client")
	ok, _ = m.Explain(ctx, tokenAt("alice", "c", "j2", now.Add(-time.Hour)), []string{"s"})
	assert.False(t, ok, "a token issued before the challenge")
	ok, _ = m.Explain(ctx, tokenAt("alice", "c", "j2", now), []string{"s", "t"})
	assert.False(t, ok, "a scope never challenged")
	ok, _ = m.Explain(ctx, tokenAt("alice", "c", "j2", now), []string{"s"})
	assert.True(t, ok)
	ok, _ = m.Explain(ctx, tokenAt("alice", "c", "j3", now), []string{"s"})
	assert.False(t, ok, "answered once")

	require.NoError(t, m.Remember(ctx, first, []string{"s"}))
	now = now.Add(time.Minute)
	ok, _ = m.Explain(ctx, tokenAt("alice", "c", "j4", now), []string{"s"})
	assert.False(t, ok, "lapsed")

	// Bounded per user and overall.
	for i := range 200 {
		require.NoError(t, m.Remember(ctx, tokenAt("mallory", fmt.Sprint(i), "j", now), []string{"s"}))
	}
	assert.LessOrEqual(t, m.perUser["https://as mallory"], maxRefusalsPerUser)
	for i := range 200 {
		require.NoError(t, m.Remember(ctx, tokenAt(fmt.Sprint("u", i), "c", "j", now), []string{"s"}))
	}
	assert.LessOrEqual(t, m.byAge.Len(), 100)
	assert.Equal(t, m.byAge.Len(), len(m.byKey))
}
