package tools_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/crm"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
	"github.com/crm-mcp/crm-mcp/tools"
)

// stepUpEnv is an endpoint whose sensitive calls push to a fake Duo over
// TLS with real signatures.
type stepUpEnv struct {
	*env
	duo *duotest.Server
}

func newStepUpEnv(t testing.TB, tune ...func(*stepup.Config, *tools.StepUp)) *stepUpEnv {
	t.Helper()
	return newStepUpEnvConfig(t, nil, tune...)
}

// newStepUpEnvConfig is newStepUpEnv with the endpoint's Config changed by
// mutate too.
func newStepUpEnvConfig(t testing.TB, mutate func(*tools.Config), tune ...func(*stepup.Config, *tools.StepUp)) *stepUpEnv {
	t.Helper()
	duo := duotest.NewServer()
	t.Cleanup(duo.Close)
	duo.SetDefault(duotest.Approve)
	e := newEnv(t, func(c *tools.Config) {
		gcfg := stepup.Config{
			IKey: duo.IKey(), SKey: duo.SKey(), Host: duo.Host(), CACertPEM: duo.CACertPEM(),
			PollInterval: 20 * time.Millisecond, Timeout: 10 * time.Second,
			Logger: slog.New(slog.DiscardHandler),
		}
		terms, err := stepup.NewTerms(stepup.DefaultSensitiveTerms)
		require.NoError(t, err)
		su := &tools.StepUp{Terms: terms, OnWrite: true}
		for _, f := range tune {
			f(&gcfg, su)
		}
		su.Guard, err = stepup.New(gcfg)
		require.NoError(t, err)
		c.StepUp = su
		if mutate != nil {
			mutate(c)
		}
	})
	return &stepUpEnv{env: e, duo: duo}
}

func resultJSON(t testing.TB, res *mcp.CallToolResult) string {
	b, err := json.Marshal(res.StructuredContent)
	require.NoError(t, err)
	return string(b) + text(res)
}

// TestStepUpPolicy covers what pushes and what does not, including the
// ways around a words-only policy.
func TestStepUpPolicy(t *testing.T) {
	tests := []struct {
		name      string
		tool      string
		args      map[string]any
		push      bool
		wantRiley bool // the restricted record (contact or deal) is in the result
	}{
		{"plain listing withholds, no push", "list_contacts", nil, false, false},
		{"paging past the withheld record", "list_contacts", map[string]any{"offset": 5, "limit": 200}, false, false},
		{"a non-matching search", "list_contacts", map[string]any{"query": "health"}, false, false},
		{"defence in the query", "list_contacts", map[string]any{"query": "defence"}, true, true},
		{"mixed case", "list_contacts", map[string]any{"query": "DeFeNsE contractors"}, true, false},
		{"Aegis matches the record, returns nothing restricted", "list_contacts", map[string]any{"query": "Aegis"}, false, false},
		{"a surname", "list_contacts", map[string]any{"query": "vance"}, false, false},
		{"include_restricted", "list_contacts", map[string]any{"include_restricted": true}, true, true},
		{"include_restricted with a search", "list_contacts", map[string]any{"query": "Aegis", "include_restricted": true}, true, true},
		{"include_restricted pushes whatever it matches", "list_contacts", map[string]any{"query": "zzz-nothing", "include_restricted": true}, true, false},
		{"deals, include_restricted", "list_deals", map[string]any{"include_restricted": true}, true, true},
		{"an id", "get_contact", map[string]any{"id": 6}, true, true},
		{"an unrestricted id", "get_contact", map[string]any{"id": 1}, false, false},
		{"deals of the restricted contact", "list_deals", map[string]any{"contact_id": 6}, true, true},
		{"plain deals listing", "list_deals", nil, false, false},
		{"a write", "update_contact", map[string]any{"id": 1, "phone": "+1 555 0100"}, true, false},
		{"a term inside write arguments", "create_contact", map[string]any{"name": "Pat Lee", "email": "pat@example.com", "company": "Northwind Military Supply"}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newStepUpEnv(t)
			cs := e.connect(t, e.token("alice", "crm"))
			res := call(t, cs, tt.tool, tt.args)
			require.False(t, res.IsError, text(res))
			assert.Equal(t, tt.push, len(e.duo.Pushes()) == 1, "pushes: %d", len(e.duo.Pushes()))
			assert.LessOrEqual(t, len(e.duo.Pushes()), 1)
			got := resultJSON(t, res)
			assert.Equal(t, tt.wantRiley, strings.Contains(got, "Riley Vance") || strings.Contains(got, "Secure communications"))
		})
	}
}

