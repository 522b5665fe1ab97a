package gateway_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDenyByDefault: a tool the policy does not name can be neither
// listed nor called, whatever the request says: go-sdk's client, a legacy
// body, 2026-07-28 headers naming another tool than the body, a batch.
// files.create_directory is offered by the filesystem server and has an
// effect anyone can see; the policy does not name it.
func TestDenyByDefault(t *testing.T) {
	upstreams(t)
	e := newEnv(t, envOpts{})
	tok := e.token("alice", allScopes...)
	dir := filepath.Join(sharedDir, "gw-must-not-exist")
	os.RemoveAll(dir)
	args := `{"path":"` + dir + `"}`

	cs := e.connect(t, tok, nil)
	for tool, err := range cs.Tools(t.Context(), nil) {
		require.NoError(t, err)
		assert.NotContains(t, []string{"files.create_directory", "everything.get-tiny-image", "create_directory"}, tool.Name)
	}
	for _, name := range []string{"files.create_directory", "create_directory", "files.create_directory ", "files..create_directory", "FILES.create_directory", "everything.get-tiny-image"} {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: map[string]any{"path": dir}})
		if err == nil {
			assert.True(t, res.IsError, name)
		}
	}

	legacy := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files.create_directory","arguments":` + args + `}}`
	called := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"files.create_directory","arguments":` + args + `,"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	for _, tt := range []struct {
		name, version, method, header, body string
	}{
		{"legacy body", "2025-06-18", "", "", legacy},
		{"2026-07-28 headers", "2026-07-28", "tools/call", "files.create_directory", called},
		{"headers name a listed tool", "2026-07-28", "tools/call", "everything.echo", called},
		{"batch", "2025-03-26", "", "", "[" + legacy + "," + strings.Replace(legacy, `"id":1`, `"id":2`, 1) + "]"},
		{"batch with a listed tool", "2025-03-26", "", "", `[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"everything.echo","arguments":{"message":"x"}}},` + strings.Replace(legacy, `"id":1`, `"id":2`, 1) + "]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.post(t, tok, tt.version, tt.method, tt.header, tt.body)
			assert.True(t, status == http.StatusBadRequest || strings.Contains(body, `unknown tool \"files.create_directory\"`), "%d %s", status, body)
			assert.NotContains(t, body, "Successfully created")
		})
	}
	_, err := os.Stat(dir)
	assert.True(t, os.IsNotExist(err), "the unnamed tool never ran")
}

func (e *env) post(t *testing.T, token, version, method, name, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.resource, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Protocol-Version", version)
	if method != "" {
		req.Header.Set("Mcp-Method", method)
	}
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
