package rstest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"

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
