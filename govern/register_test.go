package govern_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/crm-mcp/crm-mcp/govern"
)

func TestPolicyYAML(t *testing.T) {
	p := policies(t)
	assert.True(t, p["everything.get-env"].StepUp.Always, `stepup: always`)
	assert.Equal(t, map[string]float64{"duration": 10}, p["everything.trigger-long-running-operation"].StepUp.WhenArgumentOver)
	assert.Equal(t, []string{"path"}, p["files.read_text_file"].StepUp.TermsIn)
	assert.True(t, p["files.write_file"].Writes)
	assert.Equal(t, []any{true}, p["notes.list_notes"].StepUp.WhenArgumentIs["include_restricted"])

	var bad map[string]govern.Policy
	err := yaml.Unmarshal([]byte("t:\n  scopes: [a]\n  stepup: sometimes\n"), &bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "line 3")

	var j govern.Policy
	require.NoError(t, json.Unmarshal([]byte(`{"scopes":["a"],"stepup":"always"}`), &j))
	assert.True(t, j.StepUp.Always)
}

// TestRegistrationErrors: a policy that cannot be served stops the start,
// naming the tool and the field.
func TestRegistrationErrors(t *testing.T) {
	tests := []struct {
		name   string
		policy govern.Policy
		want   string
	}{
		{"no scope", govern.Policy{}, `tool "t": policy scopes: is empty`},
		{"bad action", govern.Policy{Scopes: []string{"a"}, Action: "Add {{.a"}, `tool "t": policy action: `},
		{"unknown func", govern.Policy{Scopes: []string{"a"}, Action: "{{shout .a}}"}, `tool "t": policy action: `},
		{"bad row", govern.Policy{Scopes: []string{"a"}, Rows: []govern.Row{{Key: "k", New: "{{end}}"}}}, `tool "t": policy rows[0].new: `},
		{"row without key", govern.Policy{Scopes: []string{"a"}, Rows: []govern.Row{{Arg: "a"}}}, `policy rows[0].key: is empty`},
		{"old without record", govern.Policy{Scopes: []string{"a"}, Rows: []govern.Row{{Key: "k", Arg: "a", Old: "k"}}}, `policy rows[0].old: names a record field`},
		{"hidden text", govern.Policy{Scopes: []string{"a"}, Action: "Add\u202e {{.a}}"}, `characters the phone would not show`},
		{"record without Records", govern.Policy{Scopes: []string{"a"}, Record: &govern.RecordRef{Arg: "a", Kind: "k"}}, `Config.Records is nil`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := govern.New(govern.Config{Logger: slog.New(slog.DiscardHandler)})
			require.NoError(t, err)
			s := mcp.NewServer(&mcp.Implementation{Name: "x"}, nil)
			err = govern.Add(g, s, &mcp.Tool{Name: "t"}, tt.policy, func(context.Context, *govern.Call, sumIn) (*mcp.CallToolResult, any, error) {
				return nil, nil, nil
			})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.Empty(t, g.Names(), "nothing is served of a bad policy")
		})
	}
	g, _ := govern.New(govern.Config{Logger: slog.New(slog.DiscardHandler)})
	s := mcp.NewServer(&mcp.Implementation{Name: "x"}, nil)
	assert.Panics(t, func() {
		govern.AddTool(g, s, &mcp.Tool{Name: "t"}, govern.Policy{}, func(context.Context, *govern.Call, sumIn) (*mcp.CallToolResult, any, error) {
			return nil, nil, nil
		})
	})
}

