// Command protect-any-server shows the front door and the governance
// package protecting a plain go-sdk MCP server that is not the CRM: every
// request must carry an access token from the configured authorization
// server, issued for this server's URL; each tool needs its own scope; and
// "announce" needs the user's approval on their phone (Duo Push) every
// time, with a push that says what it will announce.
//
//	DUO_AUTH_IKEY=... DUO_AUTH_SKEY=... DUO_AUTH_HOST=api-XXXX.duosecurity.com \
//	go run ./examples/protect-any-server \
//		-resource http://127.0.0.1:8090/mcp \
//		-issuer https://sso-XXXX.sso.duosecurity.com/oauth2/DIXXXXXXXX
//
// Without the DUO_AUTH_* variables step-up is off, and says so loudly.
// The few lines that matter are in newHandler.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup"
)

func main() {
	resource := flag.String("resource", "http://127.0.0.1:8090/mcp", "canonical URL of the MCP endpoint")
	issuer := flag.String("issuer", "", "issuer URL of the authorization server (required)")
	flag.Parse()

	rs, err := resourceserver.New(resourceserver.Config{
		Resource:        *resource,
		Issuers:         []resourceserver.Issuer{{URL: *issuer}},
		ScopesSupported: []string{"greet", "announce"},
		ResourceName:    "Greeter",
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rs.Close()
	var guard *stepup.Guard
	if ikey := os.Getenv("DUO_AUTH_IKEY"); ikey != "" {
		guard, err = stepup.New(stepup.Config{IKey: ikey, SKey: os.Getenv("DUO_AUTH_SKEY"), Host: os.Getenv("DUO_AUTH_HOST"), ServerName: "greeter"})
		if err != nil {
			log.Fatal(err)
		}
	}
	h, err := newHandler(rs, u(*resource).Path, guard, slog.Default())
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Addr: u(*resource).Host, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("serving %s", *resource)
	log.Fatal(srv.ListenAndServe())
}

func u(s string) *url.URL {
	p, err := url.Parse(s)
	if err != nil {
		log.Fatal(err)
	}
	return p
}

type greetIn struct {
	Name string `json:"name" jsonschema:"the person to greet"`
}

type announceIn struct {
	Message string `json:"message" jsonschema:"what to tell everyone"`
}

// newHandler mounts a governed MCP server behind the front door: the
// metadata at its well-known paths, the MCP endpoint behind the
// middleware and the governor's scope gate. guard nil turns step-up off.
func newHandler(rs *resourceserver.Server, path string, guard *stepup.Guard, logger *slog.Logger) (http.Handler, error) {
	terms, err := stepup.NewTerms(stepup.DefaultSensitiveTerms)
	if err != nil {
		return nil, err
	}
	g, err := govern.New(govern.Config{Guard: guard, Terms: terms, Logger: logger})
	if err != nil {
		return nil, err
	}
	server := mcp.NewServer(&mcp.Implementation{Name: "greeter"}, nil)

	// One scope per tool, one policy per tool: the handlers are plain.
	govern.AddTool(g, server, &mcp.Tool{Name: "greet", Description: "say hi to the signed-in user"},
		govern.Policy{Scopes: []string{"greet"}},
		func(_ context.Context, c *govern.Call, in greetIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{
				&mcp.TextContent{Text: "Hi " + in.Name + ", signed in as " + c.Token.Subject},
			}}, nil, nil
		})
	govern.AddTool(g, server, &mcp.Tool{Name: "announce", Description: "tell everyone something; needs approval on your phone"},
		govern.Policy{
			Scopes: []string{"announce"},
			StepUp: govern.StepUp{Always: true},
			Action: "Announce {{quote .message}} to everyone",
		},
		func(_ context.Context, c *govern.Call, in announceIn) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "Announced: " + in.Message}}}, nil, nil
		})

	mux := http.NewServeMux()
	for _, p := range rs.MetadataPaths() {
		mux.Handle(p, rs.MetadataHandler())
	}
	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	mux.Handle(path, rs.Middleware(g.Gate(rs, mcpHandler)))
	return mux, nil
}