func TestStepUpPushShowsTheCall(t *testing.T) {
	e := newStepUpEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	res := call(t, cs, "list_contacts", map[string]any{"query": "defence"})
	require.False(t, res.IsError, text(res))
	pushes := e.duo.Pushes()
	require.Len(t, pushes, 1)
	p := pushes[0]
	assert.Equal(t, "alice", p.User, "the Duo user comes from the token")
	assert.Equal(t, "AI agent", p.Type)
	assert.Equal(t, `Search contacts for "defence"`, p.PushInfo.Get("action"))
	assert.Equal(t, "included", p.PushInfo.Get("restricted"))
	assert.Equal(t, `the request mentions "defence"`, p.PushInfo.Get("reason"), "a search is judged by its words, not by what it matches")
	assert.Equal(t, "registered app rstest-c…", p.PushInfo.Get("client"))
}

func TestStepUpOutcomes(t *testing.T) {
	tests := []struct {
		outcome duotest.Outcome
		want    string
	}{
		{duotest.Deny, "denied"},
		{duotest.Fraud, "fraud"},
		{duotest.Timeout, "time"},
		{duotest.LockedOut, "locked"},
		{duotest.Enroll, "enrol"},
		{duotest.PreauthDeny, "denies"},
		{duotest.Unauthorized401, "DUO_AUTH_IKEY"},
		{duotest.ServerError500, "duo"},
	}
	for _, tt := range tests {
		t.Run(tt.outcome.String(), func(t *testing.T) {
			e := newStepUpEnv(t)
			e.duo.Script("alice", tt.outcome)
			cs := e.connect(t, e.token("alice", "crm"))

			// A read of the restricted record: no data on failure.
			res := call(t, cs, "get_contact", map[string]any{"id": 6})
			require.True(t, res.IsError, "want a tool error")
			assert.NotContains(t, resultJSON(t, res), "Riley")
			assert.Contains(t, strings.ToLower(text(res)), strings.ToLower(tt.want))
			assert.Contains(t, text(res), "not run")

			// A write: the side effect did not happen.
			res = call(t, cs, "update_contact", map[string]any{"id": 1, "name": "Changed Name"})
			require.True(t, res.IsError)
			c, err := e.store.GetContact(context.Background(), 1)
			require.NoError(t, err)
			assert.Equal(t, "Maya Okafor", c.Name, "a refused write must not happen")

			// The session stays usable for calls that need no approval.
			assert.False(t, call(t, cs, "list_contacts", nil).IsError)
		})
	}
}

func TestStepUpDuoUnreachable(t *testing.T) {
	e := newStepUpEnv(t)
	e.duo.Close()
	cs := e.connect(t, e.token("alice", "crm"))
	res := call(t, cs, "get_contact", map[string]any{"id": 6})
	require.True(t, res.IsError)
	assert.NotContains(t, resultJSON(t, res), "Riley")
	assert.Contains(t, strings.ToLower(text(res)), "duo")
}

func TestStepUpGrantAndCooldown(t *testing.T) {
	e := newStepUpEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	args := map[string]any{"id": 6}
	require.False(t, call(t, cs, "get_contact", args).IsError)
	require.False(t, call(t, cs, "get_contact", args).IsError)
	assert.Len(t, e.duo.Pushes(), 1, "an approval covers the same call for the grant TTL")

	e.duo.Script("alice", duotest.Deny)
	res := call(t, cs, "list_contacts", map[string]any{"query": "defence"})
	require.True(t, res.IsError)
	res = call(t, cs, "list_contacts", map[string]any{"query": "military"})
	require.True(t, res.IsError)
	assert.Contains(t, strings.ToLower(text(res)), "denied")
	assert.Len(t, e.duo.Pushes(), 2, "after a denial the next sensitive call fails without pushing")
	res = call(t, cs, "list_contacts", map[string]any{"query": "Aegis"})
	require.False(t, res.IsError, "a search that asks for nothing restricted still runs")
	assert.NotContains(t, resultJSON(t, res), "Riley")
}

