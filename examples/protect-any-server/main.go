// Command protect-any-server shows the front door protecting a plain go-sdk
// MCP server: every request must carry an access token from the configured
// authorization server, issued for this server's URL.
//
//	go run ./examples/protect-any-server \
//		-resource http://127.0.0.1:8090/mcp \
//		-issuer https://sso-XXXX.sso.duosecurity.com/oauth2/DIXXXXXXXX
//
// The few lines that matter are in newHandler.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"net/url"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

func main() {
	resource := flag.String("resource", "http://127.0.0.1:8090/mcp", "canonical URL of the MCP endpoint")
	issuer := flag.String("issuer", "", "issuer URL of the authorization server (required)")
	flag.Parse()

	rs, err := resourceserver.New(resourceserver.Config{
		Resource:        *resource,
		Issuers:         []resourceserver.Issuer{{URL: *issuer}},
		ScopesSupported: []string{"greet"},
		ResourceName:    "Greeter",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rs.Close()
	u, _ := url.Parse(*resource)
	srv := &http.Server{Addr: u.Host, Handler: newHandler(rs, u.Path), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("serving %s", *resource)
	log.Fatal(srv.ListenAndServe())
}

// newHandler mounts an MCP server behind the front door: the metadata at
// its well-known paths, the MCP endpoint behind the middleware.
func newHandler(rs *resourceserver.Server, path string) http.Handler {
	server := mcp.NewServer(&mcp.Implementation{Name: "greeter"}, nil)
	type args struct {
		Name string `json:"name" jsonschema:"the person to greet"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "greet", Description: "say hi to the signed-in user"},
		func(ctx context.Context, req *mcp.CallToolRequest, a args) (*mcp.CallToolResult, any, error) {
			// The verified token of the HTTP request that carries this
			// call. Not TokenFromContext(ctx): on a session, ctx may come
			// from the session's first request and another token.
			tok := resourceserver.TokenFromInfo(req.Extra.TokenInfo)
			if tok == nil {
				return nil, nil, errors.New("no verified token")
			}
			return &mcp.CallToolResult{Content: []mcp.Content{
				&mcp.TextContent{Text: "Hi " + a.Name + ", signed in as " + tok.Subject},
			}}, nil, nil
		})

	mux := http.NewServeMux()
	for _, p := range rs.MetadataPaths() {
		mux.Handle(p, rs.MetadataHandler())
	}
	mux.Handle(path, rs.Middleware(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)))
	return mux
}
