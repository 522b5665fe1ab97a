package tools_test

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/tools"
)

var update = flag.Bool("update", false, "rewrite golden files")

var allScopes = []string{tools.ScopeContactsRead, tools.ScopeContactsWrite, tools.ScopeDealsRead, tools.ScopeDealsWrite}

// env is a running MCP endpoint with its authorization server and store.
type env struct {
	as       *rstest.Server
	rs       *resourceserver.Server
	store    *crm.Store
	srv      *httptest.Server
	resource string
	handler  *tools.Handler
	dbPath   string
}

func newEnv(t testing.TB, mutate ...func(*tools.Config)) *env {
	t.Helper()
	e := &env{as: rstest.NewServer()}
	t.Cleanup(e.as.Close)
	e.as.KID("RS256")

	e.dbPath = filepath.Join(t.TempDir(), "crm.db")
	var err error
	e.store, err = crm.Open(context.Background(), e.dbPath)
	require.NoError(t, err)
	t.Cleanup(func() { e.store.Close() })

	e.srv = httptest.NewUnstartedServer(nil)
	e.resource = "http://" + e.srv.Listener.Addr().String() + "/mcp"
	e.rs, err = resourceserver.New(resourceserver.Config{
		Resource:        e.resource,
		Issuers:         []resourceserver.Issuer{{URL: e.as.Issuer()}},
		ScopesSupported: []string{tools.ScopeContactsRead},
		Logger:          slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(e.rs.Close)

	cfg := tools.Config{Store: e.store, Auth: e.rs, Logger: slog.New(slog.DiscardHandler)}
	for _, m := range mutate {
		m(&cfg)
	}
	e.handler, err = tools.NewHandler(cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	for _, p := range e.rs.MetadataPaths() {
		mux.Handle(p, e.rs.MetadataHandler())
	}
	mux.Handle("/mcp", e.handler)
	e.srv.Config.Handler = mux
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) token(sub string, scopes ...string) string {
	return e.as.Mint(e.as.Claims(sub, e.resource, scopes...))
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func (e *env) connect(t testing.TB, token string) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "tools-test"}, nil)
	cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint:             e.resource,
		HTTPClient:           &http.Client{Transport: bearer{token}},
		MaxRetries:           -1,
		DisableStandaloneSSE: true,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { cs.Close() })
	return cs
}

func call(t testing.TB, cs *mcp.ClientSession, name string, args map[string]any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	require.NoError(t, err)
	return res
}

func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}

