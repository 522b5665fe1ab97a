package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

var updateDevGolden = flag.Bool("update", false, "rewrite golden files")

// devServer is crm-mcp dev running in-process.
type devServer struct {
	base   string // http://127.0.0.1:PORT
	mcp    string
	stack  *devStack
	stdout *syncBuffer
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan int
}

// startDev runs "crm-mcp dev --addr 127.0.0.1:0 --data-dir <tmp>" plus
// args, and waits until it is ready.
func startDev(t *testing.T, args ...string) *devServer {
	t.Helper()
	// dev overrides the settings that point at its stand-ins, and says so
	// (TestDevEnvironment covers the rest).
	return startDevEnv(t, map[string]string{"AUTH_MODE": "jwt", "MCP_RESOURCE_URL": "https://elsewhere.example/mcp"}, args...)
}

// startDevEnv is startDev with the process environment environ (the
// gateway's ${VAR}s, and PATH for its stdio upstreams).
func startDevEnv(t *testing.T, environ map[string]string, args ...string) *devServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &devServer{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	listening := make(chan string, 1)
	stacks := make(chan *devStack, 1)
	a := &app{
		environ:    environ,
		stdout:     d.stdout,
		stderr:     d.stderr,
		listening:  func(addr string) { listening <- addr },
		devStarted: func(s *devStack) { stacks <- s },
	}
	full := append([]string{"dev", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, args...)
	go func() { d.done <- a.run(ctx, full) }()
	select {
	case addr := <-listening:
		d.base = "http://" + addr
		d.mcp = d.base + "/mcp"
		d.stack = <-stacks
	case code := <-d.done:
		t.Fatalf("dev exited with %d before listening:\n%s\n%s", code, d.stdout, d.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("dev did not start:\n%s", d.stderr)
	}
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("dev stdout:\n%s\ndev log:\n%s", d.stdout, d.stderr)
		}
	})
	return d
}

// stop cancels dev's context, as Ctrl-C does, and returns its exit code.
func (d *devServer) stop(t *testing.T) int {
	t.Helper()
	d.cancel()
	select {
	case code := <-d.done:
		d.done <- code // for Cleanup
		return code
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("dev did not stop")
		return -1
	}
}

