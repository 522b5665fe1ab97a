package devduo_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// grantFor runs the code flow for user with scope and returns the token
// answer.
func grantFor(t *testing.T, srv *server, clientID, user, scope string) map[string]any {
	t.Helper()
	verifier, challenge := pkce()
	params := authParams(clientID, challenge)
	if scope != "" {
		params.Set("scope", scope)
	}
	status, tok := token(t, srv, exchangeForm(clientID, code(t, srv, params, user), verifier), "", "")
	require.Equal(t, http.StatusOK, status, "token answer %v", tok)
	return tok
}

func refreshForm(clientID, refreshToken string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "client_id": {clientID}, "refresh_token": {refreshToken}}
}

func TestRefresh(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv)

	t.Run("rotation", func(t *testing.T) {
		first := grantFor(t, srv, clientID, "alice", "crm.contacts.read crm.deals.read")
		status, second := token(t, srv, refreshForm(clientID, first["refresh_token"].(string)), "", "")
		require.Equal(t, http.StatusOK, status, "refresh answer %v", second)
		assert.NotEqual(t, first["refresh_token"], second["refresh_token"], "a new refresh token")
		assert.NotEqual(t, first["access_token"], second["access_token"])
		assert.Equal(t, "crm.contacts.read crm.deals.read", second["scope"])
		parsed, err := jwt.Parse([]byte(second["access_token"].(string)), jwt.WithKeySet(fetchJWKS(t, srv)),
			jwt.WithAudience(resource), jwt.WithSubject("alice"))
		require.NoError(t, err, "the refresh keeps aud")
		assert.Equal(t, []string{resource}, parsed.Audience())

		// The spent refresh token is refused, and its reuse revokes the
		// grant: the new refresh token and access tokens die with it.
		status, body := token(t, srv, refreshForm(clientID, first["refresh_token"].(string)), "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_grant", body["error"])
		status, body = token(t, srv, refreshForm(clientID, second["refresh_token"].(string)), "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_grant", body["error"])
		active, _ := introspectScope(t, srv, second["access_token"].(string))
		assert.False(t, active)
	})

	t.Run("scope may narrow, never widen", func(t *testing.T) {
		tok := grantFor(t, srv, clientID, "alice", "crm.contacts.read crm.deals.read")
		form := refreshForm(clientID, tok["refresh_token"].(string))
		form.Set("scope", "crm.deals.write")
		status, body := token(t, srv, form, "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_scope", body["error"])

		form.Set("scope", "crm.deals.read")
		status, narrowed := token(t, srv, form, "", "")
		require.Equal(t, http.StatusOK, status, "answer %v", narrowed)
		assert.Equal(t, "crm.deals.read", narrowed["scope"])
		// RFC 6749 section 6: the new refresh token keeps the grant's scope.
		status, again := token(t, srv, refreshForm(clientID, narrowed["refresh_token"].(string)), "", "")
		require.Equal(t, http.StatusOK, status)
		assert.Equal(t, "crm.contacts.read crm.deals.read", again["scope"])
	})

	t.Run("a revoked scope disappears on refresh", func(t *testing.T) {
		srv := flowServer(t)
		clientID := publicClient(t, srv)
		tok := grantFor(t, srv, clientID, "carol", "")
		assert.Equal(t, "crm.contacts.read crm.deals.read", tok["scope"])

		require.NoError(t, srv.RevokeScope("carol", "crm.deals.read"))
		status, refreshed := token(t, srv, refreshForm(clientID, tok["refresh_token"].(string)), "", "")
		require.Equal(t, http.StatusOK, status)
		assert.Equal(t, "crm.contacts.read", refreshed["scope"])

		// Granting it back does not widen the grant beyond what was
		// approved, but it is approved here, so it returns.
		require.NoError(t, srv.GrantScope("carol", "crm.deals.read"))
		require.NoError(t, srv.GrantScope("carol", "crm.deals.write"))
		status, refreshed = token(t, srv, refreshForm(clientID, refreshed["refresh_token"].(string)), "", "")
		require.Equal(t, http.StatusOK, status)
		assert.Equal(t, "crm.contacts.read crm.deals.read", refreshed["scope"])

		// Lose everything approved: no token at all.
		require.NoError(t, srv.RevokeScope("carol", "crm.deals.read"))
		require.NoError(t, srv.RevokeScope("carol", "crm.contacts.read"))
		status, body := token(t, srv, refreshForm(clientID, refreshed["refresh_token"].(string)), "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_grant", body["error"])
	})

	t.Run("bound to the client", func(t *testing.T) {
		tok := grantFor(t, srv, clientID, "alice", "")
		other := publicClient(t, srv)
		status, body := token(t, srv, refreshForm(other, tok["refresh_token"].(string)), "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_grant", body["error"])
		// ... and that attempt did not spend it.
		status, _ = token(t, srv, refreshForm(clientID, tok["refresh_token"].(string)), "", "")
		assert.Equal(t, http.StatusOK, status)
	})

	t.Run("resource", func(t *testing.T) {
		tok := grantFor(t, srv, clientID, "alice", "")
		form := refreshForm(clientID, tok["refresh_token"].(string))
		form.Set("resource", "http://127.0.0.1:9/mcp")
		status, body := token(t, srv, form, "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_target", body["error"])
		form.Set("resource", resource)
		status, _ = token(t, srv, form, "", "")
		assert.Equal(t, http.StatusOK, status)
	})

	t.Run("no refresh token for clients that did not register for it", func(t *testing.T) {
		status, reg := register(t, srv, map[string]any{
			"redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "none",
			"grant_types": []string{"authorization_code"},
		})
		require.Equal(t, http.StatusCreated, status)
		tok := grantFor(t, srv, reg["client_id"].(string), "alice", "")
		assert.NotContains(t, tok, "refresh_token")
		status, body := token(t, srv, refreshForm(reg["client_id"].(string), "x"), "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "unauthorized_client", body["error"])
	})
}

