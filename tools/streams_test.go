package tools_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// listenParams asks for everything a client can ask for.
const listenParams = `"notifications":{"toolsListChanged":true,"promptsListChanged":true,"resourcesListChanged":true,"resourceSubscriptions":["crm://contacts/6"]}`

// meta2026 is the _meta every 2026-07-28 request carries.
const meta2026 = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"raw","version":"1"}}`

// postWithin posts body and reads the whole answer, failing if the
// request is still open after d: nothing the server answers may outlive
// its request.
func postWithin(t *testing.T, e *env, d time.Duration, token, body string, headers ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", e.resource, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err, "the request did not end within %s", d)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "the response stream did not end within %s", d)
	return resp.StatusCode, string(b)
}

// initSession opens a 2025-11-25 session by hand and returns its headers.
func initSession(t *testing.T, e *env, token string) []string {
	t.Helper()
	resp := e.post(t, token, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, resp.Header.Get("Mcp-Session-Id"), "stateless: no session")
	h := []string{"MCP-Protocol-Version", "2025-11-25"}
	require.Equal(t, http.StatusAccepted, e.post(t, token, `{"jsonrpc":"2.0","method":"notifications/initialized"}`, h...).StatusCode)
	return h
}

// TestSubscriptionsListenEnds: a subscriptions/listen, from a token with
// no scopes, asking for every kind of notification, is acknowledged with
// nothing honoured and then closed gracefully; the request ends. Before,
// go-sdk kept it open for as long as the client did.
func TestSubscriptionsListenEnds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stateless bool
	}{{"2026-07-28", true}, {"legacy initialize-era request", false}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tok := e.token("mallory") // no scopes at all
			var status int
			var body string
			if tc.stateless {
				status, body = postWithin(t, e, 5*time.Second, tok,
					`{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{`+listenParams+`,`+meta2026+`}}`,
					"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "subscriptions/listen")
			} else {
				h := initSession(t, e, tok)
				status, body = postWithin(t, e, 5*time.Second, tok,
					`{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{`+listenParams+`}}`, h...)
			}
			require.Equal(t, http.StatusOK, status, body)
			ack := strings.Index(body, `"method":"notifications/subscriptions/acknowledged"`)
			res := strings.Index(body, `"id":7,"result"`)
			require.GreaterOrEqual(t, ack, 0, "no acknowledgement: %s", body)
			require.Greater(t, res, ack, "the graceful-closure result follows the acknowledgement: %s", body)
			assert.Contains(t, body, `"notifications":{}`, "nothing is honoured")
		})
	}
}

// TestCapabilitiesHonest: the server offers no list change and no
// subscription, so clients have no reason to listen.
func TestCapabilitiesHonest(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, e.token("alice"))
	caps := cs.InitializeResult().Capabilities
	require.NotNil(t, caps.Tools)
	assert.False(t, caps.Tools.ListChanged)
	assert.Nil(t, caps.Resources)
	assert.Nil(t, caps.Prompts)
}

// TestGETStreamRefused: the standalone SSE stream is not offered: a GET
// with a valid token (after an initialize or not) gets 405 with Allow at
// once.
func TestGETStreamRefused(t *testing.T) {
	for _, stateless := range []bool{false, true} {
		e := newEnv(t)
		tok := e.token("mallory")
		var h []string
		if !stateless {
			h = initSession(t, e, tok)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, err := http.NewRequestWithContext(ctx, "GET", e.resource, nil)
		require.NoError(t, err)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", "Bearer "+tok)
		for i := 0; i+1 < len(h); i += 2 {
			req.Header.Set(h[i], h[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_, err = io.ReadAll(resp.Body)
		require.NoError(t, err, "stateless=%v: the GET stayed open", stateless)
		resp.Body.Close()
		cancel()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "stateless=%v", stateless)
		assert.Contains(t, resp.Header.Get("Allow"), "POST", "stateless=%v", stateless)
	}
}