// do sends a request to dev and returns the status and body.
func (d *devServer) do(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, d.base+path, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// devPush is a push as the push JSON API shows it.
type devPush struct {
	TxID     string            `json:"txid"`
	User     string            `json:"user"`
	Type     string            `json:"type"`
	Status   string            `json:"status"`
	Result   string            `json:"result"`
	PushInfo map[string]string `json:"pushinfo"`
	Created  time.Time         `json:"created"`
}

func (d *devServer) pushes(t *testing.T) []devPush {
	t.Helper()
	status, body := d.do(t, http.MethodGet, "/dev/push/api/pushes")
	require.Equal(t, http.StatusOK, status, body)
	var out []devPush
	require.NoError(t, json.Unmarshal([]byte(body), &out), body)
	return out
}

// waitForPush polls the push API, as a script would, until a push that is
// not in seen waits for an answer.
func (d *devServer) waitForPush(t *testing.T, seen map[string]bool) devPush {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range d.pushes(t) {
			if p.Result == "waiting" && !seen[p.TxID] {
				seen[p.TxID] = true
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no push appeared")
	return devPush{}
}

// devRecorder is the HTTP transport under a client: it records every
// response's status and challenge, and every credential that passes, so
// that the test can look for them in the logs.
type devRecorder struct {
	mu      sync.Mutex
	seen    []devRecorded
	secrets []string   // bearer tokens, refresh tokens, client secrets
	scopes  [][]string // the scope of every token issued, in order
}

type devRecorded struct {
	method, path string
	status       int
	challenge    string // WWW-Authenticate
}

func (r *devRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
		r.keep(tok)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.seen = append(r.seen, devRecorded{req.Method, req.URL.Path, resp.StatusCode, resp.Header.Get("WWW-Authenticate")})
	r.mu.Unlock()
	// The token and registration endpoints hand out credentials in the body.
	if strings.HasSuffix(req.URL.Path, "/token") || strings.HasSuffix(req.URL.Path, "/register") {
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		var creds struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
			ClientSecret string `json:"client_secret"`
			Scope        string `json:"scope"`
		}
		if json.Unmarshal(body, &creds) == nil {
			r.keep(creds.AccessToken, creds.RefreshToken, creds.ClientSecret)
			if creds.AccessToken != "" {
				r.mu.Lock()
				r.scopes = append(r.scopes, strings.Fields(creds.Scope))
				r.mu.Unlock()
			}
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	return resp, nil
}

func (r *devRecorder) keep(secrets ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range secrets {
		if s != "" {
			r.secrets = append(r.secrets, s)
		}
	}
}

// tokenScopes returns the scopes of every token issued, in order.
func (r *devRecorder) tokenScopes() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.scopes)
}

// last returns the last devRecorded response with status, if any.
func (r *devRecorder) last(status int) (devRecorded, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.seen) - 1; i >= 0; i-- {
		if r.seen[i].status == status {
			return r.seen[i], true
		}
	}
	return devRecorded{}, false
}

func (r *devRecorder) count(pathSuffix string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.seen {
		if strings.HasSuffix(s.path, pathSuffix) {
			n++
		}
	}
	return n
}

// devClient is go-sdk's MCP client with its OAuth authorization-code
// handler, signing in as one user through login_hint, as a browser would
// up to the redirect to the client's loopback callback.
type devClient struct {
	d       *devServer
	user    string
	handler *auth.AuthorizationCodeHandler
	rec     *devRecorder // under both the MCP transport and the OAuth handler

	mu       sync.Mutex
	authURLs []*url.URL // every authorization request, in order
}

func newDevClient(t *testing.T, d *devServer, user string) *devClient {
	t.Helper()
	c := &devClient{d: d, user: user, rec: &devRecorder{}}
	extra := url.Values{}
	if user != "" {
		extra.Set("login_hint", user)
	}
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{
			Metadata: &oauthex.ClientRegistrationMetadata{
				ClientName:   "crm-mcp dev test",
				RedirectURIs: []string{"http://127.0.0.1:3142/callback"},
				GrantTypes:   []string{"authorization_code", "refresh_token"},
			},
		},
		AuthorizationCodeFetcher: c.fetchCode(extra),
		RequestRefreshToken:      true,
		Client:                   &http.Client{Transport: c.rec},
	})
	require.NoError(t, err)
	c.handler = handler
	return c
}

// fetchCode opens the authorization URL without following redirects and
// reads code, state and iss (RFC 9207, which the stand-in advertises)
// from the redirect to the callback.
func (c *devClient) fetchCode(extra url.Values) auth.AuthorizationCodeFetcher {
	return func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		u, err := url.Parse(args.URL)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.authURLs = append(c.authURLs, u)
		c.mu.Unlock()
		q := u.Query()
		for k, v := range extra {
			q[k] = v
		}
		u2 := *u
		u2.RawQuery = q.Encode()
		return authorizeByRedirect(ctx, u2.String())
	}
}

// authorizeByRedirect GETs an authorization URL that the stand-in answers
// with a redirect (login_hint or auto-login), without following it, and
// reads code, state and iss from the redirect.
func authorizeByRedirect(ctx context.Context, authURL string) (*auth.AuthorizationResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return nil, err
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		return nil, fmt.Errorf("authorization endpoint answered %s, want a redirect", resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return nil, err
	}
	lq := loc.Query()
	if e := lq.Get("error"); e != "" {
		return nil, fmt.Errorf("authorization failed: %s: %s", e, lq.Get("error_description"))
	}
	return &auth.AuthorizationResult{Code: lq.Get("code"), State: lq.Get("state"), Iss: lq.Get("iss")}, nil
}

func (c *devClient) authorizations() []*url.URL {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*url.URL(nil), c.authURLs...)
}