func TestStepUpConcurrentCallsShareOnePush(t *testing.T) {
	const n = 50
	// One user holding 50 calls is past the default bounds (inflight.go);
	// raised here, since this is about sharing one push.
	e := newStepUpEnvConfig(t, func(c *tools.Config) { c.MaxRequestsPerUser, c.MaxStepUpWaitingPerUser = n, n })
	e.duo.Script("alice", duotest.Manual)
	cs := e.connect(t, e.token("alice", "crm"))
	var wg sync.WaitGroup
	results := make([]*mcp.CallToolResult, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "get_contact", Arguments: map[string]any{"id": 6}})
			if assert.NoError(t, err) {
				results[i] = res
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.duo.WaitForPush(ctx)
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond) // let every call join the push
	require.NoError(t, e.duo.Decide(p.TxID, true))
	wg.Wait()
	assert.Len(t, e.duo.Pushes(), 1, "50 identical calls, one push")
	for _, res := range results {
		require.NotNil(t, res)
		assert.False(t, res.IsError, text(res))
		assert.Contains(t, text(res), "Riley Vance")
	}
}

func TestStepUpProgressWhileWaiting(t *testing.T) {
	e := newStepUpEnv(t)
	e.duo.Script("alice", duotest.Manual)
	progress := make(chan string, 10)
	client := mcp.NewClient(&mcp.Implementation{Name: "progress-test"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			progress <- req.Params.Message
		},
	})
	cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint: e.resource, HTTPClient: httpClient(e.token("alice", "crm")), MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	require.NoError(t, err)
	defer cs.Close()

	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		params := &mcp.CallToolParams{Name: "get_contact", Arguments: map[string]any{"id": 6}}
		params.SetProgressToken("tok-1")
		res, err := cs.CallTool(context.Background(), params)
		assert.NoError(t, err)
		done <- res
	}()
	select {
	case msg := <-progress:
		assert.Contains(t, msg, "Duo Push")
	case <-time.After(10 * time.Second):
		t.Fatal("no progress notification while waiting for approval")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := e.duo.WaitForPush(ctx)
	require.NoError(t, err)
	require.NoError(t, e.duo.Decide(p.TxID, true))
	res := <-done
	require.False(t, res.IsError, text(res))
	assert.Contains(t, text(res), "Riley Vance")
}

func TestStepUpOffOnWrite(t *testing.T) {
	e := newStepUpEnv(t, func(_ *stepup.Config, su *tools.StepUp) { su.OnWrite = false })
	cs := e.connect(t, e.token("alice", "crm"))
	require.False(t, call(t, cs, "update_contact", map[string]any{"id": 1, "phone": "1"}).IsError)
	assert.Empty(t, e.duo.Pushes(), "writes do not push with STEPUP_ON_WRITE=false")
	require.False(t, call(t, cs, "update_contact", map[string]any{"id": 6, "phone": "1"}).IsError)
	assert.Len(t, e.duo.Pushes(), 1, "a write to a restricted record still pushes")
}

func TestStepUpListedTool(t *testing.T) {
	e := newStepUpEnv(t, func(_ *stepup.Config, su *tools.StepUp) { su.Tools = []string{"list_deals"} })
	cs := e.connect(t, e.token("alice", "crm"))
	require.False(t, call(t, cs, "list_deals", nil).IsError)
	require.Len(t, e.duo.Pushes(), 1)
	assert.Contains(t, e.duo.Pushes()[0].PushInfo.Get("reason"), "always needs approval")
}

func TestStepUpUserClaim(t *testing.T) {
	e := newStepUpEnv(t, func(_ *stepup.Config, su *tools.StepUp) { su.UsernameClaim = "duo_user" })
	claims := e.as.Claims("alice", e.resource, "crm")
	claims["duo_user"] = "alice.duo"
	cs := e.connect(t, e.as.Mint(claims))
	require.False(t, call(t, cs, "get_contact", map[string]any{"id": 6}).IsError)
	require.Len(t, e.duo.Pushes(), 1)
	assert.Equal(t, "alice.duo", e.duo.Pushes()[0].User)

	// A token without the claim cannot be stepped up: fail closed.
	cs2 := e.connect(t, e.token("bob", "crm"))
	res := call(t, cs2, "get_contact", map[string]any{"id": 6})
	require.True(t, res.IsError)
	assert.Contains(t, text(res), "DUO_USERNAME_CLAIM")
}

func TestStepUpRestrictedWrites(t *testing.T) {
	e := newStepUpEnv(t)
	e.duo.Script("alice", duotest.Deny)
	cs := e.connect(t, e.token("alice", "crm"))
	before, _ := e.store.ListDeals(context.Background(), crm.DealFilter{IncludeRestricted: true, Limit: 200})
	res := call(t, cs, "create_deal", map[string]any{"contact_id": 6, "title": "More", "amount": 5, "currency": "GBP"})
	require.True(t, res.IsError)
	res = call(t, cs, "update_deal_stage", map[string]any{"id": 4, "stage": "won"})
	require.True(t, res.IsError)
	after, _ := e.store.ListDeals(context.Background(), crm.DealFilter{IncludeRestricted: true, Limit: 200})
	assert.Equal(t, before, after, "no deal was created or moved")
}

