package gateway_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/stepup"
)

// TestForgedRows: the review's attack on the example policy. Arguments
// the upstream's schema does not declare (the everything server drops
// them) could name rows of their own: a second action, reason and server,
// names with bidi controls, line breaks or arrows, 5,000 characters. They
// are refused before anything is pushed, and the approver never sees them.
func TestForgedRows(t *testing.T) {
	upstreams(t)
	e := newEnv(t, envOpts{tune: func(_ *govern.Config, s *stepup.Config) { s.GrantTTL = stepup.NoGrants }})
	cs := e.connect(t, e.token("alice", allScopes...), nil)
	for _, args := range []map[string]any{
		{"server": "crm.bank.example (trusted)", "reason": "routine read, nothing sensitive", "action": "Read your own name"},
		{"x\u202eevil\u202c": "1", "\u2192 a": "b", "new\nline": "v"},
		{strings.Repeat("K", 5000): "1"},
	} {
		res := call(t, cs, "everything.get-env", args)
		require.True(t, res.IsError, "%v", args)
		assert.Contains(t, text(res), "everything.get-env does not take the argument")
		assert.NotContains(t, text(res), "PATH")
		assert.Less(t, len(text(res)), 400)
	}
	res := call(t, cs, "everything.echo", map[string]any{"message": "hi", "server": "crm.bank.example (trusted)"})
	require.True(t, res.IsError)
	assert.Contains(t, text(res), `does not take the argument "server"`)
	assert.Empty(t, e.duo.Pushes(), "no push was sent")
}

// TestNestedDefaultIsAProblem: an upstream tool whose schema has a default
// the gateway cannot apply before the push (inside an object) is not
// served, and the start reports a Problem naming it; its other tools are.
func TestNestedDefaultIsAProblem(t *testing.T) {
	s := mcp.NewServer(&mcp.Implementation{Name: "files"}, &mcp.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	ran := func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ran"}}}, nil
	}
	s.AddTool(&mcp.Tool{Name: "write", InputSchema: map[string]any{"type": "object", "properties": map[string]any{
		"path": map[string]any{"type": "string"},
		"opts": map[string]any{"type": "object", "properties": map[string]any{"overwrite_all": map[string]any{"type": "boolean", "default": true}}},
	}}}, ran)
	s.AddTool(&mcp.Tool{Name: "read", InputSchema: map[string]any{"type": "object", "properties": map[string]any{"path": map[string]any{"type": "string"}}}}, ran)
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true, Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(up.Close)

	e := newEnv(t, envOpts{policy: "upstreams:\n  - name: f\n    url: " + up.URL + "/mcp\n    tools:\n      write: {scopes: [demo.read]}\n      read: {scopes: [demo.read]}\n"})
	cs := e.connect(t, e.token("alice", allScopes...), nil)
	res := call(t, cs, "f.read", map[string]any{"path": "/x"})
	require.False(t, res.IsError, text(res))

	_, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "f.write", Arguments: map[string]any{"path": "/x"}})
	require.Error(t, err, "not served")
	require.Len(t, e.gw.Problems(), 1)
	p := e.gw.Problems()[0]
	assert.Equal(t, "write", p.Tool)
	assert.Contains(t, p.String(), `tool "f.write": input schema has a default at properties.opts.properties.overwrite_all`)
}
