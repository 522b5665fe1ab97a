package govern

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// sdkRecorder is a real go-sdk Streamable HTTP server with a tool under
// every name of the catalog, recording the tools/call requests go-sdk
// dispatches (seen by a receiving middleware, whatever the name) and the
// tool handlers that run. It is stateless and answers in JSON, so that one
// POST is one whole exchange, and speaks 2025-03-26, the last revision
// with batches.
type sdkRecorder struct {
	http.Handler
	mu         sync.Mutex
	dispatched []string
	ran        []string
}

func newSDKRecorder() *sdkRecorder {
	rec := &sdkRecorder{}
	server := mcp.NewServer(&mcp.Implementation{Name: "recorder"}, &mcp.ServerOptions{Logger: slog.New(slog.DiscardHandler)})
	for _, name := range fuzzTools {
		server.AddTool(&mcp.Tool{Name: name, InputSchema: json.RawMessage(`{"type":"object"}`)}, func(ctx context.Context, req *mcp.CallToolRequest) (*mcp.CallToolResult, error) {
			rec.mu.Lock()
			rec.ran = append(rec.ran, name)
			rec.mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ran"}}}, nil
		})
	}
	server.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			if call, ok := req.(*mcp.CallToolRequest); ok && method == "tools/call" {
				rec.mu.Lock()
				rec.dispatched = append(rec.dispatched, call.Params.Name)
				rec.mu.Unlock()
			}
			return next(ctx, method, req)
		}
	})
	rec.Handler = mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless: true, JSONResponse: true, Logger: slog.New(slog.DiscardHandler),
	})
	return rec
}

// post sends body through h with tok as the verified token and returns
// the response and what go-sdk dispatched and ran meanwhile.
func (rec *sdkRecorder) post(h http.Handler, tok *resourceserver.Token, body []byte) (*httptest.ResponseRecorder, []string, []string) {
	rec.mu.Lock()
	rec.dispatched, rec.ran = nil, nil
	rec.mu.Unlock()
	r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:9/mcp", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json, text/event-stream")
	r.Header.Set("MCP-Protocol-Version", "2025-03-26")
	if tok != nil {
		r = r.WithContext(resourceserver.ContextWithToken(r.Context(), tok))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return w, slices.Clone(rec.dispatched), slices.Clone(rec.ran)
}

// jsonRPCErrors counts the error responses in a JSON answer of go-sdk.
func jsonRPCErrors(body []byte) int {
	var msgs []map[string]json.RawMessage
	if json.Unmarshal(body, &msgs) != nil {
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil {
			return 0
		}
		msgs = append(msgs, m)
	}
	n := 0
	for _, m := range msgs {
		if m["error"] != nil {
			n++
		}
	}
	return n
}

// fuzzTools are the tools the fuzzed gate governs.
var fuzzTools = []string{"list_contacts", "get_contact", "create_contact", "update_contact", "list_deals", "create_deal", "update_deal_stage"}

