package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// What callers can make the gateway hold is bounded by the Governor (its
// Config's requests in flight and calls waiting on a push, per user and
// overall, as for the CRM) and, per upstream, by Upstream.MaxCalls.

// healthInterval is how often an upstream is pinged (or, when down, dialled
// again), so that /readyz shows a dead upstream without waiting for a call.
// A var for the tests (export_test.go).
var healthInterval = 15 * time.Second

// Config configures a Gateway.
type Config struct {
	// Policy names the upstreams and their governed tools. Required.
	Policy *Policy
	// Governor governs every tool; its Gate is mounted in the handler.
	// Required.
	Governor *govern.Governor
	// Auth is the front door. Required.
	Auth *resourceserver.Server
	// Transport carries the requests to Streamable HTTP upstreams; nil
	// means http.DefaultTransport.
	Transport http.RoundTripper
	// CommandEnv is the environment stdio upstreams start with ("K=V"),
	// before their policy's env: PATH and HOME, say; never the
	// gateway's whole environment, which holds its secrets.
	CommandEnv []string
	// Logger: one line per upstream event, never a header value.
	Logger  *slog.Logger
	Version string
}

// Gateway is one MCP endpoint in front of the policy's upstreams: each
// upstream tool the policy names is served as "upstream.tool", governed
// by the Governor, and forwarded with the gateway's own credentials only.
type Gateway struct {
	http.Handler
	server *mcp.Server
	gov    *govern.Governor
	conns  []*conn
	log    *slog.Logger

	inflight atomic.Int64 // POSTs being served, for Shutdown

	mu       sync.Mutex
	failed   map[string]bool // upstream.tool that cannot be served, until restart
	problems []Problem
	reported map[string]bool // Problem.String() of each, reported once

	stop context.CancelFunc
	done sync.WaitGroup
}

// Problem is something about an upstream an operator should fix: a tool
// the policy names that the upstream does not offer, an upstream tool that
// cannot be served, an upstream that cannot be reached.
type Problem struct {
	Upstream string
	Tool     string // "" for the upstream itself
	Where    string // the policy file's line
	Msg      string
}

func (p Problem) String() string {
	if p.Tool == "" {
		return fmt.Sprintf("%s: upstream %s: %s", p.Where, p.Upstream, p.Msg)
	}
	return fmt.Sprintf("%s: upstream %s, tool %s: %s", p.Where, p.Upstream, p.Tool, p.Msg)
}

// UpstreamStatus is an upstream's reachability, for /readyz. It holds no
// URL or error text: /readyz is unauthenticated.
type UpstreamStatus struct {
	Name      string `json:"name"`
	Reachable bool   `json:"reachable"`
	State     string `json:"state"`
}

// New connects to every upstream (at once, each within its own bound),
// registers the tools the policy names with the upstream's own schema and
// annotations, and starts watching the upstreams. An upstream that cannot
// be reached does not stop the start: it is a Problem, its tools are
// added once it answers, and the others serve meanwhile.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if cfg.Policy == nil || cfg.Governor == nil || cfg.Auth == nil {
		return nil, errors.New("gateway: Policy, Governor and Auth are required")
	}
	log := cmp.Or(cfg.Logger, slog.Default())
	transport := cfg.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	gw := &Gateway{
		gov:      cfg.Governor,
		log:      log,
		failed:   map[string]bool{},
		reported: map[string]bool{},
	}
	gw.server = mcp.NewServer(&mcp.Implementation{Name: "crm-mcp-gateway", Title: "MCP gateway (Duo protected)", Version: cfg.Version}, &mcp.ServerOptions{
		Instructions: "Tools of other MCP servers, named upstream.tool. Each tool needs a Duo scope; calls without it are refused with an insufficient_scope challenge naming the scopes to request.",
		Logger:       govern.SDKLogger(log),
		// Stateless, the gateway cannot tell a client its list changed
		// (an upstream's tools are added when it first answers): it
		// offers no listChanged, so no client has a reason to listen.
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{ListChanged: false}},
	})
	gw.server.AddReceivingMiddleware(govern.EndListen)
	for _, up := range cfg.Policy.Upstreams {
		c := newConn(up, transport, cfg.CommandEnv, cfg.Version, log)
		c.onChange = func(tool string) {
			gw.problem(Problem{Upstream: up.Name, Tool: tool, Where: up.Where(tool), Msg: "the upstream changed its input schema or annotations; refused until the gateway restarts"})
		}
		gw.conns = append(gw.conns, c)
	}
	var wg sync.WaitGroup
	for _, c := range gw.conns {
		wg.Go(func() { gw.attach(ctx, c, true) })
	}
	wg.Wait()

	// Stateless: every request stands alone, so the gateway holds no
	// session a client could leave behind; progress and cancellation ride
	// on the POST that carries the call.
	streamable := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return gw.server }, &mcp.StreamableHTTPOptions{
		Stateless:                    true,
		Logger:                       govern.SDKLogger(log),
		PropagateRequestCancellation: true,
	})
	gw.Handler = gw.countPOSTs(cfg.Auth.Middleware(cfg.Governor.Gate(cfg.Auth, streamable)))

	watchCtx, stop := context.WithCancel(context.Background())
	gw.stop = stop
	for _, c := range gw.conns {
		gw.done.Go(func() { gw.watch(watchCtx, c) })
	}
	return gw, nil
}

