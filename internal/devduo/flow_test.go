package devduo_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
)

const (
	resource    = "http://127.0.0.1:8080/mcp"
	redirectURI = "http://127.0.0.1:3142/callback"
)

// flowServer is a fake with the dev users, serving resource.
func flowServer(t *testing.T) *server {
	t.Helper()
	srv := newServer(t)
	srv.SetUsers(devduo.DefaultUsers()...)
	srv.SetResources(resource)
	return srv
}

// noRedirects returns a client of srv that does not follow redirects, as
// the tests read the Location header themselves.
func noRedirects(srv *server) *http.Client {
	c := *srv.HTTP.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// decode reads resp's body as JSON into a map (nil for an empty body).
func decode(t *testing.T, resp *http.Response) map[string]any {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if len(body) == 0 {
		return nil
	}
	var m map[string]any
	require.NoError(t, json.Unmarshal(body, &m), "body %s", body)
	return m
}

// register registers a client with meta and returns the status and answer.
func register(t *testing.T, srv *server, meta map[string]any) (int, map[string]any) {
	t.Helper()
	body, err := json.Marshal(meta)
	require.NoError(t, err)
	resp, err := srv.HTTP.Client().Post(srv.RegistrationURL(), "application/json", strings.NewReader(string(body)))
	require.NoError(t, err)
	return resp.StatusCode, decode(t, resp)
}

// publicClient registers a public client with redirectURI and returns its id.
func publicClient(t *testing.T, srv *server) string {
	t.Helper()
	status, reg := register(t, srv, map[string]any{
		"client_name":                "test client",
		"redirect_uris":              []string{redirectURI},
		"token_endpoint_auth_method": "none",
	})
	require.Equal(t, http.StatusCreated, status, "registration: %v", reg)
	return reg["client_id"].(string)
}

// pkce returns a fresh code verifier and its S256 challenge.
func pkce() (verifier, challenge string) {
	verifier = base64.RawURLEncoding.EncodeToString([]byte(rand.Text()[:26] + rand.Text()[:26]))
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

// authParams returns the parameters of a valid authorization request.
func authParams(clientID, challenge string) url.Values {
	return url.Values{
		"response_type":         {"code"},
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"state":                 {"xyz"},
		"code_challenge":        {challenge},
		"code_challenge_method": {"S256"},
		"resource":              {resource},
	}
}

// authorize sends an authorization request and returns the response
// without following its redirect; the caller closes the body.
func authorize(t *testing.T, srv *server, params url.Values) *http.Response {
	t.Helper()
	resp, err := noRedirects(srv).Get(srv.AuthorizationURL() + "?" + params.Encode())
	require.NoError(t, err)
	return resp
}

// redirected checks that resp redirects to redirectURI and returns the
// query it carries.
func redirected(t *testing.T, resp *http.Response) url.Values {
	t.Helper()
	resp.Body.Close()
	require.Contains(t, []int{http.StatusFound, http.StatusSeeOther}, resp.StatusCode, "want a redirect")
	loc, err := url.Parse(resp.Header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, redirectURI, loc.Scheme+"://"+loc.Host+loc.Path, "redirect target")
	return loc.Query()
}

// code runs an authorization request with login_hint user and returns the code.
func code(t *testing.T, srv *server, params url.Values, user string) string {
	t.Helper()
	params.Set("login_hint", user)
	q := redirected(t, authorize(t, srv, params))
	require.Empty(t, q.Get("error"), "authorization error: %s", q.Get("error_description"))
	require.NotEmpty(t, q.Get("code"))
	return q.Get("code")
}

// token posts form to the token endpoint, with Basic credentials when id
// is not empty, and returns the status and answer.
func token(t *testing.T, srv *server, form url.Values, id, secret string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.TokenURL(), strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := srv.HTTP.Client().Do(req)
	require.NoError(t, err)
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"), "token endpoint Cache-Control")
	return resp.StatusCode, decode(t, resp)
}

func exchangeForm(clientID, code, verifier string) url.Values {
	return url.Values{
		"grant_type":    {"authorization_code"},
		"client_id":     {clientID},
		"code":          {code},
		"redirect_uri":  {redirectURI},
		"code_verifier": {verifier},
	}
}

// introspectScope introspects tok and returns active and scope.
func introspectScope(t *testing.T, srv *server, tok string) (bool, string) {
	t.Helper()
	status, body := introspect(t, srv, tok)
	require.Equal(t, http.StatusOK, status)
	active, _ := body["active"].(bool)
	scope, _ := body["scope"].(string)
	return active, scope
}

func TestMetadataAdvertisesTheFlow(t *testing.T) {
	srv := flowServer(t)
	status, body := get(t, srv, srv.Issuer()+"/.well-known/openid-configuration")
	require.Equal(t, http.StatusOK, status)
	var md map[string]any
	require.NoError(t, json.Unmarshal(body, &md))
	for k, want := range map[string]any{
		"authorization_endpoint":                         srv.AuthorizationURL(),
		"token_endpoint":                                 srv.TokenURL(),
		"registration_endpoint":                          srv.RegistrationURL(),
		"revocation_endpoint":                            srv.RevocationURL(),
		"code_challenge_methods_supported":               []any{"S256"},
		"grant_types_supported":                          []any{"authorization_code", "refresh_token"},
		"response_types_supported":                       []any{"code"},
		"token_endpoint_auth_methods_supported":          []any{"none", "client_secret_basic", "client_secret_post"},
		"authorization_response_iss_parameter_supported": true,
	} {
		assert.Equal(t, want, md[k], k)
	}

	// Browser-based clients read it cross-origin.
	req, _ := http.NewRequest(http.MethodOptions, srv.RegistrationURL(), nil)
	req.Header.Set("Origin", "http://localhost:6274")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "content-type")
	resp, err := srv.HTTP.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNoContent, resp.StatusCode, "preflight")
	assert.Equal(t, "*", resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Contains(t, resp.Header.Get("Access-Control-Allow-Headers"), "Authorization")
}

func TestRegister(t *testing.T) {
	srv := flowServer(t)
	tests := []struct {
		name       string
		meta       map[string]any
		wantStatus int
		wantError  string
		wantSecret bool
		wantMethod string
	}{
		{"public", map[string]any{"redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "none", "client_name": "x"}, 201, "", false, "none"},
		{"default method is client_secret_basic", map[string]any{"redirect_uris": []string{"https://app.example/cb"}}, 201, "", true, "client_secret_basic"},
		{"client_secret_post", map[string]any{"redirect_uris": []string{"http://localhost:9999/cb"}, "token_endpoint_auth_method": "client_secret_post"}, 201, "", true, "client_secret_post"},
		{"ipv6 loopback", map[string]any{"redirect_uris": []string{"http://[::1]:1234/cb"}, "token_endpoint_auth_method": "none"}, 201, "", false, "none"},
		{"unknown metadata is ignored", map[string]any{"redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "none", "x-custom": 1}, 201, "", false, "none"},
		{"http off loopback", map[string]any{"redirect_uris": []string{"http://app.example/cb"}}, 400, "invalid_redirect_uri", false, ""},
		{"private-use scheme", map[string]any{"redirect_uris": []string{"com.example.app:/cb"}}, 400, "invalid_redirect_uri", false, ""},
		{"javascript", map[string]any{"redirect_uris": []string{"javascript:alert(1)"}}, 400, "invalid_redirect_uri", false, ""},
		{"relative", map[string]any{"redirect_uris": []string{"/cb"}}, 400, "invalid_redirect_uri", false, ""},
		{"fragment", map[string]any{"redirect_uris": []string{"https://app.example/cb#x"}}, 400, "invalid_redirect_uri", false, ""},
		{"no redirect uris", map[string]any{"client_name": "x"}, 400, "invalid_redirect_uri", false, ""},
		{"implicit grant", map[string]any{"redirect_uris": []string{redirectURI}, "grant_types": []string{"implicit"}}, 400, "invalid_client_metadata", false, ""},
		{"token response type", map[string]any{"redirect_uris": []string{redirectURI}, "response_types": []string{"token"}}, 400, "invalid_client_metadata", false, ""},
		{"private_key_jwt", map[string]any{"redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "private_key_jwt"}, 400, "invalid_client_metadata", false, ""},
		{"javascript client_uri", map[string]any{"redirect_uris": []string{redirectURI}, "client_uri": "javascript:alert(1)"}, 400, "invalid_client_metadata", false, ""},
	}
	ids := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, reg := register(t, srv, tt.meta)
			require.Equal(t, tt.wantStatus, status, "answer %v", reg)
			if tt.wantError != "" {
				assert.Equal(t, tt.wantError, reg["error"])
				assert.NotEmpty(t, reg["error_description"])
				return
			}
			id, _ := reg["client_id"].(string)
			require.NotEmpty(t, id)
			assert.False(t, ids[id], "client_id %q issued twice", id)
			ids[id] = true
			assert.NotZero(t, reg["client_id_issued_at"])
			assert.Equal(t, tt.meta["redirect_uris"], toStrings(reg["redirect_uris"]))
			assert.Equal(t, tt.wantMethod, reg["token_endpoint_auth_method"])
			assert.Equal(t, []string{"authorization_code", "refresh_token"}, toStrings(reg["grant_types"]))
			assert.Equal(t, []string{"code"}, toStrings(reg["response_types"]))
			if tt.wantSecret {
				assert.NotEmpty(t, reg["client_secret"])
				assert.Equal(t, float64(0), reg["client_secret_expires_at"], "RFC 7591: required with a secret, 0 = never")
			} else {
				assert.NotContains(t, reg, "client_secret")
			}
		})
	}

	resp, err := srv.HTTP.Client().Post(srv.RegistrationURL(), "application/json", strings.NewReader("not json"))
	require.NoError(t, err)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "invalid_client_metadata", decode(t, resp)["error"])
}

func toStrings(v any) []string {
	var out []string
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			s, _ := e.(string)
			out = append(out, s)
		}
	case []string:
		return v
	}
	return out
}

func TestCodeFlow(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv)
	verifier, challenge := pkce()

	params := authParams(clientID, challenge)
	params.Set("scope", "crm.contacts.read crm.contacts.write crm.deals.read")
	params.Set("login_hint", "carol")
	q := redirected(t, authorize(t, srv, params))
	assert.Equal(t, "xyz", q.Get("state"), "state echoed")
	assert.Equal(t, srv.Issuer(), q.Get("iss"), "RFC 9207 iss")
	require.NotEmpty(t, q.Get("code"))

	status, tok := token(t, srv, exchangeForm(clientID, q.Get("code"), verifier), "", "")
	require.Equal(t, http.StatusOK, status, "token answer %v", tok)
	assert.Equal(t, "Bearer", tok["token_type"])
	assert.Equal(t, float64(3600), tok["expires_in"])
	// carol holds only the read scopes: requested ∩ held.
	assert.Equal(t, "crm.contacts.read crm.deals.read", tok["scope"])
	assert.NotEmpty(t, tok["refresh_token"])

	access := tok["access_token"].(string)
	parsed, err := jwt.Parse([]byte(access), jwt.WithKeySet(fetchJWKS(t, srv)),
		jwt.WithIssuer(srv.Issuer()), jwt.WithAudience(resource), jwt.WithSubject("carol"))
	require.NoError(t, err, "the access token verifies against the JWKS")
	assert.Equal(t, []string{resource}, parsed.Audience())
	scope, _ := parsed.Get("scope")
	assert.Equal(t, "crm.contacts.read crm.deals.read", scope)
	cid, _ := parsed.Get("client_id")
	assert.Equal(t, clientID, cid)
	assert.NotEmpty(t, parsed.JwtID())
	msg, err := jws.Parse([]byte(access))
	require.NoError(t, err)
	assert.Equal(t, jwa.RS256, msg.Signatures()[0].ProtectedHeaders().Algorithm())
	assert.Equal(t, srv.as.KID("RS256"), msg.Signatures()[0].ProtectedHeaders().KeyID())

	active, iscope := introspectScope(t, srv, access)
	assert.True(t, active)
	assert.Equal(t, "crm.contacts.read crm.deals.read", iscope)
}

