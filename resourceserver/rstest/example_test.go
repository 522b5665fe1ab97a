package rstest_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// A test starts a fake authorization server, mints a token for the resource
// it protects, and checks it the way the resource server does: with the keys
// from the JWKS endpoint.
func Example() {
	srv := rstest.NewServer()
	defer srv.Close()

	const resource = "https://crm.example/mcp"
	token := srv.Mint(srv.Claims("alice", resource, "crm.contacts.read"))

	resp, err := srv.HTTP.Client().Get(srv.JWKSURL())
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	keys, err := jwk.Parse(body)
	if err != nil {
		panic(err)
	}

	tok, err := jwt.Parse([]byte(token), jwt.WithKeySet(keys),
		jwt.WithIssuer(srv.Issuer()), jwt.WithAudience(resource))
	if err != nil {
		panic(err)
	}
	scope, _ := tok.Get("scope")
	fmt.Println(tok.Subject(), scope)

	// A token signed with a bit flipped does not verify.
	forged := srv.Mint(srv.Claims("alice", resource), rstest.WithTamperedSignature())
	_, err = jwt.Parse([]byte(forged), jwt.WithKeySet(keys))
	fmt.Println("forged token accepted:", err == nil)

	// Output:
	// alice crm.contacts.read
	// forged token accepted: false
}

// Opaque tokens are checked by RFC 7662 introspection, with the resource
// server authenticating as a client.
func ExampleAuthServer_MintOpaque() {
	srv := rstest.NewServer()
	defer srv.Close()

	token := srv.MintOpaque(srv.Claims("alice", "https://crm.example/mcp", "crm.deals.read"))

	introspect := func() string {
		resp, err := srv.HTTP.Client().PostForm(srv.IntrospectionURL(), url.Values{
			"token":         {token},
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
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			panic(err)
		}
		return fmt.Sprintf("active=%t scope=%q", body.Active, body.Scope)
	}

	fmt.Println(introspect())
	srv.Revoke(token)
	fmt.Println(introspect())

	// Output:
	// active=true scope="crm.deals.read"
	// active=false scope=""
}

// The authorization code flow by hand, as an MCP client runs it: register
// (RFC 7591), authorize with PKCE and a resource (login_hint skips the login
// and consent pages), exchange the code. Revoking a scope from the user
// then shows in introspection at once.
func ExampleAuthServer_SetUsers() {
	srv := rstest.NewServer()
	defer srv.Close()
	srv.SetUsers(rstest.DevUsers()...)
	srv.SetResources("http://127.0.0.1:8080/mcp")
	client := srv.HTTP.Client()

	// 1. Dynamic client registration: a public client.
	resp, err := client.Post(srv.RegistrationURL(), "application/json", strings.NewReader(
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
	authURL := srv.AuthorizationURL() + "?" + url.Values{
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
	resp, err = client.PostForm(srv.TokenURL(), url.Values{
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
		resp, err := client.PostForm(srv.IntrospectionURL(), url.Values{
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
	srv.RevokeScope("carol", "crm.contacts.read")
	fmt.Println(introspect())

	// Output:
	// 302 s1
	// granted "crm.contacts.read"
	// active=true scope="crm.contacts.read"
	// active=true scope=""
}
