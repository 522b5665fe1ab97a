// Package tools is the CRM's MCP surface: the tools an agent calls, each
// declared in one place with the Duo-managed scopes it needs and the
// reason a call of it may be sensitive, and the HTTP handler that serves
// them behind the front door.
//
// Scopes are enforced twice. The HTTP layer (gate.go) answers a tools/call
// whose token lacks the tool's scopes with 403 insufficient_scope before
// the request reaches the MCP handler, as the MCP authorization spec asks,
// so clients can re-authorize with the challenged scopes. Each tool handler
// checks again, so a route that bypassed the HTTP layer still moves no data.
package tools

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/crm"
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

// Config configures the MCP endpoint.
type Config struct {
	// Store is the CRM. Required.
	Store *crm.Store
	// Auth is the front door. Required: NewHandler wraps everything in
	// Auth.Middleware, so no request reaches a tool without a valid token.
	Auth *resourceserver.Server
	// HideUnauthorizedTools leaves out of tools/list the tools the caller's
	// token cannot call. By default every tool is listed, so clients can
	// discover what to ask for.
	HideUnauthorizedTools bool
	// Stateless runs Streamable HTTP without sessions (several replicas,
	// and the 2026-07-28 protocol revision).
	Stateless bool
	// Logger receives one line per request. Default slog.Default().
	Logger *slog.Logger
	// Version is reported in the MCP implementation info.
	Version string
	// StepUp asks for Duo Push approval before sensitive calls. Nil turns
	// step-up off (STEPUP_MODE=off): the caller must say so loudly.
	StepUp *StepUp
	// Record, when set, hears every decision on a tool call before the
	// server acts on it: scope.denied (the in-MCP check), stepup.requested,
	// stepup.approved, stepup.denied, stepup.failed, and tool.called (a
	// write's "started" line before it runs, then every call's outcome).
	// It is the audit trail (and metrics): an error from it fails the call
	// closed, since a decision that is not on record must not be acted on.
	Record func(ctx context.Context, e audit.Event) error

	// Bounds on Streamable HTTP sessions (sessions.go); they do not apply
	// when Stateless. Zero means the default; negative is an error.
	//
	// SessionIdleTimeout closes a session that has had no request for
	// this long. Default DefaultSessionIdleTimeout.
	SessionIdleTimeout time.Duration
	// MaxSessionsPerUser bounds the sessions of one user: an initialize
	// beyond it closes that user's least recently used idle session, or
	// gets 429 if none is idle. Default DefaultMaxSessionsPerUser.
	MaxSessionsPerUser int
	// MaxSessions bounds the sessions of all users: an initialize beyond
	// it gets 429 with Retry-After. Default DefaultMaxSessions.
	MaxSessions int

	// Bounds on requests in progress (inflight.go), in both modes. Zero
	// means the default; negative is an error.
	//
	// MaxRequestsPerUser bounds the POSTs one user has in flight; one
	// beyond gets 429 with Retry-After. Default DefaultMaxRequestsPerUser.
	MaxRequestsPerUser int
	// MaxRequests bounds the POSTs of all users in flight. Default
	// DefaultMaxRequests.
	MaxRequests int
	// MaxStepUpWaitingPerUser bounds the calls of one Duo user waiting on
	// a push; a call beyond is refused as a tool error before anything is
	// pushed. Default DefaultMaxStepUpWaitingPerUser.
	MaxStepUpWaitingPerUser int
	// MaxStepUpWaiting bounds the calls of all users waiting on a push.
	// Default DefaultMaxStepUpWaiting.
	MaxStepUpWaiting int
	// OnLimit, when set, hears each request or call a bound refused, by
	// bound (the Limit* constants), for metrics.
	OnLimit func(limit string)
}

// Handler is the MCP endpoint: front door, per-tool scope gate, request
// log and go-sdk's Streamable HTTP handler.
type Handler struct {
	http.Handler
	server   *mcp.Server
	limits   *sessionLimits // nil when Stateless
	inflight atomic.Int64   // POSTs being served
	requests *counter       // POSTs in flight, per user and overall
	waiting  *counter       // calls waiting on a Duo Push
	onLimit  func(limit string)
}

// Requests is the number of POSTs in flight, for a metrics gauge.
func (h *Handler) Requests() int { return h.requests.count() }

// StepUpWaiting is the number of tool calls waiting on a Duo Push, for a
// metrics gauge.
func (h *Handler) StepUpWaiting() int { return h.waiting.count() }