// attach lists an upstream's tools and registers those the policy names
// that are not served yet: at start, and at each health check until every
// one is served or cannot be, so that a tool the upstream offers later
// (a slow start, a plugin loaded late) is added then. atStart says whether
// its failures are problems of the start. It reports whether the upstream
// answered.
func (gw *Gateway) attach(ctx context.Context, c *conn, atStart bool) bool {
	var pending []string
	gw.mu.Lock()
	for _, name := range c.up.ToolNames() {
		if !gw.failed[c.up.Name+"."+name] && !c.isServed(name) {
			pending = append(pending, name)
		}
	}
	gw.mu.Unlock()
	if len(pending) == 0 {
		return true
	}
	offered, err := c.tools(ctx)
	if err != nil {
		if atStart {
			gw.problem(Problem{Upstream: c.up.Name, Where: c.up.Where(""), Msg: "unreachable at start; its tools are served once it answers"})
		}
		return false
	}
	added := 0
	for _, name := range pending {
		t := offered[name]
		if t == nil {
			gw.problem(Problem{Upstream: c.up.Name, Tool: name, Where: c.up.Where(name), Msg: "the policy names it, but the upstream does not offer it"})
			continue
		}
		if err := gw.add(c, t, c.up.Tools[name]); err != nil {
			gw.mu.Lock()
			gw.failed[c.up.Name+"."+name] = true
			gw.mu.Unlock()
			gw.problem(Problem{Upstream: c.up.Name, Tool: name, Where: c.up.Where(name), Msg: err.Error()})
			continue
		}
		added++
	}
	if added > 0 {
		gw.log.Info("serving the upstream's tools", "upstream", c.up.Name, "named", len(c.up.Tools), "offered", len(offered), "added", added)
	}
	return true
}

// problem records p, once: attach meets a missing tool at every check.
func (gw *Gateway) problem(p Problem) {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	if gw.reported[p.String()] {
		return
	}
	gw.reported[p.String()] = true
	gw.problems = append(gw.problems, p)
	gw.log.Error("gateway policy problem: " + p.String())
}

// add serves one upstream tool under the governor.
func (gw *Gateway) add(c *conn, t *mcp.Tool, pol govern.Policy) (err error) {
	name := c.up.Name + "." + t.Name
	tool := &mcp.Tool{
		Name:         name,
		Title:        t.Title,
		Description:  t.Description,
		InputSchema:  t.InputSchema,
		OutputSchema: t.OutputSchema,
		Annotations:  t.Annotations,
		Icons:        t.Icons,
		Meta:         t.Meta,
	}
	if tool.InputSchema == nil {
		tool.InputSchema = map[string]any{"type": "object"}
	}
	// Checked before the Governor registers the tool: go-sdk's AddTool
	// panics on it after, which would leave the Governor governing a tool
	// the server does not serve.
	if m, ok := tool.InputSchema.(map[string]any); !ok || m["type"] != "object" {
		return errors.New(`cannot be served: its input schema is not of type "object", as MCP requires`)
	}
	defer func() {
		// go-sdk panics on what else it cannot serve: that is the
		// upstream's tool, not a bug here.
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot be served: %v", r)
		}
	}()
	upstreamName := t.Name
	err = govern.AddRawTool(gw.gov, gw.server, tool, pol, func(ctx context.Context, call *govern.Call) (*mcp.CallToolResult, error) {
		var progress func(*mcp.ProgressNotificationParams)
		if req := call.Request; req.Params != nil && req.Session != nil {
			if tok := req.Params.GetProgressToken(); tok != nil {
				// Continued above the progress sent while the call waited
				// on a push, so that the client sees it increase.
				base := call.ProgressSent()
				ctx, stop := context.WithCancel(ctx)
				defer stop()
				box := newLatest(ctx, func(p *mcp.ProgressNotificationParams) {
					_ = req.Session.NotifyProgress(ctx, p)
				})
				progress = func(p *mcp.ProgressNotificationParams) {
					total := p.Total
					if total > 0 {
						total += base
					}
					box.put(&mcp.ProgressNotificationParams{ProgressToken: tok, Progress: base + p.Progress, Total: total, Message: p.Message})
				}
			}
		}
		var user string
		if tok := call.Token; tok != nil {
			user = tok.Issuer + "\x00" + tok.Subject
		}
		res, err := c.call(ctx, user, upstreamName, call.ArgsJSON(), progress)
		var ce *callError
		if errors.As(err, &ce) {
			if ce.mayHaveRun {
				return nil, &govern.ToolError{Msg: name + " may have run: " + ce.msg + "; check whether it did before calling it again"}
			}
			return nil, &govern.ToolError{Msg: name + " was not run: " + ce.msg}
		}
		return res, err
	})
	if err == nil {
		c.serve(t)
	}
	return err
}