func (c *devClient) connect(t *testing.T, ctx context.Context) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "crm-mcp-dev-test", Version: "0.0.1"}, nil)
	session, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:             c.d.mcp,
		HTTPClient:           &http.Client{Transport: c.rec},
		OAuthHandler:         c.handler,
		DisableStandaloneSSE: true,
		MaxRetries:           -1,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { session.Close() })
	return session
}

func devCall(ctx context.Context, s *mcp.ClientSession, tool string, args map[string]any) (*mcp.CallToolResult, error) {
	if args == nil {
		args = map[string]any{}
	}
	return s.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
}

func devText(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// admin changes a user's scope through the scope admin JSON API.
func (d *devServer) admin(t *testing.T, method, user, scope string) {
	t.Helper()
	status, body := d.do(t, method, "/oauth2/dev/admin/api/users/"+user+"/scopes/"+scope)
	require.Equal(t, http.StatusNoContent, status, body)
}

// TestDevEndToEnd is the newcomer's minute, driven by go-sdk's client:
// log in, list contacts, ask for the defence accounts and approve the
// push, deny one, lack a scope and get it granted, lose one.
func TestDevEndToEnd(t *testing.T) {
	d := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("printed output", func(t *testing.T) {
		out := d.stdout.String()
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		assert.Equal(t, "crm-mcp dev ready: "+d.mcp, lines[len(lines)-1], "the machine-readable line comes last")
		assert.Equal(t, 1, strings.Count(out, "crm-mcp dev ready: "))
		assert.Contains(t, out, d.base+"/dev/push")
		assert.Contains(t, out, d.base+"/oauth2/dev/admin")
		assert.Contains(t, out, "npx @modelcontextprotocol/inspector")
		assert.Contains(t, out, "MCP_AUTO_OPEN_ENABLED=false npx -y -p node@22 -p @modelcontextprotocol/inspector@2 mcp-inspector --cli "+d.mcp+" --transport http", "the Inspector CLI line, headless")
		assert.Contains(t, out, `{"mcpServers":{"crm":{"command":"npx","args":["mcp-remote","`+d.mcp+`"]}}}`)
		assert.Contains(t, out, `{"servers":{"crm":{"type":"http","url":"`+d.mcp+`"}}}`)
		for _, u := range devduo.DefaultUsers() {
			assert.Regexp(t, regexp.MustCompile(`(?m)^  `+u.Name+` +`+regexp.QuoteMeta(strings.Join(u.Scopes, " "))+`$`), out)
		}
	})

	t.Run("the server runs as serve would, against the stand-ins", func(t *testing.T) {
		env, _, err := d.stack.environ(nil)
		require.NoError(t, err)
		assert.Equal(t, d.mcp, env["MCP_RESOURCE_URL"])
		assert.Equal(t, d.base+"/oauth2/dev", env["DUO_ISSUER"])
		assert.Equal(t, "jwt+introspection", env["AUTH_MODE"])
		assert.Equal(t, "http://localhost:6274,http://127.0.0.1:6274", env["MCP_ALLOWED_ORIGINS"])
		ca, err := os.ReadFile(env["DUO_AUTH_CA_FILE"])
		require.NoError(t, err)
		assert.Equal(t, d.stack.duo.CACertPEM(), ca, "the Duo stand-in is trusted through the CA file, as in production")
		assert.FileExists(t, env["CRM_DB_PATH"])
		assert.NotContains(t, d.stderr.String(), "elsewhere.example", "an overridden value is never printed")
		assert.Contains(t, d.stderr.String(), "ignoring MCP_RESOURCE_URL from the environment: dev's MCP URL follows --addr")
		assert.Contains(t, d.stderr.String(), "ignoring AUTH_MODE from the environment")

		status, body := d.do(t, http.MethodGet, "/readyz")
		assert.Equal(t, http.StatusOK, status, body)
		status, body = d.do(t, http.MethodGet, "/.well-known/oauth-protected-resource/mcp")
		require.Equal(t, http.StatusOK, status)
		var prm map[string]any
		require.NoError(t, json.Unmarshal([]byte(body), &prm))
		assert.Equal(t, d.mcp, prm["resource"])
		assert.Equal(t, []any{d.base + "/oauth2/dev"}, prm["authorization_servers"])
		status, _ = d.do(t, http.MethodGet, "/.well-known/oauth-authorization-server/oauth2/dev")
		assert.Equal(t, http.StatusOK, status)
		status, body = d.do(t, http.MethodGet, "/dev/push")
		assert.Equal(t, http.StatusOK, status)
		assert.Contains(t, body, "Duo Mobile")
		status, body = d.do(t, http.MethodGet, "/oauth2/dev/admin")
		assert.Equal(t, http.StatusOK, status)
		assert.Contains(t, body, "crm.deals.read")
		status, body = d.do(t, http.MethodGet, "/")
		assert.Equal(t, http.StatusOK, status)
		assert.Contains(t, body, `href="/dev/push"`)
	})

	alice := newDevClient(t, d, "alice")
	clients := []*devClient{alice}
	session := alice.connect(t, ctx)

	t.Run("log in: discovery, registration, PKCE, resource, token", func(t *testing.T) {
		first, ok := alice.rec.last(http.StatusUnauthorized)
		require.True(t, ok, "the first MCP request is refused")
		assert.Equal(t, `Bearer resource_metadata="`+d.base+`/.well-known/oauth-protected-resource/mcp", scope="crm.contacts.read crm.contacts.write crm.deals.read crm.deals.write"`, first.challenge,
			"the challenge asks for every scope a tool needs")
		assert.Equal(t, 1, alice.rec.count("/register"), "one dynamic registration")
		assert.Equal(t, 1, alice.rec.count("/token"), "one code exchange")
		auths := alice.authorizations()
		require.Len(t, auths, 1)
		u := auths[0]
		assert.Equal(t, d.base+"/oauth2/dev/authorize", u.Scheme+"://"+u.Host+u.Path, "authorization_endpoint from discovery")
		q := u.Query()
		assert.Equal(t, "code", q.Get("response_type"))
		assert.Equal(t, "S256", q.Get("code_challenge_method"))
		assert.Len(t, q.Get("code_challenge"), 43)
		assert.Equal(t, []string{d.mcp}, q["resource"], "RFC 8707 resource")
		// go-sdk keeps the scopes of the 401 challenge, in no fixed order.
		assert.ElementsMatch(t, []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}, strings.Fields(q.Get("scope")), "the scope of the 401 challenge")
		// One sign-in covers every tool alice is granted: the first token
		// carries the deals and write scopes too.
		scopes := alice.rec.tokenScopes()
		require.Len(t, scopes, 1)
		assert.ElementsMatch(t, []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}, scopes[0])
	})

	t.Run("the deals tools work without a second sign-in", func(t *testing.T) {
		res, err := devCall(ctx, session, "list_deals", nil)
		require.NoError(t, err)
		require.False(t, res.IsError, devText(res))
		assert.Len(t, alice.authorizations(), 1, "no second authorization")
		_, forbidden := alice.rec.last(http.StatusForbidden)
		assert.False(t, forbidden, "no insufficient_scope challenge")
	})

	t.Run("list contacts: the restricted one is withheld", func(t *testing.T) {
		res, err := devCall(ctx, session, "list_contacts", nil)
		require.NoError(t, err)
		require.False(t, res.IsError, devText(res))
		assert.NotContains(t, devText(res), "Riley")
		assert.Contains(t, devText(res), "1 restricted contact(s) withheld")
		var out struct {
			WithheldRestricted int `json:"withheld_restricted"`
		}
		b, _ := json.Marshal(res.StructuredContent)
		require.NoError(t, json.Unmarshal(b, &out))
		assert.Equal(t, 1, out.WithheldRestricted)
		assert.Empty(t, d.pushes(t), "no push for a plain listing")
	})

	seen := map[string]bool{}
	t.Run("defence accounts: the push is approved, the record comes back", func(t *testing.T) {
		type result struct {
			res *mcp.CallToolResult
			err error
		}
		done := make(chan result, 1)
		go func() {
			res, err := devCall(ctx, session, "list_contacts", map[string]any{"query": "defence"})
			done <- result{res, err}
		}()
		p := d.waitForPush(t, seen)
		assert.Equal(t, "alice", p.User, "the user from the token")
		assert.Equal(t, "AI agent", p.Type, `shown as "AI agent request"`)
		assert.Equal(t, "pushed", p.Status)
		assert.Equal(t, `Search contacts for "defence"`, p.PushInfo["action"])
		assert.Contains(t, p.PushInfo["reason"], `"defence"`)
		assert.Equal(t, "included", p.PushInfo["restricted"])
		assert.Equal(t, "crm-mcp", p.PushInfo["server"])
		select {
		case r := <-done:
			t.Fatalf("the call did not wait for the push: %v %v", r.res, r.err)
		default:
		}

		status, body := d.do(t, http.MethodPost, "/dev/push/api/pushes/"+p.TxID+"/approve")
		require.Equal(t, http.StatusNoContent, status, body)
		status, _ = d.do(t, http.MethodPost, "/dev/push/api/pushes/"+p.TxID+"/deny")
		assert.Equal(t, http.StatusConflict, status, "already decided")
		status, _ = d.do(t, http.MethodPost, "/dev/push/api/pushes/no-such-txid/approve")
		assert.Equal(t, http.StatusNotFound, status)

		r := <-done
		require.NoError(t, r.err)
		require.False(t, r.res.IsError, devText(r.res))
		assert.Contains(t, devText(r.res), "Riley Vance")
		got := d.pushes(t)
		require.NotEmpty(t, got)
		assert.Equal(t, p.TxID, got[0].TxID)
		assert.Equal(t, "allow", got[0].Result)
	})

	t.Run("a denied push stops the agent", func(t *testing.T) {
		done := make(chan *mcp.CallToolResult, 1)
		go func() {
			// Other arguments than the approved call, which the grant covers.
			res, err := devCall(ctx, session, "list_contacts", map[string]any{"query": "defence", "limit": 5})
			assert.NoError(t, err)
			done <- res
		}()
		p := d.waitForPush(t, seen)
		assert.Equal(t, "alice", p.User)
		status, body := d.do(t, http.MethodPost, "/dev/push/api/pushes/"+p.TxID+"/deny")
		require.Equal(t, http.StatusNoContent, status, body)
		res := <-done
		require.NotNil(t, res)
		assert.True(t, res.IsError, "a tool error")
		assert.Contains(t, devText(res), "denied")
		assert.NotContains(t, devText(res), "Riley")
		assert.NotContains(t, devText(res), "aegis")
	})

	t.Run("a missing scope: 403 challenge, granted, re-authorized", func(t *testing.T) {
		bob := newDevClient(t, d, "bob")
		clients = append(clients, bob)
		s := bob.connect(t, ctx)
		res, err := devCall(ctx, s, "list_contacts", nil)
		require.NoError(t, err)
		require.False(t, res.IsError)

		// go-sdk meets the 403 insufficient_scope by authorizing again with
		// the challenged scopes (joined with those granted before) and
		// retrying once. Bob does not hold crm.deals.read, so the stand-in
		// grants what he holds, the retry gets the same 403 and the call
		// fails.
		_, err = devCall(ctx, s, "list_deals", nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "Forbidden")
		ch, ok := bob.rec.last(http.StatusForbidden)
		require.True(t, ok)
		assert.Equal(t, "POST", ch.method)
		// The scope the call needs plus those granted that stay relevant.
		assert.Equal(t, `Bearer error="insufficient_scope", scope="crm.contacts.read crm.contacts.write crm.deals.read crm.deals.write", resource_metadata="`+d.base+`/.well-known/oauth-protected-resource/mcp", error_description="This call needs the scope crm.deals.read"`, ch.challenge)
		auths := bob.authorizations()
		require.Len(t, auths, 2, "go-sdk authorized again")
		// go-sdk unions the granted and challenged scopes, in no fixed order.
		assert.ElementsMatch(t, []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}, strings.Fields(auths[1].Query().Get("scope")), "with the challenged scope")
		assert.Equal(t, []string{d.mcp}, auths[1].Query()["resource"])

		// The administrator grants the scope; the same client authorizes
		// again on the next 403 and the call goes through.
		d.admin(t, http.MethodPost, "bob", "crm.deals.read")
		s = bob.connect(t, ctx) // go-sdk closed the connection after the failed retry
		res, err = devCall(ctx, s, "list_deals", nil)
		require.NoError(t, err)
		require.False(t, res.IsError, devText(res))
		assert.Contains(t, devText(res), "deal")
		auths = bob.authorizations()
		require.Len(t, auths, 3)
		assert.ElementsMatch(t, []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}, strings.Fields(auths[2].Query().Get("scope")))
	})

	t.Run("a revoked scope refuses the next call", func(t *testing.T) {
		carol := newDevClient(t, d, "carol")
		clients = append(clients, carol)
		s := carol.connect(t, ctx)
		res, err := devCall(ctx, s, "list_contacts", nil)
		require.NoError(t, err)
		require.False(t, res.IsError, devText(res))
		// Asked for every scope, carol is issued what she holds, read-only,
		// in one sign-in: no refusal.
		require.Len(t, carol.authorizations(), 1)
		require.Len(t, carol.rec.tokenScopes(), 1)
		assert.ElementsMatch(t, []string{"crm.contacts.read", "crm.deals.read"}, carol.rec.tokenScopes()[0])

		d.admin(t, http.MethodDelete, "carol", "crm.contacts.read")
		// Same JWT, still signed and unexpired: introspection says the
		// scope is gone. go-sdk asks for it again, carol is issued what
		// she still holds (crm.deals.read), and the retry is refused.
		_, err = devCall(ctx, s, "list_contacts", nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "Forbidden")
		ch, ok := carol.rec.last(http.StatusForbidden)
		require.True(t, ok)
		assert.Contains(t, ch.challenge, `error="insufficient_scope", scope="crm.contacts.read crm.deals.read"`)
		scopes := carol.rec.tokenScopes()
		require.Len(t, scopes, 2)
		assert.Equal(t, []string{"crm.deals.read"}, scopes[1])
	})

	t.Run("no token or secret in the output", func(t *testing.T) {
		logs := d.stdout.String() + d.stderr.String()
		secrets := map[string]string{
			"Duo secret key":                  d.stack.duo.SKey(),
			"introspection client secret":     d.stack.introspectionSecret,
			"Authorization header (any user)": "Bearer ey",
		}
		for _, c := range clients {
			c.rec.mu.Lock()
			for i, s := range c.rec.secrets {
				secrets[fmt.Sprintf("%s's credential %d", c.user, i)] = s
			}
			c.rec.mu.Unlock()
		}
		// Access and refresh tokens and DCR client secrets of three users.
		require.Greater(t, len(secrets), 15)
		for what, s := range secrets {
			assert.NotContains(t, logs, s, what)
		}
		assert.Contains(t, d.stderr.String(), "DUO_AUTH_SKEY=set")
		assert.Contains(t, d.stderr.String(), "DUO_CLIENT_SECRET=set")
	})

	assert.Equal(t, 0, d.stop(t), "Ctrl-C: a clean shutdown")
	assert.Contains(t, d.stderr.String(), "closed the CRM database")
}

