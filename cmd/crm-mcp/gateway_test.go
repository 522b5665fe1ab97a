package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/testlock"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// The example policy's real upstreams: the everything server on the port
// the example names, the filesystem server started by the gateway over
// stdio, both pinned in examples/gateway (./test runs npm ci there).
const gatewayExamples = "../../examples/gateway"

var everythingServer struct {
	once sync.Once
	err  string
	pid  int
}

// startEverything starts the everything server on 127.0.0.1:3001 for the
// test binary's lifetime, and makes /srv/shared.
func startEverything(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(gatewayExamples, "node_modules/@modelcontextprotocol/server-filesystem/package.json")); err != nil {
		if os.Getenv("CRM_MCP_SKIP_E2E") == "1" {
			t.Skip("CRM_MCP_SKIP_E2E=1: skipping the gateway's test against its real upstreams")
		}
		t.Fatal("examples/gateway/node_modules is missing: run `npm ci --prefix examples/gateway` (./test does), or set CRM_MCP_SKIP_E2E=1 to skip this test")
	}
	if err := os.MkdirAll("/srv/shared", 0o755); err != nil {
		t.Fatalf("the example policy serves /srv/shared, which this test must create and cannot (%v): run the tests as root, or create it", err)
	}
	everythingServer.once.Do(func() {
		// The gateway package's tests start one on the same port: one
		// test binary at a time.
		if err := testlock.Port("127.0.0.1:3001", 30*time.Second); err != nil {
			everythingServer.err = err.Error()
			return
		}
		abs, _ := filepath.Abs(gatewayExamples)
		cmd := exec.Command("node", filepath.Join(abs, "node_modules/@modelcontextprotocol/server-everything/dist/index.js"), "streamableHttp")
		cmd.Env = append(os.Environ(), "PORT=3001")
		// It outlives the test that started it, not the test binary.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := cmd.Start(); err != nil {
			everythingServer.err = err.Error()
			return
		}
		everythingServer.pid = cmd.Process.Pid
		for range 300 {
			if c, err := net.DialTimeout("tcp", "127.0.0.1:3001", time.Second); err == nil {
				c.Close()
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		everythingServer.err = "the everything server did not listen on 127.0.0.1:3001"
	})
	if everythingServer.err != "" {
		t.Fatal(everythingServer.err)
	}
}

