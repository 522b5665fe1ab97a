package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
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
	// [docs:go-current-revision]
	client := mcp.NewClient(&mcp.Implementation{Name: "crm-agent", Version: "0.1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:     d.mcp,
		HTTPClient:   &http.Client{Transport: headers}, // records the MCP headers
		OAuthHandler: alice.handler,                    // auth.NewAuthorizationCodeHandler
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { session.Close() })
	// Connect asked server/discover and chose the newest revision both sides
	// speak; there is no initialize and no session.
	assert.Equal(t, "2026-07-28", session.InitializeResult().ProtocolVersion)
	assert.Empty(t, session.ID())
	// [/docs:go-current-revision]
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

// requireE2E fails the test when a prerequisite of an end-to-end test is
// missing, unless CRM_MCP_SKIP_E2E=1 says to skip such tests.
func requireE2E(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CRM_MCP_SKIP_E2E") == "1" {
		t.Skipf("CRM_MCP_SKIP_E2E=1: "+format, args...)
	}
	t.Fatalf(format+"; ./test at the repository root sets it up, or set CRM_MCP_SKIP_E2E=1 to skip this test", args...)
}

// TestDevTypeScriptV2ClientCurrentRevision: the TypeScript SDK v2 client
// (@modelcontextprotocol/client, examples/typescript-client-v2/client.mjs)
// against crm-mcp dev, as the Go client above: OAuth through the SDK's own
// client, 2026-07-28 (with versionNegotiation), a plain call, a push
// approved, a push denied, and no session.
func TestDevTypeScriptV2ClientCurrentRevision(t *testing.T) {
	node, err := exec.LookPath("node")
	requireE2E(t, err == nil, "node is not on PATH: the TypeScript SDK v2 client needs Node.js 20+")
	dir := filepath.Join("..", "..", "examples", "typescript-client-v2")
	_, err = os.Stat(filepath.Join(dir, "node_modules", "@modelcontextprotocol", "client", "package.json"))
	requireE2E(t, err == nil, "examples/typescript-client-v2/node_modules is missing: run `npm ci --prefix examples/typescript-client-v2`")

	d := startDev(t)
	d.stack.duo.Script("alice", duotest.Approve, duotest.Times(1), duotest.AfterDelay(300*time.Millisecond))
	d.stack.duo.Script("alice", duotest.Deny)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "client.mjs", d.mcp, "alice")
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	t.Logf("client.mjs:\n%s%s", stdout.String(), stderr.String())

	steps := map[string]map[string]any{}
	var final map[string]any
	sc := bufio.NewScanner(&stdout)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		if name, ok := line["step"].(string); ok {
			steps[name] = line
		}
		if _, ok := line["scenario"]; ok {
			final = line
		}
	}
	for _, name := range []string{"connect", "plain call", "step-up approved", "step-up denied", "wire"} {
		if assert.Contains(t, steps, name) {
			assert.Equal(t, true, steps[name]["ok"], "%s: %v", name, steps[name]["error"])
		}
	}
	assert.Equal(t, "2026-07-28", steps["connect"]["protocol_version"])
	assert.Equal(t, map[string]any{"scenario": "current-revision", "ok": true}, final)
	assert.NoError(t, runErr)
	pushes := d.stack.duo.Pushes()
	require.Len(t, pushes, 2, "one push approved, one denied")
	assert.Equal(t, []string{"allow", "deny"}, []string{pushes[0].Result, pushes[1].Result})
	if s := d.stdout.String() + d.stderr.String(); strings.Contains(s, "Bearer ") {
		t.Errorf("a bearer token in dev's output")
	}
}

