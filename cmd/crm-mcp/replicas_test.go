package main

import (
	"context"
	"maps"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/pgtest"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// TestMain stops the Postgres cluster the tests may have started.
func TestMain(m *testing.M) { pgtest.Main(m) }

func text(t *testing.T, res *mcp.CallToolResult) string {
	t.Helper()
	require.NotEmpty(t, res.Content)
	return res.Content[0].(*mcp.TextContent).Text
}

// Two serve processes (in one binary) on one Postgres act as one server: a
// write on A is read on B, and an approval on A covers the same call on B.
// Neither writes a SQLite file.
func TestServeTwoReplicasOnPostgres(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	env, duo := testEnvDuo(t, as)
	env["CRM_DATABASE_URL"] = pgtest.NewDatabase(t)
	a := startServe(t, env)
	b := startServe(t, maps.Clone(env))
	ctx := context.Background()

	duo.Script("alice", duotest.Approve)
	token := as.Mint(as.Claims("alice", testResource, "crm.contacts.read", "crm.contacts.write"))
	csA, err := connect(ctx, a.url("/mcp"), token)
	require.NoError(t, err)
	defer csA.Close()
	csB, err := connect(ctx, b.url("/mcp"), token)
	require.NoError(t, err)
	defer csB.Close()

	res, err := csA.CallTool(ctx, &mcp.CallToolParams{Name: "create_contact", Arguments: map[string]any{
		"name": "Wen Zhao", "email": "wen.zhao@example.com", "classification": "public",
	}})
	require.NoError(t, err)
	require.False(t, res.IsError, text(t, res))
	res, err = csB.CallTool(ctx, &mcp.CallToolParams{Name: "list_contacts", Arguments: map[string]any{"query": "wen zhao"}})
	require.NoError(t, err)
	require.False(t, res.IsError, text(t, res))
	assert.Contains(t, text(t, res), "wen.zhao@example.com", "B reads what A wrote")
	pushes := len(duo.Pushes())

	call := &mcp.CallToolParams{Name: "list_contacts", Arguments: map[string]any{"query": "defence"}}
	res, err = csA.CallTool(ctx, call)
	require.NoError(t, err)
	require.False(t, res.IsError, text(t, res))
	require.Len(t, duo.Pushes(), pushes+1, "the sensitive search pushes on A")
	onA := text(t, res)
	res, err = csB.CallTool(ctx, call)
	require.NoError(t, err)
	require.False(t, res.IsError, text(t, res))
	assert.Equal(t, onA, text(t, res), "B answers as A did")
	assert.Len(t, duo.Pushes(), pushes+1, "A's approval covers the same call on B")

	assert.NoFileExists(t, env["CRM_DB_PATH"], "a replica on Postgres writes no SQLite file")
	for _, s := range []*server{a, b} {
		assert.Equal(t, 0, s.stop(t))
		assert.Contains(t, s.stderr.String(), `"CRM_DATABASE_URL":"set"`)
		assert.NotContains(t, s.stderr.String(), env["CRM_DATABASE_URL"], "the database URL may hold a password")
	}
}

func TestServeDatabaseURLValidated(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	env := testEnv(t, as)
	env["CRM_DATABASE_URL"] = "mysql://u:pw@db/crm"
	var stderr syncBuffer
	a := &app{environ: env, stderr: &stderr}
	assert.Equal(t, 1, a.run(context.Background(), []string{"serve"}))
	assert.Contains(t, stderr.String(), "CRM_DATABASE_URL")
	assert.Contains(t, stderr.String(), "postgres://")
	assert.NotContains(t, stderr.String(), "pw@db")
}
