// Package tools is the CRM's MCP surface: the tools an agent calls, each a
// plain typed go-sdk handler with one govern.Policy declared beside it
// (the scopes it needs, whether it writes, what in its request or in the
// record it names needs a Duo Push, and what that push says), and the
// HTTP handler that serves them behind the front door.
//
// Everything a governed call goes through is the govern package's: the
// HTTP scope gate (403 insufficient_scope before the MCP handler, judged
// from Mcp-Method/Mcp-Name on 2026-07-28 requests, from the body on
// earlier ones), the in-band scope check, the explained refusal, the
// step-up decision and its push, the audit events with typed outcomes,
// and the bounds on requests in flight and calls waiting on a push. This
// package supplies the CRM: the tools, their policies and the hook that
// reads the records a policy names (records.go).
//
// The endpoint is stateless: one POST is one request, served by any
// replica, for 2026-07-28 clients and for initialize-based ones alike
// (go-sdk answers an initialize without an Mcp-Session-Id).
package tools

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup"
)

// The scopes this server's tools need, as created on the Duo integration.
const (
	ScopeContactsRead  = "crm.contacts.read"
	ScopeContactsWrite = "crm.contacts.write"
	ScopeDealsRead     = "crm.deals.read"
	ScopeDealsWrite    = "crm.deals.write"
)

// Defaults of the bounds on what is in progress (govern's).
const (
	DefaultMaxRequestsPerUser      = govern.DefaultMaxRequestsPerUser
	DefaultMaxRequests             = govern.DefaultMaxRequests
	DefaultMaxStepUpWaitingPerUser = govern.DefaultMaxWaitingPerUser
	DefaultMaxStepUpWaiting        = govern.DefaultMaxWaiting
)

// Reasons given to Config.OnLimit, one per bound.
const (
	LimitRequestsPerUser      = govern.LimitRequestsPerUser
	LimitRequests             = govern.LimitRequests
	LimitStepUpWaitingPerUser = govern.LimitWaitingPerUser
	LimitStepUpWaiting        = govern.LimitWaiting
)

// listTTL is the ttlMs of tools/list and server/discover (2026-07-28
// caching): the tools and their schemas change only with a new release.
const listTTL = 10 * time.Minute

// Config configures the MCP endpoint.
type Config struct {
	// Store is the CRM. Required.
	Store *crm.Store
	// Auth is the front door. Required: NewHandler wraps everything in
	// Auth.Middleware, so no request reaches a tool without a valid token.
	Auth *resourceserver.Server
	// HideUnauthorizedTools leaves out of tools/list the tools the caller's
	// token cannot call; the list is then cacheScope private. By default
	// every tool is listed (public), so clients can discover what to ask
	// for.
	HideUnauthorizedTools bool
	// Logger receives one line per request. Default slog.Default().
	Logger *slog.Logger
	// Version is reported in the MCP implementation info.
	Version string
	// StepUp asks for Duo Push approval before sensitive calls. Nil turns
	// step-up off (STEPUP_MODE=off): the caller must say so loudly.
	StepUp *StepUp
	// Record, when set, hears every decision on a tool call before the
	// server acts on it, as a typed govern.Event (kind and outcome code):
	// the audit trail and metrics. An error from it fails the call closed,
	// since a decision that is not on record must not be acted on.
	Record govern.Recorder
	// Refusals remembers the 403 insufficient_scope challenges, for the
	// explained refusal. Nil keeps them in this process; replicas behind
	// one load balancer need a shared one.
	Refusals govern.RefusalMemory

	// Bounds on what is in progress (govern's limits). Zero means the
	// default; negative is an error.
	//
	// MaxRequestsPerUser and MaxRequests bound the POSTs in flight; one
	// beyond gets 429 with Retry-After.
	MaxRequestsPerUser int
	MaxRequests        int
	// MaxStepUpWaitingPerUser and MaxStepUpWaiting bound the calls
	// waiting on a Duo Push; a call beyond is refused as a tool error
	// before anything is pushed.
	MaxStepUpWaitingPerUser int
	MaxStepUpWaiting        int
	// OnLimit, when set, hears each request or call a bound refused, by
	// bound (the Limit* constants), for metrics.
	OnLimit func(limit string)
}

