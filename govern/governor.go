package govern

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup"
)

// Config configures a Governor.
type Config struct {
	// Guard asks for Duo Push approval. Nil turns step-up off
	// (STEPUP_MODE=off): calls that would need approval run, each with a
	// loud log line and an audit line.
	Guard *stepup.Guard
	// Terms are the sensitive terms (SENSITIVE_QUERY_TERMS). Required
	// with a Guard.
	Terms *stepup.Terms
	// OnWrite asks for approval before every write (STEPUP_ON_WRITE).
	OnWrite bool
	// AlwaysTools always ask for approval (STEPUP_TOOLS).
	AlwaysTools []string
	// UsernameClaim is the access-token claim naming the Duo user
	// (DUO_USERNAME_CLAIM); default "sub". Never the request body.
	UsernameClaim string
	// Records reads the records policies name. Required when one does.
	Records Records
	// Recorder hears every decision first; nil records nothing.
	Recorder Recorder
	// Refusals remembers insufficient_scope challenges for the Gate; nil
	// means a NewRefusalMemory of this Governor's own. Give replicas a
	// shared one.
	Refusals RefusalMemory
	// Logger receives one line per decision, never a token or an
	// argument value. Default slog.Default().
	Logger *slog.Logger

	// Bounds on what is in progress (limits.go). Zero means the default;
	// negative is an error.
	//
	// MaxRequestsPerUser and MaxRequests bound the POSTs the Gate has in
	// flight, per user and overall; one beyond gets 429 with Retry-After.
	MaxRequestsPerUser, MaxRequests int
	// MaxWaitingPerUser and MaxWaiting bound the calls waiting on a Duo
	// Push, per user and overall; a call beyond is refused as a tool
	// error (Busy) before anything is pushed.
	MaxWaitingPerUser, MaxWaiting int
	// OnLimit, when set, hears each request or call a bound refused, by
	// bound (the Limit* constants), for metrics.
	OnLimit func(limit string)
}

// Records is the application's hook to the records a policy names.
type Records interface {
	// Lookup reads the record of kind with id (the decoded argument: a
	// json.Number, a string...). An unknown id is an error the caller
	// sees: return a *ToolError saying what to fix.
	Lookup(ctx context.Context, kind string, id any) (*Record, error)
}

// Record is a stored record as a decision and a push need it.
type Record struct {
	// Label names the record for the approver: "#3 Priya Raman".
	Label string
	// Restricted: a call naming it needs approval.
	Restricted bool
	// Fields are stored values rows may show as the old value.
	Fields map[string]string
	// Value is the application's own copy, for the handler.
	Value any
}

// ToolError is an error whose text is written for the caller: handlers
// and Records return it to say what to fix. Any other error is logged and
// reported as a failure of the server.
type ToolError struct{ Msg string }

func (e *ToolError) Error() string { return e.Msg }

// Call is one governed tools/call as the handler sees it.
type Call struct {
	Request   *mcp.CallToolRequest
	Token     *resourceserver.Token
	RequestID string
	// Args are the arguments decoded once (numbers as json.Number).
	Args map[string]any
	// Record is the named record as read before the decision; nil when
	// the call names none.
	Record *Record
	// Approved: the call needed approval and has it (or step-up is off).
	Approved bool
	// ApprovedSensitive: approved, and the approval covered sensitive
	// data, because the request asked for it (WhenArgumentIs) or the
	// record it names is restricted. A handler returns restricted data
	// only then.
	ApprovedSensitive bool

	canon    []byte
	in       any     // the typed input, built once by AddTool
	progress float64 // the last progress value sent while waiting on a push
}

// ProgressSent is the last progress value this call's notifications
// carried while it waited on a Duo Push (0 if none). A handler that sends
// progress of its own (a gateway forwarding its upstream's) continues
// above it: progress must increase with each notification.
func (c *Call) ProgressSent() float64 { return c.progress }