func TestCodeFlowDefaults(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv)
	verifier, challenge := pkce()

	// No scope: everything the user holds. No resource: the only known
	// one. No redirect_uri: the only registered one, and then none is
	// needed at the token endpoint either.
	params := authParams(clientID, challenge)
	params.Del("resource")
	params.Del("redirect_uri")
	c := code(t, srv, params, "bob")
	form := exchangeForm(clientID, c, verifier)
	form.Del("redirect_uri")
	status, tok := token(t, srv, form, "", "")
	require.Equal(t, http.StatusOK, status, "token answer %v", tok)
	assert.Equal(t, "crm.contacts.read crm.contacts.write crm.deals.write", tok["scope"])
	parsed, err := jwt.Parse([]byte(tok["access_token"].(string)), jwt.WithKeySet(fetchJWKS(t, srv)), jwt.WithAudience(resource))
	require.NoError(t, err)
	assert.Equal(t, "bob", parsed.Subject())
}

func TestSeveralResources(t *testing.T) {
	srv := flowServer(t)
	const other = "http://127.0.0.1:8081/mcp"
	srv.SetResources(resource, other)
	clientID := publicClient(t, srv)
	verifier, challenge := pkce()
	params := authParams(clientID, challenge)
	params.Add("resource", other)

	// The token endpoint may narrow to one of them.
	form := exchangeForm(clientID, code(t, srv, params, "alice"), verifier)
	form.Set("resource", other)
	status, tok := token(t, srv, form, "", "")
	require.Equal(t, http.StatusOK, status, "token answer %v", tok)
	parsed, err := jwt.Parse([]byte(tok["access_token"].(string)), jwt.WithKeySet(fetchJWKS(t, srv)))
	require.NoError(t, err)
	assert.Equal(t, []string{other}, parsed.Audience())

	// Without narrowing, aud lists both.
	verifier, challenge = pkce()
	params = authParams(clientID, challenge)
	params.Add("resource", other)
	status, tok = token(t, srv, exchangeForm(clientID, code(t, srv, params, "alice"), verifier), "", "")
	require.Equal(t, http.StatusOK, status)
	parsed, err = jwt.Parse([]byte(tok["access_token"].(string)), jwt.WithKeySet(fetchJWKS(t, srv)))
	require.NoError(t, err)
	assert.Equal(t, []string{resource, other}, parsed.Audience())

	// No resource and more than one known: the first is the default.
	verifier, challenge = pkce()
	params = authParams(clientID, challenge)
	params.Del("resource")
	form = exchangeForm(clientID, code(t, srv, params, "alice"), verifier)
	form.Del("resource")
	status, tok = token(t, srv, form, "", "")
	require.Equal(t, http.StatusOK, status, "token answer %v", tok)
	parsed, err = jwt.Parse([]byte(tok["access_token"].(string)), jwt.WithKeySet(fetchJWKS(t, srv)))
	require.NoError(t, err)
	assert.Equal(t, []string{resource}, parsed.Audience())
}

