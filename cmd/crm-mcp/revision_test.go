package main

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// currentRevision is the MCP revision the server serves by default and
// clients of it prefer.
const currentRevision = "2026-07-28"

// mcpHeaders records the MCP headers of every POST to the MCP endpoint
// and of its answer.
type mcpHeaders struct {
	base http.RoundTripper
	path string

	mu   sync.Mutex
	seen []mcpExchange
}

type mcpExchange struct {
	method, name, version   string // Mcp-Method, Mcp-Name, MCP-Protocol-Version
	sessionSent, sessionGot string // Mcp-Session-Id of the request, of the answer
	status                  int
}

func (h *mcpHeaders) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.base.RoundTrip(req)
	if req.URL.Path != h.path || req.Method != http.MethodPost {
		return resp, err
	}
	e := mcpExchange{
		method:      req.Header.Get("Mcp-Method"),
		name:        req.Header.Get("Mcp-Name"),
		version:     req.Header.Get("Mcp-Protocol-Version"),
		sessionSent: req.Header.Get("Mcp-Session-Id"),
	}
	if resp != nil {
		e.status = resp.StatusCode
		e.sessionGot = resp.Header.Get("Mcp-Session-Id")
	}
	h.mu.Lock()
	h.seen = append(h.seen, e)
	h.mu.Unlock()
	return resp, err
}

func (h *mcpHeaders) exchanges() []mcpExchange {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]mcpExchange(nil), h.seen...)
}

// TestDevGoClientCurrentRevision: go-sdk v1.8.0's client against crm-mcp
// dev as the README runs it, with no setting. It calls server/discover
// first and speaks 2026-07-28 when the server lists it (else it falls back
// to initialize and 2025-11-25): it signs in through OAuth, makes a plain
// call, a call a Duo Push approves and one a push denies, every request
// standing alone, with no Mcp-Session-Id either way.
func TestDevGoClientCurrentRevision(t *testing.T) {
	d := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The first push is approved (after a moment, as a person would), the
	// next denied.
	d.stack.duo.Script("alice", duotest.Approve, duotest.Times(1), duotest.AfterDelay(300*time.Millisecond))
	d.stack.duo.Script("alice", duotest.Deny)

	alice := newDevClient(t, d, "alice")
	headers := &mcpHeaders{base: alice.rec, path: devMCPPath}
	client := mcp.NewClient(&mcp.Implementation{Name: "crm-mcp-revision-test", Version: "0.0.1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:     d.mcp,
		HTTPClient:   &http.Client{Transport: headers},
		OAuthHandler: alice.handler,
		MaxRetries:   -1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { session.Close() })

	require.NotNil(t, session.InitializeResult())
	assert.Equal(t, currentRevision, session.InitializeResult().ProtocolVersion, "the negotiated revision")
	assert.Empty(t, session.ID(), "no session")
	assert.Len(t, alice.authorizations(), 1, "one sign-in")

	t.Run("a plain call", func(t *testing.T) {
		res, err := devCall(ctx, session, "list_contacts", nil)
		require.NoError(t, err)
		require.False(t, res.IsError, devText(res))
		assert.Contains(t, devText(res), "1 restricted contact(s) withheld")
		assert.NotContains(t, devText(res), "Riley")
		assert.Empty(t, d.stack.duo.Pushes(), "no push for a plain listing")
	})

	t.Run("a step-up approved", func(t *testing.T) {
		res, err := devCall(ctx, session, "list_contacts", map[string]any{"query": "defence"})
		require.NoError(t, err)
		require.False(t, res.IsError, devText(res))
		assert.Contains(t, devText(res), "Riley Vance")
		pushes := d.stack.duo.Pushes()
		require.Len(t, pushes, 1, "one push")
		assert.Equal(t, "alice", pushes[0].User)
	})

	t.Run("a step-up denied", func(t *testing.T) {
		// Other arguments than the approved call, which the grant covers.
		res, err := devCall(ctx, session, "list_contacts", map[string]any{"query": "defence", "limit": 5})
		require.NoError(t, err)
		assert.True(t, res.IsError, "a tool error")
		assert.Contains(t, devText(res), "denied")
		assert.NotContains(t, devText(res), "Riley")
		assert.Len(t, d.stack.duo.Pushes(), 2, "one more push")
	})

	var methods []string
	for _, e := range headers.exchanges() {
		if e.status == http.StatusUnauthorized {
			continue // before the sign-in
		}
		methods = append(methods, e.method)
		assert.Equal(t, currentRevision, e.version, "%s: MCP-Protocol-Version", e.method)
		assert.Empty(t, e.sessionSent, "%s: no Mcp-Session-Id sent", e.method)
		assert.Empty(t, e.sessionGot, "%s: no Mcp-Session-Id given", e.method)
		if e.method == "tools/call" {
			assert.Equal(t, "list_contacts", e.name, "Mcp-Name")
		}
	}
	assert.Equal(t, "server/discover", methods[0], "discovery first: %v", methods)
	assert.NotContains(t, methods, "initialize", "no handshake")
	assert.Equal(t, 3, strings.Count(strings.Join(methods, " "), "tools/call"), "%v", methods)
}
