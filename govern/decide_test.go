package govern_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// TestDecision covers each reason a call needs approval, and calls that
// need none, through go-sdk's client, the Gate and a Duo fake.
func TestDecision(t *testing.T) {
	tests := []struct {
		name   string
		tool   string
		args   map[string]any
		reason string // "" for no push
		codes  []string
	}{
		{"plain read", "everything.echo", map[string]any{"message": "hi"}, "",
			[]string{"tool.called/ok"}},
		{"always", "everything.get-env", nil, "the tool always needs approval",
			[]string{"stepup.requested/requested", "stepup.approved/approved", "tool.called/ok"}},
		{"over a threshold", "everything.trigger-long-running-operation", map[string]any{"duration": 11}, "duration is over 10",
			[]string{"stepup.requested/requested", "stepup.approved/approved", "tool.called/ok"}},
		{"at the threshold", "everything.trigger-long-running-operation", map[string]any{"duration": 10}, "", []string{"tool.called/ok"}},
		{"a sensitive term in terms_in", "files.read_text_file", map[string]any{"path": "/srv/shared/Defence/plan.txt"}, `the request mentions "defence"`,
			[]string{"stepup.requested/requested", "stepup.approved/approved", "tool.called/ok"}},
		{"a term outside terms_in", "everything.echo", map[string]any{"message": "defence"}, "", []string{"tool.called/ok"}},
		{"a write", "files.write_file", map[string]any{"path": "/srv/a", "content": "x"}, "the call changes data",
			[]string{"stepup.requested/requested", "stepup.approved/approved", "tool.called/started", "tool.called/ok"}},
		{"argument is", "notes.list_notes", map[string]any{"include_restricted": true}, "the call asks for restricted records",
			[]string{"stepup.requested/requested", "stepup.approved/approved", "tool.called/ok"}},
		{"argument is not", "notes.list_notes", map[string]any{"include_restricted": false}, "", []string{"tool.called/ok"}},
		{"a term anywhere (*)", "notes.list_notes", map[string]any{"query": "military"}, `the request mentions "military"`,
			[]string{"stepup.requested/requested", "stepup.approved/approved", "tool.called/ok"}},
		{"a restricted record", "notes.get_note", map[string]any{"id": 6}, "the record it names is classified restricted",
			[]string{"stepup.requested/requested", "stepup.approved/approved", "tool.called/ok"}},
		{"a public record", "notes.get_note", map[string]any{"id": 1}, "", []string{"tool.called/ok"}},
		{"an unknown record", "notes.get_note", map[string]any{"id": 99}, "", []string{"tool.called/error"}},
		{"invalid arguments", "everything.get-sum", map[string]any{"a": "two", "b": 3}, "", []string{"tool.called/invalid"}},
	}
	e := newEnv(t, envOpts{})
	cs := e.connect(t, e.token("alice", all...), nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.duo.Pushes())
			res := call(t, cs, tt.tool, tt.args)
			pushes := e.duo.Pushes()[before:]
			if tt.reason == "" {
				assert.Empty(t, pushes)
			} else if assert.Len(t, pushes, 1) {
				assert.Equal(t, tt.reason, pushes[0].PushInfo.Get("reason"))
				assert.False(t, res.IsError, text(res))
			}
			assert.Equal(t, tt.codes, e.ev.codes())
		})
	}
}

