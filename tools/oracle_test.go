package tools_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
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

// observed is everything an agent can see of one call.
type observed struct {
	IsError  bool
	Result   string // structured result and text, timestamps blanked
	Progress []string
	Slow     bool // took as long as a push wait
}

// probeSession is an MCP session that records progress notifications.
type probeSession struct {
	cs       *mcp.ClientSession
	mu       sync.Mutex
	progress []string
	n        int
}

func (e *stepUpEnv) probeSession(t *testing.T, revision string) *probeSession {
	ps := &probeSession{}
	client := mcp.NewClient(&mcp.Implementation{Name: "oracle-probe"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			ps.mu.Lock()
			ps.progress = append(ps.progress, req.Params.Message)
			ps.mu.Unlock()
		},
	})
	cs, err := client.Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint: e.resource, HTTPClient: httpClient(e.token("alice", "crm")), MaxRetries: -1, DisableStandaloneSSE: true,
	}, &mcp.ClientSessionOptions{ProtocolVersion: revision})
	require.NoError(t, err)
	t.Cleanup(func() { cs.Close() })
	require.Equal(t, revision, cs.InitializeResult().ProtocolVersion, "the revision probed")
	ps.cs = cs
	return ps
}

var timestamps = regexp.MustCompile(`"(created_at|updated_at)":"[^"]*"`)

// until blanks the moment a refusal names ("until 21:04:05 UTC (in 55s)"),
// which follows the wall clock of each endpoint's own denial.
var until = regexp.MustCompile(`\d\d:\d\d:\d\d UTC \(in [0-9hms]+\)`)

func (ps *probeSession) call(t *testing.T, tool string, args map[string]any) observed {
	t.Helper()
	ps.mu.Lock()
	ps.n++
	ps.progress = nil
	tok := fmt.Sprintf("probe-%d", ps.n)
	ps.mu.Unlock()
	params := &mcp.CallToolParams{Name: tool, Arguments: args}
	params.SetProgressToken(tok)
	start := time.Now()
	res, err := ps.cs.CallTool(context.Background(), params)
	took := time.Since(start)
	require.NoError(t, err)
	b, err := json.Marshal(res.StructuredContent)
	require.NoError(t, err)
	time.Sleep(20 * time.Millisecond) // let a late notification arrive
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return observed{
		IsError:  res.IsError,
		Result:   until.ReplaceAllString(timestamps.ReplaceAllString(string(b)+"\n"+text(res), `"$1":"T"`), "WHEN"),
		Progress: ps.progress,
		Slow:     took > 2*time.Second,
	}
}

// hideOtherData gives the one restricted contact and her deal other
// content, leaving every record the agent may see as it was.
func hideOtherData(t *testing.T, s *crm.Store) {
	ctx := context.Background()
	name, email, company, phone := "Quinn Hart", "quinn.hart@northgate.example.com", "Northgate Holdings", "+44 20 7946 0000"
	_, err := s.UpdateContact(ctx, 6, crm.ContactUpdate{Name: &name, Email: &email, Company: &company, Phone: &phone})
	require.NoError(t, err)
	_, err = s.UpdateDealStage(ctx, 4, crm.StageNegotiation)
	require.NoError(t, err)
}

