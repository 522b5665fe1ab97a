package govern_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// Governing a tiny calculator: a scope per tool, typed handlers, one
// policy each, and the codes the Recorder hears.
func Example() {
	as := rstest.NewServer() // a fake authorization server, for the example
	defer as.Close()
	ts := httptest.NewUnstartedServer(nil)
	resource := "http://" + ts.Listener.Addr().String() + "/mcp"
	rs, _ := resourceserver.New(resourceserver.Config{Resource: resource, Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}, Logger: slog.New(slog.DiscardHandler)})
	defer rs.Close()

	g, _ := govern.New(govern.Config{
		Logger: slog.New(slog.DiscardHandler), // no Guard: step-up is off, loudly
		Recorder: func(_ context.Context, e govern.Event) error {
			fmt.Printf("record: %s %s %s\n", e.Tool, e.Kind, e.Outcome)
			return nil
		},
	})
	server := mcp.NewServer(&mcp.Implementation{Name: "calculator"}, nil)
	type pair struct {
		A int64 `json:"a"`
		B int64 `json:"b"`
	}
	type sum struct {
		Sum int64 `json:"sum"`
	}
	govern.AddTool(g, server, &mcp.Tool{Name: "add", Description: "add two numbers"},
		govern.Policy{Scopes: []string{"calc.add"}, Action: "Add {{.a}} and {{.b}}"},
		func(_ context.Context, _ *govern.Call, in pair) (*mcp.CallToolResult, sum, error) {
			return nil, sum{in.A + in.B}, nil
		})
	govern.AddTool(g, server, &mcp.Tool{Name: "reset", Description: "forget everything"},
		govern.Policy{Scopes: []string{"calc.admin"}, Writes: true, StepUp: govern.StepUp{Always: true}},
		func(_ context.Context, _ *govern.Call, _ struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "reset"}}}, nil, nil
		})

	mcpHandler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	ts.Config.Handler = rs.Middleware(g.Gate(rs, mcpHandler))
	ts.Start()
	defer ts.Close()

	token := as.Mint(as.Claims("alice", resource, "calc.add"))
	cs, _ := mcp.NewClient(&mcp.Implementation{Name: "client"}, nil).Connect(context.Background(),
		&mcp.StreamableClientTransport{Endpoint: resource, HTTPClient: &http.Client{Transport: bearer{token}}, MaxRetries: -1}, nil)
	defer cs.Close()

	res, _ := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 2, "b": 3}})
	fmt.Println("add:", res.Content[0].(*mcp.TextContent).Text)
	_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "reset"})
	fmt.Println("reset refused:", err != nil)
	// Output:
	// record: add tool.called ok
	// add: {"sum":5}
	// reset refused: true
}
