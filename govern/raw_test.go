package govern_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/govern"
)

// TestRawToolUndeclaredArguments: the review's attack. An argument the
// upstream's schema does not declare would become a row named by the
// client ("server: crm.bank.example (trusted)"), or, under a policy with
// rows, reach the upstream unseen. It is refused before anything is
// pushed, unless the schema says it takes other properties and the
// policy shows each as its own row; then a name that cannot be one is
// refused.
func TestRawToolUndeclaredArguments(t *testing.T) {
	forged := map[string]any{"server": "crm.bank.example (trusted)", "reason": "routine read, nothing sensitive", "action": "Read your own name"}
	var ran []string
	add := func(t testing.TB, g *govern.Governor, s *mcp.Server, name, schema string, rows []govern.Row) {
		require.NoError(t, govern.AddRawTool(g, s, &mcp.Tool{Name: name, InputSchema: json.RawMessage(schema)},
			govern.Policy{Scopes: []string{"demo.read"}, Upstream: "up", StepUp: govern.StepUp{Always: true}, Rows: rows},
			func(_ context.Context, c *govern.Call) (*mcp.CallToolResult, error) {
				ran = append(ran, name+" "+string(c.ArgsJSON()))
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ran"}}}, nil
			}))
	}
	e := newEnv(t, envOpts{more: func(t testing.TB, g *govern.Governor, s *mcp.Server) {
		add(t, g, s, "up.empty", `{"type":"object","properties":{}}`, nil) // everything's get-env
		add(t, g, s, "up.write", `{"type":"object","properties":{"path":{"type":"string"}}}`, nil)
		add(t, g, s, "up.open", `{"type":"object","properties":{"path":{"type":"string"}},"additionalProperties":true}`, nil)
		add(t, g, s, "up.openrows", `{"type":"object","properties":{"path":{"type":"string"}},"additionalProperties":{"type":"string"}}`,
			[]govern.Row{{Key: "file", Arg: "path"}})
	}})
	cs := e.connect(t, e.token("alice", all...), nil)

	refused := []struct {
		tool string
		args map[string]any
		want string
	}{
		{"up.empty", forged, `does not take the argument "action"`},
		{"up.write", map[string]any{"path": "/x", "overwrite_all": true}, `does not take the argument "overwrite_all"`},
		{"up.write", map[string]any{"path": "/x", strings.Repeat("K", 5000): "1"}, `does not take the argument "KKKK`},
		{"up.openrows", map[string]any{"path": "/x", "mode": "all"}, `does not take the argument "mode"`},
		{"up.open", map[string]any{"path": "/x", "Server": "trusted"}, `cannot be shown on the phone as a row`},
		{"up.open", map[string]any{"path": "/x", "x\u202eevil\u202c": "1"}, `"x\u202eevil\u202c"`},
		{"up.open", map[string]any{"path": "/x", "new\nline": "1"}, `cannot be shown on the phone as a row`},
		{"up.open", map[string]any{"path": "/x", "\u2192 a": "1"}, `cannot be shown on the phone as a row`},
		{"up.open", map[string]any{"path": "/x", strings.Repeat("K", 65): "1"}, `cannot be shown on the phone as a row`},
	}
	for _, tt := range refused {
		res := call(t, cs, tt.tool, tt.args)
		require.True(t, res.IsError, "%s %v", tt.tool, tt.args)
		assert.Contains(t, text(res), tt.want)
		assert.Less(t, len(text(res)), 400, "the refusal does not repeat a long name")
	}
	assert.Empty(t, e.duo.Pushes(), "nothing was pushed")
	assert.Empty(t, ran, "nothing ran")

	res := call(t, cs, "up.open", map[string]any{"path": "/x", "tag": "a"})
	require.False(t, res.IsError, text(res))
	require.Len(t, e.duo.Pushes(), 1)
	p := e.duo.Pushes()[0].PushInfo
	assert.Equal(t, "/x", p.Get("path"))
	assert.Equal(t, "a", p.Get("tag"), "an argument the schema takes is shown as its own row")
	assert.Equal(t, "crm-mcp", p.Get("server"))
	assert.Len(t, p["server"], 1)
}

