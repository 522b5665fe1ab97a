package gateway_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// TestExampleServes: the example policy, as written, in front of the two
// real upstreams: exactly the named tools are listed, with the upstream's
// own schema and annotations, and plain calls pass through.
func TestExampleServes(t *testing.T) {
	upstreams(t)
	e := newEnv(t, envOpts{})
	assert.Empty(t, e.gw.Problems())
	cs := e.connect(t, e.token("alice", allScopes...), nil)

	var names []string
	byName := map[string]*mcp.Tool{}
	for tool, err := range cs.Tools(t.Context(), nil) {
		require.NoError(t, err)
		names = append(names, tool.Name)
		byName[tool.Name] = tool
	}
	slices.Sort(names)
	assert.Equal(t, []string{"everything.echo", "everything.get-env", "everything.get-sum", "everything.trigger-long-running-operation", "files.read_text_file", "files.write_file"}, names)
	long := byName["everything.trigger-long-running-operation"]
	require.NotNil(t, long.Annotations)
	assert.True(t, long.Annotations.ReadOnlyHint, "annotations pass through")
	schema, _ := json.Marshal(long.InputSchema)
	assert.Contains(t, string(schema), `"duration"`)

	res := call(t, cs, "everything.echo", map[string]any{"message": "hello"})
	require.False(t, res.IsError, text(res))
	assert.Equal(t, "Echo: hello", text(res))
	assert.Empty(t, e.duo.Pushes(), "echo needs no push")

	res = call(t, cs, "everything.get-sum", map[string]any{"a": 2, "b": 3})
	require.False(t, res.IsError, text(res))
	assert.Contains(t, text(res), "5")

	require.NoError(t, os.WriteFile(filepath.Join(sharedDir, "gw-hello.txt"), []byte("hello from the share"), 0o644))
	t.Cleanup(func() { os.Remove(filepath.Join(sharedDir, "gw-hello.txt")) })
	res = call(t, cs, "files.read_text_file", map[string]any{"path": filepath.Join(sharedDir, "gw-hello.txt")})
	require.False(t, res.IsError, text(res))
	assert.Contains(t, text(res), "hello from the share")
	assert.Empty(t, e.duo.Pushes())
}

// TestGetEnvPush: get-env always needs a Duo Push; approved, the
// upstream's answer comes back; denied, it is not run and the agent is
// told why.
func TestGetEnvPush(t *testing.T) {
	upstreams(t)
	e := newEnv(t, envOpts{tune: func(_ *govern.Config, s *stepup.Config) { s.GrantTTL = stepup.NoGrants }})
	cs := e.connect(t, e.token("alice", allScopes...), nil)
	e.duo.Script("alice", duotest.Approve, duotest.Times(1))
	e.duo.Script("alice", duotest.Deny, duotest.Times(1))

	res := call(t, cs, "everything.get-env", map[string]any{})
	require.False(t, res.IsError, text(res))
	assert.Contains(t, text(res), "PATH", "the everything server's environment")
	require.Len(t, e.duo.Pushes(), 1)
	assert.Equal(t, "Read every environment variable of the everything server", e.duo.Pushes()[0].PushInfo.Get("action"))
	assert.Equal(t, []string{"stepup.requested/requested", "stepup.approved/approved", "tool.called/ok"}, e.rec.codes())

	res = call(t, cs, "everything.get-env", map[string]any{})
	require.True(t, res.IsError)
	assert.Contains(t, text(res), "everything.get-env needs approval on your phone (Duo Push) because the tool always needs approval")
	assert.NotContains(t, text(res), "PATH")
	assert.Len(t, e.duo.Pushes(), 2)
	assert.Equal(t, []string{"stepup.requested/requested", "stepup.denied/denied"}, e.rec.codes())
}

// TestGoldenPushes pins the push of each tool of the example policy,
// against the upstreams' real schemas: the sentence, then one row per
// argument, escaped and bounded as the CRM's.
func TestGoldenPushes(t *testing.T) {
	upstreams(t)
	e := newEnv(t, envOpts{tune: func(c *govern.Config, _ *stepup.Config) {
		c.AlwaysTools = []string{"everything.echo", "everything.get-sum"} // STEPUP_TOOLS, to show their pushes too
	}})
	// Their long operations are refused, not run for 30s; one each, as a
	// denial cools the user down.
	e.duo.Script("carol", duotest.Deny)
	e.duo.Script("dave", duotest.Deny)
	alice := e.connect(t, e.token("alice", allScopes...), nil)
	carol := e.connect(t, e.token("carol", allScopes...), nil)
	dave := e.connect(t, e.token("dave", allScopes...), nil)
	report := filepath.Join(sharedDir, "gw-report.txt")
	t.Cleanup(func() { os.Remove(report) })
	calls := []struct {
		cs   *mcp.ClientSession
		tool string
		args map[string]any
	}{
		{alice, "everything.echo", map[string]any{"message": "hello"}},
		{alice, "everything.get-sum", map[string]any{"a": 2, "b": 3}},
		{alice, "everything.get-env", map[string]any{}},
		{carol, "everything.trigger-long-running-operation", map[string]any{"duration": 30, "steps": 5}},
		{dave, "everything.trigger-long-running-operation", map[string]any{"duration": 11}},
		{alice, "files.write_file", map[string]any{"path": report, "content": "four"}},
		{alice, "files.read_text_file", map[string]any{"path": "/srv/shared/defence/plan.txt", "head": 10}},
		{alice, "files.read_text_file", map[string]any{"path": "/srv/shared/\u202etxt.exe/defence"}},
	}
	var b strings.Builder
	for _, c := range calls {
		before := len(e.duo.Pushes())
		call(t, c.cs, c.tool, c.args)
		pushes := e.duo.Pushes()[before:]
		require.Len(t, pushes, 1, c.tool)
		args, _ := json.Marshal(c.args)
		fmt.Fprintf(&b, "%s %s\n", c.tool, strconv.QuoteToASCII(string(args)))
		for _, kv := range strings.Split(pushes[0].RawPushInfo, "&") {
			k, v, _ := strings.Cut(kv, "=")
			fmt.Fprintf(&b, "\t%s = %s\n", unescape(k), unescape(v))
		}
	}
	golden(t, "pushes.golden", b.String())
	got, err := os.ReadFile(report)
	require.NoError(t, err, "the approved write ran")
	assert.Equal(t, "four", string(got))
}

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join(goldenDir, name)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run with -update to create it")
	assert.Equal(t, string(want), got)
}

func unescape(s string) string {
	v, err := url.QueryUnescape(s)
	if err != nil {
		return s
	}
	return v
}