func httpClient(token string) *http.Client { return &http.Client{Transport: bearer{token}} }

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestStepUpClientCancelEndsTheWait: a client that gives up (go-sdk sends
// notifications/cancelled) ends the server's wait for the push; the tool
// never runs.
func TestStepUpClientCancelEndsTheWait(t *testing.T) {
	logs := &syncBuffer{}
	duo := duotest.NewServer()
	defer duo.Close()
	duo.Script("alice", duotest.Manual)
	e2 := newEnv(t, func(c *tools.Config) {
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		terms, _ := stepup.NewTerms(stepup.DefaultSensitiveTerms)
		g, err := stepup.New(stepup.Config{IKey: duo.IKey(), SKey: duo.SKey(), Host: duo.Host(), CACertPEM: duo.CACertPEM(), PollInterval: 20 * time.Millisecond})
		require.NoError(t, err)
		c.StepUp = &tools.StepUp{Guard: g, Terms: terms, OnWrite: true}
	})
	cs := e2.connect(t, e2.token("alice", "crm"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "update_contact", Arguments: map[string]any{"id": 6, "name": "Changed"}})
		done <- err
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	_, err := duo.WaitForPush(wctx)
	require.NoError(t, err)
	cancel()
	require.Error(t, <-done)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "step-up refused") }, 10*time.Second, 20*time.Millisecond,
		"the server's wait must end when the client cancels")
	assert.Contains(t, strings.ToLower(logs.String()), "cancel")
	c, err := e2.store.GetContact(context.Background(), 6)
	require.NoError(t, err)
	assert.Equal(t, "Riley Vance", c.Name, "the tool never ran")
}

// TestStepUpNoOracleWhileBlocked: after a denial no push can be sent, and
// calls that name a record are refused alike whether or not it is
// restricted, so refusals do not reveal which ones are.
func TestStepUpNoOracleWhileBlocked(t *testing.T) {
	e := newStepUpEnv(t)
	e.duo.Script("alice", duotest.Deny)
	cs := e.connect(t, e.token("alice", "crm"))
	require.True(t, call(t, cs, "get_contact", map[string]any{"id": 6}).IsError)
	require.Len(t, e.duo.Pushes(), 1)

	probe := func(tool string, args map[string]any) string {
		res := call(t, cs, tool, args)
		require.True(t, res.IsError, "%s %v ran while the user is cooling down", tool, args)
		// The text names the tool; the rest must not depend on the data.
		return until.ReplaceAllString(strings.ReplaceAll(text(res), tool, "TOOL"), "WHEN")
	}
	hit := probe("get_contact", map[string]any{"id": 6})
	assert.Equal(t, hit, probe("get_contact", map[string]any{"id": 2}))
	assert.Equal(t, probe("list_deals", map[string]any{"contact_id": 6}), probe("list_deals", map[string]any{"contact_id": 1}))
	assert.Equal(t, probe("create_deal", map[string]any{"contact_id": 6, "title": "t", "amount": 1, "currency": "USD"}),
		probe("create_deal", map[string]any{"contact_id": 1, "title": "t", "amount": 1, "currency": "USD"}))
	assert.NotContains(t, hit, "restricted")

	// Searches name no record: they run, and return the same whether or
	// not the text matches a restricted record.
	a := call(t, cs, "list_contacts", map[string]any{"query": "riley.vance@aegis"})
	b := call(t, cs, "list_contacts", map[string]any{"query": "riley.vance@aegiz"})
	require.False(t, a.IsError, text(a))
	assert.Equal(t, strings.ReplaceAll(text(a), "aegis", "X"), strings.ReplaceAll(text(b), "aegiz", "X"))
	assert.Len(t, e.duo.Pushes(), 1, "no push while cooling down")

	// Calls that name nothing still work.
	assert.False(t, call(t, cs, "list_contacts", nil).IsError)
}