// Sessions is the number of open Streamable HTTP sessions (always 0 when
// Stateless), for a metrics gauge.
func (h *Handler) Sessions() int {
	if h.limits == nil {
		return 0
	}
	all, _ := h.limits.count("")
	return all
}

// Shutdown drains the endpoint: it waits until no POST (and so no tool
// call) is in flight, or ctx ends, then closes every MCP session, which
// ends their long-lived SSE streams so http.Server.Shutdown can return.
// Call it beside http.Server.Shutdown, which stops new requests.
func (h *Handler) Shutdown(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
	for h.inflight.Load() > 0 && err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-tick.C:
		}
	}
	for ss := range h.server.Sessions() {
		ss.Close()
	}
	return err
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
	if cfg.SessionIdleTimeout < 0 || cfg.MaxSessionsPerUser < 0 || cfg.MaxSessions < 0 {
		return nil, errors.New("tools: SessionIdleTimeout, MaxSessionsPerUser and MaxSessions must not be negative")
	}
	cfg.SessionIdleTimeout = cmp.Or(cfg.SessionIdleTimeout, DefaultSessionIdleTimeout)
	cfg.MaxSessionsPerUser = cmp.Or(cfg.MaxSessionsPerUser, DefaultMaxSessionsPerUser)
	cfg.MaxSessions = cmp.Or(cfg.MaxSessions, DefaultMaxSessions)
	if cfg.MaxRequestsPerUser < 0 || cfg.MaxRequests < 0 || cfg.MaxStepUpWaitingPerUser < 0 || cfg.MaxStepUpWaiting < 0 {
		return nil, errors.New("tools: MaxRequestsPerUser, MaxRequests, MaxStepUpWaitingPerUser and MaxStepUpWaiting must not be negative")
	}
	cfg.MaxRequestsPerUser = cmp.Or(cfg.MaxRequestsPerUser, DefaultMaxRequestsPerUser)
	cfg.MaxRequests = cmp.Or(cfg.MaxRequests, DefaultMaxRequests)
	cfg.MaxStepUpWaitingPerUser = cmp.Or(cfg.MaxStepUpWaitingPerUser, DefaultMaxStepUpWaitingPerUser)
	cfg.MaxStepUpWaiting = cmp.Or(cfg.MaxStepUpWaiting, DefaultMaxStepUpWaiting)
	if cfg.OnLimit == nil {
		cfg.OnLimit = func(string) {}
	}
	server, cat := newMCPServer(cfg)
	var streamable http.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless: cfg.Stateless,
		Logger:    cfg.Logger,
		// On 2026-07-28 requests the POST is the whole call: a client that
		// disconnects cancels the tool, and so a wait for a Duo Push.
		// Older revisions cancel with notifications/cancelled.
		PropagateRequestCancellation: true,
		SessionTimeout:               cfg.SessionIdleTimeout,
	})
	h := &Handler{server: server, requests: newCounter(cfg.MaxRequestsPerUser, cfg.MaxRequests), waiting: cat.d.waiting, onLimit: cfg.OnLimit}
	if !cfg.Stateless {
		h.limits = newSessionLimits(cfg.SessionIdleTimeout, cfg.MaxSessionsPerUser, cfg.MaxSessions, cfg.Logger, streamable)
		server.AddReceivingMiddleware(h.limits.track)
		streamable = h.limits
	}
	server.AddReceivingMiddleware(cat.explainRefusal)
	server.AddReceivingMiddleware(cat.recordInvalid()) // outermost: sees every tools/call
	gate := &gate{rs: cfg.Auth, cat: cat, refusals: newRefusals(nil), log: cfg.Logger, next: streamable}
	h.Handler = requestLog(cfg.Logger, h.countPOSTs(cfg.Auth.Middleware(h.limitPOSTs(refuseGET(cfg.Stateless, gate)))))
	return h, nil
}

// newMCPServer builds the MCP server with every tool registered.
func newMCPServer(cfg Config) (*mcp.Server, *catalog) {
	d := &deps{store: cfg.Store, log: cfg.Logger, stepUp: cfg.StepUp, record: cfg.Record, onLimit: cfg.OnLimit}
	if cfg.MaxStepUpWaitingPerUser > 0 { // set by NewHandler; tests of the tools alone leave it unbounded
		d.waiting = newCounter(cfg.MaxStepUpWaitingPerUser, cfg.MaxStepUpWaiting)
	}
	cat := newCatalog(d)
	server := mcp.NewServer(&mcp.Implementation{Name: "crm-mcp", Title: "CRM (Duo protected)", Version: cfg.Version}, &mcp.ServerOptions{
		Instructions: "CRM tools. Each tool needs a Duo scope; calls without it are refused with an insufficient_scope challenge naming the scopes to request.",
		Logger:       cfg.Logger,
		// Only what the server honours (streams.go).
		Capabilities: capabilities(),
	})
	server.AddReceivingMiddleware(endListen)
	for _, sp := range cat.specs {
		sp.add(server)
	}
	if cfg.HideUnauthorizedTools {
		server.AddReceivingMiddleware(cat.hideUnauthorized)
	}
	return server, cat
}