func TestAnyResourceWhenNoneConfigured(t *testing.T) {
	srv := newServer(t)
	srv.SetUsers(devduo.DefaultUsers()...)
	clientID := publicClient(t, srv)
	_, challenge := pkce()
	params := authParams(clientID, challenge)
	params.Set("resource", "https://anything.example/mcp")
	code(t, srv, params, "alice")

	params.Del("resource")
	params.Set("login_hint", "alice")
	assert.Equal(t, "invalid_target", redirected(t, authorize(t, srv, params)).Get("error"), "resource required")
}

func TestAuthorizeErrors(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv)
	_, challenge := pkce()

	// Before the redirect URI is known good: a page, never a redirect.
	for _, tt := range []struct {
		name string
		edit func(url.Values)
	}{
		{"unknown client", func(v url.Values) { v.Set("client_id", "nobody") }},
		{"no client", func(v url.Values) { v.Del("client_id") }},
		{"redirect_uri mismatch", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:3142/elsewhere") }},
		{"redirect_uri other host", func(v url.Values) { v.Set("redirect_uri", "https://evil.example/callback") }},
		{"redirect_uri repeated", func(v url.Values) { v.Add("redirect_uri", redirectURI) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			params := authParams(clientID, challenge)
			params.Set("login_hint", "alice")
			tt.edit(params)
			resp := authorize(t, srv, params)
			defer resp.Body.Close()
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
			assert.Empty(t, resp.Header.Get("Location"), "must not redirect")
			assert.Contains(t, resp.Header.Get("Content-Type"), "text/html")
		})
	}

	// After: back to the client with error and state (RFC 6749 4.1.2.1).
	for _, tt := range []struct {
		name, wantError string
		edit            func(url.Values)
	}{
		{"missing PKCE", "invalid_request", func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }},
		{"plain PKCE", "invalid_request", func(v url.Values) { v.Set("code_challenge_method", "plain") }},
		{"PKCE method omitted (means plain)", "invalid_request", func(v url.Values) { v.Del("code_challenge_method") }},
		{"malformed challenge", "invalid_request", func(v url.Values) { v.Set("code_challenge", "short") }},
		{"unknown resource", "invalid_target", func(v url.Values) { v.Set("resource", "http://127.0.0.1:9/mcp") }},
		{"resource with fragment", "invalid_target", func(v url.Values) { v.Set("resource", resource+"#x") }},
		{"implicit flow", "unsupported_response_type", func(v url.Values) { v.Set("response_type", "token") }},
		{"repeated scope", "invalid_request", func(v url.Values) { v.Add("scope", "a"); v.Add("scope", "b") }},
		{"user holds none of the scopes", "access_denied", func(v url.Values) { v.Set("login_hint", "bob"); v.Set("scope", "crm.deals.read") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			params := authParams(clientID, challenge)
			params.Set("login_hint", "alice")
			tt.edit(params)
			q := redirected(t, authorize(t, srv, params))
			assert.Equal(t, tt.wantError, q.Get("error"))
			assert.NotEmpty(t, q.Get("error_description"))
			assert.Equal(t, "xyz", q.Get("state"))
			assert.Empty(t, q.Get("code"))
		})
	}

	// A caller asking for JSON gets JSON.
	req, _ := http.NewRequest(http.MethodGet, srv.AuthorizationURL()+"?client_id=nobody", nil)
	req.Header.Set("Accept", "application/json")
	resp, err := srv.HTTP.Client().Do(req)
	require.NoError(t, err)
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, "invalid_client", decode(t, resp)["error"])
}