func TestTokenLifetime(t *testing.T) {
	srv := flowServer(t)
	srv.SetTokenLifetime(5 * time.Minute)
	tok := grantFor(t, srv, publicClient(t, srv), "alice", "")
	assert.Equal(t, float64(300), tok["expires_in"])
	parsed, err := jwt.Parse([]byte(tok["access_token"].(string)), jwt.WithKeySet(fetchJWKS(t, srv)))
	require.NoError(t, err)
	assert.Equal(t, 5*time.Minute, parsed.Expiration().Sub(parsed.IssuedAt()))
	assert.Panics(t, func() { srv.SetTokenLifetime(0) })
}

func TestIntrospectionReflectsLiveScopes(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv)
	tok := grantFor(t, srv, clientID, "alice", "crm.contacts.read crm.deals.read")
	access := tok["access_token"].(string)

	active, scope := introspectScope(t, srv, access)
	assert.True(t, active)
	assert.Equal(t, "crm.contacts.read crm.deals.read", scope)

	require.NoError(t, srv.RevokeScope("alice", "crm.deals.read"))
	active, scope = introspectScope(t, srv, access)
	assert.True(t, active)
	assert.Equal(t, "crm.contacts.read", scope, "revoked scope gone at once")

	require.NoError(t, srv.RevokeScope("alice", "crm.contacts.read"))
	status, body := introspect(t, srv, access)
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, true, body["active"])
	assert.Equal(t, "", body["scope"], "present and empty, so a JWT's scopes narrow to nothing")

	// A granted scope the token was not issued with does not appear.
	require.NoError(t, srv.GrantScope("alice", "crm.contacts.read"))
	require.NoError(t, srv.GrantScope("alice", "crm.deals.read"))
	_, scope = introspectScope(t, srv, access)
	assert.Equal(t, "crm.contacts.read crm.deals.read", scope)

	// A user who is removed takes their tokens along.
	srv.SetUsers(devduo.DefaultUsers()[1:]...)
	active, _ = introspectScope(t, srv, access)
	assert.False(t, active)

	// Tokens minted by the fake itself keep its behaviour: claims as given.
	minted := srv.as.Mint(srv.as.Claims("nobody", resource, "x.y"))
	active, scope = introspectScope(t, srv, minted)
	assert.True(t, active)
	assert.Equal(t, "x.y", scope)
}

