package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/govern"
	"github.com/crm-mcp/crm-mcp/internal/pgtest"
	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// auditLine is the part of an audit line the tests read.
type auditLine struct {
	Seq       uint64 `json:"seq"`
	Event     string `json:"event"`
	RequestID string `json:"request_id"`
	Issuer    string `json:"issuer"`
	Subject   string `json:"subject"`
	ClientID  string `json:"client_id"`
	JTI       string `json:"jti"`
	TokenFP   string `json:"token_fp"`
	Tool      string `json:"tool"`
	ArgsHash  string `json:"args_sha256"`
	Args      any    `json:"args"`
	Decision  string `json:"decision"`
	Reason    string `json:"reason"`
	DuoTxID   string `json:"duo_txid"`
	Outcome   string `json:"outcome"`
	Source    string `json:"source"`
	Count     int    `json:"count"`
}

func readAudit(t *testing.T, path string) ([]string, []auditLine) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	raw := strings.SplitAfter(string(b), "\n")
	require.Equal(t, "", raw[len(raw)-1], "the file ends with a whole line")
	raw = raw[:len(raw)-1]
	var out []auditLine
	for _, l := range raw {
		var al auditLine
		require.NoError(t, json.Unmarshal([]byte(l), &al), l)
		out = append(out, al)
	}
	return raw, out
}

// scrape reads /metrics into "name{labels}" -> value.
func scrape(t *testing.T, addr string) (map[string]float64, string) {
	t.Helper()
	resp, body := get(t, "http://"+addr+"/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(t, i, line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		out[line[:i]] = v
	}
	return out, body
}

