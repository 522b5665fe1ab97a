package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// bearer adds a fixed access token to every request.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// TestGreetWithGoSDKClient runs go-sdk's real client over Streamable HTTP
// against the protected example.
func TestGreetWithGoSDKClient(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")

	// The resource URL must be known before the listener exists: reserve
	// one with an unstarted server.
	ts := httptest.NewUnstartedServer(nil)
	resource := "http://" + ts.Listener.Addr().String() + "/mcp"
	rs, err := resourceserver.New(resourceserver.Config{Resource: resource, Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}})
	require.NoError(t, err)
	defer rs.Close()
	ts.Config.Handler = newHandler(rs, "/mcp")
	ts.Start()
	defer ts.Close()

	ctx := context.Background()
	connect := func(token string) (*mcp.ClientSession, error) {
		client := mcp.NewClient(&mcp.Implementation{Name: "test-client"}, nil)
		return client.Connect(ctx, &mcp.StreamableClientTransport{
			Endpoint:   resource,
			HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}},
			MaxRetries: -1,
		}, nil)
	}

	session, err := connect(as.Mint(as.Claims("alice", resource, "greet")))
	require.NoError(t, err)
	defer session.Close()
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "greet", Arguments: map[string]any{"name": "Alice"}})
	require.NoError(t, err)
	require.False(t, res.IsError)
	assert.Equal(t, "Hi Alice, signed in as alice", res.Content[0].(*mcp.TextContent).Text)

	// The session is bound to alice: bob's valid token cannot use it.
	req, _ := http.NewRequest("POST", resource, strings.NewReader(`{"jsonrpc":"2.0","id":9,"method":"tools/list"}`))
	req.Header.Set("Authorization", "Bearer "+as.Mint(as.Claims("bob", resource, "greet")))
	req.Header.Set("Mcp-Session-Id", session.ID())
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "another user's token must not reach alice's session")

	// A token for another resource never gets a session.
	_, err = connect(as.Mint(as.Claims("alice", "http://elsewhere.example/mcp", "greet")))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Unauthorized")
}
