package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// server is crm-mcp serve running in-process.
type server struct {
	addr        string // where it listens
	metricsAddr string // where metrics are served; "" without METRICS_ADDR
	stdout      *syncBuffer
	stderr      *syncBuffer
	cancel      context.CancelFunc
	done        chan int // the exit code, once run returns
}

// startServe runs "crm-mcp serve" with env and waits until it listens.
func startServe(t *testing.T, env map[string]string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan int, 1)}
	listening, metrics := make(chan string, 1), make(chan string, 1)
	a := &app{environ: env, stdout: s.stdout, stderr: s.stderr,
		listening:        func(addr string) { listening <- addr },
		metricsListening: func(addr string) { metrics <- addr }}
	go func() { s.done <- a.run(ctx, []string{"serve"}) }()
	select {
	case s.addr = <-listening:
		select {
		case s.metricsAddr = <-metrics: // served before the MCP listener is announced
		default:
		}
	case code := <-s.done:
		t.Fatalf("serve exited with %d before listening:\n%s", code, s.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start:\n%s", s.stderr)
	}
	t.Cleanup(func() {
		s.cancel()
		select {
		case <-s.done:
		case <-time.After(shutdownTimeout + 5*time.Second):
			t.Errorf("serve did not stop")
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", s.stderr)
		}
	})
	return s
}

// stop cancels serve's context, as SIGTERM does, and returns its exit code.
func (s *server) stop(t *testing.T) int {
	t.Helper()
	s.cancel()
	select {
	case code := <-s.done:
		s.done <- code // for Cleanup
		return code
	case <-time.After(shutdownTimeout + 5*time.Second):
		t.Fatalf("serve did not stop")
		return -1
	}
}

func (s *server) url(path string) string { return "http://" + s.addr + path }

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// bearer adds an access token to every request of the MCP client.
type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

func connect(ctx context.Context, endpoint, token string) (*mcp.ClientSession, error) {
	client := mcp.NewClient(&mcp.Implementation{Name: "crm-mcp-test"}, nil)
	return client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:   endpoint,
		HTTPClient: &http.Client{Transport: bearer{token, http.DefaultTransport}},
		MaxRetries: -1,
	}, nil)
}