// fuzzSeeds are real cases: what clients send, and what an attacker tried.
var fuzzSeeds = []string{
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact","arguments":{"id":6}}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact","arguments":{"id":6}}} x`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact","arguments":{"id":6}}}{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_deals"}}`,
	`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_deals"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"update_deal_stage","arguments":{"id":1,"stage":"won"}}}]`,
	`[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_deals"}}] x`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","NAME":"get_contact"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"NAME":"get_contact"}}`,
	`{"jsonrpc":"2.0","id":1,"METHOD":"tools/call","method":"tools/list","params":{"name":"get_contact"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_contacts","name":"get_contact"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"n\u0061me":"get\u005fcontact"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact\ud800"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact","_meta":1}}`,
	`{"jsonrpc":"2.0","method":"tools/call","params":{"name":"get_contact"}}`,
	`{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"get_contact"}}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call"}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}`,
	`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`,
	`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
	`[]`,
	`[1,{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact"}}]`,
	"  \n" + `{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"create_contact","arguments":{"name":"x","email":"x@example.com"}}}` + "\r\n",
	"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"get_contact\xff\"}}",
	strings.Repeat("[", 1001) + strings.Repeat("]", 1001),
}

// FuzzGateJudgesWhatGoSDKRuns holds the scope gate's reading of a POST
// body to go-sdk's, for any body:
//   - behind the gate, a token holding no scope runs no tool;
//   - every tools/call go-sdk dispatches was judged by the gate under the
//     same name, and every call the gate judged was dispatched, unless
//     go-sdk refused it (an HTTP error for the body, or a JSON-RPC error).
func FuzzGateJudgesWhatGoSDKRuns(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	as := rstest.NewServer()
	f.Cleanup(as.Close)
	rs, err := resourceserver.New(resourceserver.Config{
		Resource: "http://127.0.0.1:9/mcp",
		Issuers:  []resourceserver.Issuer{{URL: as.Issuer()}},
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(rs.Close)
	rec := newSDKRecorder()
	gov, err := New(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	table := mcp.NewServer(&mcp.Implementation{Name: "table"}, nil)
	for _, name := range fuzzTools {
		err := AddRawTool(gov, table, &mcp.Tool{Name: name, InputSchema: json.RawMessage(`{"type":"object"}`)}, Policy{Scopes: []string{"crm." + name}},
			func(context.Context, *Call) (*mcp.CallToolResult, error) { return nil, nil })
		if err != nil {
			f.Fatal(err)
		}
	}
	g := gov.Gate(rs, rec)
	token := func(scopes ...string) *resourceserver.Token {
		return &resourceserver.Token{Issuer: as.Issuer(), Subject: "mallory", ClientID: "c", JTI: "j", Scopes: scopes,
			Expiry: time.Now().Add(time.Hour), Claims: map[string]any{"iat": float64(time.Now().Unix())}}
	}
	none, every := token(), token("crm")

	f.Fuzz(func(t *testing.T, body []byte) {
		judged, err := readCalls(body)

		w, _, ran := rec.post(g, none, body)
		if len(ran) > 0 {
			t.Fatalf("a token without scopes ran %v (gate answered %d, judged %q, %v)", ran, w.Code, judged, err)
		}

		w, dispatched, _ := rec.post(g, every, body)
		if err != nil {
			if w.Code != http.StatusBadRequest || len(dispatched) > 0 {
				t.Fatalf("refused body (%v) answered %d and dispatched %q", err, w.Code, dispatched)
			}
			return
		}
		left := slices.Clone(judged)
		for _, d := range dispatched {
			i := slices.Index(left, d)
			if i < 0 {
				t.Fatalf("go-sdk dispatched %q, which the gate did not judge (judged %q)", d, judged)
			}
			left = slices.Delete(left, i, i+1)
		}
		if len(left) == 0 {
			return
		}
		if w.Code < 300 && len(left) > jsonRPCErrors(w.Body.Bytes()) {
			t.Fatalf("the gate judged %q that go-sdk neither dispatched nor refused (answer %d %s)", left, w.Code, w.Body)
		}
	})
}

// FuzzReadRequestIsDecodeMessage holds readRequest to go-sdk's
// jsonrpc.DecodeMessage, for any message the gate passes on: every request
// go-sdk decodes, readRequest reads with the same method and params; what
// go-sdk cannot decode or reads as a response, readRequest does not read
// as a request, unless an "error" member (which readRequest does not
// check) is what go-sdk refused.
func FuzzReadRequestIsDecodeMessage(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"result":{}}`,
		`{"jsonrpc":"2.0","id":"x","method":"tools/call","error":{"code":1.5}}`,
		`{"jsonrpc":"2.0","id":true,"method":"tools/call"}`,
		`{"jsonrpc":2,"id":1,"method":"tools/call"}`,
		`{"jsonrpc":"2.0","id":1,"method":null}`,
		`{"jsonrpc":"2.0","id":-0.5e3,"method":"tools/call","params":[]}`,
		`{"Jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"tools/call"}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if checkUnambiguous(raw) != nil {
			return
		}
		method, params, ok := readRequest(raw)
		msg, err := jsonrpc.DecodeMessage(raw)
		req, isReq := msg.(*jsonrpc.Request)
		if err == nil && isReq {
			if !ok || method != req.Method || !bytes.Equal(params, req.Params) {
				t.Fatalf("go-sdk reads a request (%q, params %s), readRequest %v (%q, params %s)", req.Method, req.Params, ok, method, params)
			}
			return
		}
		if ok {
			var m map[string]json.RawMessage
			if json.Unmarshal(raw, &m) != nil || m["error"] == nil {
				t.Fatalf("readRequest reads a request (%q) that go-sdk reads as %T, %v", method, msg, err)
			}
		}
	})
}

// FuzzCheckKeysIsTheTokenWalk holds checkKeys, the one-pass check of a
// valid body, to explainInvalid's token walk, which checks any body: the
// same verdict, in the same words.
func FuzzCheckKeysIsTheTokenWalk(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		`{"a":{"a":1},"b":[{"a":1,"a":2}]}`,
		`{"a\"b":1,"a\u0022b":2}`,
		`{"k":"{\"k\":1,\"k\":2}"}`,
		`[{"x":1},{"x":1}]`,
		`{"\\":1,"\\\\":2,"\u005c":3}`,
		strings.Repeat(`{"a":`, 1000) + `1` + strings.Repeat(`}`, 1000),
		strings.Repeat(`{"a":`, 1001) + `1` + strings.Repeat(`}`, 1001),
		`{"a0":0,"a1":1,"a2":2,"a3":3,"a4":4,"a5":5,"a6":6,"a7":7,"a8":8,"a9":9,"a10":0,"a11":1,"a12":2,"a13":3,"a14":4,"a15":5,"a16":6,"a17":7,"a3":3}`,
		`{"a0":0,"a1":1,"a2":2,"a3":3,"a4":4,"a5":5,"a6":6,"a7":7,"a8":8,"a9":9,"a10":0,"a11":1,"a12":2,"a13":3,"a14":4,"a15":5,"a16":{"a16":1},"a17":7}`,
	} {
		f.Add([]byte(s))
	}
	msg := func(err error) string {
		if err == nil {
			return ""
		}
		return err.Error()
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !utf8.Valid(body) || !json.Valid(body) {
			return
		}
		if got, want := msg(checkKeys(body)), msg(explainInvalid(body)); got != want {
			t.Fatalf("checkKeys says %q, the token walk %q", got, want)
		}
	})
}