// Ctrl-C while a tool call waits on a push: the phone page goes with the
// server, so the Duo stand-in goes at once and the call ends with a tool
// error instead of holding the shutdown until its deadline.
func TestDevShutdownWithPendingPush(t *testing.T) {
	d := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newDevClient(t, d, "alice")
	s := c.connect(t, ctx)
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		res, err := devCall(ctx, s, "get_contact", map[string]any{"id": 6})
		assert.NoError(t, err)
		done <- res
	}()
	d.waitForPush(t, map[string]bool{})

	start := time.Now()
	assert.Equal(t, 0, d.stop(t))
	assert.Less(t, time.Since(start), shutdownTimeout/2, "the shutdown did not wait for the deadline")
	res := <-done
	require.NotNil(t, res)
	assert.True(t, res.IsError)
	assert.NotContains(t, devText(res), "Riley")
	assert.Contains(t, d.stderr.String(), "tool calls finished; closed the MCP sessions")
}

func TestDevAutoLogin(t *testing.T) {
	d := startDev(t, "--auto-login", "carol")
	assert.Contains(t, d.stdout.String(), "Auto-login: every authorization signs in as carol.")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newDevClient(t, d, "") // no login_hint
	s := c.connect(t, ctx)
	res, err := devCall(ctx, s, "list_contacts", nil)
	require.NoError(t, err)
	require.False(t, res.IsError)
	var sub string
	c.rec.mu.Lock()
	for _, tok := range c.rec.secrets {
		if parts := strings.Split(tok, "."); len(parts) == 3 {
			payload, err := base64.RawURLEncoding.DecodeString(parts[1])
			require.NoError(t, err)
			var claims struct {
				Sub string `json:"sub"`
			}
			require.NoError(t, json.Unmarshal(payload, &claims))
			sub = claims.Sub
		}
	}
	c.rec.mu.Unlock()
	assert.Equal(t, "carol", sub)
}

