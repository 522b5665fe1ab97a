package govern_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/govern"
)

// TestRawToolDefaults: a raw tool's schema is an upstream's, defaults and
// all (zod writes them). The upstream would apply a default the client
// left out, so the decision, the push and the forwarded arguments use it:
// a call leaving out a duration that defaults to 30 is over 10 and needs
// approval, and the push shows the 30.
func TestRawToolDefaults(t *testing.T) {
	var forwarded []string
	e := newEnv(t, envOpts{more: func(t testing.TB, g *govern.Governor, s *mcp.Server) {
		schema := json.RawMessage(`{"type":"object","properties":{"duration":{"type":"number","default":30},"tags":{"type":"array","default":["a"]}}}`)
		require.NoError(t, govern.AddRawTool(g, s, &mcp.Tool{Name: "slow.run", InputSchema: schema},
			govern.Policy{Scopes: []string{"demo.read"}, Upstream: "slow", StepUp: govern.StepUp{WhenArgumentOver: map[string]float64{"duration": 10}}},
			func(_ context.Context, c *govern.Call) (*mcp.CallToolResult, error) {
				forwarded = append(forwarded, string(c.ArgsJSON()))
				c.Args["tags"].([]any)[0] = "changed" // must not reach the next call
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ran"}}}, nil
			}))
	}})
	cs := e.connect(t, e.token("alice", all...), nil)

	res := call(t, cs, "slow.run", map[string]any{})
	require.False(t, res.IsError, text(res))
	require.Len(t, e.duo.Pushes(), 1, "the default 30 is over 10")
	p := e.duo.Pushes()[0]
	assert.Equal(t, "30", p.PushInfo.Get("duration"))
	assert.Equal(t, "duration is over 10", p.PushInfo.Get("reason"))
	assert.Equal(t, "Call slow.run on slow", p.PushInfo.Get("action"))

	res = call(t, cs, "slow.run", map[string]any{"duration": 5})
	require.False(t, res.IsError, text(res))
	assert.Len(t, e.duo.Pushes(), 1, "5 is not over 10")
	assert.Equal(t, []string{`{"duration":30,"tags":["a"]}`, `{"duration":5,"tags":["a"]}`}, forwarded)
}
