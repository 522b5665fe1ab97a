package tools_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/tools"
)

// A user and client challenged for a scope who come back with a newer
// token still lacking it get a tool error that names the scope and says
// to ask an administrator, once; every other refusal is the spec's 403.
func TestRefusalExplainsItself(t *testing.T) {
	e := newEnv(t)
	mint := func(client string, scopes ...string) string {
		c := e.as.Claims("alice", e.resource, scopes...)
		c["client_id"] = client
		return e.as.Mint(c)
	}
	// Issued two minutes ago: well before the challenge, even at the
	// whole seconds of iat.
	c := e.as.Claims("alice", e.resource, tools.ScopeContactsRead)
	c["client_id"] = "agent"
	c["iat"] = time.Now().Add(-2 * time.Minute).Unix()
	first := e.as.Mint(c)
	resp := e.post(t, first, callBody("list_deals", `{}`))
	require.Equal(t, http.StatusForbidden, resp.StatusCode, "the first refusal is a 403 challenge")
	assert.Contains(t, resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope", scope="crm.contacts.read crm.deals.read"`)

	// Signed in again: a new token, issued after the challenge, and the
	// scope is still missing.
	again := mint("agent", tools.ScopeContactsRead)
	cs := e.connect(t, again)
	res := call(t, cs, "list_deals", nil)
	require.True(t, res.IsError, "a tool error, not HTTP 403")
	assert.Contains(t, text(res), "list_deals needs the scope crm.deals.read, which the identity provider has not granted to you")
	assert.Contains(t, text(res), "Ask an administrator to grant you crm.deals.read, then sign in again.")
	assert.Nil(t, res.StructuredContent, "no deal data")
	assert.False(t, call(t, cs, "list_contacts", nil).IsError, "the session stays usable")

	t.Run("told once: the next refusal is a 403 again", func(t *testing.T) {
		resp := e.post(t, again, callBody("list_deals", `{}`), "Mcp-Session-Id", cs.ID(), "MCP-Protocol-Version", "2025-11-25")
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "so that a client re-authorizes and gets the scope once granted")
	})

	t.Run("in a batch, every call lacking the scope", func(t *testing.T) {
		resp := e.post(t, mint("agent", tools.ScopeContactsRead), "["+callBody("list_deals", `{}`)+","+strings.Replace(callBody("list_deals", `{"stage":"won"}`), `"id":1`, `"id":2`, 1)+"]",
			"MCP-Protocol-Version", "2025-03-26", "Mcp-Session-Id", cs.ID())
		// The session belongs to alice; batches are 2025-03-26 only.
		require.Equal(t, http.StatusOK, resp.StatusCode)
		b, _ := io.ReadAll(resp.Body)
		assert.Equal(t, 2, strings.Count(string(b), "has not granted"), "%s", b)
	})

	t.Run("the challenged token itself gets the 403 again", func(t *testing.T) {
		resp := e.post(t, first, callBody("list_deals", `{}`))
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	})

	t.Run("another client of the same user: a 403 first", func(t *testing.T) {
		resp := e.post(t, mint("another-agent", tools.ScopeContactsRead), callBody("list_deals", `{}`))
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	})

	t.Run("another scope: a 403 first", func(t *testing.T) {
		resp := e.post(t, mint("agent", tools.ScopeContactsRead), callBody("create_deal", `{}`))
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "crm.deals.write")
	})

	t.Run("a token without iat: a 403", func(t *testing.T) {
		c := e.as.Claims("alice", e.resource, tools.ScopeContactsRead)
		c["client_id"] = "agent"
		delete(c, "iat")
		resp := e.post(t, e.as.Mint(c), callBody("list_deals", `{}`))
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	})

	t.Run("granted, then revoked again: a 403 first", func(t *testing.T) {
		granted := e.connect(t, mint("agent", tools.ScopeContactsRead, tools.ScopeDealsRead))
		require.False(t, call(t, granted, "list_deals", nil).IsError)
		resp := e.post(t, mint("agent", tools.ScopeContactsRead), callBody("list_deals", `{}`))
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "the scope worked since: re-authorizing may help again")
	})
}

// A header that only the gate may set is stripped from what clients send.
func TestRefusalMarkerCannotBeForged(t *testing.T) {
	e := newEnv(t)
	tok := e.token("mallory", tools.ScopeContactsRead)
	client := mcp.NewClient(&mcp.Implementation{Name: "forger"}, nil)
	cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint:             e.resource,
		HTTPClient:           &http.Client{Transport: headerAdder{bearer{tok}, "Crm-Mcp-Internal-Explain-Refusal", "1"}},
		MaxRetries:           -1,
		DisableStandaloneSSE: true,
	}, nil)
	require.NoError(t, err)
	defer cs.Close()
	_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_deals", Arguments: map[string]any{}})
	require.Error(t, err, "still the 403")
	assert.Contains(t, err.Error(), "Forbidden")
}

type headerAdder struct {
	next        http.RoundTripper
	name, value string
}

func (h headerAdder) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.name, h.value)
	return h.next.RoundTrip(r)
}
