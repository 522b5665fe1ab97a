package tools_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup/duotest"
	"github.com/crm-mcp/crm-mcp/tools"
)

// holdCalls starts n calls of get_contact 6 (restricted: each waits on
// alice's Duo Push, which nobody answers yet) on cs and returns a wait for
// their results.
func holdCalls(t *testing.T, cs *mcp.ClientSession, n int) func() []*mcp.CallToolResult {
	var wg sync.WaitGroup
	results := make([]*mcp.CallToolResult, n)
	for i := range n {
		wg.Go(func() {
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "get_contact", Arguments: map[string]any{"id": 6}})
			if assert.NoError(t, err) {
				results[i] = res
			}
		})
	}
	return func() []*mcp.CallToolResult { wg.Wait(); return results }
}

// approvePush approves the one push waiting.
func approvePush(t *testing.T, e *stepUpEnv) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.duo.WaitForPush(ctx)
	require.NoError(t, err)
	require.NoError(t, e.duo.Decide(p.TxID, true))
}

// TestRequestsInFlightBounded: past MaxRequestsPerUser a user's POST gets
// 429 with Retry-After and a JSON reason before anything of it is read;
// another user is not affected; once a request ends, the user is served.
func TestRequestsInFlightBounded(t *testing.T) {
	var limited []string
	var mu sync.Mutex
	e := newStepUpEnvConfig(t, func(c *tools.Config) {
		c.MaxRequestsPerUser = 2
		c.OnLimit = func(l string) { mu.Lock(); limited = append(limited, l); mu.Unlock() }
	})
	e.duo.Script("alice", duotest.Manual)
	alice := e.token("alice", "crm")
	cs := e.connect(t, alice)
	require.Eventually(t, func() bool { return e.handler.Requests() == 0 }, 10*time.Second, 10*time.Millisecond)
	wait := holdCalls(t, cs, 2)
	require.Eventually(t, func() bool { return e.handler.Requests() == 2 }, 10*time.Second, 10*time.Millisecond)

	h := []string{"MCP-Protocol-Version", "2025-11-25"}
	resp := e.post(t, alice, callBody("list_contacts", `{}`), h...)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "10", resp.Header.Get("Retry-After"))
	var body map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Equal(t, "too_many_requests", body["error"])
	assert.Contains(t, body["error_description"], "you already have 2 requests in progress")
	mu.Lock()
	assert.Equal(t, []string{tools.LimitRequestsPerUser}, limited)
	mu.Unlock()

	// Bob is served meanwhile.
	assert.False(t, call(t, e.connect(t, e.token("bob", "crm")), "list_contacts", nil).IsError)

	approvePush(t, e)
	for _, res := range wait() {
		require.NotNil(t, res)
		assert.False(t, res.IsError, text(res))
	}
	// A POST's place is given back as its handler returns, just after the
	// answer is sent.
	require.Eventually(t, func() bool { return e.handler.Requests() == 0 }, 10*time.Second, 10*time.Millisecond)
	assert.False(t, call(t, cs, "list_contacts", nil).IsError, "served again once a request ended")
}

// TestRequestsInFlightBoundedOverall: past MaxRequests anyone's POST gets
// 429.
func TestRequestsInFlightBoundedOverall(t *testing.T) {
	e := newStepUpEnvConfig(t, func(c *tools.Config) { c.MaxRequests = 2 })
	e.duo.Script("alice", duotest.Manual)
	cs := e.connect(t, e.token("alice", "crm"))
	// The connect's own request is counted until its handler returns, a
	// moment after the client has its answer.
	require.Eventually(t, func() bool { return e.handler.Requests() == 0 }, 10*time.Second, 10*time.Millisecond)
	wait := holdCalls(t, cs, 2)
	require.Eventually(t, func() bool { return e.handler.Requests() == 2 }, 10*time.Second, 10*time.Millisecond)
	resp := e.post(t, e.token("bob", "crm"), `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	assert.Contains(t, string(b), "the most it serves at once")
	approvePush(t, e)
	wait()
}

// TestStepUpWaitingBounded: past MaxStepUpWaitingPerUser a call that needs
// approval is refused as a tool error, and no push is sent for it; calls
// that need none still run.
func TestStepUpWaitingBounded(t *testing.T) {
	var limited []string
	var mu sync.Mutex
	e := newStepUpEnvConfig(t, func(c *tools.Config) {
		c.MaxStepUpWaitingPerUser = 2
		c.OnLimit = func(l string) { mu.Lock(); limited = append(limited, l); mu.Unlock() }
	})
	e.duo.Script("alice", duotest.Manual)
	cs := e.connect(t, e.token("alice", "crm"))
	wait := holdCalls(t, cs, 2)
	require.Eventually(t, func() bool { return e.handler.StepUpWaiting() == 2 }, 10*time.Second, 10*time.Millisecond)

	res := call(t, cs, "update_contact", map[string]any{"id": 1, "company": "Acme"}) // a write: needs approval
	require.True(t, res.IsError)
	assert.Contains(t, text(res), "you already have 2 calls waiting for approval")
	assert.Contains(t, text(res), "no push was sent")
	mu.Lock()
	assert.Equal(t, []string{tools.LimitStepUpWaitingPerUser}, limited)
	mu.Unlock()
	assert.False(t, call(t, cs, "list_contacts", nil).IsError, "a call that needs no approval runs")

	approvePush(t, e)
	for _, res := range wait() {
		require.NotNil(t, res)
		assert.False(t, res.IsError, text(res))
	}
	assert.Len(t, e.duo.Pushes(), 1, "the refused call pushed nothing")
	require.Eventually(t, func() bool { return e.handler.StepUpWaiting() == 0 }, 10*time.Second, 10*time.Millisecond)
}