func TestLoopbackRedirectPortMayVary(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv) // registered http://127.0.0.1:3142/callback
	_, challenge := pkce()
	params := authParams(clientID, challenge)
	params.Set("redirect_uri", "http://127.0.0.1:5555/callback")
	params.Set("login_hint", "alice")
	resp := authorize(t, srv, params)
	resp.Body.Close()
	require.Equal(t, http.StatusFound, resp.StatusCode, "RFC 8252 section 7.3")
	assert.True(t, strings.HasPrefix(resp.Header.Get("Location"), "http://127.0.0.1:5555/callback?"))
}

func TestTokenErrors(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv)
	otherID := publicClient(t, srv)

	fresh := func() (code, verifier string) {
		verifier, challenge := pkce()
		return codeFor(t, srv, clientID, challenge, "alice"), verifier
	}
	for _, tt := range []struct {
		name       string
		edit       func(form url.Values)
		wantStatus int
		wantError  string
	}{
		{"wrong verifier", func(f url.Values) { v, _ := pkce(); f.Set("code_verifier", v) }, 400, "invalid_grant"},
		{"malformed verifier", func(f url.Values) { f.Set("code_verifier", "short") }, 400, "invalid_grant"},
		{"no verifier", func(f url.Values) { f.Del("code_verifier") }, 400, "invalid_request"},
		{"another client", func(f url.Values) { f.Set("client_id", otherID) }, 400, "invalid_grant"},
		{"other redirect_uri", func(f url.Values) { f.Set("redirect_uri", "http://127.0.0.1:3142/other") }, 400, "invalid_grant"},
		{"redirect_uri omitted though it was sent", func(f url.Values) { f.Del("redirect_uri") }, 400, "invalid_grant"},
		{"unknown code", func(f url.Values) { f.Set("code", "nope") }, 400, "invalid_grant"},
		{"resource not authorized", func(f url.Values) { f.Set("resource", "http://127.0.0.1:9/mcp") }, 400, "invalid_target"},
		{"unknown client", func(f url.Values) { f.Set("client_id", "nobody") }, 401, "invalid_client"},
		{"no client", func(f url.Values) { f.Del("client_id") }, 401, "invalid_client"},
		{"secret from a public client", func(f url.Values) { f.Set("client_secret", "x") }, 401, "invalid_client"},
		{"no grant type", func(f url.Values) { f.Del("grant_type") }, 400, "invalid_request"},
		{"password grant", func(f url.Values) { f.Set("grant_type", "password") }, 400, "unsupported_grant_type"},
		{"client credentials grant", func(f url.Values) { f.Set("grant_type", "client_credentials") }, 400, "unsupported_grant_type"},
		{"repeated code", func(f url.Values) { f.Add("code", "x") }, 400, "invalid_request"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, verifier := fresh()
			form := exchangeForm(clientID, c, verifier)
			tt.edit(form)
			status, body := token(t, srv, form, "", "")
			assert.Equal(t, tt.wantStatus, status, "answer %v", body)
			assert.Equal(t, tt.wantError, body["error"], "answer %v", body)
			assert.NotContains(t, body, "access_token")
		})
	}

	t.Run("a failed attempt spends the code", func(t *testing.T) {
		c, verifier := fresh()
		form := exchangeForm(clientID, c, verifier)
		form.Set("code_verifier", strings.Repeat("a", 43))
		status, _ := token(t, srv, form, "", "")
		require.Equal(t, http.StatusBadRequest, status)
		status, body := token(t, srv, exchangeForm(clientID, c, verifier), "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_grant", body["error"])
	})

	t.Run("code reuse revokes what it gave", func(t *testing.T) {
		c, verifier := fresh()
		status, first := token(t, srv, exchangeForm(clientID, c, verifier), "", "")
		require.Equal(t, http.StatusOK, status)
		status, body := token(t, srv, exchangeForm(clientID, c, verifier), "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_grant", body["error"])
		active, _ := introspectScope(t, srv, first["access_token"].(string))
		assert.False(t, active, "the token from the first exchange is revoked")
		status, body = token(t, srv, url.Values{"grant_type": {"refresh_token"}, "client_id": {clientID}, "refresh_token": {first["refresh_token"].(string)}}, "", "")
		assert.Equal(t, http.StatusBadRequest, status)
		assert.Equal(t, "invalid_grant", body["error"])
	})

	t.Run("GET", func(t *testing.T) {
		status, _ := get(t, srv, srv.TokenURL())
		assert.Equal(t, http.StatusMethodNotAllowed, status)
	})
}