// ArgsJSON is the canonical encoding of Args: what the grant key names
// and what a gateway forwards upstream.
func (c *Call) ArgsJSON() json.RawMessage {
	if c.canon == nil {
		c.canon = canonical(c.Args)
	}
	return c.canon
}

// Governor owns what every governed tool goes through. Add tools with
// AddTool or AddRawTool; mount Gate behind the front door.
type Governor struct {
	cfg      Config
	log      *slog.Logger
	refusals RefusalMemory
	edge     string // proves a header was set by this Governor's Gate

	requests *counter // POSTs in flight
	waiting  *counter // calls waiting on a push
	onLimit  func(limit string)

	mu      sync.RWMutex
	tools   map[string]*governed
	known   []string // every scope some tool needs, sorted
	servers map[*mcp.Server]bool
}

// governed is one tool and its compiled policy.
type governed struct {
	name   string
	policy Policy
	desc   *describer
	schema *jsonschema.Resolved
	always bool
	// prepare builds the typed input once the schema has judged the
	// arguments, and runs its Validate method if it has one: a request
	// the application refuses is refused before anything is decided.
	prepare func(c *Call) error
	// defaults are the input schema's top-level defaults, for raw tools
	// only (AddRawTool), applied to the arguments a call leaves out.
	defaults map[string]any
	// raw: the schema is another server's, and arguments it does not
	// declare are refused (raw.go) unless others: it takes them and each
	// is shown as its own row.
	raw      bool
	declared map[string]*jsonschema.Schema
	others   bool
}

// Validator is implemented by a tool's input that checks itself beyond its
// schema, as the application will when it runs. AddTool calls Validate
// before the step-up decision, so a bad request is refused on its own
// terms before a push is sent. Its error is what the caller reads.
type Validator interface {
	Validate() error
}

// Normalizer is implemented by a tool's input that the application uses
// otherwise than it was sent: trimmed, in lower case, defaulted. AddTool
// calls Normalize after Validate and before the step-up decision, and from
// then on the call is the normalized one: the push shows it, the grant
// key names it and the handler receives it, so the approver sees what
// will be written, not what was typed. The audit's args_sha256 stays that
// of the bytes sent. An error refuses the call as Validate's does.
type Normalizer[In any] interface {
	Normalize() (In, error)
}

// New checks cfg and returns a Governor with no tools.
func New(cfg Config) (*Governor, error) {
	if cfg.Guard != nil && cfg.Terms == nil {
		return nil, errors.New("govern: step-up needs the sensitive terms (Config.Terms)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.UsernameClaim == "" {
		cfg.UsernameClaim = "sub"
	}
	if cfg.MaxRequestsPerUser < 0 || cfg.MaxRequests < 0 || cfg.MaxWaitingPerUser < 0 || cfg.MaxWaiting < 0 {
		return nil, errors.New("govern: MaxRequestsPerUser, MaxRequests, MaxWaitingPerUser and MaxWaiting must not be negative")
	}
	if cfg.OnLimit == nil {
		cfg.OnLimit = func(string) {}
	}
	if cfg.Guard == nil {
		cfg.Logger.Warn("STEP-UP IS OFF: calls that need Duo approval run without it (STEPUP_MODE=off)")
	}
	g := &Governor{cfg: cfg, log: cfg.Logger, refusals: cfg.Refusals, tools: map[string]*governed{}, servers: map[*mcp.Server]bool{},
		requests: newCounter(cmp.Or(cfg.MaxRequestsPerUser, DefaultMaxRequestsPerUser), cmp.Or(cfg.MaxRequests, DefaultMaxRequests)),
		waiting:  newCounter(cmp.Or(cfg.MaxWaitingPerUser, DefaultMaxWaitingPerUser), cmp.Or(cfg.MaxWaiting, DefaultMaxWaiting)),
		onLimit:  cfg.OnLimit}
	if g.refusals == nil {
		g.refusals = NewRefusalMemory(0, 0)
	}
	var b [16]byte
	rand.Read(b[:])
	g.edge = hex.EncodeToString(b[:])
	return g, nil
}

// lookup returns a governed tool by name, or nil.
func (g *Governor) lookup(name string) *governed {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.tools[name]
}

// Names lists the governed tools, sorted.
func (g *Governor) Names() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return slices.Sorted(func(yield func(string) bool) {
		for n := range g.tools {
			if !yield(n) {
				return
			}
		}
	})
}

