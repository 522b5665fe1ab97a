package tools

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/crm"
)

// TestMCPLayerChecksScopesToo reaches the tools without the HTTP layer (an
// in-memory transport, so no token at all): every tool refuses.
func TestMCPLayerChecksScopesToo(t *testing.T) {
	ctx := context.Background()
	store, err := crm.Open(ctx, filepath.Join(t.TempDir(), "crm.db"))
	require.NoError(t, err)
	defer store.Close()
	server, cat := newMCPServer(Config{Store: store, Logger: slog.New(slog.DiscardHandler)})
	st, ct := mcp.NewInMemoryTransports()
	ss, err := server.Connect(ctx, st, nil)
	require.NoError(t, err)
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "bypass"}, nil).Connect(ctx, ct, nil)
	require.NoError(t, err)
	defer cs.Close()

	args := map[string]map[string]any{
		"list_contacts":     {"query": "Aegis", "include_restricted": true},
		"get_contact":       {"id": 6},
		"create_contact":    {"name": "x", "email": "x@example.com"},
		"update_contact":    {"id": 6, "name": "x"},
		"list_deals":        {"contact_id": 6, "include_restricted": true},
		"create_deal":       {"contact_id": 6, "title": "t", "amount": 1, "currency": "USD"},
		"update_deal_stage": {"id": 4, "stage": "won"},
	}
	require.Len(t, args, len(cat.specs))
	for _, sp := range cat.specs {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: sp.name, Arguments: args[sp.name]})
		require.NoError(t, err)
		assert.True(t, res.IsError, sp.name)
		assert.Contains(t, res.Content[0].(*mcp.TextContent).Text, "no verified access token", sp.name)
	}
	got, err := store.GetContact(ctx, 6)
	require.NoError(t, err)
	assert.Equal(t, "Riley Vance", got.Name, "nothing was changed")
}

func TestChallengeScopes(t *testing.T) {
	cat := newCatalog(&deps{})
	assert.Equal(t, []string{"crm.contacts.read", "crm.deals.read"}, cat.challengeScopes([]string{"crm.contacts.read", "openid", "email"}, []string{"crm.deals.read"}))
	assert.Equal(t, []string{"crm.contacts", "crm.deals.read"}, cat.challengeScopes([]string{"crm.contacts"}, []string{"crm.deals.read"}), "a granted parent scope stays relevant")
	assert.Equal(t, []string{"crm.deals.write"}, cat.challengeScopes(nil, []string{"crm.deals.write"}))
}
