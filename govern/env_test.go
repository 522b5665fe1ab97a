package govern_test

import (
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

var update = flag.Bool("update", false, "rewrite golden files")

// examplePolicy is issue 19's example policy, the tools' part, as the
// gateway will read it.
const examplePolicy = `
everything.echo:
  scopes: [demo.read]
everything.get-sum:
  scopes: [demo.read]
  action: "Add {{.a}} and {{.b}}"
everything.get-env:
  scopes: [demo.admin]
  stepup: always
  action: "Read every environment variable of the everything server"
everything.trigger-long-running-operation:
  scopes: [demo.read]
  stepup:
    when_argument_over: {duration: 10}
files.read_text_file:
  scopes: [files.read]
  stepup:
    terms_in: [path]
files.write_file:
  scopes: [files.write]
  writes: true
  action: "Write {{len .content}} bytes to {{.path}}"
notes.get_note:
  scopes: [notes.read]
  record: {arg: id, kind: note}
  action: "Show note {{.record.label}}"
notes.update_note:
  scopes: [notes.write]
  writes: true
  record: {arg: id, kind: note}
  action: "Update note {{.record.label}}"
  rows:
    - {key: title, arg: title, old: title}
    - {key: body, arg: body, old: body}
notes.list_notes:
  scopes: [notes.read]
  stepup:
    terms_in: ["*"]
    when_argument_is: {include_restricted: [true]}
    reason: the call asks for restricted records
  action: "{{if .query}}Search notes for {{quote .query}}{{else}}List notes{{end}}"
`

func policies(t testing.TB) map[string]govern.Policy {
	t.Helper()
	var p map[string]govern.Policy
	require.NoError(t, yaml.Unmarshal([]byte(examplePolicy), &p))
	return p
}

// schemas are the upstream tools' input schemas, as an upstream lists them.
var schemas = map[string]string{
	"everything.echo":                           `{"type":"object","properties":{"message":{"type":"string"}},"required":["message"]}`,
	"everything.get-env":                        `{"type":"object","properties":{}}`,
	"everything.trigger-long-running-operation": `{"type":"object","properties":{"duration":{"type":"number"},"steps":{"type":"number"}}}`,
	"files.read_text_file":                      `{"type":"object","properties":{"path":{"type":"string"},"head":{"type":"number"}},"required":["path"]}`,
	"files.write_file":                          `{"type":"object","properties":{"path":{"type":"string"},"content":{"type":"string"}},"required":["path","content"]}`,
}

type sumIn struct {
	A float64 `json:"a"`
	B float64 `json:"b"`
}

type sumOut struct {
	Sum float64 `json:"sum"`
}

type noteID struct {
	ID int64 `json:"id"`
}

type noteUpdate struct {
	ID    int64   `json:"id"`
	Title *string `json:"title,omitempty"`
	Body  *string `json:"body,omitempty"`
}

type listNotesIn struct {
	Query             string `json:"query,omitempty"`
	IncludeRestricted bool   `json:"include_restricted,omitempty"`
}

// notes is the test application's store behind Records: note 1 is
// public, note 6 restricted.
type notes struct {
	mu   sync.Mutex
	byID map[int64]*note
}

type note struct {
	title, body string
	restricted  bool
}

func newNotes() *notes {
	return &notes{byID: map[int64]*note{
		1: {title: "Lunch menu", body: "soup"},
		2: {title: "Parking", body: "level 2"},
		6: {title: "Aegis contract", body: "secret terms", restricted: true},
	}}
}

func (n *notes) Lookup(_ context.Context, kind string, id any) (*govern.Record, error) {
	num, ok := id.(json.Number)
	i, err := num.Int64()
	if !ok || err != nil || kind != "note" {
		return nil, &govern.ToolError{Msg: "id must be a note id"}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.byID[i]
	if r == nil {
		return nil, &govern.ToolError{Msg: "note not found; check the id"}
	}
	return &govern.Record{Label: "#" + num.String() + " " + r.title, Restricted: r.restricted,
		Fields: map[string]string{"title": r.title, "body": r.body}, Value: *r}, nil
}

// events records what the Recorder hears; fail makes it refuse.
type events struct {
	mu   sync.Mutex
	all  []govern.Event
	fail bool
}

func (e *events) record(_ context.Context, ev govern.Event) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fail {
		return errFull
	}
	e.all = append(e.all, ev)
	return nil
}

var errFull = &govern.ToolError{Msg: "disk full"}

// codes lists "kind/outcome" of every event so far, and forgets them.
func (e *events) codes() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, ev := range e.all {
		out = append(out, string(ev.Kind)+"/"+string(ev.Outcome))
	}
	e.all = nil
	return out
}

func (e *events) take() []govern.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.all
	e.all = nil
	return out
}

// env is a governed MCP server behind the front door, with a fake Duo
// that verifies signatures, and counters of what the handlers ran.
type env struct {
	as       *rstest.Server
	rs       *resourceserver.Server
	duo      *duotest.Server
	g        *govern.Governor
	ev       *events
	notes    *notes
	resource string
	srv      *httptest.Server

	mu  sync.Mutex
	ran []string
}

