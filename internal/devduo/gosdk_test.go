package devduo_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// goSDKSetup is a sign-in and an MCP server protected by resourceserver,
// each on its own loopback listener.
type goSDKSetup struct {
	as          *devduo.SignIn
	issuer      string
	resource    string
	tokenCalls  atomic.Int32 // requests to the token endpoint
	registers   atomic.Int32 // requests to the registration endpoint
	authorizing atomic.Int32 // authorization URLs handed to the fetcher
	authURL     atomic.Value // string: the last of them
}

func newGoSDKSetup(t *testing.T) *goSDKSetup { return newGoSDKSetupMode(t, resourceserver.ModeJWT) }

func newGoSDKSetupMode(t *testing.T, mode resourceserver.Mode) *goSDKSetup {
	t.Helper()
	s := &goSDKSetup{}

	asServer := httptest.NewUnstartedServer(nil)
	s.issuer = "http://" + asServer.Listener.Addr().String() + "/oauth2/test"
	s.as = devduo.NewSignIn(rstest.NewAuthServer(s.issuer))
	s.as.SetUsers(devduo.DefaultUsers()...)
	asServer.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/token"):
			s.tokenCalls.Add(1)
		case strings.HasSuffix(r.URL.Path, "/register"):
			s.registers.Add(1)
		}
		s.as.ServeHTTP(w, r)
	})
	asServer.Start()
	t.Cleanup(asServer.Close)

	mux := http.NewServeMux()
	mcpServer := httptest.NewUnstartedServer(mux)
	s.resource = "http://" + mcpServer.Listener.Addr().String() + "/mcp"
	s.as.SetResources(s.resource)

	rs, err := resourceserver.New(resourceserver.Config{
		Resource: s.resource,
		Issuers: []resourceserver.Issuer{{
			URL:          s.issuer,
			ClientID:     rstest.DefaultIntrospectionClientID,
			ClientSecret: rstest.DefaultIntrospectionClientSecret,
		}},
		ScopesSupported:       []string{"crm.contacts.read"},
		Mode:                  mode,
		IntrospectionCacheTTL: time.Millisecond,
		Logger:                slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(rs.Close)

	server := mcp.NewServer(&mcp.Implementation{Name: "crm-test", Version: "0.0.1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "whoami", Description: "Says who called, with which scopes."},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			ti := req.Extra.TokenInfo
			if ti == nil {
				return nil, nil, errors.New("no token info")
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{
				Text: fmt.Sprintf("%s %s", ti.Extra["sub"], strings.Join(ti.Scopes, " ")),
			}}}, nil, nil
		})
	for _, p := range rs.MetadataPaths() {
		mux.Handle(p, rs.MetadataHandler())
	}
	mux.Handle("/mcp", rs.Middleware(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{Logger: slog.New(slog.DiscardHandler)})))
	mcpServer.Start()
	t.Cleanup(mcpServer.Close)
	return s
}

// fetchCode is a go-sdk AuthorizationCodeFetcher for tests: it opens the
// authorization URL with a client that does not follow redirects, as a
// browser would up to the redirect to the loopback callback, and reads
// code, state and iss from the Location header. extra is added to the
// URL's query (login_hint, say).
func (s *goSDKSetup) fetchCode(extra url.Values) auth.AuthorizationCodeFetcher {
	return func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		s.authorizing.Add(1)
		s.authURL.Store(args.URL)
		u, err := url.Parse(args.URL)
		if err != nil {
			return nil, err
		}
		q := u.Query()
		for k, v := range extra {
			q[k] = v
		}
		u.RawQuery = q.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
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
}

// connect connects go-sdk's client to the MCP server with an
// authorization-code handler using dynamic client registration.
// authMethod is the token_endpoint_auth_method registered ("" for the
// RFC 7591 default, client_secret_basic).
func (s *goSDKSetup) connect(t *testing.T, ctx context.Context, authMethod string, fetch auth.AuthorizationCodeFetcher) (*mcp.ClientSession, error) {
	t.Helper()
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{
			Metadata: &oauthex.ClientRegistrationMetadata{
				ClientName:              "go-sdk test client",
				RedirectURIs:            []string{"http://127.0.0.1:3142/callback"},
				TokenEndpointAuthMethod: authMethod,
				GrantTypes:              []string{"authorization_code", "refresh_token"},
			},
		},
		AuthorizationCodeFetcher: fetch,
		RequestRefreshToken:      true,
	})
	require.NoError(t, err)
	client := mcp.NewClient(&mcp.Implementation{Name: "go-sdk-test", Version: "0.0.1"}, nil)
	return client.Connect(ctx, &mcp.StreamableClientTransport{
		Endpoint:             s.resource,
		OAuthHandler:         handler,
		DisableStandaloneSSE: true,
		MaxRetries:           -1,
	}, nil)
}