// Names lists every tool, for configuration checks (STEPUP_TOOLS).
func Names() []string {
	var out []string
	for _, sp := range newCatalog(&deps{}).specs {
		out = append(out, sp.name)
	}
	sort.Strings(out)
	return out
}

// Scopes lists every scope some tool needs, sorted: what a client should
// ask for when it signs in (scopes_supported, the 401 challenge), so that
// one sign-in covers every tool the user is granted.
func Scopes() []string {
	return slices.Clone(newCatalog(&deps{}).known)
}

// deps is what tool handlers use.
type deps struct {
	store  *crm.Store
	log    *slog.Logger
	stepUp *StepUp                                  // nil when step-up is off
	record func(context.Context, audit.Event) error // nil: no audit trail
	// waiting counts the calls waiting on a push (inflight.go); nil
	// means unbounded (the tools without a Handler, in tests).
	waiting *counter
	onLimit func(limit string)
}

// spec is one tool and its policy.
type spec struct {
	name   string
	scopes []string
	writes bool
	add    func(*mcp.Server)
}

// catalog is every tool, by name.
type catalog struct {
	specs  []spec
	byName map[string]*spec
	// known is every scope some tool needs, to tell which granted scopes
	// stay relevant in a challenge.
	known []string
	d     *deps
}

func newCatalog(d *deps) *catalog {
	c := &catalog{byName: map[string]*spec{}, d: d}
	c.specs = append(contactTools(d), dealTools(d)...)
	for i := range c.specs {
		sp := &c.specs[i]
		c.byName[sp.name] = sp
		for _, s := range sp.scopes {
			if !slices.Contains(c.known, s) {
				c.known = append(c.known, s)
			}
		}
	}
	sort.Strings(c.known)
	return c
}

// missing returns the scopes of tool that granted does not cover.
func missing(granted, required []string) []string {
	var out []string
	for _, r := range required {
		if !resourceserver.HasScope(granted, r) {
			out = append(out, r)
		}
	}
	return out
}

// challengeScopes is the scope list for an insufficient_scope challenge:
// every scope the call needs plus the granted ones that stay relevant to
// this server, so re-authorizing with it loses nothing (MCP authorization
// spec, scope challenge handling). Sorted, without duplicates.
func (c *catalog) challengeScopes(granted, required []string) []string {
	out := slices.Clone(required)
	for _, g := range granted {
		relevant := slices.ContainsFunc(c.known, func(k string) bool { return resourceserver.HasScope([]string{g}, k) })
		if relevant && !slices.Contains(out, g) {
			out = append(out, g)
		}
	}
	sort.Strings(out)
	return out
}

// hideUnauthorized filters tools/list down to what the caller may call.
func (c *catalog) hideUnauthorized(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		res, err := next(ctx, method, req)
		list, ok := res.(*mcp.ListToolsResult)
		if err != nil || !ok {
			return res, err
		}
		granted := grantedScopes(ctx, req)
		kept := list.Tools[:0:0]
		for _, t := range list.Tools {
			if sp := c.byName[t.Name]; sp != nil && len(missing(granted, sp.scopes)) == 0 {
				kept = append(kept, t)
			}
		}
		out := *list
		out.Tools = kept
		return &out, nil
	}
}

// grantedScopes reads the caller's scopes from the request; no token means
// no scopes (fail closed).
func grantedScopes(ctx context.Context, req mcp.Request) []string {
	if extra := req.GetExtra(); extra != nil && extra.TokenInfo != nil {
		return extra.TokenInfo.Scopes
	}
	return nil
}

// caller is the verified token of the HTTP request that carries this call:
// its client, scopes, expiry and Duo user judge the call. Never the
// session's first request, whose token may be another client's.
func caller(req *mcp.CallToolRequest) *resourceserver.Token {
	if req == nil || req.Extra == nil {
		return nil
	}
	return resourceserver.TokenFromInfo(req.Extra.TokenInfo)
}

// errScope is the in-MCP refusal, for a call that reached a tool without
// the HTTP gate (which would have answered 403).
func errScope(tool string, lacking []string) error {
	return fmt.Errorf("%s needs the scope(s) %s, which your access token does not grant; ask for them when you sign in again", tool, strings.Join(lacking, " "))
}

