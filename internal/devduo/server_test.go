package devduo_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// server is a SignIn in front of an rstest fake on a loopback listener, as
// crm-mcp dev runs them, with the issuer path shaped like Duo's.
type server struct {
	*devduo.SignIn
	as   *rstest.AuthServer
	HTTP *httptest.Server
}

// newServer starts a sign-in without users, closed when the test ends.
func newServer(t testing.TB) *server {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	as := rstest.NewAuthServer("http://" + ts.Listener.Addr().String() + "/oauth2/test")
	s := &server{SignIn: devduo.NewSignIn(as), as: as, HTTP: ts}
	ts.Config.Handler = s.SignIn
	ts.Start()
	t.Cleanup(ts.Close)
	return s
}

func (s *server) Issuer() string { return s.as.Issuer() }

func (s *server) url(path string) string { return strings.TrimSuffix(s.as.Issuer(), "/") + path }

func (s *server) AuthorizationURL() string { return s.url("/authorize") }
func (s *server) TokenURL() string         { return s.url("/token") }
func (s *server) RegistrationURL() string  { return s.url("/register") }
func (s *server) RevocationURL() string    { return s.url("/revoke") }
func (s *server) IntrospectionURL() string { return s.as.IntrospectionURL() }

// get fetches rawURL from srv and returns the status and body.
func get(t *testing.T, srv *server, rawURL string) (int, []byte) {
	t.Helper()
	resp, err := srv.HTTP.Client().Get(rawURL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

// fetchJWKS fetches and parses the JWKS the way a resource server would.
func fetchJWKS(t *testing.T, srv *server) jwk.Set {
	t.Helper()
	set, err := jwk.Fetch(t.Context(), srv.as.JWKSURL(), jwk.WithHTTPClient(srv.HTTP.Client()))
	require.NoError(t, err, "fetching the JWKS")
	return set
}

// introspect asks the introspection endpoint about token, as the resource
// server does, with the fake's default client credentials.
func introspect(t *testing.T, srv *server, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.IntrospectionURL(), strings.NewReader(url.Values{"token": {token}}.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(rstest.DefaultIntrospectionClientID, rstest.DefaultIntrospectionClientSecret)
	resp, err := srv.HTTP.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}