// latest forwards an upstream call's progress to its client without ever
// making the upstream's session wait: all calls to an upstream share one
// session, whose notifications go through one queue, so a client that
// stops reading its response would otherwise stall every other user's
// progress and keep the upstream's notifications in memory. put keeps only
// the newest value (progress only increases, so a skipped value loses
// nothing the next one does not say); one goroutine per call sends it,
// and ends with the call.
type latest struct {
	slot chan *mcp.ProgressNotificationParams
}

func newLatest(ctx context.Context, send func(*mcp.ProgressNotificationParams)) *latest {
	l := &latest{slot: make(chan *mcp.ProgressNotificationParams, 1)}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case p := <-l.slot:
				send(p)
			}
		}
	}()
	return l
}

// put never blocks. Calls come one at a time, from the session's queue.
func (l *latest) put(p *mcp.ProgressNotificationParams) {
	for {
		select {
		case l.slot <- p:
			return
		default:
		}
		select {
		case <-l.slot: // the older value, not sent yet
		default:
		}
	}
}

// watch pings the upstream, and until its tools are served keeps trying
// to add them.
func (gw *Gateway) watch(ctx context.Context, c *conn) {
	tick := time.NewTicker(healthInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !gw.attach(ctx, c, false) {
			continue
		}
		c.ping(ctx)
	}
}

func (gw *Gateway) countPOSTs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			gw.inflight.Add(1)
			defer gw.inflight.Add(-1)
		}
		next.ServeHTTP(w, r)
	})
}

// Tools lists the tools served, sorted.
func (gw *Gateway) Tools() []string { return gw.gov.Names() }

// Problems are the problems found so far (at start, and when an upstream
// down at start first answered).
func (gw *Gateway) Problems() []Problem {
	gw.mu.Lock()
	defer gw.mu.Unlock()
	return append([]Problem(nil), gw.problems...)
}

// Upstreams is each upstream's reachability, in the policy's order.
func (gw *Gateway) Upstreams() []UpstreamStatus {
	out := make([]UpstreamStatus, len(gw.conns))
	for i, c := range gw.conns {
		out[i] = c.status()
	}
	return out
}

// Requests is the number of requests in flight, for a metrics gauge.
func (gw *Gateway) Requests() int { return gw.gov.Requests() }

// StepUpWaiting is the number of calls waiting on a Duo Push.
func (gw *Gateway) StepUpWaiting() int { return gw.gov.Waiting() }

// Shutdown waits until no POST is in flight, or ctx ends, then closes the
// upstream sessions (and stops stdio upstreams).
func (gw *Gateway) Shutdown(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
	for gw.inflight.Load() > 0 && err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-tick.C:
		}
	}
	gw.Close()
	return err
}

// Close stops watching and closes every upstream session at once.
func (gw *Gateway) Close() {
	gw.stop()
	gw.done.Wait()
	for _, c := range gw.conns {
		c.close()
	}
}

// Check connects to each upstream of pol, lists its tools and reports
// what the gateway would find at start: unreachable upstreams and named
// tools an upstream does not offer. It changes nothing and leaves no
// upstream running.
func Check(ctx context.Context, pol *Policy, transport http.RoundTripper, commandEnv []string, log *slog.Logger) []Problem {
	if transport == nil {
		transport = http.DefaultTransport
	}
	log = cmp.Or(log, slog.New(slog.DiscardHandler))
	probs := make([][]Problem, len(pol.Upstreams))
	var wg sync.WaitGroup
	for i, up := range pol.Upstreams {
		wg.Go(func() {
			c := newConn(up, transport, commandEnv, "check", log)
			defer c.close()
			offered, err := c.tools(ctx)
			if err != nil {
				c.mu.Lock()
				why := c.lastErr
				c.mu.Unlock()
				probs[i] = append(probs[i], Problem{Upstream: up.Name, Where: up.Where(""), Msg: "unreachable: " + bounded(cmp.Or(why, err.Error()), 300)})
				return
			}
			for _, name := range up.ToolNames() {
				if offered[name] == nil {
					probs[i] = append(probs[i], Problem{Upstream: up.Name, Tool: name, Where: up.Where(name), Msg: "the policy names it, but the upstream does not offer it"})
				}
			}
		})
	}
	wg.Wait()
	var out []Problem
	for _, p := range probs {
		out = append(out, p...)
	}
	return out
}

// Load reads and parses the policy file at path (GATEWAY_POLICY).
func Load(path string, getenv func(string) (string, bool)) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &FieldError{File: path, Err: fmt.Errorf("cannot be read: %v", err)}
	}
	defer f.Close()
	data, err := readAll(f)
	if err != nil {
		return nil, &FieldError{File: path, Err: errors.New("cannot be read")}
	}
	return Parse(path, data, getenv)
}