// TestGoldenPushes pins the push of each example tool: action and rows.
func TestGoldenPushes(t *testing.T) {
	e := newEnv(t, envOpts{tune: func(c *govern.Config, _ *stepup.Config) {
		c.AlwaysTools = []string{"everything.get-sum", "everything.echo"}
	}})
	cs := e.connect(t, e.token("alice", all...), nil)
	calls := []struct {
		tool string
		args map[string]any
	}{
		{"everything.get-sum", map[string]any{"a": 2, "b": 3}},
		{"everything.echo", map[string]any{"message": "hello"}},
		{"everything.get-env", nil},
		{"everything.trigger-long-running-operation", map[string]any{"duration": 30, "steps": 5}},
		{"files.write_file", map[string]any{"path": "/srv/shared/report.txt", "content": "four"}},
		{"files.read_text_file", map[string]any{"path": "/srv/shared/defence/plan.txt", "head": 10}},
		{"files.read_text_file", map[string]any{"path": "/srv/shared/\u202etxt.exe/defence"}},
		{"notes.get_note", map[string]any{"id": 6}},
		{"notes.update_note", map[string]any{"id": 6, "title": "Aegis renewal"}},
		{"notes.list_notes", map[string]any{"query": `defence "quoted"`}},
	}
	var b strings.Builder
	for _, c := range calls {
		before := len(e.duo.Pushes())
		res := call(t, cs, c.tool, c.args)
		require.False(t, res.IsError, "%s: %s", c.tool, text(res))
		pushes := e.duo.Pushes()[before:]
		require.Len(t, pushes, 1, c.tool)
		args, _ := json.Marshal(c.args)
		fmt.Fprintf(&b, "%s %s\n", c.tool, strconv.QuoteToASCII(string(args)))
		for _, kv := range strings.Split(pushes[0].RawPushInfo, "&") {
			k, v, _ := strings.Cut(kv, "=")
			fmt.Fprintf(&b, "\t%s = %s\n", unescape(k), unescape(v))
		}
	}
	golden(t, "pushes.golden", b.String())
}

func unescape(s string) string {
	v, err := urlUnescape(s)
	if err != nil {
		return s
	}
	return v
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run with -update to create it")
	assert.Equal(t, string(want), got)
}

// TestEscapingAndBounds: a value that would lie on the phone is escaped,
// one too long to show is refused before any push, naming the argument.
func TestEscapingAndBounds(t *testing.T) {
	e := newEnv(t, envOpts{})
	cs := e.connect(t, e.token("alice", all...), nil)

	res := call(t, cs, "files.write_file", map[string]any{"path": "/srv/evil\u202etxt.exe", "content": "x"})
	require.False(t, res.IsError, text(res))
	p := e.duo.Pushes()[0]
	assert.Equal(t, `Write 1 bytes to /srv/evil\u202etxt.exe`, p.PushInfo.Get("action"))
	assert.Equal(t, `/srv/evil\u202etxt.exe`, p.PushInfo.Get("path"))
	e.ev.codes()
	e.runs()

	long := "/srv/" + strings.Repeat("a", 300)
	res = call(t, cs, "files.write_file", map[string]any{"path": long, "content": "x"})
	require.True(t, res.IsError)
	assert.Contains(t, text(res), "path is too long to show on the phone")
	assert.Contains(t, text(res), "no approval was asked for")
	assert.Len(t, e.duo.Pushes(), 1, "no push for what cannot be shown")
	assert.Equal(t, []string{"stepup.failed/unshowable"}, e.ev.codes())
	assert.Empty(t, e.runs())

	// A quote in a value cannot close the sentence's quotes.
	res = call(t, cs, "notes.list_notes", map[string]any{"query": `x" and everything "defence`})
	require.False(t, res.IsError, text(res))
	assert.Equal(t, `Search notes for "x\" and everything \"defence"`, e.duo.Pushes()[1].PushInfo.Get("action"))

	// A row too long for the phone is refused the same way.
	res = call(t, cs, "files.write_file", map[string]any{"path": "/srv/a", "content": strings.Repeat("c", 301)})
	require.True(t, res.IsError)
	assert.Contains(t, text(res), "content is too long to show")
}

