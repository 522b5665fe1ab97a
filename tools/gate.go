package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// maxBody is the largest request body the gate reads to find the tool
// name; go-sdk refuses larger bodies anyway (mcp.DefaultMaxRequestBodyBytes).
const maxBody = mcp.DefaultMaxRequestBodyBytes

// headerRevision is the first protocol revision whose POSTs carry the
// Mcp-Method and Mcp-Name headers, which go-sdk checks against the body.
const headerRevision = "2026-07-28"

// gate answers a tools/call whose token lacks the tool's scopes with an
// HTTP 403 insufficient_scope challenge before the MCP handler sees it.
// It runs after the front door, so the token is already verified.
//
// When the same user and client come back after such a challenge with a
// newer token that still lacks the scope, re-authorizing has not helped:
// the gate lets the call through, marked with explainHeader, and
// explainRefusal answers it with a tool error that says so (refusals.go).
type gate struct {
	rs       *resourceserver.Server
	cat      *catalog
	refusals *refusals
	log      *slog.Logger
	next     http.Handler
}

// explainHeader marks a POST whose calls lacking a scope are to be
// answered by explainRefusal. The gate deletes it from every request it
// receives, so only the gate sets it.
const explainHeader = "Crm-Mcp-Internal-Explain-Refusal"

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.Header.Del(explainHeader)
	tok := resourceserver.TokenFromContext(r.Context())
	info := infoFrom(r.Context())
	if info != nil && tok != nil {
		info.sub = tok.Subject
	}
	if r.Method != http.MethodPost || tok == nil {
		g.next.ServeHTTP(w, r)
		return
	}
	names, ok := g.toolNames(w, r)
	if !ok {
		return
	}
	var required, held []string
	for _, name := range names {
		if info != nil {
			info.tool = truncateName(name)
		}
		sp := g.cat.byName[name]
		if sp == nil {
			continue // unknown tool: go-sdk answers with a JSON-RPC error
		}
		for _, s := range sp.scopes {
			if resourceserver.HasScope(tok.Scopes, s) {
				held = appendNew(held, s)
			} else {
				required = appendNew(required, s)
			}
		}
	}
	g.refusals.forget(tok, held)
	if len(required) > 0 {
		if g.refusals.explain(tok, required) {
			g.log.InfoContext(r.Context(), "refused a call as a tool error: a newer token of this user and client still lacks the scope",
				"sub", tok.Subject, "client_id", tok.ClientID, "missing", required)
			r.Header.Set(explainHeader, "1")
			g.next.ServeHTTP(w, r)
			return
		}
		g.refusals.remember(tok, required)
		desc := "This call needs the scope " + required[0]
		if len(required) > 1 {
			desc = "This call needs more scopes than the access token grants"
		}
		// Every scope the call needs (the ones held too) plus the granted
		// ones that stay relevant, in one challenge.
		var needs []string
		for _, name := range names {
			if sp := g.cat.byName[name]; sp != nil {
				for _, s := range sp.scopes {
					needs = appendNew(needs, s)
				}
			}
		}
		g.rs.InsufficientScope(w, r, g.cat.challengeScopes(tok.Scopes, needs), desc)
		return
	}
	g.next.ServeHTTP(w, r)
}

// toolNames returns the tools a POST calls: those of its body, read as
// go-sdk reads it (readCalls), and on a 2026-07-28 request also the one
// its Mcp-Method and Mcp-Name headers name (go-sdk refuses a request whose
// headers and body disagree). The body is read within a limit and put back
// for the MCP handler. A body go-sdk might read otherwise than the gate is
// answered 400 here.
func (g *gate) toolNames(w http.ResponseWriter, r *http.Request) ([]string, bool) {
	var names []string
	if r.Header.Get("MCP-Protocol-Version") >= headerRevision && r.Header.Get("Mcp-Method") == "tools/call" {
		names = append(names, r.Header.Get("Mcp-Name"))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, "could not read the request body")
		return nil, false
	}
	if len(body) > maxBody {
		writeJSONError(w, http.StatusRequestEntityTooLarge, "the request body is larger than 4 MiB")
		return nil, false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	calls, err := readCalls(body)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	for _, c := range calls {
		if !slices.Contains(names, c) {
			names = append(names, c)
		}
	}
	return names, true
}

// writeJSONError answers a malformed request; no challenge, since the
// token was fine.
func writeJSONError(w http.ResponseWriter, status int, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"error": "invalid_request", "error_description": desc})
	w.Write(append(b, '\n'))
}

func appendNew(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// truncateName bounds a client-chosen tool name before it reaches the log.
func truncateName(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// reqInfo collects what the request log line reports; inner layers fill
// it in.
type reqInfo struct {
	tool string
	sub  string
}

type infoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	i, _ := ctx.Value(infoKey{}).(*reqInfo)
	return i
}

// requestLog writes one line per request: method, tool, subject, status,
// duration. Never a header value, so never a token.
func requestLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
		log.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.String("tool", info.tool),
			slog.String("sub", info.sub),
			slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)),
		)
	})
}

// statusRecorder remembers the status code. Unwrap lets go-sdk's
// http.ResponseController reach Flush on the real writer (SSE).
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wroteHeader {
		s.status, s.wroteHeader = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
