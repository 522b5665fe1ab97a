package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// goUpstream is a second kind of real upstream: a go-sdk server over
// Streamable HTTP without sessions (the 2026-07-28 revision's way), which
// records the headers it receives, reports progress and notices
// cancellation.
type goUpstream struct {
	srv       *httptest.Server
	addr      string
	mu        sync.Mutex
	headers   []http.Header
	cancelled chan struct{}
	release   chan struct{}
}

func newGoUpstream(t testing.TB, addr string) *goUpstream {
	u := &goUpstream{cancelled: make(chan struct{}, 1), release: make(chan struct{})}
	s := mcp.NewServer(&mcp.Implementation{Name: "go-upstream"}, &mcp.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	type none struct{}
	mcp.AddTool(s, &mcp.Tool{Name: "whoami", Annotations: &mcp.ToolAnnotations{Title: "Who am I"}}, func(ctx context.Context, req *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "auth=" + req.Extra.Header.Get("Authorization")}}}, nil, nil
	})
	type out struct {
		Answer int `json:"answer"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "structured"}, func(ctx context.Context, req *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, out, error) {
		return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: "half an answer"}}}, out{Answer: 42}, nil
	})
	type floodArgs struct {
		Steps int `json:"steps"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "flood"}, func(ctx context.Context, req *mcp.CallToolRequest, a floodArgs) (*mcp.CallToolResult, any, error) {
		pad := strings.Repeat("x", 1000)
		for i := 1; i <= a.Steps && ctx.Err() == nil; i++ {
			req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Message: pad})
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "flooded"}}}, nil, nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "crash"}, func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
		return nil, nil, nil // never reached: the handler above closes the connection
	})
	mcp.AddTool(s, &mcp.Tool{Name: "slow"}, func(ctx context.Context, req *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, any, error) {
		if tok := req.Params.GetProgressToken(); tok != nil {
			for i := 1; i <= 3; i++ {
				req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: float64(i), Total: 3, Message: fmt.Sprintf("step %d", i)})
			}
		}
		select {
		case <-ctx.Done():
			u.cancelled <- struct{}{}
			return nil, nil, ctx.Err()
		case <-u.release:
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
		}
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true, Logger: slog.New(slog.DiscardHandler), PropagateRequestCancellation: true})
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.headers = append(u.headers, r.Header.Clone())
		u.mu.Unlock()
		if r.Header.Get("Mcp-Name") == "crash" { // dies with the call in hand
			c, _, _ := http.NewResponseController(w).Hijack()
			c.Close()
			return
		}
		h.ServeHTTP(w, r)
	}))
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		u.srv.Listener.Close()
		u.srv.Listener = ln
	}
	u.srv.Start()
	u.addr = u.srv.Listener.Addr().String()
	t.Cleanup(u.srv.Close)
	return u
}

func (u *goUpstream) seen() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.headers
}

func goPolicy(u *goUpstream, timeout string) string {
	return `upstreams:
  - name: go
    url: http://` + u.addr + `/mcp
    headers: {Authorization: "Bearer ${EVERYTHING_TOKEN}"}
    timeout: ` + timeout + `
    tools:
      whoami: {scopes: [demo.read]}
      structured: {scopes: [demo.read]}
      slow: {scopes: [demo.read]}
      flood: {scopes: [demo.read]}
      crash: {scopes: [demo.read]}
      missing: {scopes: [demo.read]}
`
}

// TestOwnCredentialsOnly: upstream, only the policy's headers: never the
// client's token, its other headers, or the gate's internal ones.
func TestOwnCredentialsOnly(t *testing.T) {
	up := newGoUpstream(t, "")
	e := newEnv(t, envOpts{policy: goPolicy(up, "5s")})
	tok := e.token("alice", allScopes...)
	client := mcp.NewClient(&mcp.Implementation{Name: "gateway-test"}, nil)
	cs, err := client.Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: e.resource, MaxRetries: -1, DisableStandaloneSSE: true,
		HTTPClient: &http.Client{Transport: headers{"Authorization": "Bearer " + tok, "X-Client-Secret": "client-only", "Cookie": "session=client"}}}, nil)
	require.NoError(t, err)
	defer cs.Close()

	res := call(t, cs, "go.whoami", map[string]any{})
	require.False(t, res.IsError, text(res))
	assert.Equal(t, "auth=Bearer "+everythingTok, text(res))
	require.NotEmpty(t, up.seen())
	for _, h := range up.seen() {
		assert.Equal(t, "Bearer "+everythingTok, h.Get("Authorization"))
		for k, v := range h {
			joined := strings.Join(v, " ")
			assert.NotContains(t, joined, tok, k)
			assert.NotContains(t, joined, "client-only", k)
			assert.NotContains(t, joined, "session=client", k)
			assert.False(t, strings.HasPrefix(strings.ToLower(k), "govern-"), k)
		}
	}
	// The named tool it does not offer is a problem, reported at start.
	require.Len(t, e.gw.Problems(), 1)
	assert.Contains(t, e.gw.Problems()[0].String(), "policy.yaml:12: upstream go, tool missing: the policy names it, but the upstream does not offer it")
}

