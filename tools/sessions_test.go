package tools_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
	"github.com/crm-mcp/crm-mcp/tools"
)

// sessionStatus is what the server answers a tools/list on session id:
// 200 while it lives, 404 once it is closed.
func (e *env) sessionStatus(t *testing.T, token, id string) int {
	t.Helper()
	resp := e.post(t, token, `{"jsonrpc":"2.0","id":9,"method":"tools/list"}`, "Mcp-Session-Id", id, "MCP-Protocol-Version", "2025-11-25")
	return resp.StatusCode
}

// initialize starts a session by hand and returns the response.
func (e *env) initialize(t *testing.T, token string) *http.Response {
	t.Helper()
	return e.post(t, token, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
}

func TestSessionsCloseWhenIdle(t *testing.T) {
	const idle = 3 * time.Second
	e := newEnv(t, func(c *tools.Config) { c.SessionIdleTimeout = idle })
	tok := e.token("alice", tools.ScopeContactsRead)
	cs := e.connect(t, tok)

	// Used more often than the timeout, over more than the timeout: kept.
	start := time.Now()
	for time.Since(start) < idle+time.Second {
		require.False(t, call(t, cs, "list_contacts", nil).IsError)
		time.Sleep(idle / 10)
	}
	// Then left alone: closed. (Asking would be a request, which keeps
	// it, so only once.)
	time.Sleep(idle + 2*time.Second)
	assert.Equal(t, http.StatusNotFound, e.sessionStatus(t, tok, cs.ID()), "the idle session was not closed")
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_contacts"})
	assert.Error(t, err, "the client learns its session is gone")
	assert.Equal(t, http.StatusOK, e.initialize(t, tok).StatusCode, "and may start another")
}

func TestSessionsPerUserLimit(t *testing.T) {
	e := newEnv(t, func(c *tools.Config) { c.MaxSessionsPerUser = 2 })
	alice := e.token("alice", tools.ScopeContactsRead)
	bob := e.token("bob", tools.ScopeContactsRead)
	first, second := e.connect(t, alice), e.connect(t, alice)
	others := e.connect(t, bob)
	// "Recently" is when a request ended; the pauses keep the order clear
	// of the moment a handler takes to return after its answer is sent.
	pause := func() { time.Sleep(200 * time.Millisecond) }
	pause()
	require.False(t, call(t, first, "list_contacts", nil).IsError, "first is now used more recently than second")
	pause()

	third := e.connect(t, alice)
	assert.Equal(t, http.StatusNotFound, e.sessionStatus(t, alice, second.ID()), "alice's least recently used session made room")
	for _, cs := range []*mcp.ClientSession{first, third, others} {
		assert.False(t, call(t, cs, "list_contacts", nil).IsError)
		pause()
	}
	// The same user through another client counts too: the limit is per
	// user (issuer and subject).
	c := e.as.Claims("alice", e.resource, tools.ScopeContactsRead)
	c["client_id"] = "another-agent"
	e.connect(t, e.as.Mint(c))
	assert.Equal(t, http.StatusNotFound, e.sessionStatus(t, alice, first.ID()))
	assert.Equal(t, http.StatusOK, e.sessionStatus(t, alice, third.ID()))
	assert.Equal(t, http.StatusOK, e.sessionStatus(t, bob, others.ID()), "bob's session is not alice's to lose")
}

// A session with a call in progress (here waiting on a Duo Push) is never
// closed to make room: at the limit with every session busy, 429.
func TestSessionsBusyAreKept(t *testing.T) {
	duo := duotest.NewServer()
	t.Cleanup(duo.Close)
	duo.SetDefault(duotest.Manual)
	e := newEnv(t, func(c *tools.Config) {
		guard, err := stepup.New(stepup.Config{
			IKey: duo.IKey(), SKey: duo.SKey(), Host: duo.Host(), CACertPEM: duo.CACertPEM(),
			PollInterval: 20 * time.Millisecond, Timeout: 10 * time.Second, Logger: slog.New(slog.DiscardHandler),
		})
		require.NoError(t, err)
		terms, err := stepup.NewTerms(stepup.DefaultSensitiveTerms)
		require.NoError(t, err)
		c.StepUp = &tools.StepUp{Guard: guard, Terms: terms, OnWrite: true}
		c.MaxSessionsPerUser = 1
	})
	alice := e.token("alice", "crm")
	cs := e.connect(t, alice)
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		res, _ := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "get_contact", Arguments: map[string]any{"id": 6}})
		done <- res
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	push, err := duo.WaitForPush(ctx)
	require.NoError(t, err)

	resp := e.initialize(t, alice)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "10", resp.Header.Get("Retry-After"))
	var body map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Equal(t, "too_many_sessions", body["error"])
	assert.Contains(t, body["error_description"], "each has a request in progress")

	require.NoError(t, duo.Decide(push.TxID, true))
	res := <-done
	require.NotNil(t, res)
	assert.False(t, res.IsError, text(res))
	// The POST ends a moment after its answer reached the client.
	deadline := time.Now().Add(10 * time.Second)
	for e.initialize(t, alice).StatusCode == http.StatusTooManyRequests {
		require.True(t, time.Now().Before(deadline), "the session stayed busy after its call")
		time.Sleep(20 * time.Millisecond)
	}
	assert.Equal(t, http.StatusNotFound, e.sessionStatus(t, alice, cs.ID()), "idle again: it made room")
}

func TestSessionsOverallLimit(t *testing.T) {
	e := newEnv(t, func(c *tools.Config) { c.MaxSessions = 2; c.SessionIdleTimeout = time.Hour })
	alice, bob, carol := e.token("alice", tools.ScopeContactsRead), e.token("bob", tools.ScopeContactsRead), e.token("carol", tools.ScopeContactsRead)
	a := e.connect(t, alice)
	e.connect(t, bob)

	resp := e.initialize(t, carol)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err)
	assert.InDelta(t, time.Hour.Seconds(), retry, 60, "when the oldest idle session times out")
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var body map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Equal(t, map[string]string{"error": "too_many_sessions", "error_description": "the server holds 2 MCP sessions, the most it keeps; retry later"}, body)
	assert.Equal(t, http.StatusOK, e.sessionStatus(t, alice, a.ID()), "no other user's session is closed for carol")

	require.NoError(t, a.Close()) // DELETE
	assert.Equal(t, http.StatusOK, e.initialize(t, carol).StatusCode)
}