// Scopes lists every scope some tool needs, sorted: what a client should
// ask for when it signs in.
func (g *Governor) Scopes() []string {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return slices.Clone(g.known)
}

// register compiles p for t and adds it to the table, once per name.
func (g *Governor) register(s *mcp.Server, t *mcp.Tool, p Policy, schema *jsonschema.Schema, withDefaults bool) (*governed, error) {
	if t == nil || t.Name == "" {
		return nil, errors.New("govern: a tool needs a name")
	}
	if err := p.validate(t.Name); err != nil {
		return nil, err
	}
	if p.Record != nil && g.cfg.Records == nil {
		return nil, fmt.Errorf("govern: tool %q: policy record names a %s, but Config.Records is nil", t.Name, p.Record.Kind)
	}
	order := schema.PropertyOrder
	if len(order) == 0 {
		order = slices.Sorted(func(yield func(string) bool) {
			for k := range schema.Properties {
				if !yield(k) {
					return
				}
			}
		})
	}
	if p.Record != nil && slices.Contains(order, "record") && p.Action != "" {
		return nil, fmt.Errorf("govern: tool %q: an argument named \"record\" hides the named record from the action template", t.Name)
	}
	if len(p.Rows) == 0 {
		// Each argument is a row named after it: a name that cannot be
		// one would refuse every call that gives it.
		if err := rowNames(order); err != nil {
			return nil, fmt.Errorf("govern: tool %q: input property %v; give the policy rows that name it otherwise", t.Name, err)
		}
	}
	if withDefaults {
		if at := nestedDefault(schema); at != "" {
			return nil, fmt.Errorf("govern: tool %q: input schema has a default at %s, which is not applied before the push (only top-level properties' defaults are), so the push could not show the value the server would use", t.Name, cutName(at))
		}
	}
	desc, err := newDescriber(t.Name, &p, order)
	if err != nil {
		return nil, err
	}
	rs, err := schema.Resolve(&jsonschema.ResolveOptions{ValidateDefaults: true})
	if err != nil {
		return nil, fmt.Errorf("govern: tool %q: input schema: %v", t.Name, err)
	}
	var defaults map[string]any
	for name, prop := range schema.Properties {
		if prop != nil && prop.Default != nil {
			if !withDefaults {
				// go-sdk applies defaults before decoding; a governed call's
				// arguments are what the client sent, so that the push, the
				// key and the handler see one value.
				return nil, fmt.Errorf("govern: tool %q: input property %q has a default, which governed tools do not apply", t.Name, name)
			}
			// A raw tool's schema is another server's, which applies its
			// defaults itself: they are applied here first, so that the
			// push shows, the key names and the handler forwards the value
			// the upstream will use.
			v, err := decodeArgs(json.RawMessage(`{"v":` + string(prop.Default) + `}`))
			if err != nil {
				return nil, fmt.Errorf("govern: tool %q: input property %q: default: %v", t.Name, name, err)
			}
			if defaults == nil {
				defaults = map[string]any{}
			}
			defaults[name] = v["v"]
		}
	}
	// go-sdk encodes a tool's input schema again on every 2026-07-28
	// tools/call, to look for x-mcp-header annotations
	// (validateParamHeaders): a *jsonschema.Schema costs a reflective
	// encoding each time (7 % of a call), its encoding once made costs a
	// copy. tools/list shows the same bytes.
	enc, err := json.Marshal(schema)
	if err != nil {
		return nil, fmt.Errorf("govern: tool %q: input schema: %v", t.Name, err)
	}
	t.InputSchema = json.RawMessage(enc)
	p.Scopes = slices.Clone(p.Scopes)
	gt := &governed{name: t.Name, policy: p, desc: desc, schema: rs, defaults: defaults, always: p.StepUp.Always || slices.Contains(g.cfg.AlwaysTools, t.Name),
		raw: withDefaults, declared: schema.Properties, others: takesOthers(schema) && len(p.Rows) == 0}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tools[t.Name] != nil {
		return nil, fmt.Errorf("govern: tool %q is added twice", t.Name)
	}
	g.tools[t.Name] = gt
	for _, sc := range p.Scopes {
		if !slices.Contains(g.known, sc) {
			g.known = append(g.known, sc)
		}
	}
	slices.Sort(g.known)
	if !g.servers[s] {
		g.servers[s] = true
		s.AddReceivingMiddleware(g.only)
	}
	return gt, nil
}

