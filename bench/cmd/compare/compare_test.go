package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// skipTSEnv leaves the TypeScript peer out of TestCompareSmoke, for
// machines without node or its packages. Without it a missing
// node_modules fails the test, saying what to run.
const skipTSEnv = "CRM_MCP_BENCH_SKIP_TS"

// TestCompareSmoke runs the whole rig briefly: builds crm-mcp and the
// go-sdk peer, starts them and the TypeScript peer against the stand-in
// authorization server and Duo, drives each, and prints the table. It
// checks the rig works, not how fast anything is.
func TestCompareSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three servers; not in -short")
	}
	args := []string{"-d", "300ms", "-warmup", "100ms", "-rounds", "1", "-c", "1,4"}
	servers := serverNames
	if os.Getenv(skipTSEnv) == "1" {
		servers = []string{crmMCP, goSDK}
		args = append(args, "-servers", "crm-mcp,gosdk")
		t.Logf("%s=1: the TypeScript peer is left out", skipTSEnv)
	} else if err := checkNodeModules("../../peers/typescript"); err != nil {
		t.Fatalf("%v\n(set %s=1 to run without the TypeScript peer)", err, skipTSEnv)
	}
	var stdout, stderr strings.Builder
	code := run(t.Context(), args, &stdout, &stderr)
	require.Equal(t, 0, code, "stderr:\n%s", stderr.String())

	out := stdout.String()
	require.Contains(t, out, "| server | c=1 req/s | c=4 req/s | c=1 p99 | c=4 p99 |")
	for _, s := range servers {
		require.Contains(t, out, "| "+tableLabels[s]+" | ", out)
	}
	require.Contains(t, out, "| ratio crm-mcp / gosdk | ")
	if len(servers) == 3 {
		require.Contains(t, out, "| ratio crm-mcp / typescript | ")
	}
	require.NotContains(t, out, "| 0 |", "every server answered calls")
	require.Contains(t, stderr.String(), "round 1/1  c=4")
}

func TestMissingNodeModulesSaysWhatToRun(t *testing.T) {
	err := checkNodeModules(t.TempDir())
	require.ErrorContains(t, err, "run npm ci --prefix")
	require.ErrorContains(t, err, "-servers crm-mcp,gosdk")
}

func TestFlagsAreChecked(t *testing.T) {
	for _, args := range [][]string{
		{"-servers", "crm-mcp,nginx"},
		{"-c", "1,zero"},
		{"-rounds", "0"},
		{"-call", "get_contact [6]"},
		{"extra"},
	} {
		var stderr strings.Builder
		require.Equal(t, 2, run(t.Context(), args, &strings.Builder{}, &stderr), args)
		require.NotEmpty(t, stderr.String(), args)
	}
}

func TestMedian(t *testing.T) {
	require.Equal(t, 2.0, median([]float64{3, 1, 2}))
	require.Equal(t, 2.5, median([]float64{4, 1, 2, 3}))
	require.Equal(t, 0.0, median(nil))
}
