package tools_test

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder remembers the protocol revision headers a client sends.
type recorder struct {
	bearer
	mu       sync.Mutex
	versions map[string]bool
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	if v := req.Header.Get("MCP-Protocol-Version"); v != "" {
		r.versions[v] = true
	}
	r.mu.Unlock()
	return r.bearer.RoundTrip(req)
}

// TestProtocolRevisions: the one endpoint, with no setting, serves go-sdk's
// client in 2026-07-28 (which it prefers) and an initialize-era client in
// 2025-06-18, spoken by hand, without a session.
func TestProtocolRevisions(t *testing.T) {
	for _, tc := range []struct {
		want string
	}{{"2026-07-28"}} {
		e := newEnv(t)
		rec := &recorder{bearer: bearer{e.token("alice", "crm.contacts.read")}, versions: map[string]bool{}}
		client := mcp.NewClient(&mcp.Implementation{Name: "rev"}, nil)
		cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: e.resource, HTTPClient: &http.Client{Transport: rec}, MaxRetries: -1, DisableStandaloneSSE: true}, nil)
		require.NoError(t, err)
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_contacts"})
		require.NoError(t, err)
		assert.False(t, res.IsError)
		cs.Close()
		assert.True(t, rec.versions[tc.want], "revisions sent %v", rec.versions)
	}

	t.Run("2025-06-18 by hand, no session", func(t *testing.T) {
		e := newEnv(t)
		tok := e.token("alice", "crm.contacts.read")
		resp := e.post(t, tok, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Empty(t, resp.Header.Get("Mcp-Session-Id"), "stateless: no session to keep")
		h := []string{"MCP-Protocol-Version", "2025-06-18"}
		resp = e.post(t, tok, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, h...)
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		resp = e.post(t, tok, callBody("list_contacts", `{"limit":3}`), h...)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		body, _ := io.ReadAll(resp.Body)
		assert.Contains(t, string(body), "Maya Okafor")
		resp = e.post(t, tok, callBody("list_deals", `{}`), h...)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "the scope gate reads the body on 2025-06-18")
	})
}