func TestDevLoginPage(t *testing.T) {
	d := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newDevClient(t, d, "")
	client := mcp.NewClient(&mcp.Implementation{Name: "t"}, nil)
	_, err := client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint: d.mcp, OAuthHandler: c.handler, DisableStandaloneSSE: true, MaxRetries: -1,
	}, nil)
	require.Error(t, err, "without a hint or auto-login, a person must pick a user")
	assert.Contains(t, err.Error(), "200 OK", "the login page, not a redirect")
}

func TestDevRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0", "crm.internal:8080"} {
		t.Run(addr, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"dev", "--addr", addr, "--data-dir", t.TempDir()}, nil, &stdout, &stderr)
			assert.Equal(t, 2, code)
			assert.Contains(t, stderr.String(), "is not a loopback address")
			assert.Empty(t, stdout.String())
		})
	}
}

func TestDevFlags(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"help", []string{"-h"}, 0, "usage: crm-mcp dev [flags]", ""},
		{"help lists the flags", []string{"--help"}, 0, "-data-dir", ""},
		{"help, single dash", []string{"-help"}, 0, "-auto-login", ""},
		{"unknown flag", []string{"--port", "1"}, 2, "", "flag provided but not defined: -port"},
		{"argument", []string{"now"}, 2, "", `unexpected arguments ["now"]`},
		{"not host:port", []string{"--addr", "8080"}, 1, "", `-addr "8080" is not host:port`},
		{"unknown user", []string{"--auto-login", "mallory", "--addr", "127.0.0.1:0"}, 2, "", `"mallory" is not a dev user`},
		{"empty data dir", []string{"--data-dir", " ", "--addr", "127.0.0.1:0"}, 2, "", "-data-dir must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"dev"}, tt.args...), nil, &stdout, &stderr)
			assert.Equal(t, tt.code, code, stderr.String())
			assert.Contains(t, stdout.String(), tt.inStdout)
			assert.Contains(t, stderr.String(), tt.inStderr)
			usages := strings.Count(stdout.String()+stderr.String(), "usage: crm-mcp dev")
			if tt.code == 0 {
				assert.Equal(t, 1, usages, "the usage, once")
				assert.Empty(t, stderr.String(), "asked for, the usage goes to stdout only")
			} else {
				assert.LessOrEqual(t, usages, 1, "the usage at most once")
				assert.Empty(t, stdout.String())
			}
		})
	}
}