// TestServeEndToEnd drives the whole binary: health, readiness, metadata,
// the 401 challenge, a real MCP client with a token, and a graceful stop
// with a session still open. It runs in jwt+introspection mode so that the
// client secret is in play, and checks it never reaches the log.
func TestServeEndToEnd(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	as.SetIntrospectionClient("crm-client", testSecret)
	env := testEnv(t, as)
	env["AUTH_MODE"] = "jwt+introspection"
	env["DUO_CLIENT_ID"] = "crm-client"
	env["DUO_CLIENT_SECRET"] = testSecret
	env["LOG_FORMAT"] = "text"
	s := startServe(t, env)

	t.Run("healthz", func(t *testing.T) {
		resp, body := get(t, s.url("/healthz"))
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "ok\n", body)
		req, _ := http.NewRequest(http.MethodPost, s.url("/healthz"), nil)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
	})

	t.Run("readyz", func(t *testing.T) {
		resp, body := get(t, s.url("/readyz"))
		assert.Equal(t, http.StatusOK, resp.StatusCode, body)
		var rep readyReport
		require.NoError(t, json.Unmarshal([]byte(body), &rep))
		assert.True(t, rep.Ready)
		assert.Equal(t, "ok", rep.DB)
		assert.Equal(t, "ok", rep.Auth)
		require.Len(t, rep.Issuers, 1)
		assert.Equal(t, as.Issuer(), rep.Issuers[0].Issuer)
		assert.Equal(t, 1, rep.Issuers[0].Keys)
	})

	t.Run("metadata at both paths", func(t *testing.T) {
		for _, p := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
			resp, body := get(t, s.url(p))
			require.Equal(t, http.StatusOK, resp.StatusCode, p)
			var md map[string]any
			require.NoError(t, json.Unmarshal([]byte(body), &md))
			assert.Equal(t, testResource, md["resource"], p)
			assert.Equal(t, []any{as.Issuer()}, md["authorization_servers"], p)
			assert.Equal(t, "CRM (Duo protected)", md["resource_name"], p)
			// Every scope a tool needs, so that one sign-in covers every
			// tool the user is granted.
			assert.Equal(t, []any{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}, md["scopes_supported"], p)
			assertGolden(t, "serve_metadata.json", strings.ReplaceAll(body, as.Issuer(), "ISSUER"))
		}
	})

	t.Run("no token is a 401 challenge", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, s.url("/mcp"), strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		assert.Equal(t, `Bearer resource_metadata="http://127.0.0.1:18080/.well-known/oauth-protected-resource/mcp", scope="crm.contacts.read crm.contacts.write crm.deals.read crm.deals.write"`,
			resp.Header.Get("WWW-Authenticate"), "every scope a tool needs")
		assertGolden(t, "serve_challenge_401.txt", resp.Header.Get("WWW-Authenticate")+"\n")
	})

	t.Run("only the exact MCP path", func(t *testing.T) {
		resp, _ := get(t, s.url("/mcp/other"))
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		resp, _ = get(t, s.url("/"))
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	})

	ctx := context.Background()
	token := as.Mint(as.Claims("alice", testResource, "crm.contacts.read"))
	session, err := connect(ctx, s.url("/mcp"), token)
	require.NoError(t, err)
	t.Run("MCP with a token", func(t *testing.T) {
		tools, err := session.ListTools(ctx, nil)
		require.NoError(t, err)
		var names []string
		for _, tool := range tools.Tools {
			names = append(names, tool.Name)
		}
		assert.Contains(t, names, "list_contacts")
		assert.Contains(t, names, "create_deal", "by default every tool is listed")

		res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "list_contacts", Arguments: map[string]any{}})
		require.NoError(t, err)
		assert.False(t, res.IsError)
	})

	// A signal with the session still open: its SSE stream must not hold
	// up the shutdown until the deadline.
	start := time.Now()
	assert.Equal(t, 0, s.stop(t), "a graceful stop exits 0")
	assert.Less(t, time.Since(start), 10*time.Second, "open sessions must not make shutdown wait for its deadline")
	session.Close()

	_, err = net.DialTimeout("tcp", s.addr, time.Second)
	assert.Error(t, err, "the port is closed after shutdown")

	log := s.stderr.String()
	for _, line := range []string{
		"DUO_CLIENT_SECRET=set",
		"msg=listening",
		"msg=\"shutting down",
		"closed the MCP sessions",
		"HTTP server stopped",
		"stopped the authorization server key refresh",
		"closed the CRM database",
	} {
		assert.Contains(t, log, line)
	}
	assert.Contains(t, log, "tool=list_contacts", "the tools handler logs each request")
	assert.NotContains(t, log, testSecret, "the client secret must never be logged")
	assert.NotContains(t, log, token, "a token must never be logged")
}

func TestServeHideUnauthorizedTools(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	env := testEnv(t, as)
	env["MCP_HIDE_UNAUTHORIZED_TOOLS"] = "true"
	s := startServe(t, env)

	ctx := context.Background()
	session, err := connect(ctx, s.url("/mcp"), as.Mint(as.Claims("bob", testResource, "crm.contacts.read")))
	require.NoError(t, err)
	defer session.Close()
	tools, err := session.ListTools(ctx, nil)
	require.NoError(t, err)
	for _, tool := range tools.Tools {
		assert.NotEqual(t, "create_deal", tool.Name, "a tool the token cannot call is hidden")
	}
	assert.NotEmpty(t, tools.Tools)
	assert.Equal(t, 0, s.stop(t))
}

