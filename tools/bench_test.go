package tools

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// BenchmarkToolsCall sends an authenticated tools/call list_contacts through
// the HTTP handler, stateless, in process:
//   - auth=off: go-sdk's handler with the same MCP server, the caller's
//     token placed in the context unverified (the floor);
//   - auth=on: the production handler: front door (warm token cache),
//     scope gate, request log.
//
// Target: on costs at most 10 % more than off.
func BenchmarkToolsCall(b *testing.B) {
	ctx := context.Background()
	store, err := crm.Open(ctx, filepath.Join(b.TempDir(), "crm.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	const resource = "http://127.0.0.1:9/mcp"
	quiet := slog.New(slog.DiscardHandler)
	rs, err := resourceserver.New(resourceserver.Config{Resource: resource, Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	raw := as.Mint(as.Claims("alice", resource, ScopeContactsRead))
	tok, err := rs.Verify(ctx, raw) // warms the cache
	if err != nil {
		b.Fatal(err)
	}

	cfg := Config{Store: store, Auth: rs, Stateless: true, Logger: quiet}
	on, err := NewHandler(cfg)
	if err != nil {
		b.Fatal(err)
	}
	server, _ := newMCPServer(cfg)
	streamable := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true, Logger: quiet})
	off := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		streamable.ServeHTTP(w, r.WithContext(resourceserver.ContextWithToken(r.Context(), tok)))
	})

	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":5}}}`
	run := func(b *testing.B, h http.Handler) {
		for b.Loop() {
			r := httptest.NewRequest("POST", "/mcp", strings.NewReader(body))
			r.Header.Set("Authorization", "Bearer "+raw)
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Accept", "application/json, text/event-stream")
			r.Header.Set("MCP-Protocol-Version", "2025-06-18")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 || !strings.Contains(w.Body.String(), "Maya Okafor") {
				b.Fatalf("status %d: %.200s", w.Code, w.Body.String())
			}
		}
	}
	b.Run("auth=off", func(b *testing.B) { run(b, off) })
	b.Run("auth=on", func(b *testing.B) { run(b, on) })
}