func TestDevListenLoopback(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "localhost:0", "127.0.0.2:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			ln, err := devListen(addr)
			if err != nil && strings.Contains(addr, "::1") {
				t.Skipf("no IPv6 loopback here: %v", err)
			}
			require.NoError(t, err)
			defer ln.Close()
			assert.True(t, ln.Addr().(*net.TCPAddr).IP.IsLoopback())
		})
	}
}

func TestDevAddressInUse(t *testing.T) {
	d := startDev(t)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"dev", "--addr", strings.TrimPrefix(d.base, "http://"), "--data-dir", t.TempDir()}, nil, &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "cannot listen on")
}

// TestDevBanner pins the printed output's shape (testdata/dev_banner.golden;
// go test -run TestDevBanner -update rewrites it).
func TestDevBanner(t *testing.T) {
	as := devduo.NewSignIn(rstest.NewAuthServer("http://127.0.0.1:8080/oauth2/dev"))
	as.SetUsers(devduo.DefaultUsers()...)
	s := &devStack{
		base:     "http://127.0.0.1:8080",
		mcpURL:   "http://127.0.0.1:8080/mcp",
		issuer:   "http://127.0.0.1:8080/oauth2/dev",
		pushURL:  "http://127.0.0.1:8080/dev/push",
		adminURL: as.AdminURL(),
		dataDir:  "/home/you/crm-mcp/.crm-mcp-dev",
		caFile:   "/home/you/crm-mcp/.crm-mcp-dev/duo-ca.pem",
		auditLog: "/home/you/crm-mcp/.crm-mcp-dev/audit.log",
		duoHost:  "127.0.0.1:41234",
		signIn:   as,
	}
	for _, tt := range []struct{ name, autoLogin string }{{"dev_banner", ""}, {"dev_banner_auto_login", "alice"}} {
		t.Run(tt.name, func(t *testing.T) {
			s.autoLogin = tt.autoLogin
			got := s.banner()
			golden := filepath.Join("testdata", tt.name+".golden")
			if *updateDevGolden {
				require.NoError(t, os.MkdirAll("testdata", 0o755))
				require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			assert.Equal(t, string(want), got)
		})
	}
}

// TestDevStandInsRefuseOtherHosts: a page whose name was rebound to
// 127.0.0.1 (DNS rebinding) is same-origin for the browser, but the
// stand-ins answer only to their own loopback address.
func TestDevStandInsRefuseOtherHosts(t *testing.T) {
	d := startDev(t)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/dev/push/api/pushes"},
		{"POST", "/oauth2/dev/admin/api/users/carol/scopes/crm.deals.write"},
		{"GET", "/oauth2/dev/admin"},
		{"GET", "/"},
	} {
		req, err := http.NewRequest(tc.method, d.base+tc.path, nil)
		require.NoError(t, err)
		req.Host = "evil.example" + strings.TrimPrefix(d.base, "http://127.0.0.1")
		req.Header.Set("Origin", "http://"+req.Host)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusForbidden, resp.StatusCode, "%s %s", tc.method, tc.path)
	}
	for _, u := range d.stack.signIn.Users() {
		if u.Name == "carol" {
			assert.NotContains(t, u.Scopes, "crm.deals.write", "the rebound request must not have granted a scope")
		}
	}
	code, _ := d.do(t, "GET", "/dev/push/api/pushes")
	assert.Equal(t, http.StatusOK, code, "the loopback address still works")
}