func whoami(t *testing.T, ctx context.Context, session *mcp.ClientSession) string {
	t.Helper()
	res, err := session.CallTool(ctx, &mcp.CallToolParams{Name: "whoami"})
	require.NoError(t, err)
	require.False(t, res.IsError, "tool error: %v", res.Content)
	require.Len(t, res.Content, 1)
	return res.Content[0].(*mcp.TextContent).Text
}

// go-sdk's own client completes the whole flow against the fake: it finds
// the authorization server from the MCP server's 401 (resource_metadata),
// registers dynamically, authorizes with PKCE S256 and resource, exchanges
// the code and calls a tool with the token.
func TestGoSDKClientFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("login_hint", func(t *testing.T) {
		s := newGoSDKSetup(t)
		session, err := s.connect(t, ctx, "none", s.fetchCode(url.Values{"login_hint": {"carol"}}))
		require.NoError(t, err)
		defer session.Close()
		// The scope comes from the 401 challenge (resourceserver's ScopesSupported).
		assert.Equal(t, "carol crm.contacts.read", whoami(t, ctx, session))
		assert.Equal(t, int32(1), s.registers.Load(), "one registration")
		assert.Equal(t, int32(1), s.authorizing.Load(), "one authorization")

		u, err := url.Parse(s.authURL.Load().(string))
		require.NoError(t, err)
		assert.Equal(t, s.issuer+"/authorize", u.Scheme+"://"+u.Host+u.Path, "authorization_endpoint from discovery")
		q := u.Query()
		assert.Equal(t, "code", q.Get("response_type"))
		assert.Equal(t, "S256", q.Get("code_challenge_method"))
		assert.Len(t, q.Get("code_challenge"), 43)
		assert.Equal(t, []string{s.resource}, q["resource"], "RFC 8707 resource")
		assert.Equal(t, "crm.contacts.read", q.Get("scope"), "scope from the 401 challenge")
		assert.NotEmpty(t, q.Get("state"))
	})

	t.Run("auto-login and refresh", func(t *testing.T) {
		s := newGoSDKSetup(t)
		s.as.SetAutoLogin("alice")
		// x/oauth2 refreshes a token 10 s before it expires, so a 5 s
		// token is refreshed on every use: rotation through go-sdk.
		s.as.SetTokenLifetime(5 * time.Second)
		session, err := s.connect(t, ctx, "none", s.fetchCode(nil))
		require.NoError(t, err)
		defer session.Close()
		assert.Equal(t, "alice crm.contacts.read", whoami(t, ctx, session))
		assert.Equal(t, "alice crm.contacts.read", whoami(t, ctx, session))
		assert.GreaterOrEqual(t, s.tokenCalls.Load(), int32(3), "exchange and refreshes")
		assert.Equal(t, int32(1), s.authorizing.Load(), "refreshes need no new authorization")
	})

	for _, method := range []string{"", "client_secret_post"} {
		name := "confidential client, " + method
		if method == "" {
			name += "default method"
		}
		t.Run(name, func(t *testing.T) {
			s := newGoSDKSetup(t)
			session, err := s.connect(t, ctx, method, s.fetchCode(url.Values{"login_hint": {"bob"}}))
			require.NoError(t, err)
			defer session.Close()
			assert.Equal(t, "bob crm.contacts.read", whoami(t, ctx, session))
		})
	}

	t.Run("revoked scope bites at once with introspection", func(t *testing.T) {
		s := newGoSDKSetupMode(t, resourceserver.ModeJWTIntrospection)
		session, err := s.connect(t, ctx, "none", s.fetchCode(url.Values{"login_hint": {"alice"}}))
		require.NoError(t, err)
		defer session.Close()
		assert.Equal(t, "alice crm.contacts.read", whoami(t, ctx, session))
		require.NoError(t, s.as.RevokeScope("alice", "crm.contacts.read"))
		time.Sleep(5 * time.Millisecond) // past IntrospectionCacheTTL
		assert.Equal(t, "alice ", whoami(t, ctx, session), "same JWT, scope gone")
	})

	t.Run("denied", func(t *testing.T) {
		s := newGoSDKSetup(t)
		require.NoError(t, s.as.RevokeScope("bob", "crm.contacts.read"))
		_, err := s.connect(t, ctx, "none", s.fetchCode(url.Values{"login_hint": {"bob"}}))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "access_denied")
	})
}