// rawPost sends one JSON-RPC message to the MCP endpoint with the given
// headers (Authorization among them, or not) and returns the status.
func rawPost(t *testing.T, url string, headers http.Header, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	if headers != nil {
		req.Header = headers.Clone()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func bearerHeader(token string) http.Header {
	return http.Header{"Authorization": {"Bearer " + token}}
}

// TestServeAuditTrailAndMetrics runs a whole session against serve (real
// JWKS and introspection, the fake Duo checking real signatures, an audit
// file and the metrics listener): bad tokens, a bad origin, a scope
// denial, approvals, a grant, a denial and its cool-down, a Duo failure,
// a timeout, the push cap, a write, and a call that runs and fails. Then:
// the file verifies and holds every event, a copy with a line edited,
// removed or two swapped does not (crm-mcp audit verify names the line),
// /metrics counts what happened, and no token, Authorization header or
// secret is in the audit log, the server log or the metrics.
func TestServeAuditTrailAndMetrics(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	as.SetIntrospectionClient("crm-client", testSecret)
	env, duo := testEnvDuo(t, as)
	dir := t.TempDir()
	auditPath := filepath.Join(dir, "audit.log")
	env["AUDIT_LOG_PATH"] = auditPath
	env["METRICS_ADDR"] = "127.0.0.1:0"
	env["AUTH_MODE"] = "jwt+introspection"
	env["DUO_CLIENT_ID"] = "crm-client"
	env["DUO_CLIENT_SECRET"] = testSecret
	env["STEPUP_MAX_PUSHES"] = "2"
	s := startServe(t, env)
	require.NotEmpty(t, s.metricsAddr, "METRICS_ADDR is served")
	ctx := context.Background()
	mcpURL := s.url("/mcp")
	const list = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	var tokens []string
	mint := func(claims map[string]any) string {
		tok := as.Mint(claims)
		tokens = append(tokens, tok)
		return tok
	}

	// The front door.
	assert.Equal(t, http.StatusUnauthorized, rawPost(t, mcpURL, nil, list), "no token")
	assert.Equal(t, http.StatusUnauthorized, rawPost(t, mcpURL, bearerHeader("not-a-jwt"), list), "malformed")
	expired := as.Claims("alice", testResource, "crm.contacts.read")
	expired["iat"], expired["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
	expiredTok := mint(expired)
	assert.Equal(t, http.StatusUnauthorized, rawPost(t, mcpURL, bearerHeader(expiredTok), list), "expired")
	assert.Equal(t, http.StatusUnauthorized, rawPost(t, mcpURL, bearerHeader(mint(as.Claims("alice", "https://other.example/mcp", "crm.contacts.read"))), list), "audience")
	good := mint(as.Claims("alice", testResource, "crm.contacts.read", "crm.contacts.write"))
	assert.Equal(t, http.StatusBadRequest, rawPost(t, mcpURL, http.Header{"Authorization": {"Bearer " + good, "Bearer " + good}}, list), "two Authorization headers")
	h := bearerHeader(good)
	h.Set("Origin", "https://evil.example")
	assert.Equal(t, http.StatusForbidden, rawPost(t, mcpURL, h, list), "an origin not allowed")
	// The scope gate: alice's token has no crm.deals.read.
	assert.Equal(t, http.StatusForbidden, rawPost(t, mcpURL, bearerHeader(good),
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_deals","arguments":{}}}`), "insufficient_scope")

	// Step-up, one user per script.
	session := func(user string, o duotest.Outcome) *mcp.ClientSession {
		duo.Script(user, o)
		cs, err := connect(ctx, mcpURL, mint(as.Claims(user, testResource, "crm.contacts.read", "crm.contacts.write", "crm.deals.read")))
		require.NoError(t, err)
		t.Cleanup(func() { cs.Close() })
		return cs
	}
	callTool := func(cs *mcp.ClientSession, name string, args map[string]any) *mcp.CallToolResult {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
		require.NoError(t, err)
		return res
	}
	alice := session("alice", duotest.Approve)
	defence := map[string]any{"query": "defence"}
	assert.False(t, callTool(alice, "list_contacts", defence).IsError, "approved by push")
	assert.False(t, callTool(alice, "list_contacts", defence).IsError, "covered by the grant")
	res := callTool(alice, "create_contact", map[string]any{"name": "Wen Zhao", "email": "wen.zhao@example.com"})
	assert.False(t, res.IsError, text(t, res))
	res = callTool(alice, "list_contacts", map[string]any{"query": "military"})
	assert.True(t, res.IsError, "alice is at STEPUP_MAX_PUSHES")

	bob := session("bob", duotest.Deny)
	assert.True(t, callTool(bob, "get_contact", map[string]any{"id": 6}).IsError, "denied")
	assert.True(t, callTool(bob, "get_contact", map[string]any{"id": 6}).IsError, "cooling down: no push")

	dave := session("dave", duotest.ServerError500)
	assert.True(t, callTool(dave, "list_contacts", map[string]any{"query": "classified"}).IsError, "Duo fails")
	erin := session("erin", duotest.Timeout)
	assert.True(t, callTool(erin, "list_contacts", map[string]any{"query": "intelligence"}).IsError, "nobody answers")
	frank := session("frank", duotest.Approve)
	res = callTool(frank, "list_deals", map[string]any{"stage": "bogus"})
	assert.True(t, res.IsError, "runs, and fails")

	pushes := duo.Pushes()
	txids := map[string]string{}
	for _, p := range pushes {
		txids[p.TxID] = p.User
	}
	require.Len(t, pushes, 4, "alice 2, bob 1, erin 1: no push in the cool-down, past the cap or while Duo fails")

	t.Run("metrics", func(t *testing.T) {
		// A request is counted when its handler returns, which may be just
		// after its client has the answer.
		var got map[string]float64
		var body string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			got, body = scrape(t, s.metricsAddr)
			if got[`crm_mcp_http_requests_total{code="401"}`] == 4 && got[`crm_mcp_http_requests_total{code="403"}`] == 2 || time.Now().After(deadline) {
				break
			}
		}
		want := map[string]float64{
			`crm_mcp_http_requests_total{code="401"}`: 4,
			`crm_mcp_http_requests_total{code="400"}`: 1,
			`crm_mcp_http_requests_total{code="403"}`: 2,

			`crm_mcp_auth_failures_total{reason="no_token"}`:           1,
			`crm_mcp_auth_failures_total{reason="malformed"}`:          1,
			`crm_mcp_auth_failures_total{reason="expired"}`:            1,
			`crm_mcp_auth_failures_total{reason="audience"}`:           1,
			`crm_mcp_auth_failures_total{reason="invalid_request"}`:    1,
			`crm_mcp_auth_failures_total{reason="origin"}`:             1,
			`crm_mcp_auth_failures_total{reason="insufficient_scope"}`: 1,
			`crm_mcp_auth_failures_total{reason="signature"}`:          0,

			`crm_mcp_tool_calls_total{outcome="ok",tool="list_contacts"}`:      2,
			`crm_mcp_tool_calls_total{outcome="refused",tool="list_contacts"}`: 3, // cap, Duo error, timeout
			`crm_mcp_tool_calls_total{outcome="ok",tool="create_contact"}`:     1,
			`crm_mcp_tool_calls_total{outcome="error",tool="create_contact"}`:  0,
			`crm_mcp_tool_calls_total{outcome="error",tool="list_deals"}`:      1,
			`crm_mcp_tool_calls_total{outcome="refused",tool="get_contact"}`:   2,
			`crm_mcp_tool_calls_total{outcome="ok",tool="list_deals"}`:         0,

			`crm_mcp_stepup_decisions_total{outcome="approved"}`:  2,
			`crm_mcp_stepup_decisions_total{outcome="grant"}`:     1,
			`crm_mcp_stepup_decisions_total{outcome="denied"}`:    1,
			`crm_mcp_stepup_decisions_total{outcome="cooldown"}`:  1,
			`crm_mcp_stepup_decisions_total{outcome="cap"}`:       1,
			`crm_mcp_stepup_decisions_total{outcome="duo_error"}`: 1,
			`crm_mcp_stepup_decisions_total{outcome="timeout"}`:   1,

			`crm_mcp_stepup_suppressed_pushes_total{reason="cooldown"}`: 1,
			`crm_mcp_stepup_suppressed_pushes_total{reason="cap"}`:      1,

			// Timed from stepup.requested to the outcome: the grant too
			// (the guard finds it), not the cool-down (refused before any
			// request, as it names a record).
			`crm_mcp_stepup_wait_seconds_count{outcome="approved"}`: 3,
			`crm_mcp_stepup_wait_seconds_count{outcome="denied"}`:   1,
			`crm_mcp_stepup_wait_seconds_count{outcome="failed"}`:   3,

			`crm_mcp_jwks_refresh_failures_total{issuer="` + as.Issuer() + `"}`: 0,
			`crm_mcp_jwks_usable{issuer="` + as.Issuer() + `"}`:                 1,
			`crm_mcp_introspection_duration_seconds_count{result="error"}`:      0,
			`crm_mcp_audit_write_failures_total`:                                0,
		}
		for k, v := range want {
			if assert.Contains(t, got, k) {
				assert.Equal(t, v, got[k], k)
			}
		}
		assert.Positive(t, got[`crm_mcp_http_requests_total{code="200"}`])
		assert.Positive(t, got[`crm_mcp_introspection_duration_seconds_count{result="ok"}`], "jwt+introspection asks about every new token")
		assert.NotContains(t, got, `crm_mcp_sessions_open`, "stateless: no sessions to count")
		age, ok := got[`crm_mcp_jwks_age_seconds{issuer="`+as.Issuer()+`"}`]
		assert.True(t, ok, "the JWKS age is exported")
		assert.True(t, age >= 0 && age < 120, "age %v", age)
		assert.Contains(t, got, `crm_mcp_stepup_wait_seconds_bucket{outcome="approved",le="1"}`)

		// Bounded labels: no user, token or client in any label value.
		for _, m := range regexp.MustCompile(`="([^"]*)"`).FindAllStringSubmatch(body, -1) {
			v := m[1]
			assert.NotContains(t, []string{"alice", "bob", "dave", "erin", "frank", rstest.ClientID}, v, "a label holds a user or client")
			assert.NotContains(t, v, "sha256:", "a label holds a token fingerprint")
		}

		resp, _ := get(t, s.url("/metrics"))
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "never on the MCP listener")
	})

	for _, cs := range []*mcp.ClientSession{alice, bob, dave, erin, frank} {
		cs.Close()
	}
	require.Equal(t, 0, s.stop(t))
	raw, lines := readAudit(t, auditPath)

	t.Run("verifies and holds every event", func(t *testing.T) {
		f, err := os.Open(auditPath)
		require.NoError(t, err)
		defer f.Close()
		sum, err := audit.Verify(f)
		require.NoError(t, err)
		assert.Equal(t, len(raw), sum.Records)
		assert.Zero(t, sum.TornBytes)

		kinds := map[string]int{}
		reasons := map[string][]string{}
		for _, l := range lines {
			kinds[l.Event]++
			reasons[l.Event] = append(reasons[l.Event], l.Reason)
		}
		for _, k := range []audit.Kind{audit.AuthFailed, audit.ScopeDenied, audit.StepUpRequested, audit.StepUpApproved, audit.StepUpDenied, audit.StepUpFailed, audit.ToolCalled} {
			assert.Positive(t, kinds[string(k)], "no %s line", k)
		}
		assert.ElementsMatch(t, []string{"no_token", "malformed", "expired", "audience", "invalid_request", "origin"}, reasons["auth.failed"])
		assert.Equal(t, []string{"denied"}, reasons["stepup.denied"])
		failed := slices.Clone(reasons["stepup.failed"])
		slices.Sort(failed)
		require.Len(t, failed, 4)
		assert.Equal(t, []string{"cap", "cooldown"}, failed[:2])
		assert.Equal(t, "duo_error", failed[2], "a code, the detail stays in the log")
		assert.Equal(t, "timeout", failed[3])
		assert.ElementsMatch(t, []string{"push", "grant", "push"}, reasons["stepup.approved"])
		outcomes := map[string]int{}
		for _, l := range lines {
			if l.Event == "tool.called" {
				outcomes[l.Tool+" "+l.Outcome]++
			}
		}
		assert.Equal(t, map[string]int{"list_contacts ok": 2, "create_contact started": 1, "create_contact ok": 1, "list_deals error": 1}, outcomes)
	})

	t.Run("lines say who, what and why", func(t *testing.T) {
		byKind := func(kind string) []auditLine {
			var out []auditLine
			for _, l := range lines {
				if l.Event == kind {
					out = append(out, l)
				}
			}
			return out
		}
		// The front door's refusals are counted per reason and source,
		// written at shutdown here: no request id, no token.
		for _, l := range byKind("auth.failed") {
			assert.Empty(t, l.RequestID)
			assert.Empty(t, l.TokenFP, "a refusal count names no token")
			assert.Equal(t, "deny", l.Decision)
			assert.Equal(t, "127.0.0.1", l.Source)
			assert.Equal(t, 1, l.Count)
		}
		assert.NotContains(t, strings.Join(raw, ""), resourceserver.Fingerprint(expiredTok))
		sd := byKind("scope.denied")
		require.Len(t, sd, 1)
		assert.Equal(t, "alice", sd[0].Subject)
		assert.Equal(t, as.Issuer(), sd[0].Issuer)
		assert.Equal(t, rstest.ClientID, sd[0].ClientID)
		assert.NotEmpty(t, sd[0].JTI)
		assert.Equal(t, resourceserver.Fingerprint(good), sd[0].TokenFP)
		assert.Equal(t, "insufficient_scope; challenged: crm.contacts.read crm.contacts.write crm.deals.read", sd[0].Reason)
		// The HTTP 403's line names the tool it refused and the request
		// id the gate made (it was "tool": null).
		assert.NotEmpty(t, sd[0].Tool)
		assert.Regexp(t, `^[0-9a-f]{16}$`, sd[0].RequestID)

		// One call's lines share its request id; the approval names the
		// push Duo saw.
		ids := map[string][]string{}
		for _, l := range lines {
			if l.Tool != "" && l.RequestID != "" {
				ids[l.RequestID] = append(ids[l.RequestID], l.Event+" "+l.Outcome)
			}
		}
		var seen bool
		for _, l := range byKind("stepup.approved") {
			if l.Reason != "push" {
				continue
			}
			assert.Equal(t, l.Subject, txids[l.DuoTxID], "the approval's txid is a push Duo sent to that user")
			if l.Tool == "create_contact" && l.Subject == "alice" {
				assert.Equal(t, []string{"stepup.requested ", "stepup.approved ", "tool.called started", "tool.called ok"}, ids[l.RequestID])
				seen = true
			}
		}
		assert.True(t, seen, "alice's write is on record from request to outcome")
		for _, l := range byKind("stepup.denied") {
			assert.Equal(t, "bob", l.Subject)
			assert.Equal(t, "bob", txids[l.DuoTxID])
			assert.NotEmpty(t, l.ArgsHash)
			assert.Nil(t, l.Args, "arguments only with AUDIT_INCLUDE_ARGS")
		}
	})

	t.Run("a tampered copy does not verify", func(t *testing.T) {
		require.Greater(t, len(raw), 10)
		k := 5 // 1-based, a line in the middle that denies
		for !strings.Contains(raw[k-1], `"decision":"deny"`) {
			k++
		}
		require.Less(t, k, len(raw))
		edited := slices.Clone(raw)
		edited[k-1] = strings.Replace(edited[k-1], `"decision":"deny"`, `"decision":"allow"`, 1)
		require.NotEqual(t, raw[k-1], edited[k-1])
		removed := slices.Delete(slices.Clone(raw), k-1, k)
		swapped := slices.Clone(raw)
		swapped[k-1], swapped[k] = swapped[k], swapped[k-1]
		for _, tc := range []struct {
			name  string
			lines []string
			want  string
		}{
			{"edited", edited, fmt.Sprintf("line %d: prev is not the SHA-256 of line %d", k+1, k)},
			{"removed", removed, fmt.Sprintf("line %d: seq is %d, want %d", k, k+1, k)},
			{"swapped", swapped, fmt.Sprintf("line %d: seq is %d, want %d", k, k+1, k)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				p := filepath.Join(t.TempDir(), "audit.log")
				require.NoError(t, os.WriteFile(p, []byte(strings.Join(tc.lines, "")), 0o600))
				var stdout, stderr bytes.Buffer
				assert.Equal(t, 1, run(ctx, []string{"audit", "verify", p}, nil, &stdout, &stderr))
				assert.Contains(t, stderr.String(), "NOT INTACT: "+tc.want)
			})
		}
		var stdout bytes.Buffer
		assert.Equal(t, 0, run(ctx, []string{"audit", "verify", auditPath}, nil, &stdout, io.Discard))
		assert.Contains(t, stdout.String(), ": intact: "+strconv.Itoa(len(raw))+" records")
	})

	t.Run("no secret in the audit log or the server log", func(t *testing.T) {
		b, err := os.ReadFile(auditPath)
		require.NoError(t, err)
		for name, text := range map[string]string{"audit log": string(b), "server log": s.stderr.String(), "standard output": s.stdout.String()} {
			for _, tok := range append(tokens, "not-a-jwt") {
				assert.NotContains(t, text, tok, "a token in the %s", name)
			}
			assert.NotContains(t, text, "Bearer ", "an Authorization header in the %s", name)
			assert.NotContains(t, text, env["DUO_AUTH_SKEY"], "the Duo secret key in the %s", name)
			assert.NotContains(t, text, testSecret, "the introspection client secret in the %s", name)
		}
		assert.Empty(t, s.stdout.String(), "with AUDIT_LOG_PATH nothing goes to standard output")
	})
}

// Without AUDIT_LOG_PATH the trail goes to standard output, and without
// METRICS_ADDR nothing serves metrics.
func TestServeAuditToStdoutMetricsOff(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	s := startServe(t, testEnv(t, as))
	assert.Empty(t, s.metricsAddr)
	assert.Equal(t, http.StatusUnauthorized, rawPost(t, s.url("/mcp"), nil, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	resp, _ := get(t, s.url("/metrics"))
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Equal(t, 0, s.stop(t))

	out := s.stdout.String()
	sum, err := audit.Verify(strings.NewReader(out))
	require.NoError(t, err, out)
	assert.Equal(t, 1, sum.Records)
	assert.Contains(t, out, `"event":"auth.failed"`)
	assert.Contains(t, out, `"reason":"no_token"`)
	assert.NotContains(t, s.stderr.String(), `"seq":1`, "logs stay on stderr, the trail on stdout")
	assert.NotContains(t, out, `"level":`, "no log line on stdout")
	assert.Contains(t, s.stderr.String(), `"to":"standard output"`)
}

// The audit file must open, or serve does not start.
func TestServeAuditUnopenable(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	env := testEnv(t, as)
	env["AUDIT_LOG_PATH"] = filepath.Join(t.TempDir(), "missing-dir", "audit.log")
	var stderr syncBuffer
	assert.Equal(t, 1, run(context.Background(), []string{"serve"}, env, io.Discard, &stderr))
	assert.Contains(t, stderr.String(), "cannot open the audit trail (AUDIT_LOG_PATH)")
	assert.Contains(t, stderr.String(), "no such file or directory")
	assert.NoFileExists(t, env["CRM_DB_PATH"], "nothing is opened without the audit trail")
}

// Two replicas on one Postgres, one audit volume: {replica} gives each its
// own file, each a chain of its own that verifies. B was configured for
// an earlier version (MCP_STATELESS=true): it still starts, and warns that
// the variable is no longer read.
func TestServeReplicasAuditFiles(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	env := testEnv(t, as)
	env["CRM_DATABASE_URL"] = pgtest.NewDatabase(t)
	dir := t.TempDir()
	env["AUDIT_LOG_PATH"] = filepath.Join(dir, "audit-{replica}.log")
	envA, envB := maps.Clone(env), maps.Clone(env)
	envA["MCP_REPLICA_ID"], envB["MCP_REPLICA_ID"] = "a", "b"
	envB["MCP_STATELESS"] = "true"
	a, b := startServe(t, envA), startServe(t, envB)

	const retired = "MCP_STATELESS is set but no longer read"
	assert.NotContains(t, a.stderr.String(), retired)
	assert.Contains(t, b.stderr.String(), retired, "B is told its setting does nothing")
	assert.NotContains(t, a.stderr.String()+b.stderr.String(), "sticky", "replicas need no sticky sessions")
	for i, s := range []*server{a, b, a} {
		assert.Equal(t, http.StatusUnauthorized, rawPost(t, s.url("/mcp"), bearerHeader("bad-"+strconv.Itoa(i)), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	}
	require.Equal(t, 0, a.stop(t))
	require.Equal(t, 0, b.stop(t))

	// A's two refusals, from one source for one reason, are one line.
	for name, records := range map[string]int{"audit-a.log": 1, "audit-b.log": 1} {
		f, err := os.Open(filepath.Join(dir, name))
		require.NoError(t, err, "each replica writes its own file")
		sum, err := audit.Verify(f)
		f.Close()
		require.NoError(t, err, name)
		assert.Equal(t, records, sum.Records, name)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "no other file")
}

// dev writes its audit trail in its data directory, as the banner says.
func TestDevAuditLog(t *testing.T) {
	d := startDev(t)
	path := d.stack.auditLog
	assert.Contains(t, d.stdout.String(), path)
	assert.Equal(t, http.StatusUnauthorized, rawPost(t, d.mcp, nil, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`))
	require.Equal(t, 0, d.stop(t))
	var stdout, stderr bytes.Buffer
	assert.Equal(t, 0, run(context.Background(), []string{"audit", "verify", path}, nil, &stdout, &stderr), stderr.String())
	assert.Contains(t, stdout.String(), "intact: 1 records")
	_, lines := readAudit(t, path)
	assert.Equal(t, "no_token", lines[0].Reason)
}

func TestLoadConfigObserve(t *testing.T) {
	c, err := loadConfig(minimalEnv())
	require.NoError(t, err)
	assert.Equal(t, "", c.AuditLogPath, "standard output by default")
	assert.False(t, c.AuditIncludeArgs)
	assert.Equal(t, "", c.MetricsAddr, "no metrics by default")

	c, err = loadConfig(with(minimalEnv(), "AUDIT_LOG_PATH", " /data/audit-{replica}.log ", "AUDIT_INCLUDE_ARGS", "true", "METRICS_ADDR", ":9090", "MCP_REPLICA_ID", "crm-1"))
	require.NoError(t, err)
	assert.Equal(t, "/data/audit-{replica}.log", c.AuditLogPath)
	path, err := c.auditPath()
	require.NoError(t, err)
	assert.Equal(t, "/data/audit-crm-1.log", path)
	assert.Equal(t, ":9090", c.MetricsAddr)
	assert.Len(t, c.warnings, 1)
	assert.Contains(t, c.warnings[0], "AUDIT_INCLUDE_ARGS=true")

	for _, tt := range []struct{ name, key, value, want string }{
		{"another placeholder", "AUDIT_LOG_PATH", "/data/audit-{host}.log", "AUDIT_LOG_PATH: \"/data/audit-{host}.log\": the only placeholder is {replica}"},
		{"replica id with a slash", "MCP_REPLICA_ID", "../etc", "MCP_REPLICA_ID: \"../etc\": want up to 64"},
		{"metrics address", "METRICS_ADDR", "9090", "METRICS_ADDR: \"9090\" is not host:port"},
		{"metrics port", "METRICS_ADDR", "127.0.0.1:http", "METRICS_ADDR: \"127.0.0.1:http\" has no valid port number"},
		{"metrics on the MCP listener", "METRICS_ADDR", "127.0.0.1:8080", "METRICS_ADDR: \"127.0.0.1:8080\" is MCP_LISTEN_ADDR"},
		{"metrics on every interface, MCP's port", "METRICS_ADDR", ":8080", "is MCP_LISTEN_ADDR"},
		{"include args", "AUDIT_INCLUDE_ARGS", "yes", "AUDIT_INCLUDE_ARGS: \"yes\" is not a boolean"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(with(minimalEnv(), tt.key, tt.value))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	_, err = loadConfig(with(minimalEnv(), "METRICS_ADDR", "127.0.0.1:0", "MCP_LISTEN_ADDR", "127.0.0.1:0"))
	assert.NoError(t, err, "two free ports are two listeners")

	c, err = loadConfig(with(minimalEnv(), "AUDIT_LOG_PATH_TYPO", "x", "METRICS_ADR", ":9090"))
	require.NoError(t, err)
	assert.Equal(t, []string{"AUDIT_LOG_PATH_TYPO", "METRICS_ADR"}, c.unknown, "typos of the new variables are caught too")
}

// With CRM_DATABASE_URL (replicas) the start-up warns until the audit
// files are taken care of. Replicas need nothing of the load balancer: the
// server keeps no MCP sessions.
func TestLoadConfigReplicaWarnings(t *testing.T) {
	pg := with(minimalEnv(), "CRM_DATABASE_URL", "postgres://crm@db/crm")
	c, err := loadConfig(with(pg, "AUDIT_LOG_PATH", "/data/audit.log"))
	require.NoError(t, err)
	require.Len(t, c.warnings, 1)
	assert.Contains(t, c.warnings[0], "AUDIT_LOG_PATH has no {replica}")

	for _, env := range []map[string]string{
		with(pg, "AUDIT_LOG_PATH", "/data/audit-{replica}.log"),
		pg, // the trail on standard output: the orchestrator names it
		with(minimalEnv(), "AUDIT_LOG_PATH", "/data/audit.log"),
	} {
		c, err := loadConfig(env)
		require.NoError(t, err)
		assert.Empty(t, c.warnings, "%v", env)
	}
}

func TestReplicaIDFromHostName(t *testing.T) {
	host, err := os.Hostname()
	require.NoError(t, err)
	c, err := loadConfig(with(minimalEnv(), "AUDIT_LOG_PATH", "/data/audit-{replica}.log"))
	require.NoError(t, err)
	path, err := c.auditPath()
	require.NoError(t, err)
	id := strings.TrimSuffix(strings.TrimPrefix(path, "/data/audit-"), ".log")
	assert.Regexp(t, replicaIDPattern, id)
	if replicaIDPattern.MatchString(host) {
		assert.Equal(t, host, id)
	}
}

func TestSameListener(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		same bool
	}{
		{"127.0.0.1:9090", "127.0.0.1:9090", true},
		{":9090", "127.0.0.1:9090", true},
		{"0.0.0.0:9090", "[::1]:9090", true},
		{"127.0.0.1:9090", "[::]:9090", true},
		{"127.0.0.1:9090", "127.0.0.1:8080", false},
		{"127.0.0.1:9090", "10.0.0.1:9090", false},
		{"127.0.0.1:0", "127.0.0.1:0", false},
		{"127.0.0.1:09090", "127.0.0.1:9090", true},
	} {
		assert.Equal(t, tt.same, sameListener(tt.a, tt.b), "%s %s", tt.a, tt.b)
	}
}

// The line of a refusal: auth.failed with the reason code, or scope.denied
// with the token's fields and the challenged scopes; never the token.
func TestRefusalEvent(t *testing.T) {
	tok := &resourceserver.Token{Issuer: "https://sso.example.com/oauth2/X", Subject: "alice", ClientID: "c1", JTI: "j1", Fingerprint: "sha256:0123456789abcdef"}
	e := refusalEvent(resourceserver.Refusal{Status: 403, Reason: "insufficient_scope", Scopes: []string{"crm.deals.read", "crm.contacts.read"}, Token: tok, Fingerprint: tok.Fingerprint}, "r1")
	assert.Equal(t, audit.Event{Kind: audit.ScopeDenied, RequestID: "r1", Issuer: tok.Issuer, Subject: "alice", ClientID: "c1", JTI: "j1",
		TokenFingerprint: tok.Fingerprint, Reason: "insufficient_scope; challenged: crm.deals.read crm.contacts.read"}, e)
	e = refusalEvent(resourceserver.Refusal{Status: 401, Reason: "expired", Fingerprint: "sha256:fedcba9876543210"}, "r2")
	assert.Equal(t, audit.Event{Kind: audit.AuthFailed, RequestID: "r2", TokenFingerprint: "sha256:fedcba9876543210", Reason: "expired"}, e)
	e = refusalEvent(resourceserver.Refusal{Status: 503}, "r3")
	assert.Equal(t, "refused with HTTP 503", e.Reason, "auth.failed always has a reason")
	assert.Regexp(t, `^[0-9a-f]{16}$`, newRequestID())
	assert.NotEqual(t, newRequestID(), newRequestID())
}

// The metrics count only what the fixed label lists allow.
func TestMetricsLabelsBounded(t *testing.T) {
	m := newMetrics()
	m.observe(govern.Event{Kind: audit.ToolCalled, Tool: "drop_tables", Outcome: govern.OK}, nil)
	// Codes, never text: a reason's words decide nothing.
	m.observe(govern.Event{Kind: audit.StepUpFailed, Tool: "get_contact", Outcome: govern.DuoError, Reason: "timeout"}, nil)
	m.observe(govern.Event{Kind: audit.StepUpFailed, Tool: "get_contact", Outcome: "something_new"}, nil)
	m.observe(govern.Event{Kind: audit.StepUpApproved, Tool: "get_contact", Outcome: govern.StepUpOff}, nil)
	m.observe(govern.Event{Kind: audit.ToolCalled, Tool: "get_contact", Outcome: govern.OK}, assert.AnError)
	m.refused(resourceserver.Refusal{Reason: "brand_new_reason"}, nil)
	assert.Equal(t, 1.0, testutilValue(t, m, `crm_mcp_tool_calls_total{outcome="ok",tool="unknown"}`))
	assert.Equal(t, 0.0, testutilValue(t, m, `crm_mcp_tool_calls_total{outcome="ok",tool="get_contact"}`), "not on record: not counted")
	assert.Equal(t, 1.0, testutilValue(t, m, `crm_mcp_audit_write_failures_total`))
	assert.Equal(t, 1.0, testutilValue(t, m, `crm_mcp_stepup_decisions_total{outcome="duo_error"}`))
	assert.Equal(t, 1.0, testutilValue(t, m, `crm_mcp_stepup_decisions_total{outcome="other"}`))
	assert.Equal(t, 1.0, testutilValue(t, m, `crm_mcp_stepup_decisions_total{outcome="off"}`))
	assert.Equal(t, 1.0, testutilValue(t, m, `crm_mcp_auth_failures_total{reason="other"}`))
}

// testutilValue gathers m's registry and returns one series' value.
func testutilValue(t *testing.T, m *metrics, series string) float64 {
	t.Helper()
	srv := m.server(slog.New(slog.DiscardHandler))
	rec := &recorder{header: http.Header{}}
	req, err := http.NewRequest(http.MethodGet, "/metrics", nil)
	require.NoError(t, err)
	srv.Handler.ServeHTTP(rec, req)
	for _, line := range strings.Split(rec.body.String(), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("no series %s in:\n%s", series, rec.body.String())
	return 0
}
