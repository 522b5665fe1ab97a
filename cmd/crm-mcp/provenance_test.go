package main

import (
	"bufio"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/pgtest"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// A call on B that waited for the push A sent for the same call records
// the same approval as A does: stepup.approved with reason "push" and the
// push's duo_txid, in each replica's own audit trail.
func TestServeReplicaThatWaitedAuditsThePush(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	env, duo := testEnvDuo(t, as)
	env["CRM_DATABASE_URL"] = pgtest.NewDatabase(t)
	dir := t.TempDir()
	env["AUDIT_LOG_PATH"] = filepath.Join(dir, "audit-{replica}.log")
	envA, envB := maps.Clone(env), maps.Clone(env)
	envA["MCP_REPLICA_ID"], envB["MCP_REPLICA_ID"] = "a", "b"
	a, b := startServe(t, envA), startServe(t, envB)
	ctx := context.Background()

	duo.Script("alice", duotest.Manual)
	token := as.Mint(as.Claims("alice", testResource, "crm.contacts.read"))
	call := &mcp.CallToolParams{Name: "list_contacts", Arguments: map[string]any{"query": "defence"}}
	results := make(chan *mcp.CallToolResult, 2)
	run := func(s *server) {
		cs, err := connect(ctx, s.url("/mcp"), token)
		require.NoError(t, err)
		go func() {
			defer cs.Close()
			res, err := cs.CallTool(ctx, call)
			assert.NoError(t, err)
			results <- res
		}()
	}
	run(a)
	push, err := duo.WaitForPush(t.Context())
	require.NoError(t, err)
	run(b)
	time.Sleep(500 * time.Millisecond) // B joins A's push (were it late, it would find a grant, and fail below)
	require.NoError(t, duo.Decide(push.TxID, true))
	for range 2 {
		res := <-results
		require.NotNil(t, res)
		require.False(t, res.IsError, text(t, res))
	}
	assert.Len(t, duo.Pushes(), 1)
	require.Equal(t, 0, a.stop(t))
	require.Equal(t, 0, b.stop(t))

	for _, name := range []string{"audit-a.log", "audit-b.log"} {
		f, err := os.Open(filepath.Join(dir, name))
		require.NoError(t, err)
		var approved []map[string]any
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var rec map[string]any
			require.NoError(t, json.Unmarshal(sc.Bytes(), &rec))
			if rec["event"] == "stepup.approved" {
				approved = append(approved, rec)
			}
		}
		f.Close()
		require.Len(t, approved, 1, name)
		assert.Equal(t, "push", approved[0]["reason"], name)
		assert.Equal(t, push.TxID, approved[0]["duo_txid"], name)
	}
}