// StepUp configures the Duo Push asked for before sensitive calls.
type StepUp struct {
	// Guard sends the push and waits for the answer. Required.
	Guard *stepup.Guard
	// Terms are the words in a call's text arguments that make it
	// sensitive (SENSITIVE_QUERY_TERMS). Required.
	Terms *stepup.Terms
	// OnWrite asks for approval before every write (STEPUP_ON_WRITE).
	OnWrite bool
	// Tools always ask for approval (STEPUP_TOOLS).
	Tools []string
	// UsernameClaim is the access-token claim holding the Duo user
	// (DUO_USERNAME_CLAIM); default "sub". Never the request body.
	UsernameClaim string
}

// Handler is the MCP endpoint: front door, governor's gate, request log
// and go-sdk's stateless Streamable HTTP handler.
type Handler struct {
	http.Handler
	gov      *govern.Governor
	inflight atomic.Int64 // POSTs being served, for Shutdown
}

// Requests is the number of POSTs in flight, for a metrics gauge.
func (h *Handler) Requests() int { return h.gov.Requests() }

// StepUpWaiting is the number of tool calls waiting on a Duo Push, for a
// metrics gauge.
func (h *Handler) StepUpWaiting() int { return h.gov.Waiting() }

// Shutdown drains the endpoint: it waits until no POST (and so no tool
// call) is in flight, or ctx ends. Call it beside http.Server.Shutdown,
// which stops new requests. Nothing outlives its POST (stateless, no
// standalone stream), so nothing else needs closing.
func (h *Handler) Shutdown(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for h.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// countPOSTs tracks the POSTs in flight for Shutdown.
func (h *Handler) countPOSTs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			h.inflight.Add(1)
			defer h.inflight.Add(-1)
		}
		next.ServeHTTP(w, r)
	})
}

// NewHandler builds the MCP endpoint. Mount it at the resource URL's path.
func NewHandler(cfg Config) (*Handler, error) {
	if cfg.Store == nil {
		return nil, errors.New("tools: a CRM store is required")
	}
	if cfg.Auth == nil {
		return nil, errors.New("tools: the front door (resourceserver) is required")
	}
	if cfg.StepUp != nil && (cfg.StepUp.Guard == nil || cfg.StepUp.Terms == nil) {
		return nil, errors.New("tools: step-up needs a guard and sensitive terms")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	gcfg := govern.Config{
		Records:            records{cfg.Store},
		Recorder:           cfg.Record,
		Refusals:           cfg.Refusals,
		Logger:             cfg.Logger,
		MaxRequestsPerUser: cfg.MaxRequestsPerUser,
		MaxRequests:        cfg.MaxRequests,
		MaxWaitingPerUser:  cfg.MaxStepUpWaitingPerUser,
		MaxWaiting:         cfg.MaxStepUpWaiting,
		OnLimit:            cfg.OnLimit,
	}
	if su := cfg.StepUp; su != nil {
		gcfg.Guard, gcfg.Terms, gcfg.OnWrite, gcfg.AlwaysTools, gcfg.UsernameClaim = su.Guard, su.Terms, su.OnWrite, su.Tools, su.UsernameClaim
	}
	gov, err := govern.New(gcfg)
	if err != nil {
		return nil, err
	}
	server := mcp.NewServer(&mcp.Implementation{Name: "crm-mcp", Title: "CRM (Duo protected)", Version: cfg.Version}, &mcp.ServerOptions{
		Instructions: "CRM tools. Each tool needs a Duo scope; calls without it are refused with an insufficient_scope challenge naming the scopes to request.",
		Logger:       govern.SDKLogger(cfg.Logger),
		// Only what the server honours (streams.go).
		Capabilities: capabilities(),
		SetCacheable: cacheable(cfg.HideUnauthorizedTools),
	})
	server.AddReceivingMiddleware(govern.EndListen)
	for _, t := range catalog {
		t.add(gov, server, cfg.Store)
	}
	if cfg.HideUnauthorizedTools {
		server.AddReceivingMiddleware(hideUnauthorized)
	}
	opts := mcp.StreamableHTTPOptions{
		// Stateless serves 2026-07-28 and, with a session that lasts one
		// request, initialize-based clients: any replica answers any
		// request, and nothing is held between requests.
		Stateless: true,
		Logger:    govern.SDKLogger(cfg.Logger),
		// On 2026-07-28 requests the POST is the whole call: a client that
		// disconnects cancels the tool, and so a wait for a Duo Push.
		PropagateRequestCancellation: true,
	}
	stream := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &opts)
	opts.JSONResponse = true
	plain := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &opts)
	// An event stream only for a request that can receive progress
	// (respond.go).
	streamable := streamWhenNeeded(stream, plain)
	h := &Handler{gov: gov}
	h.Handler = requestLog(cfg.Logger, h.countPOSTs(cfg.Auth.Middleware(refuseGET(gov.Gate(cfg.Auth, streamable)))))
	return h, nil
}

