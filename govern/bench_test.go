package govern_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

type benchIn struct {
	Query  string `json:"query"`
	Limit  int    `json:"limit,omitempty"`
	Offset int    `json:"offset,omitempty"`
}

type benchOut struct {
	Count int    `json:"count"`
	Query string `json:"query"`
}

// BenchmarkToolsCall compares one authenticated tools/call of a governed
// tool (a sensitive-term search, no push) with the same tool added by
// go-sdk's mcp.AddTool, both behind the front door over Streamable HTTP
// (stateless, 2026-07-28, go-sdk's client), in one run. decodes/op counts
// the governed call's parses of its arguments.
func BenchmarkToolsCall(b *testing.B) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	ts := httptest.NewUnstartedServer(nil)
	resource := "http://" + ts.Listener.Addr().String() + "/mcp"
	rs, err := resourceserver.New(resourceserver.Config{Resource: resource, Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	handler := func(in benchIn) benchOut { return benchOut{Count: len(in.Query) + in.Limit, Query: in.Query} }

	plain := mcp.NewServer(&mcp.Implementation{Name: "plain"}, &mcp.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	mcp.AddTool(plain, &mcp.Tool{Name: "search"}, func(_ context.Context, _ *mcp.CallToolRequest, in benchIn) (*mcp.CallToolResult, benchOut, error) {
		return nil, handler(in), nil
	})

	terms, _ := newTerms()
	g, _ := govern.New(govern.Config{Terms: terms, Logger: slog.New(slog.DiscardHandler),
		Recorder: func(context.Context, govern.Event) error { return nil }})
	governed := mcp.NewServer(&mcp.Implementation{Name: "governed"}, &mcp.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	govern.AddTool(g, governed, &mcp.Tool{Name: "search"}, govern.Policy{Scopes: []string{"bench"}, StepUp: govern.StepUp{TermsIn: []string{"query"}}},
		func(_ context.Context, _ *govern.Call, in benchIn) (*mcp.CallToolResult, benchOut, error) {
			return nil, handler(in), nil
		})

	opts := &mcp.StreamableHTTPOptions{Stateless: true, Logger: slog.New(slog.DiscardHandler)}
	mux := http.NewServeMux()
	mux.Handle("/mcp", rs.Middleware(g.Gate(rs, mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return governed }, opts))))
	mux.Handle("/plain", rs.Middleware(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return plain }, opts)))
	ts.Config.Handler = mux
	ts.Start()
	defer ts.Close()
	token := as.Mint(as.Claims("alice", resource, "bench"))

	args := map[string]any{"query": "northwind health", "limit": 20, "offset": 40}
	for _, c := range []struct{ name, path string }{{"plain-go-sdk", "/plain"}, {"governed", "/mcp"}} {
		b.Run(c.name, func(b *testing.B) {
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench"}, nil).Connect(context.Background(), &mcp.StreamableClientTransport{
				Endpoint: "http://" + ts.Listener.Addr().String() + c.path, HTTPClient: &http.Client{Transport: bearer{token}}, MaxRetries: -1, DisableStandaloneSSE: true,
			}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer cs.Close()
			before := govern.Decodes()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "search", Arguments: args})
				if err != nil || res.IsError {
					b.Fatal(err, res)
				}
			}
			if c.path == "/mcp" { // go-sdk's own parses are not counted
				b.ReportMetric(float64(govern.Decodes()-before)/float64(b.N), "decodes/op")
			}
		})
	}
	// In process: the same POST straight into the handler chain, without
	// a client or a socket, so that the servers' own cost shows.
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"query":"northwind health","limit":20,"offset":40},` + meta26 + `}}`
	for _, c := range []struct{ name, path string }{{"in-process/plain-go-sdk", "/plain"}, {"in-process/governed", "/mcp"}} {
		b.Run(c.name, func(b *testing.B) {
			before := govern.Decodes()
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(body))
				r.Header.Set("Authorization", "Bearer "+token)
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Accept", "application/json, text/event-stream")
				r.Header.Set("Mcp-Protocol-Version", "2026-07-28")
				r.Header.Set("Mcp-Method", "tools/call")
				r.Header.Set("Mcp-Name", "search")
				w := httptest.NewRecorder()
				mux.ServeHTTP(w, r)
				if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"count":36`) {
					b.Fatal(w.Code, w.Body.String())
				}
			}
			if c.path == "/mcp" { // go-sdk's own parses are not counted
				b.ReportMetric(float64(govern.Decodes()-before)/float64(b.N), "decodes/op")
			}
		})
	}
}