func TestStepUpGrantIsPerClient(t *testing.T) {
	e := newStepUpEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	require.False(t, call(t, cs, "get_contact", map[string]any{"id": 6}).IsError)
	require.Len(t, e.duo.Pushes(), 1)

	other := e.as.Claims("alice", e.resource, "crm")
	other["client_id"] = "another-agent"
	cs2 := e.connect(t, e.as.Mint(other))
	e.duo.Script("alice", duotest.Deny)
	res := call(t, cs2, "get_contact", map[string]any{"id": 6})
	require.True(t, res.IsError, "another client must not ride alice's approval")
	assert.NotContains(t, resultJSON(t, res), "Riley")
	assert.Len(t, e.duo.Pushes(), 2)
}

func TestStepUpWriteApprovalIsOneShot(t *testing.T) {
	e := newStepUpEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	args := map[string]any{"contact_id": 1, "title": "Renewal", "amount": 100, "currency": "USD"}
	require.False(t, call(t, cs, "create_deal", args).IsError)
	require.False(t, call(t, cs, "create_deal", args).IsError)
	assert.Len(t, e.duo.Pushes(), 2, "each write needs its own approval")
}

// TestStepUpDenialRevokesGrants is the README's step 4: after the user
// denies one call, an approval given earlier no longer covers anything. The
// same client's approved search is refused during the cooldown instead of
// answering from the old grant, and asks again after it.
func TestStepUpDenialRevokesGrants(t *testing.T) {
	e := newStepUpEnv(t, func(c *stepup.Config, _ *tools.StepUp) { c.DenyCooldown = 300 * time.Millisecond })
	cs := e.connect(t, e.token("alice", "crm"))
	search := map[string]any{"query": "defence"}
	res := call(t, cs, "list_contacts", search)
	require.False(t, res.IsError, text(res))
	require.Contains(t, resultJSON(t, res), "Riley", "the approved search returns the restricted match")
	require.Len(t, e.duo.Pushes(), 1)

	e.duo.Script("alice", duotest.Deny)
	require.True(t, call(t, cs, "get_contact", map[string]any{"id": 6}).IsError)
	require.Len(t, e.duo.Pushes(), 2)

	res = call(t, cs, "list_contacts", search)
	require.True(t, res.IsError, "the earlier approval must not answer after a denial")
	assert.NotContains(t, resultJSON(t, res), "Riley")
	assert.Len(t, e.duo.Pushes(), 2, "refused by the cooldown, without a push")

	time.Sleep(400 * time.Millisecond)
	e.duo.Script("alice", duotest.Approve)
	res = call(t, cs, "list_contacts", search)
	require.False(t, res.IsError, text(res))
	assert.Len(t, e.duo.Pushes(), 3, "after the cooldown the search asks again")
}

// TestStepUpReissueAfterBrokenStream: over 2026-07-28 a broken stream loses
// the request (there is no resumption), so a client re-issues the call
// with a new id. The re-issued call joins the push still pending for the
// same call: no second push, and it gets the answer once approved.
func TestStepUpReissueAfterBrokenStream(t *testing.T) {
	// No grants: the answer cannot come from an approval's grant, only
	// from joining the pending push.
	e := newStepUpEnv(t, func(c *stepup.Config, _ *tools.StepUp) { c.GrantTTL = stepup.NoGrants })
	e.duo.Script("alice", duotest.Manual)
	cs := e.connect(t, e.token("alice", "crm"))
	require.Equal(t, "2026-07-28", cs.InitializeResult().ProtocolVersion)

	args := map[string]any{"id": 6}
	first, cancel := context.WithCancel(context.Background())
	broken := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(first, &mcp.CallToolParams{Name: "get_contact", Arguments: args})
		broken <- err
	}()
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	p, err := e.duo.WaitForPush(ctx)
	require.NoError(t, err)
	cancel() // the stream breaks: the client gives up on the request
	require.Error(t, <-broken)
	// The server notices: the first call stops waiting; its push goes on.
	require.Eventually(t, func() bool { return e.handler.StepUpWaiting() == 0 }, 10*time.Second, 10*time.Millisecond,
		"the broken call stops waiting")

	again := make(chan *mcp.CallToolResult, 1)
	go func() {
		res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "get_contact", Arguments: args})
		assert.NoError(t, err)
		again <- res
	}()
	require.Eventually(t, func() bool { return e.handler.StepUpWaiting() == 1 }, 10*time.Second, 10*time.Millisecond,
		"the re-issued call waits on the pending push")
	require.NoError(t, e.duo.Decide(p.TxID, true))
	res := <-again
	require.NotNil(t, res)
	require.False(t, res.IsError, text(res))
	assert.Contains(t, text(res), "Riley Vance")
	assert.Len(t, e.duo.Pushes(), 1, "the re-issued call joined the pending push")
}