type envOpts struct {
	stepUpOff bool
	stateless bool
	tune      func(*govern.Config, *stepup.Config)
	// more adds tools beside the example policy's.
	more func(t testing.TB, g *govern.Governor, s *mcp.Server)
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	e := &env{as: rstest.NewServer(), ev: &events{}, notes: newNotes()}
	t.Cleanup(e.as.Close)
	e.as.KID("RS256")
	e.duo = duotest.NewServer()
	t.Cleanup(e.duo.Close)
	e.duo.SetDefault(duotest.Approve)

	e.srv = httptest.NewUnstartedServer(nil)
	e.resource = "http://" + e.srv.Listener.Addr().String() + "/mcp"
	var err error
	e.rs, err = resourceserver.New(resourceserver.Config{
		Resource: e.resource, Issuers: []resourceserver.Issuer{{URL: e.as.Issuer()}}, Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	t.Cleanup(e.rs.Close)

	terms, err := stepup.NewTerms(stepup.DefaultSensitiveTerms)
	require.NoError(t, err)
	cfg := govern.Config{Terms: terms, OnWrite: true, Records: e.notes, Recorder: e.ev.record, Logger: slog.New(slog.DiscardHandler),
		// Tests of shared pushes start more identical calls than the default bound.
		MaxWaitingPerUser: 64, MaxRequestsPerUser: 64}
	scfg := stepup.Config{IKey: e.duo.IKey(), SKey: e.duo.SKey(), Host: e.duo.Host(), CACertPEM: e.duo.CACertPEM(),
		PollInterval: 20 * time.Millisecond, Timeout: 10 * time.Second, MaxPushes: 100, Logger: slog.New(slog.DiscardHandler)}
	if o.tune != nil {
		o.tune(&cfg, &scfg)
	}
	if !o.stepUpOff {
		cfg.Guard, err = stepup.New(scfg)
		require.NoError(t, err)
	}
	e.g, err = govern.New(cfg)
	require.NoError(t, err)

	server := mcp.NewServer(&mcp.Implementation{Name: "governed"}, &mcp.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	e.addTools(t, server)
	if o.more != nil {
		o.more(t, e.g, server)
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless: o.stateless, Logger: slog.New(slog.DiscardHandler), PropagateRequestCancellation: true,
	})
	mux := http.NewServeMux()
	for _, p := range e.rs.MetadataPaths() {
		mux.Handle(p, e.rs.MetadataHandler())
	}
	mux.Handle("/mcp", e.rs.Middleware(e.g.Gate(e.rs, h)))
	e.srv.Config.Handler = mux
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) didRun(name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ran = append(e.ran, name)
}

func (e *env) runs() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.ran
	e.ran = nil
	return out
}

// addTools serves the example policy's tools: get-sum and the notes as
// typed tools, the rest as raw tools with upstream schemas, as a gateway
// would.
func (e *env) addTools(t testing.TB, s *mcp.Server) {
	pol := policies(t)
	govern.AddTool(e.g, s, &mcp.Tool{Name: "everything.get-sum"}, pol["everything.get-sum"],
		func(_ context.Context, c *govern.Call, in sumIn) (*mcp.CallToolResult, sumOut, error) {
			e.didRun("everything.get-sum")
			return nil, sumOut{Sum: in.A + in.B}, nil
		})
	for name, schema := range schemas {
		require.NoError(t, govern.AddRawTool(e.g, s, &mcp.Tool{Name: name, InputSchema: json.RawMessage(schema)}, pol[name],
			func(_ context.Context, c *govern.Call) (*mcp.CallToolResult, error) {
				e.didRun(name)
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name + " " + string(c.ArgsJSON())}}}, nil
			}))
	}
	govern.AddTool(e.g, s, &mcp.Tool{Name: "notes.get_note"}, pol["notes.get_note"],
		func(_ context.Context, c *govern.Call, in noteID) (*mcp.CallToolResult, any, error) {
			e.didRun("notes.get_note")
			n := c.Record.Value.(note)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: n.title + ": " + n.body}}}, nil, nil
		})
	govern.AddTool(e.g, s, &mcp.Tool{Name: "notes.update_note"}, pol["notes.update_note"],
		func(_ context.Context, c *govern.Call, in noteUpdate) (*mcp.CallToolResult, any, error) {
			e.didRun("notes.update_note")
			e.notes.mu.Lock()
			defer e.notes.mu.Unlock()
			n := e.notes.byID[in.ID]
			if in.Title != nil {
				n.title = *in.Title
			}
			if in.Body != nil {
				n.body = *in.Body
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "updated"}}}, nil, nil
		})
	govern.AddTool(e.g, s, &mcp.Tool{Name: "notes.list_notes"}, pol["notes.list_notes"],
		func(_ context.Context, c *govern.Call, in listNotesIn) (*mcp.CallToolResult, any, error) {
			e.didRun("notes.list_notes")
			e.notes.mu.Lock()
			defer e.notes.mu.Unlock()
			var titles []string
			for _, id := range []int64{1, 2, 6} {
				n := e.notes.byID[id]
				if n.restricted && !c.ApprovedSensitive {
					continue
				}
				if in.Query == "" || strings.Contains(strings.ToLower(n.title+" "+n.body), strings.ToLower(in.Query)) {
					titles = append(titles, n.title)
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "notes: " + strings.Join(titles, ", ")}}}, nil, nil
		})
}

func (e *env) token(sub string, scopes ...string) string {
	return e.as.Mint(e.as.Claims(sub, e.resource, scopes...))
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func (e *env) connect(t testing.TB, token string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "govern-test"}, opts)
	cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint: e.resource, HTTPClient: &http.Client{Transport: bearer{token}}, MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { cs.Close() })
	return cs
}

var all = []string{"demo", "files", "notes"}

func call(t testing.TB, cs *mcp.ClientSession, name string, args any) *mcp.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: args})
	require.NoError(t, err)
	return res
}

func text(res *mcp.CallToolResult) string {
	var parts []string
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			parts = append(parts, tc.Text)
		}
	}
	return strings.Join(parts, "\n")
}