func TestServeIssuerUnreachableIsNotReady(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	env := testEnv(t, as)
	env["DUO_ISSUER"] = "http://" + closedPort(t) + "/oauth2/gone"
	s := startServe(t, env)

	resp, _ := get(t, s.url("/healthz"))
	assert.Equal(t, http.StatusOK, resp.StatusCode, "alive, though not ready")
	resp, body := get(t, s.url("/readyz"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	var rep readyReport
	require.NoError(t, json.Unmarshal([]byte(body), &rep))
	assert.False(t, rep.Ready)
	assert.Equal(t, "ok", rep.DB)
	assert.Equal(t, "no usable keys", rep.Auth)
	require.Len(t, rep.Issuers, 1)
	assert.False(t, rep.Issuers[0].Usable)
	assert.Contains(t, rep.Issuers[0].LastError, "connection refused")
	assert.Contains(t, s.stderr.String(), "AUTHORIZATION SERVER NOT REACHABLE AT START")
	assert.Equal(t, 0, s.stop(t))
}

func TestServeAddressInUse(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	env := testEnv(t, as)
	env["MCP_LISTEN_ADDR"] = ln.Addr().String()

	var stderr bytes.Buffer
	code := run(context.Background(), []string{"serve"}, env, io.Discard, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "cannot listen")
	assert.Contains(t, stderr.String(), "address already in use")
	assert.NoFileExists(t, env["CRM_DB_PATH"], "fails before opening anything")
}

func TestServeInvalidConfiguration(t *testing.T) {
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"serve"}, map[string]string{
		"MCP_RESOURCE_URL":    "https://crm.example.com/mcp",
		"DUO_ISSUER":          "https://sso.example.com/oauth2/X",
		"AUTH_MODE":           "introspection",
		"DUO_CLIENT_SECRET":   testSecret,
		"MCP_ALLOWED_ORIGINS": "*",
	}, io.Discard, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "invalid configuration")
	assert.Contains(t, stderr.String(), "DUO_CLIENT_ID: required in mode introspection")
	assert.Contains(t, stderr.String(), "MCP_ALLOWED_ORIGINS: ")
	assert.NotContains(t, stderr.String(), testSecret)
}

type fakeReadiness struct{ err error }

func (f fakeReadiness) Ready() error { return f.err }
func (f fakeReadiness) Status() []resourceserver.IssuerStatus {
	return []resourceserver.IssuerStatus{{Issuer: "https://sso.example.com", Keys: 2, Usable: f.err == nil}}
}

func TestReadyzDatabaseClosed(t *testing.T) {
	store, err := crm.Open(context.Background(), filepath.Join(t.TempDir(), "crm.db"))
	require.NoError(t, err)
	var logs bytes.Buffer
	h := readyHandler(store, fakeReadiness{}, slog.New(slog.NewTextHandler(&logs, nil)))

	serve := func() (int, readyReport) {
		rec := &recorder{header: http.Header{}}
		h.ServeHTTP(rec, httptestRequest(t))
		var rep readyReport
		require.NoError(t, json.Unmarshal(rec.body.Bytes(), &rep))
		return rec.status, rep
	}
	code, rep := serve()
	assert.Equal(t, http.StatusOK, code)
	assert.True(t, rep.Ready)

	require.NoError(t, store.Close())
	code, rep = serve()
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.False(t, rep.Ready)
	assert.Equal(t, "unavailable", rep.DB, "the detail goes to the log, not to an unauthenticated client")
	assert.Equal(t, "ok", rep.Auth)
	assert.Contains(t, logs.String(), "the CRM database does not answer")
}

func TestReadyzAuthNotReady(t *testing.T) {
	store, err := crm.Open(context.Background(), filepath.Join(t.TempDir(), "crm.db"))
	require.NoError(t, err)
	defer store.Close()
	h := readyHandler(store, fakeReadiness{err: assert.AnError}, slog.New(slog.DiscardHandler))
	rec := &recorder{header: http.Header{}}
	h.ServeHTTP(rec, httptestRequest(t))
	assert.Equal(t, http.StatusServiceUnavailable, rec.status)
	assert.Contains(t, rec.body.String(), `"auth":"no usable keys"`)
	assert.Equal(t, "no-store", rec.header.Get("Cache-Control"))
}

func httptestRequest(t *testing.T) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "/readyz", nil)
	require.NoError(t, err)
	return req
}

// recorder is a minimal http.ResponseWriter.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(p []byte) (int, error) { return r.body.Write(p) }
func (r *recorder) WriteHeader(code int)        { r.status = code }