// toolDef declares one tool and its policy in one place: the scopes it
// needs, whether it writes, what in its request asks for restricted data,
// the record it names, and how a call is described to the person asked to
// approve it.
type toolDef[In, Out any] struct {
	tool   *mcp.Tool
	scopes []string
	writes bool
	// asks reports whether the arguments ask for restricted records
	// (include_restricted, a restricted classification). It sees the
	// request alone, so such a call needs approval whatever the data
	// holds. Nil means never.
	asks func(in In) bool
	// check validates the arguments as the store will, before anything is
	// decided, and returns them as they will be stored (trimmed, lower
	// case sector...): a bad request is refused on its own terms, and the
	// push shows exactly what will be written. Nil means the store's own
	// checks when the tool runs are enough.
	check func(in In) (In, error)
	// named reports whether this call names a record (so names runs);
	// nil means it always does when names is set.
	named func(in In) bool
	// names reads the record the call names by id, once, before anything
	// is decided: the one place where stored data may decide that a call
	// needs approval. The classification of a named record is therefore
	// visible to the caller; its content is not. An unknown id is an
	// error (crm.ErrNotFound). Nil means the call names no record.
	names func(ctx context.Context, in In) (target, error)
	// describe says what the call will do, for the push: the action
	// sentence and one detail per field the call sets. Required, so that
	// no tool ships without telling the approver what it does.
	describe func(c *call[In]) (string, []stepup.Detail, error)
	// run does the work and returns the text shown to the model and the
	// structured result; an error becomes a tool error whose text says
	// what to fix.
	run func(ctx context.Context, c *call[In]) (string, Out, error)
}

// call is one tools/call as the handler judged it.
type call[In any] struct {
	in In
	// args is in as decoded JSON values (decodeArgs), for the
	// sensitive-term search.
	args map[string]any
	tok  *resourceserver.Token
	// target is what names read; zero if the tool names no record.
	target target
	// approved: the call needed approval and has it (or step-up is off),
	// so it may return the restricted records it matches. A call that
	// needed none returns none.
	approved bool
	// asked: the request itself asked for restricted data (asks).
	asked bool
	// ev is the audit trail's view of the call (who, what), nil without
	// one.
	ev *audit.Event
}

// newEvent starts the audit trail's view of a call: who (from the call's
// own token, by fingerprint), which tool, the decoded arguments, and a
// request id shared by every line of the call.
func newEvent(tool string, tok *resourceserver.Token, in any) *audit.Event {
	args, _ := json.Marshal(in)
	return &audit.Event{
		RequestID:        newRequestID(),
		Issuer:           tok.Issuer,
		Subject:          tok.Subject,
		ClientID:         tok.ClientID,
		JTI:              tok.JTI,
		TokenFingerprint: tok.Fingerprint,
		Tool:             tool,
		Args:             args,
	}
}

// note records one decision about the call ev describes; nil without an
// audit trail. Its error is what the caller sees: the call was not run.
func (d *deps) note(ctx context.Context, ev *audit.Event, e audit.Event) error {
	if d.record == nil || ev == nil {
		return nil
	}
	full := *ev
	full.Kind, full.Decision, full.Reason, full.DuoTxID, full.Outcome, full.Duration = e.Kind, e.Decision, e.Reason, e.DuoTxID, e.Outcome, e.Duration
	if err := d.record(ctx, full); err != nil {
		d.log.ErrorContext(ctx, "the audit trail refused a line: failing the call closed", "tool", ev.Tool, "event", string(e.Kind), "error", err.Error())
		return &toolError{ev.Tool + " was not run: the server could not write its audit trail; try again later"}
	}
	return nil
}

// newRequestID names one tool call in the audit trail.
func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// mayShow refuses to return a record that is restricted now when the call
// was not approved for restricted data: one that another user made
// restricted while this call waited for its approval, or in the moment
// between the read that decided and the write.
func (c *call[In]) mayShow(cl crm.Classification) error {
	if cl != crm.Restricted || c.target.restricted || c.asked {
		return nil
	}
	return &toolError{"the record was classified restricted while the call ran, so its content is withheld; call again to ask for approval"}
}

// target is the record a call names, as read before the decision.
type target struct {
	restricted bool
	contact    *crm.Contact
	deal       *crm.Deal
}

