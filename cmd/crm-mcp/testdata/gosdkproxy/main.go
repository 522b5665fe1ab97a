// Command gosdkproxy is BenchmarkGatewayEcho's baseline: the plainest
// go-sdk MCP server in front of an upstream, without auth, policy, audit
// or metrics, forwarding each tool the upstream lists as it is. Usage:
// gosdkproxy LISTEN_ADDR UPSTREAM_URL.
package main

import (
	"context"
	"log"
	"log/slog"
	"net/http"
	"os"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func main() {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	client := mcp.NewClient(&mcp.Implementation{Name: "gosdkproxy"}, nil)
	up, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: os.Args[2], DisableStandaloneSSE: true}, nil)
	if err != nil {
		log.Fatal(err)
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "gosdkproxy"}, &mcp.ServerOptions{Logger: quiet})
	for t, err := range up.Tools(ctx, nil) {
		if err != nil {
			log.Fatal(err)
		}
		name := t.Name
		s.AddTool(t, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			return up.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: req.Params.Arguments})
		})
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true, Logger: quiet})
	log.Fatal(http.ListenAndServe(os.Args[1], h))
}