// TestHTTPServerTimeouts holds net/http to what newHTTPServer's comment
// relies on: ReadTimeout cuts off a body that does not arrive, yet neither
// a POST that works long after reading its body nor a long GET stream loses
// its context to it. The timeout is shortened; the mechanism is the real one.
func TestHTTPServerTimeouts(t *testing.T) {
	srv := newHTTPServer(nil, slog.New(slog.DiscardHandler))
	assert.Zero(t, srv.WriteTimeout, "a WriteTimeout would cut SSE streams and long tool calls")
	assert.NotZero(t, srv.ReadHeaderTimeout)
	assert.NotZero(t, srv.ReadTimeout)

	const timeout = 200 * time.Millisecond
	srv.ReadTimeout = timeout
	handlerErr := make(chan error, 1)
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			handlerErr <- err
			return
		}
		w.WriteHeader(http.StatusOK)
		http.NewResponseController(w).Flush()
		// Work past the timeout, as a tool call waiting on Duo does.
		select {
		case <-time.After(3 * timeout):
			handlerErr <- nil
			io.WriteString(w, "done")
		case <-r.Context().Done():
			handlerErr <- r.Context().Err()
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String()

	for _, method := range []string{http.MethodPost, http.MethodGet} {
		t.Run(method+" works past the timeout", func(t *testing.T) {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader(`{"jsonrpc":"2.0"}`)
			}
			req, _ := http.NewRequest(method, url, body)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.NoError(t, <-handlerErr, "the request's context must outlive ReadTimeout once the body is read")
			assert.Equal(t, "done", string(got))
		})
	}

	t.Run("body too slow", func(t *testing.T) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		defer conn.Close()
		_, err = io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
		require.NoError(t, err)
		select {
		case err := <-handlerErr:
			var ne net.Error
			require.ErrorAs(t, err, &ne)
			assert.True(t, ne.Timeout())
		case <-time.After(5 * time.Second):
			t.Fatal("a body that never arrives must be cut off")
		}
	})
}

// TestServeStepUp runs the binary with a fake Duo behind DUO_AUTH_*: a
// sensitive call pushes and returns the restricted record once approved;
// a denied one returns a tool error and no record.
func TestServeStepUp(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	env, duo := testEnvDuo(t, as)
	s := startServe(t, env)
	ctx := context.Background()

	duo.Script("alice", duotest.Approve)
	cs, err := connect(ctx, s.url("/mcp"), as.Mint(as.Claims("alice", testResource, "crm.contacts.read")))
	require.NoError(t, err)
	defer cs.Close()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_contacts", Arguments: map[string]any{"query": "defence"}})
	require.NoError(t, err)
	require.False(t, res.IsError)
	assert.Contains(t, res.Content[0].(*mcp.TextContent).Text, "Riley Vance")
	require.Len(t, duo.Pushes(), 1)
	assert.Equal(t, "alice", duo.Pushes()[0].User)

	duo.Script("bob", duotest.Deny)
	cs2, err := connect(ctx, s.url("/mcp"), as.Mint(as.Claims("bob", testResource, "crm.contacts.read")))
	require.NoError(t, err)
	defer cs2.Close()
	res, err = cs2.CallTool(ctx, &mcp.CallToolParams{Name: "get_contact", Arguments: map[string]any{"id": 6}})
	require.NoError(t, err)
	require.True(t, res.IsError)
	assert.NotContains(t, res.Content[0].(*mcp.TextContent).Text, "Riley")
	assert.Contains(t, res.Content[0].(*mcp.TextContent).Text, "denied")
	assert.NotContains(t, s.stderr.String(), env["DUO_AUTH_SKEY"], "the Duo secret key reached the log")
}

func TestServeRefusesWithoutDuoUnlessOff(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	env := testEnv(t, as)
	delete(env, "DUO_AUTH_IKEY")
	delete(env, "DUO_AUTH_SKEY")
	delete(env, "DUO_AUTH_HOST")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"serve"}, env, &out, &errOut)
	assert.Equal(t, 1, code)
	for _, name := range []string{"DUO_AUTH_IKEY", "DUO_AUTH_SKEY", "DUO_AUTH_HOST"} {
		assert.Contains(t, errOut.String(), name)
	}
	assert.Contains(t, errOut.String(), "STEPUP_MODE=off")

	env["STEPUP_MODE"] = "off"
	s := startServe(t, env)
	assert.Contains(t, s.stderr.String(), "STEP-UP IS OFF")
}