// codeFor runs an authorization request for clientID and returns the code.
func codeFor(t *testing.T, srv *server, clientID, challenge, user string) string {
	t.Helper()
	return code(t, srv, authParams(clientID, challenge), user)
}

func TestConfidentialClient(t *testing.T) {
	srv := flowServer(t)
	for _, method := range []string{"client_secret_basic", "client_secret_post"} {
		t.Run(method, func(t *testing.T) {
			status, reg := register(t, srv, map[string]any{
				"redirect_uris":              []string{redirectURI},
				"token_endpoint_auth_method": method,
			})
			require.Equal(t, http.StatusCreated, status)
			id, secret := reg["client_id"].(string), reg["client_secret"].(string)

			send := func(secret string, inHeader bool) (int, map[string]any) {
				verifier, challenge := pkce()
				form := exchangeForm(id, codeFor(t, srv, id, challenge, "alice"), verifier)
				if inHeader {
					form.Del("client_id")
					return token(t, srv, form, id, secret)
				}
				form.Set("client_secret", secret)
				return token(t, srv, form, "", "")
			}
			for _, inHeader := range []bool{true, false} {
				status, body := send(secret, inHeader)
				assert.Equal(t, http.StatusOK, status, "header=%t: %v", inHeader, body)
				status, body = send("wrong", inHeader)
				assert.Equal(t, http.StatusUnauthorized, status, "wrong secret, header=%t", inHeader)
				assert.Equal(t, "invalid_client", body["error"])
				assert.NotContains(t, body["error_description"], secret)
			}
			// Without its secret, a confidential client is refused.
			verifier, challenge := pkce()
			status, body := token(t, srv, exchangeForm(id, codeFor(t, srv, id, challenge, "alice"), verifier), "", "")
			assert.Equal(t, http.StatusUnauthorized, status)
			assert.Equal(t, "invalid_client", body["error"])
		})
	}

	t.Run("Basic challenge on failed header authentication", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, srv.TokenURL(), strings.NewReader("grant_type=authorization_code&code=x&code_verifier=y"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("nobody", "x")
		resp, err := srv.HTTP.Client().Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		assert.Contains(t, resp.Header.Get("WWW-Authenticate"), "Basic")
	})
}

