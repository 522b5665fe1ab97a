package govern

import (
	"bytes"
	"context"

	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// maxBody is the largest body the gate reads; go-sdk refuses larger ones.
const maxBody = mcp.DefaultMaxRequestBodyBytes

// headerRevision is the first revision whose POSTs carry Mcp-Method and
// Mcp-Name, which go-sdk checks against the body (and which has no
// batches), so the gate judges such a request without reading its body.
const headerRevision = "2026-07-28"

// Headers the Gate sets for the handler. It deletes them from every
// request it receives, and their value starts with a secret of this
// Governor, so that without the Gate a client cannot forge them.
const (
	explainHeader   = "Govern-Internal-Explain-Refusal"
	requestIDHeader = "Govern-Internal-Request-Id"
)

// Gate answers a tools/call whose token lacks the tool's scopes with HTTP
// 403 insufficient_scope (every scope the call needs plus the granted ones
// that stay relevant) before the MCP handler sees it, as the MCP
// authorization spec asks, so clients can re-authorize. Mount it inside
// rs.Middleware, which verifies the token. It also makes the request id
// every audit line of the request carries.
//
// A 2026-07-28 request is judged from its Mcp-Method and Mcp-Name headers;
// an earlier one from its body, read as go-sdk reads it, and a body the
// two might read differently is refused with 400. A tool no policy names
// is passed on: go-sdk refuses unknown tools, and the Governor's
// middleware refuses any tool without a policy.
func (g *Governor) Gate(rs *resourceserver.Server, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(explainHeader)
		r.Header.Del(requestIDHeader)
		id := newRequestID()
		r.Header.Set(requestIDHeader, g.edge+" "+id)
		tok := resourceserver.TokenFromContext(r.Context())
		if r.Method != http.MethodPost || tok == nil {
			next.ServeHTTP(w, r)
			return
		}
		release, ok := g.limitPOST(w, tok)
		if !ok {
			return
		}
		defer release()
		names, ok := toolNames(w, r)
		if !ok {
			return
		}
		info := RequestFrom(r.Context())
		if info == nil {
			info = &Request{}
			r = r.WithContext(context.WithValue(r.Context(), requestKey{}, info))
		}
		info.ID, info.Subject = id, tok.Subject
		if len(names) > 0 {
			info.Tool = cutName(names[0])
		}
		var needs, held, lacking []string
		for _, name := range names {
			gt := g.lookup(name)
			if gt == nil {
				continue
			}
			for _, s := range gt.policy.Scopes {
				needs = appendNew(needs, s)
				if resourceserver.HasScope(tok.Scopes, s) {
					held = appendNew(held, s)
				} else {
					lacking = appendNew(lacking, s)
				}
			}
		}
		ctx := r.Context()
		if len(held) > 0 {
			if err := g.refusals.Forget(ctx, tok, held); err != nil {
				g.log.WarnContext(ctx, "the refusal memory failed", "error", err.Error())
			}
		}
		if len(lacking) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		explain, err := g.refusals.Explain(ctx, tok, lacking)
		if err != nil {
			g.log.WarnContext(ctx, "the refusal memory failed: answering with the standard challenge", "error", err.Error())
		}
		if explain {
			g.log.InfoContext(ctx, "refused a call as a tool error: a newer token of this user and client still lacks the scope",
				"sub", tok.Subject, "client_id", tok.ClientID, "missing", lacking)
			r.Header.Set(explainHeader, g.edge)
			next.ServeHTTP(w, r)
			return
		}
		if err := g.refusals.Remember(ctx, tok, lacking); err != nil {
			g.log.WarnContext(ctx, "the refusal memory failed", "error", err.Error())
		}
		desc := "This call needs the scope " + lacking[0]
		if len(lacking) > 1 {
			desc = "This call needs more scopes than the access token grants"
		}
		rs.InsufficientScope(w, r, g.challengeScopes(tok.Scopes, needs), desc)
	})
}

// Request is what the Gate knows of one HTTP request, for the layers
// around it: the request log and the audit line of a 403 the Gate answers
// (resourceserver.Config.OnRefuse hears the request's context).
type Request struct {
	// ID is the request id every audit line of the request carries.
	ID string
	// Subject is the verified token's subject.
	Subject string
	// Tool is the (first) tool a tools/call names, cut to 64 bytes; ""
	// for any other request.
	Tool string
}

type requestKey struct{}

// WithRequest returns ctx carrying an empty Request that the Gate fills
// in, for a layer outside the Gate that reports on the request after it
// ends (a request log).
func WithRequest(ctx context.Context) (context.Context, *Request) {
	r := &Request{}
	return context.WithValue(ctx, requestKey{}, r), r
}

// RequestFrom returns what the Gate knew of the request whose context
// this is, or nil outside a POST the Gate judged.
func RequestFrom(ctx context.Context) *Request {
	r, _ := ctx.Value(requestKey{}).(*Request)
	return r
}

// challengeScopes: every scope the call needs plus the granted ones that
// stay relevant to this server, so re-authorizing loses nothing (MCP
// authorization spec, scope challenge handling). Sorted, no duplicates.
func (g *Governor) challengeScopes(granted, needs []string) []string {
	known := g.Scopes()
	out := slices.Clone(needs)
	for _, s := range granted {
		relevant := slices.ContainsFunc(known, func(k string) bool { return resourceserver.HasScope([]string{s}, k) })
		if relevant && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// toolNames returns the tools a POST calls. A 2026-07-28 request names its
// one tool in its headers, which go-sdk holds to the body; an earlier one
// is read within a limit, judged as go-sdk reads it (readCalls) and put
// back for the MCP handler.
func toolNames(w http.ResponseWriter, r *http.Request) ([]string, bool) {
	if r.Header.Get("Mcp-Protocol-Version") >= headerRevision {
		if r.Header.Get("Mcp-Method") == "tools/call" {
			return []string{r.Header.Get("Mcp-Name")}, true
		}
		return nil, true
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
	var names []string
	for _, c := range calls {
		names = appendNew(names, c)
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
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}

// marked reports whether the Gate set header h on this request.
func (g *Governor) marked(header http.Header, h string) bool {
	return header != nil && header.Get(h) == g.edge
}

// requestID is the id the Gate made, or a new one without a Gate.
func (g *Governor) requestID(header http.Header) string {
	if header != nil {
		if v, ok := strings.CutPrefix(header.Get(requestIDHeader), g.edge+" "); ok && v != "" {
			return v
		}
	}
	return newRequestID()
}