// TestNoOracle: while no push can be sent, calls that name a record are
// refused alike whether or not it is restricted, before it is read, with
// the same events; a search's refusal does not depend on what it matches.
func TestNoOracle(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.duo.Script("alice", duotest.Deny)
	cs := e.connect(t, e.token("alice", all...), nil)
	require.True(t, call(t, cs, "notes.get_note", map[string]any{"id": 6}).IsError)
	require.Len(t, e.duo.Pushes(), 1)
	e.ev.codes()

	until := regexp.MustCompile(`\d\d:\d\d:\d\d UTC \(in \d+s\)`)
	// The structure of each refusal: its text, the events on record (the
	// steps taken, so the same work and waits), and the Duo requests.
	probe := func(args map[string]any) (string, []string) {
		requests := len(e.duo.Requests())
		res := call(t, cs, "notes.get_note", args)
		require.True(t, res.IsError)
		assert.Equal(t, requests, len(e.duo.Requests()), "no Duo request while blocked")
		return until.ReplaceAllString(text(res), "WHEN"), e.ev.codes()
	}
	hitText, hitCodes := probe(map[string]any{"id": 6})
	missText, missCodes := probe(map[string]any{"id": 1})
	unknownText, unknownCodes := probe(map[string]any{"id": 99})
	assert.Equal(t, hitText, missText)
	assert.Equal(t, hitText, unknownText, "not even existence shows while blocked")
	assert.Equal(t, hitCodes, missCodes)
	assert.Equal(t, hitCodes, unknownCodes)
	assert.Equal(t, []string{"stepup.failed/cooldown"}, hitCodes)
	assert.NotContains(t, hitText, "restricted")

	// Searches name no record: they run, restricted notes left out,
	// whether the text matches one or not.
	a := call(t, cs, "notes.list_notes", map[string]any{"query": "aegis"})
	b := call(t, cs, "notes.list_notes", map[string]any{"query": "aegiz"})
	assert.Equal(t, text(a), text(b))
	assert.Len(t, e.duo.Pushes(), 1)

	// A refused push tells the agent its own reasons, not the data's.
	e2 := newEnv(t, envOpts{})
	e2.duo.Script("alice", duotest.Deny)
	cs2 := e2.connect(t, e2.token("alice", all...), nil)
	res := call(t, cs2, "notes.get_note", map[string]any{"id": 6})
	require.True(t, res.IsError)
	assert.NotContains(t, text(res), "restricted")
	assert.Contains(t, text(res), "needs approval on your phone (Duo Push). ")
}

// TestOnePushForIdenticalCalls: concurrent identical calls share one push.
func TestOnePushForIdenticalCalls(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.duo.Script("alice", duotest.Manual)
	cs := e.connect(t, e.token("alice", all...), nil)
	const n = 20
	var wg sync.WaitGroup
	results := make([]*mcp.CallToolResult, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Key order and spacing differ: one canonical form.
			args := map[string]any{"id": 6}
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "notes.get_note", Arguments: args})
			if assert.NoError(t, err) {
				results[i] = res
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.duo.WaitForPush(ctx)
	require.NoError(t, err)
	time.Sleep(200 * time.Millisecond) // let every call join the push
	require.NoError(t, e.duo.Decide(p.TxID, true))
	wg.Wait()
	assert.Len(t, e.duo.Pushes(), 1, "identical calls, one push")
	for _, res := range results {
		require.NotNil(t, res)
		assert.False(t, res.IsError, text(res))
	}
}

// TestGrantsAndOnce: an approval covers the same read for the grant TTL,
// any spelling of it; a write's approval covers that one call.
func TestGrantsAndOnce(t *testing.T) {
	e := newEnv(t, envOpts{})
	cs := e.connect(t, e.token("alice", all...), nil)
	require.False(t, call(t, cs, "files.read_text_file", map[string]any{"path": "/defence", "head": 1}).IsError)
	// Another spelling of the same call: member order and spacing.
	require.False(t, call(t, cs, "files.read_text_file", json.RawMessage(`{ "path" : "/defence",  "head":1 }`)).IsError)
	assert.Len(t, e.duo.Pushes(), 1, "a grant covers the same call, however it is spelled")
	evs := e.ev.take()
	assert.Equal(t, "grant", evs[len(evs)-2].Via)

	require.False(t, call(t, cs, "files.read_text_file", map[string]any{"path": "/defence", "head": 2}).IsError)
	assert.Len(t, e.duo.Pushes(), 2, "another call needs its own approval")

	args := map[string]any{"path": "/srv/a", "content": "x"}
	require.False(t, call(t, cs, "files.write_file", args).IsError)
	require.False(t, call(t, cs, "files.write_file", args).IsError)
	assert.Len(t, e.duo.Pushes(), 4, "each write needs its own approval")
}