// TestNoOracle runs, for every tool, calls whose arguments need no
// approval against two stores that differ only in what the restricted
// records hold, in each state the guard can be in, and asserts that the
// agent observes the same thing: result, isError, progress, no push, no
// wait. Searches that match the restricted record in one store and
// nothing in the other are among them.
func TestNoOracle(t *testing.T) {
	probes := []struct {
		tool string
		args map[string]any
	}{
		{"list_contacts", nil},
		{"list_contacts", map[string]any{"query": "riley"}},
		{"list_contacts", map[string]any{"query": "riley.v"}},
		{"list_contacts", map[string]any{"query": "quinn"}},
		{"list_contacts", map[string]any{"query": "Aegis"}},
		{"list_contacts", map[string]any{"query": "northgate", "limit": 5}},
		{"list_contacts", map[string]any{"query": "a", "offset": 2}},
		{"get_contact", map[string]any{"id": 1}},
		{"list_deals", nil},
		{"list_deals", map[string]any{"stage": "proposal"}},
		{"list_deals", map[string]any{"stage": "negotiation"}},
		{"list_deals", map[string]any{"contact_id": 3}},
		{"create_contact", map[string]any{"name": "Riley Quinn", "email": "rq@example.com", "company": "Aegis Northgate"}},
		{"update_contact", map[string]any{"id": 2, "company": "Aegis Northwind"}},
		{"create_deal", map[string]any{"contact_id": 3, "title": "Aegis", "amount": 100, "currency": "GBP"}},
		{"update_deal_stage", map[string]any{"id": 1, "stage": "won"}},
	}

	// states bring an endpoint into the state a probe is made in; each
	// returns the number of pushes sent so far.
	states := []struct {
		name  string
		tune  func(*stepup.Config, *tools.StepUp)
		setup func(t *testing.T, e *stepUpEnv) int
	}{
		{"idle", nil, func(*testing.T, *stepUpEnv) int { return 0 }},
		{"push pending", nil, func(t *testing.T, e *stepUpEnv) int {
			e.duo.Script("alice", duotest.Manual)
			cs := e.connect(t, e.token("alice", "crm"))
			go cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "get_contact", Arguments: map[string]any{"id": 6}})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			p, err := e.duo.WaitForPush(ctx)
			require.NoError(t, err)
			t.Cleanup(func() { e.duo.Decide(p.TxID, false) })
			return 1
		}},
		{"cooling down", nil, func(t *testing.T, e *stepUpEnv) int {
			e.duo.Script("alice", duotest.Deny)
			cs := e.connect(t, e.token("alice", "crm"))
			require.True(t, call(t, cs, "get_contact", map[string]any{"id": 6}).IsError)
			return 1
		}},
		{"past the cap", func(c *stepup.Config, _ *tools.StepUp) { c.MaxPushes = 1 }, func(t *testing.T, e *stepUpEnv) int {
			cs := e.connect(t, e.token("alice", "crm"))
			require.False(t, call(t, cs, "list_contacts", map[string]any{"query": "defence"}).IsError)
			return 1
		}},
	}
	// Over both revisions: 2026-07-28 requests, and an initialize-based
	// client of 2025-11-25.
	for _, revision := range []string{"2026-07-28", "2025-11-25"} {
		for _, st := range states {
			t.Run(revision+"/"+st.name, func(t *testing.T) {
				tune := func(c *stepup.Config, su *tools.StepUp) {
					su.OnWrite = false // so that writes to ordinary records need no approval
					c.Timeout = 30 * time.Second
					if st.tune != nil {
						st.tune(c, su)
					}
				}
				a, b := newStepUpEnv(t, tune), newStepUpEnv(t, tune)
				hideOtherData(t, b.store)
				pushesA, pushesB := st.setup(t, a), st.setup(t, b)
				pa, pb := a.probeSession(t, revision), b.probeSession(t, revision)
				for _, p := range probes {
					oa, ob := pa.call(t, p.tool, p.args), pb.call(t, p.tool, p.args)
					assert.Equal(t, oa, ob, "%s %v: the agent can tell the restricted records apart", p.tool, p.args)
					assert.Empty(t, oa.Progress, "%s %v waited", p.tool, p.args)
					assert.False(t, oa.Slow, "%s %v waited", p.tool, p.args)
					assert.NotContains(t, oa.Result, "Riley Vance")
					assert.NotContains(t, ob.Result, "Quinn Hart")
				}
				assert.Len(t, a.duo.Pushes(), pushesA, "no probe pushed")
				assert.Len(t, b.duo.Pushes(), pushesB, "no probe pushed")
			})
		}
	}
}

