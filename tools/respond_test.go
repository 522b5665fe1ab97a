package tools_test

import (
	"io"
	"mime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/tools"
)

// TestEventStreamOnlyWhenProgressCanBeSent: a 2026-07-28 tools/call is
// answered as application/json unless its body may carry a progress token,
// which only an event stream can serve (respond.go).
func TestEventStreamOnlyWhenProgressCanBeSent(t *testing.T) {
	e := newEnv(t)
	token := e.token("ana", tools.ScopeContactsRead)
	const meta = `"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}`
	for _, tc := range []struct {
		name, meta, want string
	}{
		{"no progress token", meta, "application/json"},
		{"progress token", meta + `,"progressToken":"p1"`, "text/event-stream"},
		{"progress token spelled with an escape", meta + `,"progress\u0054oken":"p1"`, "text/event-stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{"query":"Maya"},"_meta":{` + tc.meta + `}}}`
			resp := e.post(t, token, body, "MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "list_contacts")
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			require.Equal(t, 200, resp.StatusCode, "%s", b)
			ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			require.Equal(t, tc.want, ct, "%s", b)
			require.Contains(t, string(b), "Maya Okafor")
			if ct == "application/json" {
				require.True(t, strings.HasPrefix(string(b), `{"jsonrpc":"2.0","id":1,"result":`), "%s", b)
			}
		})
	}
}