type headers map[string]string

func (h headers) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestPassThrough: structured content and isError come back as the
// upstream gave them; progress reaches the client's token; the client's
// cancellation cancels the upstream call; a call past the upstream's
// timeout is a tool error naming it.
func TestPassThrough(t *testing.T) {
	up := newGoUpstream(t, "")
	e := newEnv(t, envOpts{policy: goPolicy(up, "1s")})
	var mu sync.Mutex
	var progress []string
	cs := e.connect(t, e.token("alice", allScopes...), &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
		mu.Lock()
		defer mu.Unlock()
		progress = append(progress, fmt.Sprintf("%v %v/%v %s", req.Params.ProgressToken, req.Params.Progress, req.Params.Total, req.Params.Message))
	}})

	res := call(t, cs, "go.structured", map[string]any{})
	assert.True(t, res.IsError)
	assert.Equal(t, "half an answer", text(res))
	assert.Equal(t, map[string]any{"answer": float64(42)}, res.StructuredContent)

	// Timeout, with progress on the way.
	params := &mcp.CallToolParams{Name: "go.slow", Arguments: map[string]any{}}
	params.SetProgressToken("mine")
	res, err := cs.CallTool(t.Context(), params)
	require.NoError(t, err)
	assert.True(t, res.IsError)
	assert.Equal(t, "go.slow may have run: the upstream go did not answer within 1s; check whether it did before calling it again", text(res))
	mu.Lock()
	// The newest value is forwarded: earlier ones may be skipped when the
	// upstream reports faster than they are sent.
	require.NotEmpty(t, progress)
	assert.Subset(t, []string{"mine 1/3 step 1", "mine 2/3 step 2", "mine 3/3 step 3"}, progress)
	assert.Equal(t, "mine 3/3 step 3", progress[len(progress)-1])
	mu.Unlock()
	select {
	case <-up.cancelled: // the timeout cancelled it upstream
	case <-time.After(5 * time.Second):
		t.Fatal("the timeout did not cancel the upstream call")
	}

	// The connection lost with the call sent: it may have run.
	res = call(t, cs, "go.crash", map[string]any{})
	assert.Equal(t, "go.crash may have run: the connection to the upstream go failed during the call; check whether it did before calling it again", text(res))

	// Cancellation by the client.
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		time.Sleep(200 * time.Millisecond)
		cancel()
	}()
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "go.slow", Arguments: map[string]any{}})
	require.Error(t, err)
	select {
	case <-up.cancelled:
	case <-time.After(900 * time.Millisecond): // before the 1s timeout could
		t.Fatal("the client's cancellation did not reach the upstream")
	}
}

// TestUpstreamDown: an upstream that goes down gives a tool error naming
// it while the other keeps serving, shows in Upstreams, and is used
// again once it is back.
func TestUpstreamDown(t *testing.T) {
	upstreams(t)
	up := newGoUpstream(t, "")
	addr := up.addr
	ex, err := readExample()
	require.NoError(t, err)
	e := newEnv(t, envOpts{policy: ex + strings.TrimPrefix(goPolicy(up, "5s"), "upstreams:\n")})
	cs := e.connect(t, e.token("alice", allScopes...), nil)
	require.False(t, call(t, cs, "go.whoami", map[string]any{}).IsError)

	up.srv.Close()
	res := call(t, cs, "go.whoami", map[string]any{})
	require.True(t, res.IsError)
	assert.Equal(t, "go.whoami was not run: the upstream go is unreachable; the gateway tries it again with backoff, so try again later", text(res))
	res = call(t, cs, "everything.echo", map[string]any{"message": "still here"})
	require.False(t, res.IsError, text(res))
	assert.Equal(t, "Echo: still here", text(res))
	var down []string
	for _, s := range e.gw.Upstreams() {
		if !s.Reachable {
			down = append(down, s.Name+" "+s.State)
		}
	}
	assert.Equal(t, []string{"go unreachable"}, down)

	newGoUpstream(t, addr) // back, on the same address
	require.Eventually(t, func() bool {
		return !call(t, cs, "go.whoami", map[string]any{}).IsError
	}, 5*time.Second, 100*time.Millisecond, "reconnected with backoff")
}