// TestRawToolNestedDefaults: only a raw tool's top-level properties'
// defaults are applied before the push; a schema with one anywhere else
// (which the upstream would apply unseen) is refused when the tool is
// added, naming the tool and where the default is.
func TestRawToolNestedDefaults(t *testing.T) {
	tests := []struct{ name, schema, want string }{
		{"nested object", `{"type":"object","properties":{"opts":{"type":"object","properties":{"force":{"type":"boolean","default":true}}}}}`, "properties.opts.properties.force"},
		{"defs", `{"type":"object","properties":{"opts":{"$ref":"#/$defs/o"}},"$defs":{"o":{"type":"object","properties":{"all":{"type":"boolean","default":true}}}}}`, "$defs.o.properties.all"},
		{"anyOf", `{"type":"object","properties":{"mode":{"anyOf":[{"type":"string","default":"all"},{"type":"number"}]}}}`, "properties.mode.anyOf[0]"},
		{"items", `{"type":"object","properties":{"list":{"type":"array","items":{"type":"string","default":"x"}}}}`, "properties.list.items"},
		{"root", `{"type":"object","default":{"force":true},"properties":{"force":{"type":"boolean"}}}`, "the schema itself"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := govern.New(govern.Config{Logger: slog.New(slog.DiscardHandler)})
			require.NoError(t, err)
			s := mcp.NewServer(&mcp.Implementation{Name: "x"}, nil)
			err = govern.AddRawTool(g, s, &mcp.Tool{Name: "up.write", InputSchema: json.RawMessage(tt.schema)}, govern.Policy{Scopes: []string{"a"}}, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), `tool "up.write": input schema has a default at `+tt.want)
			assert.Empty(t, g.Names())
		})
	}
	g, _ := govern.New(govern.Config{Logger: slog.New(slog.DiscardHandler)})
	s := mcp.NewServer(&mcp.Implementation{Name: "x"}, nil)
	require.NoError(t, govern.AddRawTool(g, s, &mcp.Tool{Name: "up.ok", InputSchema: json.RawMessage(`{"type":"object","properties":{"n":{"type":"number","default":3}}}`)}, govern.Policy{Scopes: []string{"a"}}, nil),
		"a top-level property's default is applied, so served")
}

// TestRowNamesAtRegistration: a row name that cannot be shown as itself
// stops the start, in a policy's rows or, without rows, in the input
// schema's properties, which then name the rows.
func TestRowNamesAtRegistration(t *testing.T) {
	tests := []struct {
		name   string
		schema string
		rows   []govern.Row
		want   string
	}{
		{"property reason", `{"type":"object","properties":{"reason":{"type":"string"}}}`, nil, `input property "reason" would read as the push's own "reason" row; give the policy rows`},
		{"properties alike", `{"type":"object","properties":{"path":{"type":"string"},"Path":{"type":"string"}}}`, nil, `reads as another row's name`},
		{"long property", `{"type":"object","properties":{"` + strings.Repeat("p", 65) + `":{"type":"string"}}}`, nil, `too long to name a row`},
		{"row server", `{"type":"object"}`, []govern.Row{{Key: "Server", New: "x"}}, `policy rows: key "Server" would read as the push's own "server" row`},
		{"rows twice", `{"type":"object"}`, []govern.Row{{Key: "a", New: "x"}, {Key: "a", New: "y"}}, `reads as another row's name`},
		{"row hidden", `{"type":"object"}`, []govern.Row{{Key: "a\u202e", New: "x"}}, `policy rows[0].key: holds characters the phone would not show`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := govern.New(govern.Config{Logger: slog.New(slog.DiscardHandler)})
			require.NoError(t, err)
			s := mcp.NewServer(&mcp.Implementation{Name: "x"}, nil)
			err = govern.AddRawTool(g, s, &mcp.Tool{Name: "up.t", InputSchema: json.RawMessage(tt.schema)}, govern.Policy{Scopes: []string{"a"}, Rows: tt.rows}, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	g, _ := govern.New(govern.Config{Logger: slog.New(slog.DiscardHandler)})
	s := mcp.NewServer(&mcp.Implementation{Name: "x"}, nil)
	require.NoError(t, govern.AddRawTool(g, s, &mcp.Tool{Name: "up.t", InputSchema: json.RawMessage(`{"type":"object","properties":{"reason":{"type":"string"}}}`)},
		govern.Policy{Scopes: []string{"a"}, Rows: []govern.Row{{Key: "why", Arg: "reason"}}}, nil), "rows that name it otherwise")
}

// TestRawToolNotAnObject: a schema go-sdk cannot serve (not of type
// object) is an error, and the tool is neither in the table nor served:
// the table lists exactly what the server serves.
func TestRawToolNotAnObject(t *testing.T) {
	g, err := govern.New(govern.Config{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	s := mcp.NewServer(&mcp.Implementation{Name: "x"}, nil)
	err = govern.AddRawTool(g, s, &mcp.Tool{Name: "up.list", InputSchema: json.RawMessage(`{"type":"array"}`)}, govern.Policy{Scopes: []string{"only.list"}}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `tool "up.list": cannot be served`)
	assert.Empty(t, g.Names())
	assert.Empty(t, g.Scopes())
	require.NoError(t, govern.AddRawTool(g, s, &mcp.Tool{Name: "up.list", InputSchema: json.RawMessage(`{"type":"object"}`)}, govern.Policy{Scopes: []string{"a"}}, nil),
		"the name is free again")
}
