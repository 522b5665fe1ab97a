package devduo_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// The authorization code flow by hand, as an MCP client runs it: register
// (RFC 7591), authorize with PKCE and a resource (login_hint skips the login
// and consent pages), exchange the code. Revoking a scope from the user on
// the admin API then shows in introspection at once.
func Example() {
	// The rstest fake keeps the keys and answers introspection; the
	// sign-in serves the flow in front of it, on the issuer's host.
	ts := httptest.NewUnstartedServer(nil)
	as := rstest.NewAuthServer("http://" + ts.Listener.Addr().String() + "/oauth2/dev")
	signIn := devduo.NewSignIn(as)
	signIn.SetUsers(devduo.DefaultUsers()...)
	signIn.SetResources("http://127.0.0.1:8080/mcp")
	ts.Config.Handler = signIn
	ts.Start()
	defer ts.Close()
	client := ts.Client()

	// 1. Dynamic client registration: a public client.
	resp, err := client.Post(as.Issuer()+"/register", "application/json", strings.NewReader(
		`{"client_name":"example","redirect_uris":["http://127.0.0.1:3142/cb"],"token_endpoint_auth_method":"none"}`))
	if err != nil {
		panic(err)
	}
	var reg struct {
		ClientID string `json:"client_id"`
	}
	json.NewDecoder(resp.Body).Decode(&reg)
	resp.Body.Close()

	// 2. Authorization request; the code comes back in the redirect.
	verifier := strings.Repeat("v", 43) // use a random one: oauth2.GenerateVerifier
	sum := sha256.Sum256([]byte(verifier))
	authURL := as.Issuer() + "/authorize" + "?" + url.Values{
		"response_type":         {"code"},
		"client_id":             {reg.ClientID},
		"redirect_uri":          {"http://127.0.0.1:3142/cb"},
		"scope":                 {"crm.contacts.read crm.deals.write"},
		"state":                 {"s1"},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
		"resource":              {"http://127.0.0.1:8080/mcp"},
		"login_hint":            {"carol"},
	}.Encode()
	noFollow := *client
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err = noFollow.Get(authURL)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	fmt.Println(resp.StatusCode, loc.Query().Get("state"))

	// 3. Token request with the PKCE verifier.
	resp, err = client.PostForm(as.Issuer()+"/token", url.Values{
		"grant_type":    {"authorization_code"},
		"client_id":     {reg.ClientID},
		"code":          {loc.Query().Get("code")},
		"redirect_uri":  {"http://127.0.0.1:3142/cb"},
		"code_verifier": {verifier},
	})
	if err != nil {
		panic(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
	}
	json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	fmt.Printf("granted %q\n", tok.Scope) // carol holds no crm.deals.write

	// 4. Scopes are live: introspection follows the admin's changes.
	introspect := func() string {
		resp, err := client.PostForm(as.IntrospectionURL(), url.Values{
			"token":         {tok.AccessToken},
			"client_id":     {rstest.DefaultIntrospectionClientID},
			"client_secret": {rstest.DefaultIntrospectionClientSecret},
		})
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		var body struct {
			Active bool   `json:"active"`
			Scope  string `json:"scope"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		return fmt.Sprintf("active=%t scope=%q", body.Active, body.Scope)
	}
	fmt.Println(introspect())
	req, _ := http.NewRequest(http.MethodDelete, signIn.AdminURL()+"/api/users/carol/scopes/crm.contacts.read", nil)
	if resp, err = client.Do(req); err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(introspect())

	// Output:
	// 302 s1
	// granted "crm.contacts.read"
	// active=true scope="crm.contacts.read"
	// active=true scope=""
}