// TestGatewayDev: `crm-mcp dev --gateway examples/gateway/policy.yaml`,
// the example as written, in front of the two real upstreams; go-sdk's
// client signs in with OAuth (registration, PKCE, code) at the dev
// sign-in, lists and calls tools, and get-env's Duo Push is approved once
// and denied once on the phone page. /readyz lists the upstreams.
func TestGatewayDev(t *testing.T) {
	startEverything(t)
	t.Chdir(gatewayExamples) // npx finds the pinned filesystem server here
	d := startDevEnv(t, map[string]string{
		"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME"), "EVERYTHING_TOKEN": "gateway-own-credential",
	}, "--gateway", "policy.yaml", "--auto-login", "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The policy starts a stdio upstream, which runs as this user: the
	// gateway's /proc/<pid>/environ must not be readable to it.
	assert.Equal(t, uintptr(0), dumpable(t), "the gateway is still dumpable")
	c := newDevClient(t, d, "alice")
	s := c.connect(t, ctx)

	var names []string
	for tool, err := range s.Tools(ctx, nil) {
		require.NoError(t, err)
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	assert.Equal(t, []string{"everything.echo", "everything.get-env", "everything.get-sum", "everything.trigger-long-running-operation", "files.read_text_file", "files.write_file"}, names)

	res, err := devCall(ctx, s, "everything.echo", map[string]any{"message": "through the gateway"})
	require.NoError(t, err)
	assert.Equal(t, "Echo: through the gateway", devText(res))

	seen := map[string]bool{}
	// A second client (another registration) for the denial: an approval
	// is granted to the client that asked, for STEPUP_GRANT_TTL.
	other := newDevClient(t, d, "alice").connect(t, ctx)
	for _, approve := range []bool{true, false} {
		s := s
		if !approve {
			s = other
		}
		done := make(chan string, 1)
		go func() {
			res, err := devCall(ctx, s, "everything.get-env", nil)
			if err != nil {
				done <- "error: " + err.Error()
				return
			}
			done <- devText(res)
		}()
		p := d.waitForPush(t, seen)
		assert.Equal(t, "Read every environment variable of the everything server", p.PushInfo["action"])
		assert.Equal(t, "the tool always needs approval", p.PushInfo["reason"])
		verb := "deny"
		if approve {
			verb = "approve"
		}
		status, body := d.do(t, http.MethodPost, "/dev/push/api/pushes/"+p.TxID+"/"+verb)
		require.Less(t, status, 300, body)
		got := <-done
		if approve {
			assert.Contains(t, got, "PATH", "the everything server's environment")
		} else {
			assert.Contains(t, got, "everything.get-env needs approval on your phone (Duo Push)")
			assert.NotContains(t, got, "PATH")
		}
	}

	status, body := d.do(t, http.MethodGet, "/readyz")
	assert.Equal(t, http.StatusOK, status, body)
	var ready readyReport
	require.NoError(t, json.Unmarshal([]byte(body), &ready))
	assert.Empty(t, ready.DB, "the gateway has no database")
	require.Len(t, ready.Upstreams, 2)
	assert.Equal(t, "everything", ready.Upstreams[0].Name)
	assert.True(t, ready.Upstreams[0].Reachable)

	audit, err := os.ReadFile(d.stack.auditLog)
	require.NoError(t, err)
	assert.Contains(t, string(audit), `"tool":"everything.get-env"`)
	assert.NotContains(t, string(audit), "gateway-own-credential")
	assert.NotContains(t, d.stderr.String(), "gateway-own-credential")
	assert.True(t, strings.Count(string(audit), `"event":"stepup.denied"`) >= 1, "the denial is on record")
}

// TestCheckGateway: with GATEWAY_POLICY set, check loads the policy, and
// reports an upstream that cannot be reached and a named tool an upstream
// does not offer, never the policy's credentials.
func TestCheckGateway(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	s := mcp.NewServer(&mcp.Implementation{Name: "up"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "offered"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true}))
	defer up.Close()
	dead := httptest.NewServer(nil)
	dead.Close()
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	require.NoError(t, os.WriteFile(policy, []byte(`upstreams:
  - name: up
    url: `+up.URL+`/mcp
    headers: {Authorization: "Bearer ${UP_TOKEN}"}
    tools:
      offered: {scopes: [demo.read]}
      gone: {scopes: [demo.read]}
  - name: dead
    url: `+dead.URL+`/mcp
    tools:
      any: {scopes: [demo.read]}
`), 0o600))
	env := testEnv(t, as)
	env["GATEWAY_POLICY"] = policy
	env["UP_TOKEN"] = "check-must-not-print-this"

	code, out, errOut := runCheck(t, env)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "PASS  gateway policy: "+policy+": 2 upstream(s)")
	assert.Contains(t, out, "FAIL  gateway upstream up: "+policy+":7: upstream up, tool gone: the policy names it, but the upstream does not offer it")
	assert.Contains(t, out, "FAIL  gateway upstream dead: "+policy+":8: upstream dead: unreachable: ")
	assert.NotContains(t, out+errOut, "check-must-not-print-this")

	delete(env, "UP_TOKEN")
	code, out, _ = runCheck(t, env)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "FAIL  gateway policy: "+policy+":4: upstreams[0].headers.Authorization: ${UP_TOKEN} is not set in the environment")
}

// TestGatewayBadPolicy: a bad policy file stops the start with an error
// naming the line and the field, before anything listens.
func TestGatewayBadPolicy(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	require.NoError(t, os.WriteFile(policy, []byte("upstreams:\n  - name: up\n    url: http://127.0.0.1:1/mcp\n    tools:\n      echo:\n        scopes: [demo.read]\n        stepup: sometimes\n"), 0o600))
	env := testEnv(t, as)
	env["GATEWAY_POLICY"] = policy
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"gateway"}, env, &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, errOut.String(), "crm-mcp gateway: invalid policy (GATEWAY_POLICY):\n  "+policy+`:7: upstreams[0].tools.echo: stepup must be "always" or a mapping, not "sometimes"`)

	delete(env, "GATEWAY_POLICY")
	errOut.Reset()
	assert.Equal(t, 1, run(context.Background(), []string{"gateway"}, env, &out, &errOut))
	assert.Contains(t, errOut.String(), "GATEWAY_POLICY: is required by crm-mcp gateway")
}

// dumpable is prctl(PR_GET_DUMPABLE) of this process, set back to 1 when
// the test ends (the gateway ran in this process).
func dumpable(t *testing.T) uintptr {
	t.Helper()
	v, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_GET_DUMPABLE, 0, 0)
	require.Zero(t, errno)
	t.Cleanup(func() { syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_DUMPABLE, 1, 0) })
	return v
}

// TestGatewayCommandEnv: a stdio upstream gets the named variables of the
// gateway's environment only, never npm's registry credentials.
func TestGatewayCommandEnv(t *testing.T) {
	a := &app{environ: map[string]string{
		"PATH": "/bin", "HOME": "/home/gw", "npm_config_cache": "/tmp/npm",
		"npm_config__authToken": "registry-secret", "NPM_CONFIG_//registry.example/:_auth": "registry-secret",
		"DUO_SKEY": "duo-secret", "DATABASE_URL": "postgres://secret",
	}}
	assert.Equal(t, []string{"HOME=/home/gw", "PATH=/bin", "npm_config_cache=/tmp/npm"}, a.commandEnv())
}