// TestUngovernedToolsAreNotServed: a tool added to the server beside the
// Governor is neither listed nor callable.
func TestUngovernedToolsAreNotServed(t *testing.T) {
	g, _ := govern.New(govern.Config{Logger: slog.New(slog.DiscardHandler)})
	s := mcp.NewServer(&mcp.Implementation{Name: "x"}, nil)
	govern.AddTool(g, s, &mcp.Tool{Name: "sum"}, govern.Policy{Scopes: []string{"a"}}, func(_ context.Context, _ *govern.Call, in sumIn) (*mcp.CallToolResult, sumOut, error) {
		return nil, sumOut{in.A + in.B}, nil
	})
	ran := false
	s.AddTool(&mcp.Tool{Name: "sneaky", InputSchema: json.RawMessage(`{"type":"object"}`)}, func(context.Context, *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		ran = true
		return &mcp.CallToolResult{}, nil
	})
	ct, st := mcp.NewInMemoryTransports()
	ss, err := s.Connect(context.Background(), st, nil)
	require.NoError(t, err)
	defer ss.Close()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "c"}, nil).Connect(context.Background(), ct, nil)
	require.NoError(t, err)
	defer cs.Close()
	list, err := cs.ListTools(context.Background(), nil)
	require.NoError(t, err)
	require.Len(t, list.Tools, 1)
	assert.Equal(t, "sum", list.Tools[0].Name)
	_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "sneaky"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown tool "sneaky"`)
	assert.False(t, ran)
}

// TestDecodeOnce: one parse of the arguments per governed call, whatever
// the step-up path.
func TestDecodeOnce(t *testing.T) {
	e := newEnv(t, envOpts{})
	cs := e.connect(t, e.token("alice", all...), nil)
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"everything.get-sum", map[string]any{"a": 2, "b": 3}},
		{"notes.update_note", map[string]any{"id": 6, "title": "x"}},
		{"files.read_text_file", map[string]any{"path": "/defence"}},
		{"notes.list_notes", map[string]any{"query": "parking"}},
	} {
		before := govern.Decodes()
		res := call(t, cs, c.tool, c.args)
		require.False(t, res.IsError, text(res))
		assert.Equal(t, int64(1), govern.Decodes()-before, c.tool)
	}
	// Exact: an id above 2^53 reaches the handler as sent.
	res := call(t, cs, "everything.trigger-long-running-operation", json.RawMessage(`{"steps":9007199254740993}`))
	require.False(t, res.IsError, text(res))
	assert.Contains(t, text(res), `{"steps":9007199254740993}`)
}

// TestAssignIsUnmarshal holds assign to encoding/json for the shapes tool
// inputs take.
func TestAssignIsUnmarshal(t *testing.T) {
	type inner struct {
		N int `json:"n"`
	}
	type in struct {
		S    string            `json:"s"`
		P    *string           `json:"p,omitempty"`
		I    int64             `json:"i"`
		U    uint8             `json:"u"`
		F    float64           `json:"f"`
		B    bool              `json:"b"`
		L    []string          `json:"l"`
		M    map[string]int    `json:"m"`
		A    any               `json:"a"`
		In   inner             `json:"in"`
		IP   *inner            `json:"ip"`
		Num  json.Number       `json:"num"`
		Fold string            `json:"fold"`
		Skip string            `json:"-"`
		Deep map[string][]bool `json:"deep"`
	}
	inputs := []string{
		`{}`,
		`{"s":"x","p":"y","i":-9007199254740993,"u":255,"f":1.5e3,"b":true,"l":["a","b"],"m":{"k":1},"a":{"x":[1,"2",null]},"in":{"n":3},"ip":{"n":4},"num":12.50,"FOLD":"z","deep":{"k":[true,false]}}`,
		`{"p":null,"l":null,"m":null,"a":null,"ip":null,"s":null}`,
		`{"l":[]}`,
		`{"i":1.5}`,
		`{"u":256}`,
		`{"i":"1"}`,
		`{"s":1}`,
		`{"b":"true"}`,
		`{"l":"x"}`,
		`{"in":[]}`,
		`{"unknown":1}`,
		`{"i":1e2}`,
	}
	for _, s := range inputs {
		var want in
		wantErr := json.Unmarshal([]byte(s), &want)
		dec := json.NewDecoder(bytesReader(s))
		dec.UseNumber()
		var args map[string]any
		require.NoError(t, dec.Decode(&args))
		var got in
		gotErr := govern.Assign(reflect.ValueOf(&got).Elem(), args, "")
		assert.Equal(t, wantErr != nil, gotErr != nil, "%s: encoding/json %v, assign %v", s, wantErr, gotErr)
		if wantErr == nil && gotErr == nil {
			assert.Equal(t, want, got, s)
		}
	}
}

// TestUnknownToolNameCutWhole: the unknown tool's name in the error is
// cut to 64 bytes, never inside a UTF-8 sequence.
func TestUnknownToolNameCutWhole(t *testing.T) {
	e := newEnv(t, envOpts{})
	cs := e.connect(t, e.token("alice", all...), nil)
	name := strings.Repeat("a", 63) + "é-and-more"
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `unknown tool "`+strings.Repeat("a", 63)+`..."`)
	assert.True(t, utf8.ValidString(err.Error()), "%q", err.Error())
}