// TestProgressWhileWaiting: the client hears why the call waits.
func TestProgressWhileWaiting(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.duo.Script("alice", duotest.Manual)
	progress := make(chan string, 10)
	cs := e.connect(t, e.token("alice", all...), &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) { progress <- req.Params.Message },
	})
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		params := &mcp.CallToolParams{Name: "everything.get-env"}
		params.SetProgressToken("p-1")
		res, err := cs.CallTool(context.Background(), params)
		assert.NoError(t, err)
		done <- res
	}()
	select {
	case msg := <-progress:
		assert.Contains(t, msg, "Duo Push")
	case <-time.After(10 * time.Second):
		t.Fatal("no progress while waiting for approval")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.duo.WaitForPush(ctx)
	require.NoError(t, err)
	require.NoError(t, e.duo.Decide(p.TxID, true))
	res := <-done
	require.False(t, res.IsError, text(res))
}

// TestRecorderFailsClosed: a decision that cannot be recorded is not
// acted on.
func TestRecorderFailsClosed(t *testing.T) {
	e := newEnv(t, envOpts{})
	cs := e.connect(t, e.token("alice", all...), nil)
	e.ev.fail = true
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"everything.echo", map[string]any{"message": "hi"}},
		{"everything.get-env", nil},
		{"files.write_file", map[string]any{"path": "/srv/a", "content": "x"}},
	} {
		res := call(t, cs, c.tool, c.args)
		require.True(t, res.IsError, c.tool)
		assert.Contains(t, text(res), "could not write its audit trail")
		assert.NotContains(t, text(res), "disk full", "internals stay in the log")
	}
	assert.Empty(t, e.duo.Pushes(), "no push that is not on record")
	assert.Equal(t, []string{"everything.echo"}, e.runs(), "only the read ran, and its result was withheld")
}

// TestStepUpOff: calls that need approval run, on record as stepup_off.
func TestStepUpOff(t *testing.T) {
	e := newEnv(t, envOpts{stepUpOff: true})
	cs := e.connect(t, e.token("alice", all...), nil)
	res := call(t, cs, "notes.list_notes", map[string]any{"include_restricted": true})
	require.False(t, res.IsError, text(res))
	assert.Contains(t, text(res), "Aegis", "approved for sensitive data")
	assert.Equal(t, []string{"stepup.approved/stepup_off", "tool.called/ok"}, e.ev.codes())
}

// TestEventCarriesWhatTheClientSent: args_sha256 is the SHA-256 of the
// bytes the client sent, and one request id marks every line of a call.
func TestEventCarriesWhatTheClientSent(t *testing.T) {
	e := newEnv(t, envOpts{})
	cs := e.connect(t, e.token("alice", all...), nil)
	res := call(t, cs, "everything.get-env", map[string]any{})
	require.False(t, res.IsError, text(res))
	evs := e.ev.take()
	require.Len(t, evs, 3)
	for _, ev := range evs {
		assert.Equal(t, evs[0].RequestID, ev.RequestID)
		assert.Equal(t, sha256Hex(ev.Args), ev.ArgsSHA256)
		assert.Equal(t, "alice", ev.Token.Subject)
	}
	assert.Len(t, evs[0].RequestID, 16)
	assert.Equal(t, "push", evs[1].Via)
	assert.NotEmpty(t, evs[1].DuoTxID)
	a := evs[2].AuditEvent()
	assert.Equal(t, "ok", a.Outcome)
}

// TestGrantKeyKeepsItsPartsApart: an approval for subject "x y" through
// client "z" does not cover subject "x" through client "y z", though both
// name the same Duo user and the parts, joined with spaces, read the same.
func TestGrantKeyKeepsItsPartsApart(t *testing.T) {
	e := newEnv(t, envOpts{tune: func(c *govern.Config, _ *stepup.Config) { c.UsernameClaim = "duo_user" }})
	token := func(sub, client string) string {
		claims := e.as.Claims(sub, e.resource, all...)
		claims["client_id"], claims["duo_user"] = client, "alice"
		return e.as.Mint(claims)
	}
	args := map[string]any{"path": "/defence", "head": 1}
	first := e.connect(t, token("x y", "z"), nil)
	require.False(t, call(t, first, "files.read_text_file", args).IsError)
	require.False(t, call(t, first, "files.read_text_file", args).IsError)
	require.Len(t, e.duo.Pushes(), 1, "the grant covers the same principal and client")
	second := e.connect(t, token("x", "y z"), nil)
	require.False(t, call(t, second, "files.read_text_file", args).IsError)
	assert.Len(t, e.duo.Pushes(), 2, "another principal and client need their own approval")
}