// TestSearchAnswerIsTheSameWhateverMatches: a search that was not approved
// carries the same note whether or not a restricted record matches, and
// never a count.
func TestSearchAnswerIsTheSameWhateverMatches(t *testing.T) {
	e := newStepUpEnv(t)
	cs := e.connect(t, e.token("alice", "crm"))
	hit := call(t, cs, "list_contacts", map[string]any{"query": "Aegis"})
	miss := call(t, cs, "list_contacts", map[string]any{"query": "Zzyzx"})
	require.False(t, hit.IsError)
	var h, m tools.ContactList
	for _, x := range []struct {
		res *mcp.CallToolResult
		out *tools.ContactList
	}{{hit, &h}, {miss, &m}} {
		b, _ := json.Marshal(x.res.StructuredContent)
		require.NoError(t, json.Unmarshal(b, x.out))
	}
	assert.Empty(t, h.Contacts)
	assert.Nil(t, h.WithheldRestricted, "a search never counts what it withheld")
	assert.Equal(t, h, m)
	assert.Contains(t, text(hit), "include_restricted: true")
	assert.Empty(t, e.duo.Pushes())

	// Asking for them pushes, and once approved returns them.
	res := call(t, cs, "list_contacts", map[string]any{"query": "Aegis", "include_restricted": true})
	require.False(t, res.IsError, text(res))
	assert.Contains(t, text(res), "Riley Vance")
	assert.Len(t, e.duo.Pushes(), 1)
}

// switchingBearer sends whichever token is current, so one MCP session can
// carry requests with different tokens.
type switchingBearer struct {
	mu    sync.Mutex
	token string
}

func (s *switchingBearer) set(tok string) { s.mu.Lock(); s.token = tok; s.mu.Unlock() }

func (s *switchingBearer) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	tok := s.token
	s.mu.Unlock()
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return http.DefaultTransport.RoundTrip(r)
}

// TestEachCallJudgedByItsOwnToken: on one session, a call is pushed,
// granted and attributed with the token of the request that carries it,
// not the token that opened the session.
func TestEachCallJudgedByItsOwnToken(t *testing.T) {
	e := newStepUpEnv(t, func(_ *stepup.Config, su *tools.StepUp) { su.UsernameClaim = "duo_user" })
	first := e.as.Claims("alice", e.resource, "crm")
	first["client_id"] = "https://first-agent.example/client.json"
	first["duo_user"] = "alice.first"
	second := e.as.Claims("alice", e.resource, "crm")
	second["client_id"] = "https://second-agent.example/client.json"
	second["duo_user"] = "alice.second"

	sw := &switchingBearer{token: e.as.Mint(first)}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "two-tokens"}, nil).Connect(context.Background(), &mcp.StreamableClientTransport{
		Endpoint: e.resource, HTTPClient: &http.Client{Transport: sw}, MaxRetries: -1, DisableStandaloneSSE: true,
	}, nil)
	require.NoError(t, err)
	defer cs.Close()

	args := map[string]any{"id": 6}
	require.False(t, call(t, cs, "get_contact", args).IsError)
	sw.set(e.as.Mint(second))
	require.False(t, call(t, cs, "get_contact", args).IsError)

	pushes := e.duo.Pushes()
	require.Len(t, pushes, 2, "the first client's approval does not cover the second client")
	assert.Equal(t, "alice.first", pushes[0].User)
	assert.Equal(t, "first-agent.example", pushes[0].PushInfo.Get("client"))
	assert.Equal(t, "alice.second", pushes[1].User, "the Duo user comes from the call's own token")
	assert.Equal(t, "second-agent.example", pushes[1].PushInfo.Get("client"))

	// The owner of a new contact is the subject of the call's token, and
	// a token without the tool's scope is refused on the same session.
	readOnly := e.as.Claims("alice", e.resource, tools.ScopeContactsRead)
	sw.set(e.as.Mint(readOnly))
	_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "create_contact", Arguments: map[string]any{"name": "A B", "email": "ab@example.com"}})
	require.Error(t, err, "the HTTP gate answers 403 for the second token's missing scope")
}