// tool is one entry of the catalog: its name, its policy, and how it is
// added to a server.
type tool struct {
	name   string
	policy govern.Policy
	add    func(g *govern.Governor, s *mcp.Server, store *crm.Store)
}

// catalog is every tool the server serves, contacts then deals.
var catalog = append(contactTools(), dealTools()...)

// Names lists every tool, for configuration checks (STEPUP_TOOLS) and
// metrics labels.
func Names() []string {
	var out []string
	for _, t := range catalog {
		out = append(out, t.name)
	}
	slices.Sort(out)
	return out
}

// Scopes lists every scope some tool needs, sorted: what a client should
// ask for when it signs in (scopes_supported, the 401 challenge), so that
// one sign-in covers every tool the user is granted.
func Scopes() []string {
	var out []string
	for _, t := range catalog {
		for _, s := range t.policy.Scopes {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	slices.Sort(out)
	return out
}

// policyOf is the policy of a tool by name, or nil.
func policyOf(name string) *govern.Policy {
	for i := range catalog {
		if catalog[i].name == name {
			return &catalog[i].policy
		}
	}
	return nil
}

// hideUnauthorized filters tools/list down to what the caller may call.
func hideUnauthorized(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		list, ok := res.(*mcp.ListToolsResult)
		if err != nil || !ok {
			return res, err
		}
		var granted []string // no token means no scopes (fail closed)
		if extra := req.GetExtra(); extra != nil && extra.TokenInfo != nil {
			granted = extra.TokenInfo.Scopes
		}
		kept := list.Tools[:0:0]
		for _, t := range list.Tools {
			if p := policyOf(t.Name); p != nil && !slices.ContainsFunc(p.Scopes, func(s string) bool { return !resourceserver.HasScope(granted, s) }) {
				kept = append(kept, t)
			}
		}
		out := *list
		out.Tools = kept
		return &out, nil
	}
}

// cacheable sets the 2026-07-28 caching hints (server/utilities/caching):
// the tool list and discover answer are the same until a new release, so
// they stay fresh for listTTL; the tool list is private when it depends on
// who asks.
func cacheable(private bool) func(context.Context, mcp.Request, *mcp.Cacheable) {
	return func(_ context.Context, req mcp.Request, c *mcp.Cacheable) {
		c.TTLMs = int(listTTL.Milliseconds())
		c.CacheScope = "public"
		if _, ok := req.(*mcp.ListToolsRequest); ok && private {
			c.CacheScope = "private"
		}
	}
}

// toolError is an error written for the caller.
func toolError(msg string) error { return &govern.ToolError{Msg: msg} }

// storeError rewrites store errors into messages that say what to fix;
// anything else goes on to govern, which logs it and tells the caller
// only that the call failed.
func storeError(err error) error {
	var ve *crm.ValidationError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ve):
		return toolError("invalid " + ve.Field + ": " + ve.Problem)
	case errors.Is(err, crm.ErrNotFound):
		return toolError(err.Error() + ": check the id (list_contacts and list_deals show valid ids)")
	}
	return err
}

func ptr[T any](v T) *T { return &v }

// text is a tool's answer as the model reads it; the structured answer
// goes beside it.
func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}
