package tools

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) Now() time.Time           { return c.t }
func (c *fakeClock) add(d time.Duration)      { c.t = c.t.Add(d) }
func (c *fakeClock) unix(d time.Duration) any { return float64(c.t.Add(d).Unix()) }

func TestRefusalsMemory(t *testing.T) {
	const deals = ScopeDealsRead
	clock := &fakeClock{t: time.Date(2026, 12, 1, 12, 0, 0, 500_000_000, time.UTC)}
	tokenAt := func(sub, client, jti string, iat any) *resourceserver.Token {
		claims := map[string]any{}
		if iat != nil {
			claims["iat"] = iat
		}
		return &resourceserver.Token{Issuer: "https://idp.example", Subject: sub, ClientID: client, JTI: jti, Claims: claims}
	}
	challenged := func() (*refusals, *resourceserver.Token) {
		m := newRefusals(clock.Now)
		first := tokenAt("alice", "agent", "j1", clock.unix(-time.Minute))
		m.remember(first, []string{deals})
		return m, first
	}

	t.Run("the first refusal is a 403", func(t *testing.T) {
		m := newRefusals(clock.Now)
		assert.False(t, m.explain(tokenAt("alice", "agent", "j1", clock.unix(0)), []string{deals}))
	})

	tests := []struct {
		name    string
		tok     *resourceserver.Token
		lacking []string
		later   time.Duration
		want    bool
	}{
		{"a new token, issued in the second of the challenge", tokenAt("alice", "agent", "j2", clock.unix(0)), []string{deals}, 0, true},
		{"a new token, a minute later", tokenAt("alice", "agent", "j2", clock.unix(time.Minute)), []string{deals}, time.Minute, true},
		{"the challenged token itself", tokenAt("alice", "agent", "j1", clock.unix(-time.Minute)), []string{deals}, 0, false},
		{"a token older than the challenged one", tokenAt("alice", "agent", "j0", clock.unix(-2*time.Minute)), []string{deals}, 0, false},
		{"issued before the challenge, beyond the clock skew", tokenAt("alice", "agent", "j2", clock.unix(-refusalClockSkew-2*time.Second)), []string{deals}, 0, false},
		{"issued just before the challenge, within the clock skew", tokenAt("alice", "agent", "j2", clock.unix(-10*time.Second)), []string{deals}, 0, true},
		{"no iat: nothing says when it was issued", tokenAt("alice", "agent", "j2", nil), []string{deals}, 0, false},
		{"another client of the same user", tokenAt("alice", "other-agent", "j2", clock.unix(0)), []string{deals}, 0, false},
		{"another user of the same client", tokenAt("bob", "agent", "j2", clock.unix(0)), []string{deals}, 0, false},
		{"a scope never challenged", tokenAt("alice", "agent", "j2", clock.unix(0)), []string{ScopeDealsWrite}, 0, false},
		{"one of two scopes never challenged", tokenAt("alice", "agent", "j2", clock.unix(0)), []string{deals, ScopeDealsWrite}, 0, false},
		{"just before the memory lapses", tokenAt("alice", "agent", "j2", clock.unix(refusalTTL-time.Second)), []string{deals}, refusalTTL - time.Second, true},
		{"once the memory has lapsed", tokenAt("alice", "agent", "j2", clock.unix(refusalTTL)), []string{deals}, refusalTTL, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := clock.t
			defer func() { clock.t = start }()
			m, _ := challenged()
			clock.add(tt.later)
			assert.Equal(t, tt.want, m.explain(tt.tok, tt.lacking))
		})
	}

	t.Run("told once: the next refusal is a 403 again", func(t *testing.T) {
		m, _ := challenged()
		told := tokenAt("alice", "agent", "j2", clock.unix(0))
		assert.True(t, m.explain(told, []string{deals}))
		assert.False(t, m.explain(told, []string{deals}), "the challenge is answered: re-authorizing may help now")
		assert.Empty(t, m.byKey)
		m.remember(told, []string{deals}) // the gate's 403
		assert.False(t, m.explain(told, []string{deals}), "the challenged token itself")
		assert.True(t, m.explain(tokenAt("alice", "agent", "j3", clock.unix(0)), []string{deals}))
	})

	t.Run("all or nothing: told only when every scope qualifies", func(t *testing.T) {
		m, _ := challenged()
		tok := tokenAt("alice", "agent", "j2", clock.unix(0))
		assert.False(t, m.explain(tok, []string{deals, ScopeDealsWrite}))
		assert.True(t, m.explain(tok, []string{deals}), "the challenge was not used up")
	})

	t.Run("without jti, a later iat tells tokens apart", func(t *testing.T) {
		m := newRefusals(clock.Now)
		m.remember(tokenAt("alice", "agent", "", clock.unix(-5*time.Second)), []string{deals})
		assert.False(t, m.explain(tokenAt("alice", "agent", "", clock.unix(-5*time.Second)), []string{deals}), "same iat: maybe the same token")
		assert.True(t, m.explain(tokenAt("alice", "agent", "", clock.unix(0)), []string{deals}))
	})

	t.Run("a scope seen granted is forgotten", func(t *testing.T) {
		m, _ := challenged()
		granted := tokenAt("alice", "agent", "j2", clock.unix(0))
		m.forget(granted, []string{deals})
		assert.False(t, m.explain(tokenAt("alice", "agent", "j3", clock.unix(0)), []string{deals}), "revoked again: a 403 first")
	})

	t.Run("a new challenge replaces the old", func(t *testing.T) {
		m, _ := challenged()
		second := tokenAt("alice", "agent", "j2", clock.unix(0))
		m.remember(second, []string{deals})
		assert.False(t, m.explain(second, []string{deals}), "the token challenged now")
		assert.True(t, m.explain(tokenAt("alice", "agent", "j3", clock.unix(0)), []string{deals}))
	})

	t.Run("bounded: the oldest challenges go first", func(t *testing.T) {
		start := clock.t
		defer func() { clock.t = start }()
		m := newRefusals(clock.Now)
		m.max = 3
		for i := range 5 {
			m.remember(tokenAt(fmt.Sprint("user", i), "agent", "j1", clock.unix(0)), []string{deals})
			clock.add(time.Second)
		}
		assert.Equal(t, 3, m.byAge.Len())
		assert.Len(t, m.byKey, 3)
		for i, want := range []bool{false, false, true, true, true} {
			assert.Equal(t, want, m.explain(tokenAt(fmt.Sprint("user", i), "agent", "j2", clock.unix(0)), []string{deals}), "user%d", i)
		}
	})

	t.Run("lapsed challenges are dropped when another is made", func(t *testing.T) {
		start := clock.t
		defer func() { clock.t = start }()
		m, _ := challenged()
		clock.add(refusalTTL)
		m.remember(tokenAt("bob", "agent", "j1", clock.unix(0)), []string{deals})
		assert.Equal(t, 1, m.byAge.Len())
	})
}

func TestRefusalText(t *testing.T) {
	got := refusalText("list_deals", []string{ScopeDealsRead})
	assert.Equal(t, "list_deals needs the scope crm.deals.read, which the identity provider has not granted to you: "+
		"a new access token, issued after this server asked for it, still lacks it. "+
		"Ask an administrator to grant you crm.deals.read, then sign in again.", got)
	assert.Contains(t, refusalText("x", []string{"a", "b"}), "needs the scopes a and b")
}
