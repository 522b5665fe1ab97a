package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
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

// TestGovernedGreeter runs go-sdk's real client over Streamable HTTP
// against the example, with a fake Duo that verifies signatures.
func TestGovernedGreeter(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	duo := duotest.NewServer()
	defer duo.Close()
	duo.Script("alice", duotest.Approve)
	duo.Script("bob", duotest.Deny)
	guard, err := stepup.New(stepup.Config{IKey: duo.IKey(), SKey: duo.SKey(), Host: duo.Host(), CACertPEM: duo.CACertPEM(),
		PollInterval: 20 * time.Millisecond, ServerName: "greeter", Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)

	// The resource URL must be known before the listener exists: reserve
	// one with an unstarted server.
	ts := httptest.NewUnstartedServer(nil)
	resource := "http://" + ts.Listener.Addr().String() + "/mcp"
	rs, err := resourceserver.New(resourceserver.Config{Resource: resource, Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	defer rs.Close()
	ts.Config.Handler, err = newHandler(rs, "/mcp", guard, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
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

	session, err := connect(as.Mint(as.Claims("alice", resource, "greet", "announce")))
	require.NoError(t, err)
	defer session.Close()
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "greet", Arguments: map[string]any{"name": "Alice"}})
	require.NoError(t, err)
	require.False(t, res.IsError)
	assert.Equal(t, "Hi Alice, signed in as alice", res.Content[0].(*mcp.TextContent).Text)
	assert.Empty(t, duo.Pushes(), "greet needs no approval")

	res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "announce", Arguments: map[string]any{"message": "Cake in the kitchen"}})
	require.NoError(t, err)
	require.False(t, res.IsError, res.Content[0].(*mcp.TextContent).Text)
	require.Len(t, duo.Pushes(), 1)
	assert.Equal(t, `Announce "Cake in the kitchen" to everyone`, duo.Pushes()[0].PushInfo.Get("action"))
	assert.Equal(t, "Cake in the kitchen", duo.Pushes()[0].PushInfo.Get("message"))

	// Denied on the phone: not run.
	bob, err := connect(as.Mint(as.Claims("bob", resource, "greet", "announce")))
	require.NoError(t, err)
	defer bob.Close()
	res, err = bob.CallTool(ctx, &mcp.CallToolParams{Name: "announce", Arguments: map[string]any{"message": "Free cake"}})
	require.NoError(t, err)
	require.True(t, res.IsError)
	assert.Contains(t, res.Content[0].(*mcp.TextContent).Text, "denied")

	// A token without the tool's scope is refused at the HTTP layer.
	carol, err := connect(as.Mint(as.Claims("carol", resource, "greet")))
	require.NoError(t, err)
	defer carol.Close()
	_, err = carol.CallTool(ctx, &mcp.CallToolParams{Name: "announce", Arguments: map[string]any{"message": "x"}})
	require.Error(t, err)

	// A token for another resource never gets in.
	_, err = connect(as.Mint(as.Claims("alice", "http://elsewhere.example/mcp", "greet")))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Unauthorized")
}