// only keeps a server to its governed tools: tools/list shows only them
// and a tools/call of any other name is refused as go-sdk refuses an
// unknown tool, even if one was added to the server directly.
func (g *Governor) only(next mcp.MethodHandler) mcp.MethodHandler {
	return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
		switch method {
		case "tools/call":
			if call, ok := req.(*mcp.CallToolRequest); ok && call.Params != nil && g.lookup(call.Params.Name) == nil {
				g.recordUnknown(ctx, call)
				return nil, fmt.Errorf("unknown tool %q", cutName(call.Params.Name))
			}
		case "tools/list":
			res, err := next(ctx, method, req)
			list, ok := res.(*mcp.ListToolsResult)
			if err != nil || !ok {
				return res, err
			}
			out := *list
			out.Tools = nil
			for _, t := range list.Tools {
				if g.lookup(t.Name) != nil {
					out.Tools = append(out.Tools, t)
				}
			}
			return &out, nil
		}
		return next(ctx, method, req)
	}
}

// AddTool adds a typed tool governed by p: h runs only after the scope
// check, the schema check and the step-up decision, with In built from the
// one decoded value. The input schema is inferred from In (as mcp.AddTool
// does) unless t has one; the output schema from Out unless Out is any. A
// bad policy or template panics, naming the tool and field, as mcp.AddTool
// panics on a bad schema: it is a programming error found at start.
// Use Add for a policy read from a file, which returns the error.
func AddTool[In, Out any](g *Governor, s *mcp.Server, t *mcp.Tool, p Policy, h func(ctx context.Context, c *Call, in In) (*mcp.CallToolResult, Out, error)) {
	if err := Add(g, s, t, p, h); err != nil {
		panic(err)
	}
}

// Add is AddTool returning the error.
func Add[In, Out any](g *Governor, s *mcp.Server, t *mcp.Tool, p Policy, h func(ctx context.Context, c *Call, in In) (*mcp.CallToolResult, Out, error)) error {
	tool := *t
	schema, err := inputSchema[In](tool.InputSchema)
	if err != nil {
		return fmt.Errorf("govern: tool %q: %v", t.Name, err)
	}
	tool.InputSchema = schema
	if reflect.TypeFor[Out]() != reflect.TypeFor[any]() && tool.OutputSchema == nil {
		out, err := jsonschema.For[Out](&jsonschema.ForOptions{})
		if err != nil {
			return fmt.Errorf("govern: tool %q: output schema: %v", t.Name, err)
		}
		tool.OutputSchema = out
	}
	gt, err := g.register(s, &tool, p, schema, false)
	if err != nil {
		return err
	}
	direct := assignable(reflect.TypeFor[In](), map[reflect.Type]bool{})
	gt.prepare = func(c *Call) error {
		in, err := inputOf[In](c.Args, direct)
		if err != nil {
			return &ToolError{"invalid arguments: " + err.Error()}
		}
		if v, ok := any(&in).(Validator); ok {
			if err := v.Validate(); err != nil {
				return &ToolError{err.Error()}
			}
		}
		if nz, ok := any(in).(Normalizer[In]); ok {
			norm, err := nz.Normalize()
			if err != nil {
				return &ToolError{err.Error()}
			}
			if !reflect.DeepEqual(norm, in) {
				// The arguments everything else reads become the
				// normalized ones: one more encoding, only for a call
				// whose input the application changes.
				b, err := json.Marshal(norm)
				if err != nil {
					return err
				}
				if c.Args, err = decodeArgs(b); err != nil {
					return err
				}
				c.canon = nil
			}
			in = norm
		}
		c.in = in
		return nil
	}
	s.AddTool(&tool, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return g.serve(ctx, gt, req, func(ctx context.Context, c *Call) (*mcp.CallToolResult, error) {
			in, _ := c.in.(In)
			res, out, err := h(ctx, c, in)
			if err != nil {
				return nil, err
			}
			if res == nil {
				res = &mcp.CallToolResult{}
			}
			if tool.OutputSchema != nil {
				res.StructuredContent = out
				if res.Content == nil {
					b, err := json.Marshal(out)
					if err != nil {
						return nil, err
					}
					res.Content = []mcp.Content{&mcp.TextContent{Text: string(b)}}
				}
			}
			return res, nil
		})
	})
	return nil
}