// define turns a toolDef into a spec. The handler checks, in order: the
// caller's token and scopes (again, behind the HTTP gate), step-up
// approval, then runs.
func define[In, Out any](d *deps, td toolDef[In, Out]) spec {
	t := td.tool
	if td.describe == nil || td.run == nil {
		panic("tools: " + t.Name + " has no describe or run")
	}
	if t.Meta == nil {
		t.Meta = mcp.Meta{}
	}
	t.Meta["crm-mcp/scopes"] = td.scopes
	// The schemas mcp.AddTool would infer; see args.go for why the tool
	// is registered without it.
	tool := *t
	inSchema, inResolved := schemaFor[In]()
	tool.InputSchema = inSchema
	tool.OutputSchema, _ = schemaFor[Out]()
	handle := func(ctx context.Context, req *mcp.CallToolRequest, in In, args map[string]any) (*mcp.CallToolResult, Out, error) {
		var zero Out
		tok := caller(req)
		if tok == nil {
			return nil, zero, &toolError{t.Name + " was not run: the request carries no verified access token"}
		}
		if lacking := missing(tok.Scopes, td.scopes); len(lacking) > 0 {
			d.log.WarnContext(ctx, "tool call without scope reached the MCP layer", "tool", t.Name, "missing", lacking)
			if d.record != nil {
				d.note(ctx, newEvent(t.Name, tok, in), audit.Event{Kind: audit.ScopeDenied, Reason: "missing " + strings.Join(lacking, " ")})
			}
			return nil, zero, errScope(t.Name, lacking)
		}
		c := &call[In]{in: in, args: args, tok: tok}
		if d.record != nil {
			c.ev = newEvent(t.Name, tok, in)
		}
		if td.check != nil {
			var err error
			if c.in, err = td.check(in); err != nil {
				// Refused on its own terms, before any decision.
				if rerr := d.note(ctx, c.ev, audit.Event{Kind: audit.ToolCalled, Outcome: "invalid"}); rerr != nil {
					return nil, zero, rerr
				}
				return nil, zero, d.userError(ctx, t.Name, err)
			}
		}
		if err := decide(ctx, d, req, &td, c); err != nil {
			return nil, zero, d.userError(ctx, t.Name, err)
		}
		if td.writes {
			// A write is on record before it happens.
			if err := d.note(ctx, c.ev, audit.Event{Kind: audit.ToolCalled, Outcome: "started"}); err != nil {
				return nil, zero, err
			}
		}
		start := time.Now()
		text, out, err := td.run(ctx, c)
		outcome := "ok"
		if err != nil {
			outcome = "error"
		}
		if rerr := d.note(ctx, c.ev, audit.Event{Kind: audit.ToolCalled, Outcome: outcome, Duration: time.Since(start)}); rerr != nil && err == nil && !td.writes {
			// A read whose outcome cannot be recorded returns
			// nothing: its data must not move off the record.
			return nil, zero, rerr
		}
		if err != nil {
			return nil, zero, d.userError(ctx, t.Name, err)
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, out, nil
	}
	return spec{
		name:   t.Name,
		scopes: td.scopes,
		writes: td.writes,
		add: func(s *mcp.Server) {
			s.AddTool(&tool, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
				in, args, err := decodeArgs[In](req.Params.Arguments, inResolved)
				if err == nil {
					var res *mcp.CallToolResult
					var out Out
					if res, out, err = handle(ctx, req, in, args); err == nil {
						// Encoded once, on the wire (args.go).
						res.StructuredContent = out
						return res, nil
					}
				}
				// A tool error, as mcp.AddTool reports one: the text says
				// what to fix.
				var res mcp.CallToolResult
				res.SetError(err)
				return &res, nil
			})
		},
	}
}

// userError rewrites store errors into messages that say what to fix.
// Anything unexpected is logged and reported without internals.
func (d *deps) userError(ctx context.Context, tool string, err error) error {
	var ve *crm.ValidationError
	switch {
	case errors.As(err, &ve):
		return fmt.Errorf("invalid %s: %s", ve.Field, ve.Problem)
	case errors.Is(err, crm.ErrNotFound):
		return fmt.Errorf("%v: check the id (list_contacts and list_deals show valid ids)", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errors.New("the call was cancelled before it finished")
	case errors.As(err, new(*toolError)):
		return err
	}
	d.log.ErrorContext(ctx, "tool failed", "tool", tool, "error", err.Error())
	return errInternal
}

// errInternal is what the user sees of a failure that is ours; the cause
// goes to the log.
var errInternal = errors.New("the CRM could not complete the call; try again later")

// toolError is an error written for the user already.
type toolError struct{ msg string }

func (e *toolError) Error() string { return e.msg }

func ptr[T any](v T) *T { return &v }
