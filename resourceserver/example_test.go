package resourceserver_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// Protecting any handler: metadata at the well-known paths, the endpoint
// behind the middleware. rstest stands in for Duo.
func Example() {
	duo := rstest.NewServer() // in production: Duo's issuer URL
	defer duo.Close()
	duo.KID("RS256")

	rs, err := resourceserver.New(resourceserver.Config{
		Resource:        "https://crm.example.com/mcp",
		Issuers:         []resourceserver.Issuer{{URL: duo.Issuer()}},
		ScopesSupported: []string{"crm.contacts.read"},
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		panic(err)
	}
	defer rs.Close()

	mux := http.NewServeMux()
	for _, p := range rs.MetadataPaths() {
		mux.Handle(p, rs.MetadataHandler())
	}
	mux.Handle("/mcp", rs.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", resourceserver.TokenFromContext(r.Context()).Subject)
	})))

	call := func(token string) {
		r := httptest.NewRequestWithContext(context.Background(), "POST", "/mcp", nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		fmt.Println(w.Code, w.Header().Get("WWW-Authenticate"), w.Body.String())
	}
	call("")
	call(duo.Mint(duo.Claims("alice", "https://crm.example.com/mcp", "crm.contacts.read")))
	// Output:
	// 401 Bearer resource_metadata="https://crm.example.com/.well-known/oauth-protected-resource/mcp", scope="crm.contacts.read" {"error":"unauthorized","error_description":"An access token is required"}
	//
	// 200  hello alice
}