// post sends one raw JSON-RPC message.
func (e *env) post(t testing.TB, token, body string, headers ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("POST", e.resource, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func callBody(tool string, args string) string {
	return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `}}`
}

// toolCases is one valid call per tool, with the scope it needs.
var toolCases = []struct {
	tool  string
	scope string
	args  map[string]any
}{
	{"list_contacts", tools.ScopeContactsRead, map[string]any{"query": "Maya"}},
	{"get_contact", tools.ScopeContactsRead, map[string]any{"id": 1}},
	{"create_contact", tools.ScopeContactsWrite, map[string]any{"name": "Noor Haddad", "email": "noor@example.com"}},
	{"update_contact", tools.ScopeContactsWrite, map[string]any{"id": 2, "phone": "+1 555 0199"}},
	{"list_deals", tools.ScopeDealsRead, map[string]any{"stage": "lead"}},
	{"create_deal", tools.ScopeDealsWrite, map[string]any{"contact_id": 1, "title": "Renewal", "amount": 100000, "currency": "USD"}},
	{"update_deal_stage", tools.ScopeDealsWrite, map[string]any{"id": 1, "stage": "won"}},
}

func TestEachToolWithAndWithoutItsScope(t *testing.T) {
	e := newEnv(t)
	for _, tc := range toolCases {
		t.Run(tc.tool, func(t *testing.T) {
			// With exactly its scope: it runs.
			cs := e.connect(t, e.token("alice", tc.scope))
			res := call(t, cs, tc.tool, tc.args)
			require.False(t, res.IsError, "error: %s", text(res))
			assert.NotNil(t, res.StructuredContent)
			assert.NotEmpty(t, text(res))

			// With every other scope but its own: HTTP 403 before the tool.
			// A user of their own, whom no earlier 403 told about the scope
			// (refusals.go).
			others := slices.DeleteFunc(slices.Clone(allScopes), func(s string) bool { return s == tc.scope })
			body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": map[string]any{"name": tc.tool, "arguments": tc.args}})
			resp := e.post(t, e.token("refused-"+tc.tool, others...), string(body))
			assert.Equal(t, http.StatusForbidden, resp.StatusCode)
			ch := resp.Header.Get("WWW-Authenticate")
			assert.Contains(t, ch, `error="insufficient_scope"`)
			assert.Contains(t, ch, tc.scope)

			// The go-sdk client sees the refusal as an error.
			cs2 := e.connect(t, e.token("refused-again-"+tc.tool, others...))
			_, err := cs2.CallTool(context.Background(), &mcp.CallToolParams{Name: tc.tool, Arguments: tc.args})
			assert.Error(t, err)
		})
	}
}

func TestRefusedWriteDoesNotHappen(t *testing.T) {
	e := newEnv(t)
	before, err := e.store.ListContacts(context.Background(), crm.ContactFilter{Limit: 200, IncludeRestricted: true})
	require.NoError(t, err)
	resp := e.post(t, e.token("alice", tools.ScopeContactsRead), callBody("create_contact", `{"name":"Eve","email":"eve@example.com"}`))
	require.Equal(t, http.StatusForbidden, resp.StatusCode)
	after, err := e.store.ListContacts(context.Background(), crm.ContactFilter{Limit: 200, IncludeRestricted: true})
	require.NoError(t, err)
	assert.Len(t, after, len(before))
}

func TestInsufficientScopeChallengeGolden(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name    string
		granted []string
		body    string
		headers []string
		golden  string
	}{
		{"list_deals with contacts.read", []string{tools.ScopeContactsRead}, callBody("list_deals", `{}`), nil, "challenge_list_deals.txt"},
		{"create_deal with nothing relevant", []string{"openid", "profile"}, callBody("create_deal", `{}`), nil, "challenge_create_deal.txt"},
		{"Mcp-Name header on 2026-07-28", []string{tools.ScopeContactsRead}, `{}`, []string{"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "list_deals"}, "challenge_list_deals.txt"},
		{"batch needs both", []string{tools.ScopeContactsRead}, "[" + callBody("list_deals", `{}`) + "," + strings.Replace(callBody("update_deal_stage", `{}`), `"id":1`, `"id":2`, 1) + "]", nil, "challenge_batch.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := e.post(t, e.token("user-"+tt.name, tt.granted...), tt.body, tt.headers...)
			require.Equal(t, http.StatusForbidden, resp.StatusCode)
			ch := resp.Header.Values("WWW-Authenticate")
			require.Len(t, ch, 1)
			golden(t, tt.golden, strings.ReplaceAll(ch[0], strings.TrimSuffix(e.resource, "/mcp"), "RESOURCE")+"\n")
			var body map[string]string
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			assert.Equal(t, "insufficient_scope", body["error"])
		})
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -update")
	assert.Equal(t, string(want), got)
}

func TestScopeHierarchy(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		granted string
		tool    string
		ok      bool
	}{
		{"crm", "list_deals", true},
		{"crm", "create_contact", true},
		{"crm.deals", "update_deal_stage", true},
		{"crm.deals", "list_contacts", false},
		{"crm.contacts", "list_deals", false},
		{"crm.de", "list_deals", false},
	}
	for _, tt := range tests {
		t.Run(tt.granted+"/"+tt.tool, func(t *testing.T) {
			var args string
			for _, tc := range toolCases {
				if tc.tool == tt.tool {
					b, _ := json.Marshal(tc.args)
					args = string(b)
				}
			}
			user := "user-" + tt.granted + "-" + tt.tool // no earlier 403 for this user
			resp := e.post(t, e.token(user, tt.granted), callBody(tt.tool, args))
			if tt.ok {
				// Past the gate: go-sdk answers (a stateful server wants a
				// session first), but not with 403.
				assert.NotEqual(t, http.StatusForbidden, resp.StatusCode)
				cs := e.connect(t, e.token(user, tt.granted))
				var m map[string]any
				require.NoError(t, json.Unmarshal([]byte(args), &m))
				res := call(t, cs, tt.tool, m)
				assert.False(t, res.IsError, text(res))
			} else {
				assert.Equal(t, http.StatusForbidden, resp.StatusCode)
			}
		})
	}
}

func listTools(t *testing.T, cs *mcp.ClientSession) []string {
	res, err := cs.ListTools(context.Background(), nil)
	require.NoError(t, err)
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	slices.Sort(names)
	return names
}

func TestToolsListAndHiding(t *testing.T) {
	all := []string{"create_contact", "create_deal", "get_contact", "list_contacts", "list_deals", "update_contact", "update_deal_stage"}
	e := newEnv(t)
	assert.Equal(t, all, listTools(t, e.connect(t, e.token("alice", tools.ScopeContactsRead))), "every tool is listed by default")

	h := newEnv(t, func(c *tools.Config) { c.HideUnauthorizedTools = true })
	assert.Equal(t, []string{"get_contact", "list_contacts"}, listTools(t, h.connect(t, h.token("alice", tools.ScopeContactsRead))))
	assert.Equal(t, all, listTools(t, h.connect(t, h.token("alice", "crm"))))
	assert.Empty(t, listTools(t, h.connect(t, h.token("alice", "openid"))))

	// Annotations and scope metadata travel with each tool.
	res, err := e.connect(t, e.token("alice", "crm")).ListTools(context.Background(), nil)
	require.NoError(t, err)
	for _, tl := range res.Tools {
		require.NotNil(t, tl.Annotations, tl.Name)
		assert.Equal(t, strings.HasPrefix(tl.Name, "list_") || strings.HasPrefix(tl.Name, "get_"), tl.Annotations.ReadOnlyHint, tl.Name)
		assert.NotEmpty(t, tl.Meta["crm-mcp/scopes"], tl.Name)
		assert.NotNil(t, tl.OutputSchema, tl.Name)
	}
}

func TestUnauthenticatedOnEveryMethod(t *testing.T) {
	e := newEnv(t)
	for _, method := range []string{"POST", "GET", "DELETE"} {
		req, _ := http.NewRequest(method, e.resource, strings.NewReader(`{}`))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, method)
		assert.Equal(t, `Bearer resource_metadata="`+e.rs.ResourceMetadataURL()+`", scope="crm.contacts.read"`, resp.Header.Get("WWW-Authenticate"), method)
	}
}

func TestBadInputToolErrors(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	tests := []struct {
		tool string
		args map[string]any
		want string
	}{
		{"get_contact", map[string]any{"id": 9999}, "not found"},
		{"get_contact", map[string]any{"id": 0}, "contact id must be a positive whole number"},
		{"get_contact", map[string]any{"id": "six"}, "arguments"},
		{"create_contact", map[string]any{"name": " ", "email": "a@example.com"}, "name"},
		{"create_contact", map[string]any{"name": "Ann", "email": "not-an-email"}, "email"},
		{"create_contact", map[string]any{"name": "Ann", "email": "a@example.com", "classification": "secret"}, "classification"},
		{"update_contact", map[string]any{"id": 9999, "name": "X"}, "not found"},
		{"update_deal_stage", map[string]any{"id": 1, "stage": "closing"}, "stage"},
		{"update_deal_stage", map[string]any{"id": 9999, "stage": "won"}, "not found"},
		{"list_contacts", map[string]any{"limit": 500}, "limit"},
		{"list_deals", map[string]any{"stage": "someday"}, "stage"},
		{"create_deal", map[string]any{"contact_id": 9999, "title": "X", "amount": 1, "currency": "USD"}, "contact 9999 not found"},
		{"create_deal", map[string]any{"contact_id": 1, "title": "X", "amount": -5, "currency": "USD"}, "amount"},
		{"create_deal", map[string]any{"contact_id": 1, "title": "X", "amount": 5, "currency": "usd"}, "currency"},
	}
	for _, tt := range tests {
		t.Run(tt.tool+"/"+tt.want, func(t *testing.T) {
			res := call(t, cs, tt.tool, tt.args)
			require.True(t, res.IsError, "want a tool error, got %s", text(res))
			assert.Contains(t, strings.ToLower(text(res)), tt.want)
		})
	}
	// The session survives bad input.
	assert.False(t, call(t, cs, "list_contacts", nil).IsError)
}

func TestListContactsWithholdsRestricted(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, e.token("alice", tools.ScopeContactsRead))
	res := call(t, cs, "list_contacts", nil)
	require.False(t, res.IsError)
	assert.NotContains(t, text(res), "Riley Vance")
	assert.Contains(t, text(res), "1 restricted contact(s) withheld")
	var out tools.ContactList
	b, _ := json.Marshal(res.StructuredContent)
	require.NoError(t, json.Unmarshal(b, &out))
	require.NotNil(t, out.WithheldRestricted)
	assert.Equal(t, 1, *out.WithheldRestricted)
	for _, c := range out.Contacts {
		assert.NotEqual(t, crm.Restricted, c.Classification)
	}
}