// TestServeRevisions: the README's serve, with no setting, serves MCP
// 2026-07-28 and every earlier revision go-sdk v1.8.0 serves, all without
// a session. server/discover names the server and lists 2026-07-28 first;
// an initialize of an earlier revision is answered in that revision.
func TestServeRevisions(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	s := startServe(t, testEnv(t, as))
	token := as.Mint(as.Claims("alice", testResource, "crm.contacts.read"))

	post := func(t *testing.T, h http.Header, body string) (*http.Response, map[string]any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, s.url("/mcp"), strings.NewReader(body))
		require.NoError(t, err)
		req.Header = h
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		for _, line := range strings.Split(string(b), "\n") { // an SSE stream or one JSON document
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				b = []byte(data)
				break
			}
		}
		var msg map[string]any
		require.NoError(t, json.Unmarshal(b, &msg), "%s", b)
		return resp, msg
	}

	// The doc's request by hand (docs/clients.md, "By hand, with curl").
	t.Run("2026-07-28: tools/call by hand", func(t *testing.T) {
		h := http.Header{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/call"}, "Mcp-Name": {"list_contacts"}}
		resp, msg := post(t, h, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{"query":"Aegis"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%v", msg)
		result, _ := msg["result"].(map[string]any)
		require.NotNil(t, result, "%v", msg)
		assert.Equal(t, "complete", result["resultType"])
		assert.Nil(t, result["isError"], "%v", result)
	})

	t.Run("2026-07-28: server/discover", func(t *testing.T) {
		meta := `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}`
		h := http.Header{"Mcp-Protocol-Version": {currentRevision}, "Mcp-Method": {"server/discover"}}
		resp, msg := post(t, h, `{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{`+meta+`}}`)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%v", msg)
		assert.Empty(t, resp.Header.Get("Mcp-Session-Id"))
		result, _ := msg["result"].(map[string]any)
		require.NotNil(t, result, "%v", msg)
		assert.Equal(t, []any{"2026-07-28", "2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"}, result["supportedVersions"])
		rm, _ := result["_meta"].(map[string]any)
		info, _ := rm["io.modelcontextprotocol/serverInfo"].(map[string]any)
		assert.Equal(t, "crm-mcp", info["name"], "the server is named: %v", result)
	})
	for _, v := range []string{"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"} {
		t.Run(v+": initialize", func(t *testing.T) {
			resp, msg := post(t, http.Header{}, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+v+`","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}`)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%v", msg)
			assert.Empty(t, resp.Header.Get("Mcp-Session-Id"), "no session")
			result, _ := msg["result"].(map[string]any)
			require.NotNil(t, result, "%v", msg)
			assert.Equal(t, v, result["protocolVersion"])
		})
	}
	assert.Equal(t, 0, s.stop(t))
}

// TestClientsDocSnippets: the client snippets of docs/clients.md are the
// code the tests above run, verbatim: the region between the
// "[docs:NAME]" markers of each source file.
func TestClientsDocSnippets(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "clients.md"))
	require.NoError(t, err)
	for _, src := range []struct{ file, name string }{
		{"revision_test.go", "go-current-revision"},
		{filepath.Join("..", "..", "examples", "typescript-client-v2", "client.mjs"), "typescript-v2-connect"},
	} {
		b, err := os.ReadFile(src.file)
		require.NoError(t, err)
		_, rest, ok := strings.Cut(string(b), "// [docs:"+src.name+"]\n")
		require.True(t, ok, "%s: no start marker", src.file)
		region, _, ok := strings.Cut(rest, "// [/docs:"+src.name+"]")
		require.True(t, ok, "%s: no end marker", src.file)
		// The doc shows it unindented, as a reader copies it.
		lines := strings.Split(strings.TrimRight(region, "\t\n"), "\n")
		indent := len(lines[0]) - len(strings.TrimLeft(lines[0], "\t"))
		for i, l := range lines {
			if len(l) >= indent {
				lines[i] = l[indent:]
			}
		}
		snippet := strings.Join(lines, "\n") + "\n"
		assert.Contains(t, string(doc), snippet, "docs/clients.md must show %s's %s region verbatim", src.file, src.name)
	}
}