// AddRawTool adds a tool whose handler takes the decoded arguments
// (Call.Args, Call.ArgsJSON) and whose result passes through as it is: for
// a gateway, with the upstream's input schema in t.InputSchema. The
// schema's top-level defaults are applied to the arguments a call leaves
// out, before anything is decided, so the push, the grant key and
// Call.ArgsJSON hold the values the upstream would use; a schema with a
// default anywhere else is refused. An argument the schema does not
// declare is refused, unless the schema takes other properties and the
// policy has no rows, so each is shown as a row (raw.go).
func AddRawTool(g *Governor, s *mcp.Server, t *mcp.Tool, p Policy, h func(ctx context.Context, c *Call) (*mcp.CallToolResult, error)) error {
	tool := *t
	schema, err := inputSchema[map[string]any](tool.InputSchema)
	if err != nil {
		return fmt.Errorf("govern: tool %q: %v", t.Name, err)
	}
	tool.InputSchema = schema
	gt, err := g.register(s, &tool, p, schema, true)
	if err != nil {
		return err
	}
	return g.addToServer(s, &tool, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		return g.serve(ctx, gt, req, h)
	})
}

// addToServer adds a registered tool to s. go-sdk panics on a tool it
// cannot serve (an input schema not of type object, bad x-mcp-header
// annotations): for a raw tool that is another server's schema, so the
// panic becomes the error, and the tool leaves the table, which must list
// exactly what the server serves.
func (g *Governor) addToServer(s *mcp.Server, t *mcp.Tool, h mcp.ToolHandler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			g.forget(t.Name)
			err = fmt.Errorf("govern: tool %q: cannot be served: %v", t.Name, r)
		}
	}()
	s.AddTool(t, h)
	return nil
}

// forget removes a tool from the table, and the scopes only it needed.
func (g *Governor) forget(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.tools, name)
	g.known = g.known[:0]
	for _, gt := range g.tools {
		for _, sc := range gt.policy.Scopes {
			if !slices.Contains(g.known, sc) {
				g.known = append(g.known, sc)
			}
		}
	}
	slices.Sort(g.known)
}

// inputSchema is the tool's own schema (any JSON form) or In's.
func inputSchema[In any](given any) (*jsonschema.Schema, error) {
	if given == nil {
		s, err := jsonschema.For[In](&jsonschema.ForOptions{})
		if err != nil {
			return nil, fmt.Errorf("input schema: %v", err)
		}
		return s, nil
	}
	if s, ok := given.(*jsonschema.Schema); ok {
		return s, nil
	}
	b, err := json.Marshal(given)
	if err != nil {
		return nil, fmt.Errorf("input schema: %v", err)
	}
	var s jsonschema.Schema
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("input schema: %v", err)
	}
	return &s, nil
}