// revoke posts to the revocation endpoint as a public client.
func revoke(t *testing.T, srv *server, clientID string, form url.Values) int {
	t.Helper()
	if clientID != "" {
		form.Set("client_id", clientID)
	}
	resp, err := srv.HTTP.Client().PostForm(srv.RevocationURL(), form)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func TestRevocationEndpoint(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv)

	t.Run("access token", func(t *testing.T) {
		tok := grantFor(t, srv, clientID, "alice", "")
		assert.Equal(t, http.StatusOK, revoke(t, srv, clientID, url.Values{"token": {tok["access_token"].(string)}, "token_type_hint": {"access_token"}}))
		active, _ := introspectScope(t, srv, tok["access_token"].(string))
		assert.False(t, active)
		// The refresh token lives on.
		status, _ := token(t, srv, refreshForm(clientID, tok["refresh_token"].(string)), "", "")
		assert.Equal(t, http.StatusOK, status)
	})

	t.Run("refresh token kills the grant", func(t *testing.T) {
		tok := grantFor(t, srv, clientID, "alice", "")
		assert.Equal(t, http.StatusOK, revoke(t, srv, clientID, url.Values{"token": {tok["refresh_token"].(string)}}))
		active, _ := introspectScope(t, srv, tok["access_token"].(string))
		assert.False(t, active, "access tokens of the grant")
		status, body := token(t, srv, refreshForm(clientID, tok["refresh_token"].(string)), "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_grant", body["error"])
	})

	t.Run("another client's token is left alone", func(t *testing.T) {
		tok := grantFor(t, srv, clientID, "alice", "")
		other := publicClient(t, srv)
		assert.Equal(t, http.StatusOK, revoke(t, srv, other, url.Values{"token": {tok["access_token"].(string)}}))
		active, _ := introspectScope(t, srv, tok["access_token"].(string))
		assert.True(t, active)
	})

	t.Run("unknown token is 200", func(t *testing.T) {
		assert.Equal(t, http.StatusOK, revoke(t, srv, clientID, url.Values{"token": {"nope"}}))
	})

	t.Run("client authentication", func(t *testing.T) {
		assert.Equal(t, http.StatusUnauthorized, revoke(t, srv, "", url.Values{"token": {"nope"}}))
		assert.Equal(t, http.StatusUnauthorized, revoke(t, srv, "nobody", url.Values{"token": {"nope"}}))
		assert.Equal(t, http.StatusBadRequest, revoke(t, srv, clientID, url.Values{}))
	})

	t.Run("the fake's Revoke of an access token", func(t *testing.T) {
		tok := grantFor(t, srv, clientID, "alice", "")
		srv.as.Revoke(tok["access_token"].(string))
		active, _ := introspectScope(t, srv, tok["access_token"].(string))
		assert.False(t, active)
	})
}

// The code and pending-request lifetimes, on a fake clock.
func TestLifetimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		as := devduo.NewSignIn(rstest.NewAuthServer("http://127.0.0.1:1/oauth2/test"))
		as.SetUsers(devduo.DefaultUsers()...)
		serve := func(req *http.Request) *httptest.ResponseRecorder {
			rec := httptest.NewRecorder()
			as.ServeHTTP(rec, req)
			return rec
		}
		rec := serve(httptest.NewRequest(http.MethodPost, "/oauth2/test/register",
			strings.NewReader(`{"redirect_uris":["`+redirectURI+`"],"token_endpoint_auth_method":"none"}`)))
		require.Equal(t, http.StatusCreated, rec.Code)
		clientID := decodeRecorder(t, rec)["client_id"].(string)

		codeAfter := func(wait time.Duration) (int, map[string]any) {
			verifier, challenge := pkce()
			params := authParams(clientID, challenge)
			params.Set("login_hint", "alice")
			rec := serve(httptest.NewRequest(http.MethodGet, "/oauth2/test/authorize?"+params.Encode(), nil))
			require.Equal(t, http.StatusFound, rec.Code)
			loc, _ := url.Parse(rec.Header().Get("Location"))
			time.Sleep(wait)
			req := httptest.NewRequest(http.MethodPost, "/oauth2/test/token",
				strings.NewReader(exchangeForm(clientID, loc.Query().Get("code"), verifier).Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec = serve(req)
			return rec.Code, decodeRecorder(t, rec)
		}
		status, _ := codeAfter(59 * time.Second)
		assert.Equal(t, http.StatusOK, status, "a code lives 60 s")
		status, body := codeAfter(61 * time.Second)
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_grant", body["error"])

		_, challenge := pkce()
		rec = serve(httptest.NewRequest(http.MethodGet, "/oauth2/test/authorize?"+authParams(clientID, challenge).Encode(), nil))
		m := pendingField.FindStringSubmatch(rec.Body.String())
		require.NotNil(t, m)
		time.Sleep(11 * time.Minute)
		req := httptest.NewRequest(http.MethodPost, "/oauth2/test/authorize",
			strings.NewReader(url.Values{"pending": {m[1]}, "step": {"login"}, "user": {"alice"}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		assert.Equal(t, http.StatusBadRequest, serve(req).Code, "a sign-in page lives 10 minutes")
	})
}

func TestConcurrentFlows(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv)
	// Parallel subtests, so that require may stop any of them.
	for i := range 8 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			user := devduo.DefaultUsers()[i%3].Name
			tok := grantFor(t, srv, clientID, user, "")
			introspectScope(t, srv, tok["access_token"].(string))
			if i%2 == 0 {
				assert.NoError(t, srv.RevokeScope(user, "crm.contacts.read"))
			} else {
				assert.NoError(t, srv.GrantScope(user, "crm.contacts.read"))
			}
			token(t, srv, refreshForm(clientID, tok["refresh_token"].(string)), "", "")
			revoke(t, srv, clientID, url.Values{"token": {tok["refresh_token"].(string)}})
			srv.Users()
		})
	}
}