// FuzzGateHeaders: on a 2026-07-28 request the gate judges the tool its
// Mcp-Method and Mcp-Name headers name, without reading the body; a token
// without scopes runs no tool whatever the headers and the body say, since
// go-sdk refuses headers that disagree with the body.
func FuzzGateHeaders(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), "tools/call", "list_contacts")
		f.Add([]byte(s), "tools/list", "")
	}
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact",`+
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`), "tools/call", "get_contact")
	f.Add([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_contact",`+
		`"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`), "tools/call", "nothing")
	as := rstest.NewServer()
	f.Cleanup(as.Close)
	rs, err := resourceserver.New(resourceserver.Config{
		Resource: "http://127.0.0.1:9/mcp", Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(rs.Close)
	rec := newSDKRecorder()
	gov, _ := New(Config{Logger: slog.New(slog.DiscardHandler)})
	table := mcp.NewServer(&mcp.Implementation{Name: "table"}, nil)
	for _, name := range fuzzTools {
		_ = AddRawTool(gov, table, &mcp.Tool{Name: name, InputSchema: json.RawMessage(`{"type":"object"}`)}, Policy{Scopes: []string{"crm." + name}},
			func(context.Context, *Call) (*mcp.CallToolResult, error) { return nil, nil })
	}
	g := gov.Gate(rs, rec)
	none := &resourceserver.Token{Issuer: as.Issuer(), Subject: "mallory", ClientID: "c", JTI: "j", Expiry: time.Now().Add(time.Hour)}
	f.Fuzz(func(t *testing.T, body []byte, method, name string) {
		rec.mu.Lock()
		rec.dispatched, rec.ran = nil, nil
		rec.mu.Unlock()
		r := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:9/mcp", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Accept", "application/json, text/event-stream")
		r.Header.Set("MCP-Protocol-Version", "2026-07-28")
		r.Header.Set("Mcp-Method", method)
		r.Header.Set("Mcp-Name", name)
		r = r.WithContext(resourceserver.ContextWithToken(r.Context(), none))
		w := httptest.NewRecorder()
		g.ServeHTTP(w, r)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.ran) > 0 {
			t.Fatalf("a token without scopes ran %v (headers %q %q, answer %d)", rec.ran, method, name, w.Code)
		}
	})
}