// serve is the governed pipeline of one tools/call: who, scopes, schema,
// decision, run; every step on record first.
func (g *Governor) serve(ctx context.Context, gt *governed, req *mcp.CallToolRequest, run func(context.Context, *Call) (*mcp.CallToolResult, error)) (*mcp.CallToolResult, error) {
	res, err := g.handle(ctx, gt, req, run)
	if err != nil {
		// A tool error, as mcp.AddTool reports one: the text says what to
		// fix, and never holds internals.
		var out mcp.CallToolResult
		out.SetError(g.userError(ctx, gt.name, err))
		return &out, nil
	}
	return res, nil
}

func (g *Governor) handle(ctx context.Context, gt *governed, req *mcp.CallToolRequest, run func(context.Context, *Call) (*mcp.CallToolResult, error)) (*mcp.CallToolResult, error) {
	var raw json.RawMessage
	var header http.Header
	if req.Params != nil {
		raw = req.Params.Arguments
	}
	if req.Extra != nil {
		header = req.Extra.Header
	}
	tok := caller(req)
	if tok == nil {
		return nil, &ToolError{gt.name + " was not run: the request carries no verified access token"}
	}
	sum := sha256.Sum256(raw)
	c := &Call{Request: req, Token: tok, RequestID: g.requestID(header)}
	n := &noter{g: g, ctx: ctx, base: Event{RequestID: c.RequestID, Tool: gt.name, Token: tok, Args: raw, ArgsSHA256: hex.EncodeToString(sum[:])}}

	if lacking := missing(tok.Scopes, gt.policy.Scopes); len(lacking) > 0 {
		if g.marked(header, explainHeader) {
			_ = n.note(Event{Kind: audit.ScopeDenied, Outcome: ScopeExplained, Reason: "insufficient_scope, explained: signed in again without " + strings.Join(lacking, " ")})
			return nil, &ToolError{refusalText(gt.name, lacking)}
		}
		g.log.WarnContext(ctx, "tool call without scope reached the MCP layer", "tool", gt.name, "missing", lacking)
		_ = n.note(Event{Kind: audit.ScopeDenied, Outcome: ScopeDenied, Reason: "missing " + strings.Join(lacking, " ")})
		return nil, &ToolError{fmt.Sprintf("%s needs the scope(s) %s, which your access token does not grant; ask for them when you sign in again", gt.name, strings.Join(lacking, " "))}
	}
	args, err := decodeArgs(raw)
	if err == nil {
		for k, v := range gt.defaults {
			if _, given := args[k]; !given {
				args[k] = deepCopy(v)
			}
		}
		err = validate(gt.schema, args)
	}
	if err == nil && gt.raw {
		err = gt.undeclared(args)
	}
	if err == nil {
		c.Args = args
		if gt.prepare != nil {
			err = gt.prepare(c) // may normalize c.Args
		}
	}
	if err != nil {
		if rerr := n.note(Event{Kind: audit.ToolCalled, Outcome: Invalid}); rerr != nil {
			return nil, rerr
		}
		var te *ToolError
		if errors.As(err, &te) {
			return nil, te
		}
		return nil, &ToolError{err.Error()}
	}
	if err := g.decide(ctx, gt, c, n); err != nil {
		return nil, err
	}
	if gt.policy.Writes {
		// A write is on record before it happens.
		if err := n.note(Event{Kind: audit.ToolCalled, Outcome: Started}); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	res, err := run(ctx, c)
	outcome := OK
	if err != nil || res != nil && res.IsError {
		outcome = Error
	}
	if rerr := n.note(Event{Kind: audit.ToolCalled, Outcome: outcome, Duration: time.Since(start)}); rerr != nil && err == nil && !gt.policy.Writes {
		// A read whose outcome cannot be recorded returns nothing: its
		// data must not move off the record.
		return nil, rerr
	}
	return res, err
}

// recordUnknown puts a call of a tool no policy names on record as
// Invalid: every tools/call leaves a line. The name is the client's, so it
// is cut, and the arguments are on record by their hash only (see
// hashOnly): a line must not grow with what a client sends. The refusal
// stands whatever happens to its line.
func (g *Governor) recordUnknown(ctx context.Context, req *mcp.CallToolRequest) {
	if g.cfg.Recorder == nil {
		return
	}
	var header http.Header
	if req.Extra != nil {
		header = req.Extra.Header
	}
	e := Event{Kind: audit.ToolCalled, Outcome: Invalid, RequestID: g.requestID(header), Tool: cutName(req.Params.Name), Token: caller(req)}
	if e.Tool == "" {
		e.Tool = `""`
	}
	if raw := req.Params.Arguments; json.Valid(raw) {
		sum := sha256.Sum256(raw)
		e.ArgsSHA256 = hex.EncodeToString(sum[:])
	}
	if err := g.cfg.Recorder(ctx, e); err != nil {
		g.log.ErrorContext(ctx, "the audit trail refused the line of an invalid call", "error", err.Error())
	}
}

// cutName bounds a name a client chose (an unknown tool, a repeated key)
// before it reaches the trail or a message: 64 bytes, never cut inside a
// UTF-8 sequence.
func cutName(name string) string {
	const max = 64
	if len(name) <= max {
		return name
	}
	i := max
	for i > 0 && name[i]&0xC0 == 0x80 {
		i--
	}
	return name[:i] + "..."
}

// noter records the events of one call.
type noter struct {
	g    *Governor
	ctx  context.Context
	base Event
}

// note records e; its error is what the caller sees: the call was not run.
func (n *noter) note(e Event) error {
	if n.g.cfg.Recorder == nil {
		return nil
	}
	full := n.base
	full.Kind, full.Outcome, full.Reason, full.Via, full.DuoTxID, full.Duration = e.Kind, e.Outcome, e.Reason, e.Via, e.DuoTxID, e.Duration
	if hashOnly(full) {
		full.Args = nil
	}
	if err := n.g.cfg.Recorder(n.ctx, full); err != nil {
		n.g.log.ErrorContext(n.ctx, "the audit trail refused a line: failing the call closed", "tool", full.Tool, "event", string(e.Kind), "outcome", string(e.Outcome), "error", err.Error())
		return &ToolError{full.Tool + " was not run: the server could not write its audit trail; try again later"}
	}
	return nil
}

// hashOnly reports whether e is about a call refused before its
// arguments were accepted (a scope the token lacks, arguments the schema
// refuses): such a line carries the arguments' hash, never the arguments,
// even with audit.Options.IncludeArgs. Anyone with a token, scopes or
// not, can send such calls as fast as the request bounds let them, each
// with megabytes of arguments; on record in full they would fill the
// trail's disk, and so stop every call, for the price of the requests.
func hashOnly(e Event) bool {
	return e.Kind == audit.ScopeDenied || e.Outcome == Invalid
}

// userError passes a ToolError on and hides anything else.
func (g *Governor) userError(ctx context.Context, tool string, err error) error {
	var te *ToolError
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return errors.New("the call was cancelled before it finished")
	}
	g.log.ErrorContext(ctx, "tool failed", "tool", tool, "error", err.Error())
	return errors.New(tool + " could not complete the call; try again later")
}

// caller is the verified token of the HTTP request carrying this call.
// Never the context's: on a session it may be another request's.
func caller(req *mcp.CallToolRequest) *resourceserver.Token {
	if req == nil || req.Extra == nil {
		return nil
	}
	return resourceserver.TokenFromInfo(req.Extra.TokenInfo)
}

// missing returns the required scopes granted does not cover.
func missing(granted, required []string) []string {
	var out []string
	for _, r := range required {
		if !resourceserver.HasScope(granted, r) {
			out = append(out, r)
		}
	}
	return out
}

// newRequestID names one request in the audit trail.
func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