func readExample() (string, error) {
	b, err := readFile(examplePolicy)
	return string(b), err
}

// TestProgressIncreasesAcrossThePush: a call that waits on a push first
// gets the governor's waiting progress, then its upstream's: forwarded
// above it, so that the values the client sees keep increasing (progress
// must increase with each notification).
func TestProgressIncreasesAcrossThePush(t *testing.T) {
	up := newGoUpstream(t, "")
	pol := strings.Replace(goPolicy(up, "2s"), "slow: {scopes: [demo.read]}", "slow: {scopes: [demo.read], stepup: always}", 1)
	e := newEnv(t, envOpts{policy: pol})
	e.duo.SetDefault(duotest.Manual)
	var mu sync.Mutex
	var values []float64
	var last string
	got := make(chan struct{}, 10)
	cs := e.connect(t, e.token("alice", allScopes...), &mcp.ClientOptions{ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
		mu.Lock()
		values = append(values, req.Params.Progress)
		last = req.Params.Message
		mu.Unlock()
		got <- struct{}{}
	}})
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		params := &mcp.CallToolParams{Name: "go.slow", Arguments: map[string]any{}}
		params.SetProgressToken("p")
		res, err := cs.CallTool(t.Context(), params)
		assert.NoError(t, err)
		done <- res
	}()
	select {
	case <-got: // the governor's "waiting for Duo Push approval"
	case <-time.After(10 * time.Second):
		t.Fatal("no progress while waiting on the push")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	p, err := e.duo.WaitForPush(ctx)
	require.NoError(t, err)
	require.NoError(t, e.duo.Decide(p.TxID, true))
	<-done // the upstream's slow tool times out after its progress
	mu.Lock()
	defer mu.Unlock()
	// One or more waiting notifications (one each 5 s), then the
	// upstream's three, of which the newest is forwarded at least.
	require.GreaterOrEqual(t, len(values), 2, "the waiting notification, then the upstream's: %v", values)
	assert.Equal(t, "step 3", last)
	for i := 1; i < len(values); i++ {
		assert.Greater(t, values[i], values[i-1], "progress went down: %v", values)
	}
}

// TestRedirectNotFollowed: an upstream that redirects (compromised, or an
// open redirect in front of it) must not make the gateway send its own
// credential to another host: redirects are not followed at all.
func TestRedirectNotFollowed(t *testing.T) {
	elsewhere := newGoUpstream(t, "")
	target := strings.Replace(elsewhere.srv.URL, "127.0.0.1", "localhost", 1) + "/mcp"
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target, http.StatusTemporaryRedirect)
	}))
	defer front.Close()
	pol := `upstreams:
  - name: go
    url: ` + front.URL + `/mcp
    headers: {Authorization: "Bearer ${EVERYTHING_TOKEN}"}
    tools:
      whoami: {scopes: [demo.read]}
`
	e := newEnv(t, envOpts{policy: pol}) // dials and lists at start
	assert.Empty(t, elsewhere.seen(), "the redirect was followed")
	assert.Empty(t, e.gw.Tools())
	require.Len(t, e.gw.Problems(), 1)
	assert.Contains(t, e.gw.Problems()[0].Msg, "unreachable")
}