func TestWritesPersistAcrossRestart(t *testing.T) {
	e := newEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	res := call(t, cs, "create_contact", map[string]any{"name": "Noor Haddad", "email": "noor@example.com"})
	require.False(t, res.IsError, text(res))
	var c tools.ContactWritten
	b, _ := json.Marshal(res.StructuredContent)
	require.NoError(t, json.Unmarshal(b, &c))
	require.NotNil(t, c.Changed.Owner)
	assert.Equal(t, "alice", *c.Changed.Owner, "owner defaults to the signed-in user")

	require.NoError(t, e.store.Close())
	reopened, err := crm.Open(context.Background(), e.dbPath)
	require.NoError(t, err)
	defer reopened.Close()
	got, err := reopened.GetContact(context.Background(), c.ID)
	require.NoError(t, err)
	assert.Equal(t, "Noor Haddad", got.Name)
}

func TestRequestLogLine(t *testing.T) {
	logs := &syncBuffer{}
	e := newEnv(t, func(c *tools.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	tok := e.token("alice", tools.ScopeContactsRead)
	cs := e.connect(t, tok)
	require.False(t, call(t, cs, "list_contacts", nil).IsError)
	e.post(t, tok, callBody("list_deals", `{}`))
	e.post(t, "", callBody("list_deals", `{}`))

	// A line is written when its handler returns, a moment after the
	// client has the answer.
	lines := []*regexp.Regexp{
		regexp.MustCompile(`level=INFO msg=request method=POST path=/mcp tool=list_contacts sub=alice status=200 duration=\S+`),
		regexp.MustCompile(`level=INFO msg=request method=POST path=/mcp tool=list_deals sub=alice status=403 duration=\S+`),
		// Refused before any token was verified: Debug, so that a flood of
		// them does not grow the log at the default level.
		regexp.MustCompile(`level=DEBUG msg=request method=POST path=/mcp tool="" sub="" status=401 duration=\S+`),
	}
	assert.Eventually(t, func() bool {
		out := logs.String()
		for _, re := range lines {
			if !re.MatchString(out) {
				return false
			}
		}
		return true
	}, 5*time.Second, 10*time.Millisecond, "the three request lines")
	out := logs.String()
	assert.NotContains(t, out, tok, "a token reached the log")
}

// toAudit records each governed event as the audit trail does.
func toAudit(record func(context.Context, audit.Event) error) govern.Recorder {
	return func(ctx context.Context, e govern.Event) error { return record(ctx, e.AuditEvent()) }
}
