package tools

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

func sendCall(b *testing.B, h http.Handler, raw, body, want string) {
	r := httptest.NewRequest("POST", "/mcp", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+raw)
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	r.Header.Set("MCP-Protocol-Version", "2025-06-18")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || !strings.Contains(w.Body.String(), want) {
		b.Fatalf("status %d: %.200s", w.Code, w.Body.String())
	}
}

// compare sends the same tools/call through base and with, alternately in
// one loop (so drift, GC and a warming process hit both alike), timing each
// call, and reports both means and the overhead of with over base. ns/op
// is for the pair.
func compare(b *testing.B, raw, body, want string, base, with http.Handler, baseName, withName string) {
	var tBase, tWith time.Duration
	n := 0
	for b.Loop() {
		first, second := base, with
		if n%2 == 1 {
			first, second = with, base
		}
		t0 := time.Now()
		sendCall(b, first, raw, body, want)
		t1 := time.Now()
		sendCall(b, second, raw, body, want)
		t2 := time.Now()
		if n%2 == 0 {
			tBase, tWith = tBase+t1.Sub(t0), tWith+t2.Sub(t1)
		} else {
			tWith, tBase = tWith+t1.Sub(t0), tBase+t2.Sub(t1)
		}
		n++
	}
	b.ReportMetric(float64(tBase.Nanoseconds())/float64(n), "ns/call("+baseName+")")
	b.ReportMetric(float64(tWith.Nanoseconds())/float64(n), "ns/call("+withName+")")
	b.ReportMetric(100*(float64(tWith)/float64(tBase)-1), "%overhead")
}

// warmUp runs both handlers for a while first, so that the one measured
// first does not also pay for warming the database and the runtime.
func warmUp(b *testing.B, raw, body, want string, hs ...http.Handler) {
	for range 300 {
		for _, h := range hs {
			sendCall(b, h, raw, body, want)
		}
	}
}

// BenchmarkStepUpDecision measures what the step-up policy adds to a
// non-sensitive tools/call (list_contacts without a query: the policy
// looks for terms and decides no restricted record is named, no push),
// through the production handler, with step-up off and on.
//
// Target: on costs under 5 % more than off.
func BenchmarkStepUpDecision(b *testing.B) {
	ctx := context.Background()
	const resource = "http://127.0.0.1:9/mcp"
	store, as, rs := benchParts(b, resource)
	duo := duotest.NewServer()
	defer duo.Close()
	quiet := slog.New(slog.DiscardHandler)
	raw := as.Mint(as.Claims("alice", resource, ScopeContactsRead))
	if _, err := rs.Verify(ctx, raw); err != nil {
		b.Fatal(err)
	}
	guard, err := stepup.New(stepup.Config{IKey: duo.IKey(), SKey: duo.SKey(), Host: duo.Host(), CACertPEM: duo.CACertPEM(), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	terms, _ := stepup.NewTerms(stepup.DefaultSensitiveTerms)
	off, err := NewHandler(Config{Store: store, Auth: rs, Stateless: true, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	on, err := NewHandler(Config{Store: store, Auth: rs, Stateless: true, Logger: quiet,
		StepUp: &StepUp{Guard: guard, Terms: terms, OnWrite: true}})
	if err != nil {
		b.Fatal(err)
	}
	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":5}}}`
	warmUp(b, raw, body, "Maya Okafor", off, on)
	compare(b, raw, body, "Maya Okafor", off, on, "stepup=off", "stepup=on")
	if n := len(duo.Pushes()); n != 0 {
		b.Fatalf("%d pushes for a non-sensitive call", n)
	}
}

// BenchmarkToolsCall sends an authenticated tools/call list_contacts through
// the HTTP handler, stateless, in process:
//   - auth=off: go-sdk's handler with the same MCP server behind go-sdk's
//     RequireBearerToken, the caller's token handed over unverified (the
//     floor);
//   - auth=on: the production handler: front door (warm token cache),
//     scope gate, request log.
//
// Target: on costs at most 10 % more than off.
func BenchmarkToolsCall(b *testing.B) {
	ctx := context.Background()
	const resource = "http://127.0.0.1:9/mcp"
	store, as, rs := benchParts(b, resource)
	quiet := slog.New(slog.DiscardHandler)
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
	// go-sdk's own bearer middleware, handing over the token unverified.
	off := auth.RequireBearerToken(func(context.Context, string, *http.Request) (*auth.TokenInfo, error) {
		return tok.TokenInfo(), nil
	}, nil)(streamable)

	body := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","arguments":{"limit":5}}}`
	warmUp(b, raw, body, "Maya Okafor", off, on)
	compare(b, raw, body, "Maya Okafor", off, on, "auth=off", "auth=on")
}

// benchParts is what every benchmark here serves through: a seeded SQLite
// store, a stand-in authorization server and the front door for resource,
// closed when b ends.
func benchParts(b *testing.B, resource string) (*crm.Store, *rstest.Server, *resourceserver.Server) {
	store, err := crm.Open(context.Background(), filepath.Join(b.TempDir(), "crm.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	as := rstest.NewServer()
	b.Cleanup(as.Close)
	as.KID("RS256")
	rs, err := resourceserver.New(resourceserver.Config{Resource: resource, Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(rs.Close)
	return store, as, rs
}
