package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/require"
)

type idIn struct {
	ID int64 `json:"id,omitempty"`
}

type idOut struct {
	ID int64 `json:"id"`
}

// newServer is a go-sdk server behind RequireBearerToken that accepts the
// token "good", with an echo tool, a tool that always fails, and a count
// of the calls it served. Stateless, it serves 2026-07-28 (and
// initialize-based revisions); with sessions, only the latter.
func newServer(t *testing.T, jsonResponse, stateless bool) (url string, served *atomic.Int64) {
	served = new(atomic.Int64)
	s := mcp.NewServer(&mcp.Implementation{Name: "test", Version: "0"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in idIn) (*mcp.CallToolResult, idOut, error) {
		served.Add(1)
		return nil, idOut(in), nil
	})
	mcp.AddTool(s, &mcp.Tool{Name: "fail"}, func(context.Context, *mcp.CallToolRequest, idIn) (*mcp.CallToolResult, idOut, error) {
		return nil, idOut{}, errors.New("this tool always fails")
	})
	verify := func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		if token != "good" {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: "u", Expiration: time.Now().Add(time.Hour)}, nil
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{JSONResponse: jsonResponse, Stateless: stateless})
	srv := httptest.NewServer(auth.RequireBearerToken(verify, nil)(h))
	t.Cleanup(srv.Close)
	return srv.URL, served
}

func TestRunCounts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		json     bool
		protocol string
	}{
		{"2026-07-28 event stream", false, DefaultProtocolVersion},
		{"2026-07-28 JSON", true, DefaultProtocolVersion},
		{"sessions event stream", false, LegacyProtocolVersion},
		{"sessions JSON", true, LegacyProtocolVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, served := newServer(t, tc.json, perRequest(tc.protocol))
			var progress strings.Builder
			var window []bool
			r, err := Run(t.Context(), Config{
				ProtocolVersion: tc.protocol,
				Window:          func(end bool) { window = append(window, end) },
				URL:             url, Tokens: []string{"good"}, Concurrency: 4, Sessions: 8,
				Duration: 300 * time.Millisecond, Warmup: 150 * time.Millisecond,
				Mix:      []Call{{Tool: "echo", Args: []byte(`{"id":7}`)}, {Tool: "echo"}},
				Progress: &progress, ProgressInterval: 100 * time.Millisecond, Label: "test",
			})
			require.NoError(t, err)
			require.Zero(t, r.Errors, "%v", r.ErrorKinds)
			require.Positive(t, r.Calls)
			require.Equal(t, 300*time.Millisecond, r.Duration)
			// Warmup calls and calls that ended after the window are
			// served but not counted.
			require.LessOrEqual(t, r.Calls, served.Load())
			require.InDelta(t, float64(r.Calls)/0.3, r.Throughput(), 0.001)
			require.Positive(t, r.Percentile(50))
			require.LessOrEqual(t, r.Percentile(50), r.Percentile(90))
			require.LessOrEqual(t, r.Percentile(90), r.Percentile(99))
			require.Equal(t, []bool{false, true}, window, "the window opens once and closes once")
			require.Contains(t, progress.String(), "test  warmup")
			require.Contains(t, progress.String(), "req/s  0 errors")
		})
	}
}

func TestRunCountsToolErrors(t *testing.T) {
	url, _ := newServer(t, false, true)
	r, err := Run(t.Context(), Config{URL: url, Tokens: []string{"good"}, Concurrency: 2, Duration: 200 * time.Millisecond,
		Mix: []Call{{Tool: "echo"}, {Tool: "fail"}, {Tool: "missing"}}})
	require.NoError(t, err)
	require.Positive(t, r.Calls)
	require.Positive(t, r.Errors)
	require.Len(t, r.ErrorKinds, 2, "%v", r.ErrorKinds)
	for msg := range r.ErrorKinds {
		require.True(t, strings.HasPrefix(msg, "fail: the tool answered isError: this tool always fails") ||
			strings.HasPrefix(msg, "missing: JSON-RPC error"), msg)
	}
}

