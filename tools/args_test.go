package tools

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/crm"
)

// connectInMemory serves s to a go-sdk client over an in-memory transport
// (no HTTP layer, so no token).
func connectInMemory(t *testing.T, s *mcp.Server) *mcp.ClientSession {
	t.Helper()
	ctx := context.Background()
	st, ct := mcp.NewInMemoryTransports()
	ss, err := s.Connect(ctx, st, nil)
	require.NoError(t, err)
	t.Cleanup(func() { ss.Close() })
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test"}, nil).Connect(ctx, ct, nil)
	require.NoError(t, err)
	t.Cleanup(func() { cs.Close() })
	return cs
}

func addReference[In, Out any](s *mcp.Server, name string) {
	mcp.AddTool(s, &mcp.Tool{Name: name}, func(context.Context, *mcp.CallToolRequest, In) (*mcp.CallToolResult, Out, error) {
		panic("not called")
	})
}

// TestToolSchemasAreGoSDKs: registering the tools without mcp.AddTool
// (args.go) leaves tools/list as it was: each tool advertises the input
// and output schemas mcp.AddTool infers from the same types.
func TestToolSchemasAreGoSDKs(t *testing.T) {
	ref := mcp.NewServer(&mcp.Implementation{Name: "reference"}, nil)
	addReference[ListContactsIn, ContactList](ref, "list_contacts")
	addReference[ContactID, crm.Contact](ref, "get_contact")
	addReference[CreateContactIn, ContactWritten](ref, "create_contact")
	addReference[UpdateContactIn, ContactWritten](ref, "update_contact")
	addReference[ListDealsIn, DealList](ref, "list_deals")
	addReference[CreateDealIn, DealWritten](ref, "create_deal")
	addReference[UpdateDealStageIn, DealWritten](ref, "update_deal_stage")
	server, cat := newMCPServer(Config{Store: &crm.Store{}, Logger: slog.New(slog.DiscardHandler)})

	schemas := func(cs *mcp.ClientSession) map[string][2]string {
		res, err := cs.ListTools(context.Background(), nil)
		require.NoError(t, err)
		out := map[string][2]string{}
		for _, tool := range res.Tools {
			in, err := json.Marshal(tool.InputSchema)
			require.NoError(t, err)
			o, err := json.Marshal(tool.OutputSchema)
			require.NoError(t, err)
			out[tool.Name] = [2]string{string(in), string(o)}
		}
		return out
	}
	want, got := schemas(connectInMemory(t, ref)), schemas(connectInMemory(t, server))
	require.Len(t, want, len(cat.specs))
	for name, w := range want {
		assert.JSONEq(t, w[0], got[name][0], "%s input schema", name)
		assert.JSONEq(t, w[1], got[name][1], "%s output schema", name)
	}
}

// TestArgumentsAreValidated: arguments the input schema refuses are a tool
// error saying what is wrong, before any check or store read; valid ones
// reach the tool (which then refuses for want of a token).
func TestArgumentsAreValidated(t *testing.T) {
	ctx := context.Background()
	store, err := crm.Open(ctx, filepath.Join(t.TempDir(), "crm.db"))
	require.NoError(t, err)
	defer store.Close()
	server, _ := newMCPServer(Config{Store: store, Logger: slog.New(slog.DiscardHandler)})
	cs := connectInMemory(t, server)
	for _, tc := range []struct {
		tool, args, want string
	}{
		{"get_contact", `{"id":"six"}`, `validating "arguments"`},
		{"get_contact", `{"ID":6}`, `validating "arguments"`},
		{"get_contact", `{}`, `validating "arguments"`},
		{"list_contacts", `{"limit":1.5}`, `validating "arguments"`},
		{"list_contacts", `{"query":"x","extra":true}`, `validating "arguments"`},
		{"update_deal_stage", `{"id":1,"stage":7}`, `validating "arguments"`},
		{"list_contacts", `{"limit":5}`, "no verified access token"},
		{"get_contact", `{"id":6}`, "no verified access token"},
	} {
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tc.tool, Arguments: json.RawMessage(tc.args)})
		require.NoError(t, err)
		require.True(t, res.IsError, "%s %s", tc.tool, tc.args)
		assert.Contains(t, res.Content[0].(*mcp.TextContent).Text, tc.want, "%s %s", tc.tool, tc.args)
	}
}