// formFields extracts the hidden form fields of an HTML page.
var pendingField = regexp.MustCompile(`name="pending" value="([^"]+)"`)

func pendingID(t *testing.T, resp *http.Response) (string, string) {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "page: %s", body)
	m := pendingField.FindSubmatch(body)
	require.NotNil(t, m, "no pending field in %s", body)
	return string(m[1]), string(body)
}

func postForm(t *testing.T, srv *server, form url.Values) *http.Response {
	t.Helper()
	resp, err := noRedirects(srv).PostForm(srv.AuthorizationURL(), form)
	require.NoError(t, err)
	return resp
}

func TestLoginAndConsentPages(t *testing.T) {
	srv := flowServer(t)
	status, reg := register(t, srv, map[string]any{
		"client_name":                `<script>alert("x")</script>`,
		"redirect_uris":              []string{redirectURI},
		"token_endpoint_auth_method": "none",
	})
	require.Equal(t, http.StatusCreated, status)
	clientID := reg["client_id"].(string)

	start := func(t *testing.T) (verifier, pending, page string) {
		verifier, challenge := pkce()
		params := authParams(clientID, challenge)
		params.Set("scope", "crm.contacts.read crm.deals.read")
		params.Set("login_hint", "nobody") // unknown: the page is shown
		resp := authorize(t, srv, params)
		assert.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"))
		assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
		pending, page = pendingID(t, resp)
		return verifier, pending, page
	}

	t.Run("login page lists users and their scopes", func(t *testing.T) {
		_, _, page := start(t)
		for _, u := range devduo.DefaultUsers() {
			assert.Contains(t, page, "Sign in as "+u.Name)
			for _, s := range u.Scopes {
				assert.Contains(t, page, "<code>"+s+"</code>")
			}
		}
		assert.NotContains(t, page, "<script>", "client_name is escaped")
		assert.Contains(t, page, "&lt;script&gt;")
	})

	t.Run("login then approve", func(t *testing.T) {
		verifier, pending, _ := start(t)
		consentID, page := pendingID(t, postForm(t, srv, url.Values{"pending": {pending}, "step": {"login"}, "user": {"bob"}}))
		assert.NotEqual(t, pending, consentID, "the consent form gets a new id")
		assert.Contains(t, page, "Approve")
		assert.Contains(t, page, "Deny")
		assert.Contains(t, page, resource)
		assert.Regexp(t, `granted: <code>crm.contacts.read</code>\s*</p>`, page, "bob lacks crm.deals.read")
		assert.Contains(t, page, "not granted: <code>crm.deals.read</code>")

		// The login form's id is spent.
		resp := postForm(t, srv, url.Values{"pending": {pending}, "step": {"login"}, "user": {"alice"}})
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "login form replayed")

		resp = postForm(t, srv, url.Values{"pending": {consentID}, "step": {"consent"}, "decision": {"approve"}})
		assert.Equal(t, http.StatusSeeOther, resp.StatusCode, "after a POST, 303")
		q := redirected(t, resp)
		assert.Equal(t, "xyz", q.Get("state"))
		status, tok := token(t, srv, exchangeForm(clientID, q.Get("code"), verifier), "", "")
		require.Equal(t, http.StatusOK, status, "token answer %v", tok)
		assert.Equal(t, "crm.contacts.read", tok["scope"])

		// The consent form's id is spent too.
		resp = postForm(t, srv, url.Values{"pending": {consentID}, "step": {"consent"}, "decision": {"approve"}})
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "consent form replayed")
	})

	t.Run("deny", func(t *testing.T) {
		_, pending, _ := start(t)
		consentID, _ := pendingID(t, postForm(t, srv, url.Values{"pending": {pending}, "step": {"login"}, "user": {"alice"}}))
		q := redirected(t, postForm(t, srv, url.Values{"pending": {consentID}, "step": {"consent"}, "decision": {"deny"}}))
		assert.Equal(t, "access_denied", q.Get("error"))
		assert.Equal(t, "xyz", q.Get("state"))
		assert.Empty(t, q.Get("code"))
	})

	t.Run("steps cannot be skipped", func(t *testing.T) {
		_, pending, _ := start(t)
		resp := postForm(t, srv, url.Values{"pending": {pending}, "step": {"consent"}, "decision": {"approve"}})
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "consent before login")
		resp = postForm(t, srv, url.Values{"pending": {pending}, "step": {"login"}, "user": {"mallory"}})
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "unknown user")
		resp = postForm(t, srv, url.Values{"pending": {"forged"}, "step": {"login"}, "user": {"alice"}})
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "unknown pending id")
	})

	t.Run("cross-origin posts are refused", func(t *testing.T) {
		_, pending, _ := start(t)
		form := url.Values{"pending": {pending}, "step": {"login"}, "user": {"alice"}}
		req, _ := http.NewRequest(http.MethodPost, srv.AuthorizationURL(), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "cross-site")
		req.Header.Set("Origin", "https://evil.example")
		resp, err := noRedirects(srv).Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	})
}

func TestAutoLogin(t *testing.T) {
	srv := flowServer(t)
	clientID := publicClient(t, srv)
	_, challenge := pkce()

	resp := authorize(t, srv, authParams(clientID, challenge))
	pendingID(t, resp) // the login page

	srv.SetAutoLogin("carol")
	q := redirected(t, authorize(t, srv, authParams(clientID, challenge)))
	assert.NotEmpty(t, q.Get("code"), "no page with auto-login")

	// A known login_hint wins over auto-login.
	verifier, challenge := pkce()
	params := authParams(clientID, challenge)
	params.Set("login_hint", "alice")
	q = redirected(t, authorize(t, srv, params))
	_, tok := token(t, srv, exchangeForm(clientID, q.Get("code"), verifier), "", "")
	assert.Equal(t, "crm.contacts.read crm.contacts.write crm.deals.read crm.deals.write", tok["scope"])

	srv.SetAutoLogin("nobody")
	pendingID(t, authorize(t, srv, authParams(clientID, challenge)))
	srv.SetAutoLogin("")
	pendingID(t, authorize(t, srv, authParams(clientID, challenge)))
}