// TestDevKeepsClientsAcrossRestart: a client registered before a restart
// (MCP Inspector keeps its client_id) signs in after it, with the same
// data folder, instead of meeting invalid_client.
func TestDevKeepsClientsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	first := startDev(t, "--data-dir", dir)
	resp, err := http.Post(first.base+"/oauth2/dev/register", "application/json", strings.NewReader(
		`{"client_name":"inspector","redirect_uris":["http://localhost:6274/oauth/callback"],"token_endpoint_auth_method":"none"}`))
	require.NoError(t, err)
	var reg struct {
		ClientID string `json:"client_id"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&reg))
	resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, 0, first.stop(t))
	assert.FileExists(t, filepath.Join(dir, "clients.json"))

	second := startDev(t, "--data-dir", dir)
	sum := sha256.Sum256([]byte(strings.Repeat("v", 43)))
	authURL := second.base + "/oauth2/dev/authorize?" + url.Values{
		"response_type":         {"code"},
		"client_id":             {reg.ClientID},
		"redirect_uri":          {"http://localhost:6274/oauth/callback"},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
		"login_hint":            {"alice"},
	}.Encode()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = noFollow.Get(authURL)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode, "the restarted dev knows the client")
	loc, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	assert.Empty(t, loc.Query().Get("error"), loc.Query().Get("error_description"))
	assert.NotEmpty(t, loc.Query().Get("code"))
}