func TestRunRefusedToken(t *testing.T) {
	for protocol, first := range map[string]string{
		DefaultProtocolVersion: "server/discover",
		LegacyProtocolVersion:  "initialize",
	} {
		t.Run(protocol, func(t *testing.T) {
			url, _ := newServer(t, false, perRequest(protocol))
			_, err := Run(t.Context(), Config{URL: url, Tokens: []string{"bad"}, Concurrency: 3, Duration: time.Second, ProtocolVersion: protocol})
			require.ErrorContains(t, err, "session 1: "+first+": HTTP 401 Unauthorized")
			require.ErrorContains(t, err, "(and 2 more)")
			require.NotContains(t, err.Error(), "bad", "the token is not repeated")
		})
	}
}

// TestRequestsAreTheCurrentRevision holds a 2026-07-28 call to the shape
// go-sdk v1.8.0's client sends: the standard headers, and the version and
// capabilities in params._meta; no initialize before it.
func TestRequestsAreTheCurrentRevision(t *testing.T) {
	type seen struct {
		header http.Header
		body   map[string]any
	}
	var mu sync.Mutex
	var got []seen
	url, _ := newServer(t, false, true)
	spy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		require.NoError(t, json.Unmarshal(b, &m))
		mu.Lock()
		got = append(got, seen{r.Header.Clone(), m})
		mu.Unlock()
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, url, bytes.NewReader(b))
		req.Header = r.Header
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(spy.Close)
	r, err := Run(t.Context(), Config{URL: spy.URL, Tokens: []string{"good"}, Concurrency: 1, Duration: 50 * time.Millisecond,
		Mix: []Call{{Tool: "echo", Args: []byte(`{"id":7}`)}}})
	require.NoError(t, err)
	require.Zero(t, r.Errors, "%v", r.ErrorKinds)
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, len(got), 2)
	wantMeta := map[string]any{
		"io.modelcontextprotocol/protocolVersion":    "2026-07-28",
		"io.modelcontextprotocol/clientInfo":         map[string]any{"name": "crm-mcp-load", "version": "bench"},
		"io.modelcontextprotocol/clientCapabilities": map[string]any{},
	}
	for i, s := range got {
		method := "tools/call"
		if i == 0 {
			method = "server/discover"
		}
		require.Equal(t, method, s.body["method"], "request %d", i)
		require.Equal(t, "2026-07-28", s.header.Get("MCP-Protocol-Version"))
		require.Equal(t, method, s.header.Get("Mcp-Method"))
		require.Empty(t, s.header.Get("Mcp-Session-Id"))
		params := s.body["params"].(map[string]any)
		require.Equal(t, wantMeta, params["_meta"])
		if method == "tools/call" {
			require.Equal(t, "echo", s.header.Get("Mcp-Name"))
			require.Equal(t, "echo", params["name"])
			require.Equal(t, map[string]any{"id": 7.0}, params["arguments"])
		} else {
			require.Empty(t, s.header.Get("Mcp-Name"))
		}
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	_, err := Run(t.Context(), Config{Concurrency: 4, Sessions: 2, Mix: []Call{}})
	for _, want := range []string{"URL is required", "bearer token is required", "sessions (2) must be at least the concurrency (4)", "duration must be positive", "the mix has no call"} {
		require.ErrorContains(t, err, want)
	}
}

func TestParseCall(t *testing.T) {
	calls, err := ParseCall(`3*get_contact {"id": 3}`)
	require.NoError(t, err)
	require.Len(t, calls, 3)
	require.Equal(t, `get_contact {"id": 3}`, calls[0].String())

	calls, err = ParseCall("list_contacts")
	require.NoError(t, err)
	require.Equal(t, []Call{{Tool: "list_contacts"}}, calls)

	for in, want := range map[string]string{
		"":                   "want [N*]tool",
		"0*list_contacts":    "weight before *",
		"x*list_contacts":    "weight before *",
		"get_contact [1]":    "must be a JSON object",
		"get_contact {nope}": "must be a JSON object",
	} {
		_, err := ParseCall(in)
		require.ErrorContains(t, err, want, in)
	}
}

func TestDefaultMixAvoidsTheRestrictedContact(t *testing.T) {
	for _, c := range DefaultMix() {
		require.Contains(t, []string{"list_contacts", "get_contact"}, c.Tool)
		require.NotEqual(t, `{"id":6}`, string(c.Args), "contact 6 is the seed's restricted one")
	}
}
