package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/bench/load"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
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
	if os.Getenv(skipTSEnv) == "1" || os.Getenv("CRM_MCP_SKIP_E2E") == "1" {
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
		require.Contains(t, out, "| "+tableLabels[s]+", ", out)
	}
	require.Contains(t, out, "| ratio crm-mcp / gosdk | ")
	if len(servers) == 3 {
		require.Contains(t, out, "| ratio crm-mcp / typescript | ")
	}
	require.NotContains(t, out, "| 0 |", "every server answered calls")
	require.Contains(t, out, "| server | c=1 CPU/call | c=4 CPU/call |")
	require.NotContains(t, out, "n/a", "CPU time is measured on Linux")
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

// TestServersRefuseBadTokens holds every server in the comparison to the
// same front door: a token from another issuer, for another audience,
// expired, without expiry or with a forged signature opens no session.
// A peer that skipped a check would be measured doing less work.
func TestServersRefuseBadTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three servers; not in -short")
	}
	names := serverNames
	if os.Getenv(skipTSEnv) == "1" || os.Getenv("CRM_MCP_SKIP_E2E") == "1" {
		names = []string{crmMCP, goSDK}
	} else if err := checkNodeModules("../../peers/typescript"); err != nil {
		t.Fatalf("%v\n(set %s=1 to run without the TypeScript peer)", err, skipTSEnv)
	}
	var stderr strings.Builder
	rg, err := startRig(t.Context(), rigOptions{names: names, sessions: 1, protocol: load.DefaultProtocolVersion, gosdkStateless: true}, &stderr)
	defer func() { rg.close(t.Failed(), &stderr); t.Log(stderr.String()) }()
	require.NoError(t, err)

	other := rstest.NewAuthServer("http://127.0.0.1:1/oauth2/other")
	for _, s := range rg.servers {
		as := rg.as
		claims := func(edit func(map[string]any)) map[string]any {
			c := as.Claims("mallory", s.url, scopes...)
			edit(c)
			return c
		}
		for name, token := range map[string]string{
			"other issuer":   as.Mint(claims(func(c map[string]any) { c["iss"] = other.Issuer() })),
			"other audience": as.Mint(claims(func(c map[string]any) { c["aud"] = "http://127.0.0.1:1/mcp" })),
			"expired":        as.Mint(claims(func(c map[string]any) { c["exp"] = time.Now().Add(-10 * time.Minute).Unix() })),
			"no expiry":      as.Mint(claims(func(c map[string]any) { delete(c, "exp") })),
			"forged":         as.Mint(claims(func(map[string]any) {}), rstest.WithTamperedSignature()),
			"unknown key":    other.Mint(claims(func(map[string]any) {})),
		} {
			err := load.Ping(t.Context(), s.url, token, s.protocol)
			require.ErrorContains(t, err, "HTTP 401 Unauthorized", "%s accepted a token with %s", s.name, name)
		}
		require.NoError(t, load.Ping(t.Context(), s.url, s.tokens[0], s.protocol), "%s refused a good token", s.name)
	}
}