// TestProgressStall: a client that stops reading its progress does not
// stall the progress of other users of the same upstream (one session, one
// notification queue).
func TestProgressStall(t *testing.T) {
	up := newGoUpstream(t, "")
	e := newEnv(t, envOpts{policy: goPolicy(up, "10s")})
	host := strings.TrimPrefix(strings.TrimSuffix(e.resource, "/mcp"), "http://")
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
	}}
	c, err := d.Dial("tcp", host)
	require.NoError(t, err)
	defer c.Close()
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"go.flood","arguments":{"steps":20000},"_meta":{"progressToken":"p"}}}`
	fmt.Fprintf(c, "POST /mcp HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Protocol-Version: 2025-06-18\r\nContent-Length: %d\r\n\r\n%s",
		host, e.token("mallory", allScopes...), len(body), body)
	time.Sleep(time.Second) // never read: its socket fills

	got := make(chan struct{}, 10)
	cs := e.connect(t, e.token("alice", allScopes...), &mcp.ClientOptions{ProgressNotificationHandler: func(context.Context, *mcp.ProgressNotificationClientRequest) { got <- struct{}{} }})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		p := &mcp.CallToolParams{Name: "go.slow", Arguments: map[string]any{}}
		p.SetProgressToken("v")
		cs.CallTool(ctx, p)
	}()
	for i := range 3 {
		select {
		case <-got:
		case <-time.After(5 * time.Second):
			t.Fatalf("alice got %d of her 3 progress notifications", i)
		}
	}
}

// TestReplyBounded: an upstream's reply larger than the gateway reads
// (16 MiB) is a tool error, not memory held; a large one below it passes.
func TestReplyBounded(t *testing.T) {
	s := mcp.NewServer(&mcp.Implementation{Name: "big"}, &mcp.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	type sized struct {
		MiB int `json:"mib"`
	}
	mcp.AddTool(s, &mcp.Tool{Name: "big"}, func(_ context.Context, _ *mcp.CallToolRequest, a sized) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: strings.Repeat("x", a.MiB<<20)}}}, nil, nil
	})
	// JSON responses: go-sdk's client reads them whole.
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true, Logger: slog.New(slog.DiscardHandler)}))
	defer up.Close()
	e := newEnv(t, envOpts{policy: "upstreams:\n  - name: b\n    url: " + up.URL + "/mcp\n    tools:\n      big: {scopes: [demo.read]}\n"})
	cs := e.connect(t, e.token("alice", allScopes...), nil)

	res := call(t, cs, "b.big", map[string]any{"mib": 1})
	require.False(t, res.IsError, "1 MiB: %.200s", text(res))
	res = call(t, cs, "b.big", map[string]any{"mib": 17})
	require.True(t, res.IsError, "17 MiB came through")
	assert.Equal(t, "b.big may have run: the connection to the upstream b failed during the call; check whether it did before calling it again", text(res))
}

// TestUserShareOfCalls: one user holds at most a quarter of an upstream's
// places (max_calls 4: one), so the others still get through.
func TestUserShareOfCalls(t *testing.T) {
	up := newGoUpstream(t, "")
	pol := strings.Replace(goPolicy(up, "5s"), "    timeout: 5s\n", "    timeout: 5s\n    max_calls: 4\n", 1)
	e := newEnv(t, envOpts{policy: pol})
	alice := e.connect(t, e.token("alice", allScopes...), nil)
	bob := e.connect(t, e.token("bob", allScopes...), nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		call(t, alice, "go.slow", map[string]any{})
	}()
	require.Eventually(t, func() bool { return e.gw.Requests() == 1 }, 5*time.Second, 10*time.Millisecond)
	time.Sleep(100 * time.Millisecond) // the slow call reaches the upstream

	res := call(t, alice, "go.whoami", map[string]any{})
	assert.Equal(t, "go.whoami was not run: you have 1 calls in progress to the upstream go, your share of the 4 the gateway sends it at once; try again when one ends", text(res))
	res = call(t, bob, "go.whoami", map[string]any{})
	assert.False(t, res.IsError, text(res))
	close(up.release)
	<-done
	assert.False(t, call(t, alice, "go.whoami", map[string]any{}).IsError, "the place is given back")
}

// TestNonObjectSchema: an upstream tool whose input schema is not an
// object is a Problem and is neither listed nor governed.
func TestNonObjectSchema(t *testing.T) {
	s := mcp.NewServer(&mcp.Implementation{Name: "odd"}, &mcp.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	type none struct{}
	mcp.AddTool(s, &mcp.Tool{Name: "odd"}, func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	// go-sdk will not serve such a tool itself: the list is rewritten.
	s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			res, err := next(ctx, method, req)
			if l, ok := res.(*mcp.ListToolsResult); ok {
				for _, t := range l.Tools {
					t.InputSchema = map[string]any{"type": "string"}
				}
			}
			return res, err
		}
	})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true, Logger: slog.New(slog.DiscardHandler)}))
	defer up.Close()
	e := newEnv(t, envOpts{policy: "upstreams:\n  - name: o\n    url: " + up.URL + "/mcp\n    tools:\n      odd: {scopes: [demo.read]}\n"})
	assert.Empty(t, e.gw.Tools(), "governed but not served")
	require.Len(t, e.gw.Problems(), 1)
	assert.Equal(t, `policy.yaml:5: upstream o, tool odd: cannot be served: its input schema is not of type "object", as MCP requires`, e.gw.Problems()[0].String())
}
