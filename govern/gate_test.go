package govern_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// post sends one JSON-RPC body to the endpoint with token, as a client of
// revision version would (2026-07-28 with its Mcp-Method and Mcp-Name
// headers, set from method and name when given).
func (e *env) post(t *testing.T, token, version, method, name, body string) (int, http.Header, string) {
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
	return resp.StatusCode, resp.Header, string(b)
}

const meta26 = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`

func callBody(name, args string, meta bool) string {
	m := ""
	if meta {
		m = "," + meta26
	}
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + name + `","arguments":` + args + m + `}}`
}

func TestGate(t *testing.T) {
	e := newEnv(t, envOpts{stateless: true})
	readOnly := e.token("alice", "demo.read", "unrelated")

	t.Run("headers of a 2026-07-28 request", func(t *testing.T) {
		status, h, _ := e.post(t, readOnly, "2026-07-28", "tools/call", "files.write_file", callBody("files.write_file", `{"path":"/a","content":"x"}`, true))
		assert.Equal(t, http.StatusForbidden, status)
		assert.Contains(t, h.Get("WWW-Authenticate"), `error="insufficient_scope"`)
		assert.Contains(t, h.Get("WWW-Authenticate"), `scope="demo.read files.write"`, "every scope needed plus the relevant granted ones")
		assert.Empty(t, e.runs())
	})
	t.Run("headers that disagree with the body", func(t *testing.T) {
		status, _, body := e.post(t, readOnly, "2026-07-28", "tools/call", "everything.echo", callBody("files.write_file", `{"path":"/a","content":"x"}`, true))
		assert.Equal(t, http.StatusBadRequest, status, body)
		assert.Empty(t, e.runs(), "go-sdk refuses a header that disagrees with the body")
		status, _, body = e.post(t, readOnly, "2026-07-28", "tools/list", "", callBody("files.write_file", `{"path":"/a","content":"x"}`, true))
		assert.Equal(t, http.StatusBadRequest, status, body)
		status, _, body = e.post(t, readOnly, "2026-07-28", "", "", callBody("files.write_file", `{"path":"/a","content":"x"}`, true))
		assert.Equal(t, http.StatusBadRequest, status, body)
		assert.Empty(t, e.runs())
	})
	t.Run("body of a legacy request", func(t *testing.T) {
		status, h, _ := e.post(t, readOnly, "2025-06-18", "", "", callBody("files.write_file", `{"path":"/a","content":"x"}`, false))
		assert.Equal(t, http.StatusForbidden, status)
		assert.Contains(t, h.Get("WWW-Authenticate"), `scope="demo.read files.write"`)
		status, _, body := e.post(t, readOnly, "2025-06-18", "", "", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"everything.echo","name":"files.write_file"}}`)
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Contains(t, body, "repeats the key")
		assert.Empty(t, e.runs())
	})
	t.Run("allowed", func(t *testing.T) {
		status, _, body := e.post(t, readOnly, "2026-07-28", "tools/call", "everything.echo", callBody("everything.echo", `{"message":"hi"}`, true))
		assert.Equal(t, http.StatusOK, status, body)
		assert.Contains(t, body, "everything.echo {\\\"message\\\":\\\"hi\\\"}")
		status, _, body = e.post(t, readOnly, "2025-06-18", "", "", callBody("everything.echo", `{"message":"hi"}`, false))
		assert.Equal(t, http.StatusOK, status, body)
		assert.Equal(t, []string{"everything.echo", "everything.echo"}, e.runs())
	})
}

// TestGateExplainsARefusalThatSigningInAgainCannotFix: a newer token of
// the same user and client that still lacks the scope gets a tool error
// saying to ask an administrator; then the 403 again.
func TestGateExplainsARefusalThatSigningInAgainCannotFix(t *testing.T) {
	e := newEnv(t, envOpts{stateless: true})
	body := callBody("files.write_file", `{"path":"/a","content":"x"}`, true)
	first := e.token("alice", "demo.read")
	status, _, _ := e.post(t, first, "2026-07-28", "tools/call", "files.write_file", body)
	require.Equal(t, http.StatusForbidden, status)
	status, _, _ = e.post(t, first, "2026-07-28", "tools/call", "files.write_file", body)
	require.Equal(t, http.StatusForbidden, status, "the challenged token itself gets the 403 again")

	second := e.token("alice", "demo.read")
	status, _, out := e.post(t, second, "2026-07-28", "tools/call", "files.write_file", body)
	require.Equal(t, http.StatusOK, status)
	assert.Contains(t, out, "Ask an administrator to grant you files.write, then sign in again.")
	assert.Contains(t, out, `"isError":true`)
	assert.Equal(t, []string{"scope.denied/scope_explained"}, e.ev.codes())
	assert.Empty(t, e.runs())

	third := e.token("alice", "demo.read")
	status, _, _ = e.post(t, third, "2026-07-28", "tools/call", "files.write_file", body)
	assert.Equal(t, http.StatusForbidden, status, "answered once, then the spec's 403 again")

	// A client cannot forge the Gate's mark.
	req, _ := http.NewRequest(http.MethodPost, e.resource, strings.NewReader(body))
	for k, v := range map[string]string{"Authorization": "Bearer " + e.token("bob", "demo.read"), "Content-Type": "application/json",
		"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "files.write_file",
		"Govern-Internal-Explain-Refusal": "1"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
}

// versions records the protocol revision each POST of a client declares.
type versions struct {
	mu   sync.Mutex
	seen []string
	base http.RoundTripper
}

func (v *versions) RoundTrip(r *http.Request) (*http.Response, error) {
	v.mu.Lock()
	v.seen = append(v.seen, r.Header.Get("Mcp-Protocol-Version"))
	v.mu.Unlock()
	return v.base.RoundTrip(r)
}

// TestGoSDKClientBothRevisions: go-sdk's real client, which prefers
// 2026-07-28 (served statelessly) and falls back to 2025-11-25 (served
// with sessions), is governed alike.
func TestGoSDKClientBothRevisions(t *testing.T) {
	for _, stateless := range []bool{true, false} {
		e := newEnv(t, envOpts{stateless: stateless})
		v := &versions{base: bearer{e.token("alice", "demo")}}
		client := mcp.NewClient(&mcp.Implementation{Name: "c"}, nil)
		cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{
			Endpoint: e.resource, HTTPClient: &http.Client{Transport: v}, MaxRetries: -1, DisableStandaloneSSE: true,
		}, nil)
		require.NoError(t, err)
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "everything.get-sum", Arguments: map[string]any{"a": 2, "b": 3}})
		require.NoError(t, err)
		assert.False(t, res.IsError, text(res))
		assert.JSONEq(t, `{"sum":5}`, text(res))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "everything.get-env"})
		cancel()
		require.NoError(t, err)
		assert.False(t, res.IsError, text(res))
		_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "files.write_file", Arguments: map[string]any{"path": "/a", "content": "x"}})
		require.Error(t, err, "403 insufficient_scope")
		cs.Close()
		v.mu.Lock()
		last := v.seen[len(v.seen)-1]
		v.mu.Unlock()
		if stateless {
			assert.Equal(t, "2026-07-28", last)
		} else {
			assert.Less(t, last, "2026-07-28")
		}
		assert.Equal(t, []string{"everything.get-sum", "everything.get-env"}, e.runs())
	}
}

// TestRefusedCallsAreOnRecordByHashOnly: a call refused before its
// arguments were accepted (an unknown tool, even from a token with no
// scopes; arguments the schema refuses; a scope the token lacks) is on
// record with the hash of its arguments, never the arguments: it would
// let anyone fill the trail at megabytes a request.
func TestRefusedCallsAreOnRecordByHashOnly(t *testing.T) {
	e := newEnv(t, envOpts{stateless: true})
	big := `{"a":"` + strings.Repeat("x", 1<<16) + `","b":3}`
	noScopes := e.token("mallory")
	status, _, body := e.post(t, noScopes, "2026-07-28", "tools/call", "no.such_tool", callBody("no.such_tool", big, true))
	require.Equal(t, http.StatusOK, status, body)
	status, _, body = e.post(t, e.token("alice", all...), "2026-07-28", "tools/call", "everything.get-sum", callBody("everything.get-sum", big, true))
	require.Equal(t, http.StatusOK, status, body)
	// A scope refused with an explanation: the second token of the same
	// user and client still lacks it.
	write := callBody("files.write_file", `{"path":"/a","content":"`+strings.Repeat("x", 1<<16)+`"}`, true)
	status, _, _ = e.post(t, e.token("alice", "demo.read"), "2026-07-28", "tools/call", "files.write_file", write)
	require.Equal(t, http.StatusForbidden, status)
	status, _, body = e.post(t, e.token("alice", "demo.read"), "2026-07-28", "tools/call", "files.write_file", write)
	require.Equal(t, http.StatusOK, status, body)

	evs := e.ev.take()
	var codes []string
	for _, ev := range evs {
		codes = append(codes, string(ev.Kind)+"/"+string(ev.Outcome))
		assert.Nil(t, ev.Args, "%s %s: the arguments are not on record", ev.Tool, ev.Outcome)
		assert.Len(t, ev.ArgsSHA256, 64, "%s %s: their hash is", ev.Tool, ev.Outcome)
	}
	assert.Equal(t, []string{"tool.called/invalid", "tool.called/invalid", "scope.denied/scope_explained"}, codes)
	assert.Empty(t, e.runs())
}
