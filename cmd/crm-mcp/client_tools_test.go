//go:build linux

package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The client tools issue 17 keeps working, pinned in examples/client-tools
// (./test runs npm ci there): mcp-remote, Claude Desktop's bridge to a
// remote server, and the MCP Inspector CLI, with the Node.js 22 the
// Inspector needs.
//
// Both sign in by handing the authorization URL to the `open` package,
// which on Linux runs its bundled xdg-open, which runs $BROWSER where no
// desktop is running. The tests set BROWSER to a script that follows the
// URL with curl; crm-mcp dev --auto-login redirects it straight to the
// tool's loopback callback. Linux only: elsewhere `open` starts a real
// browser and ignores $BROWSER.
const clientToolsDir = "../../examples/client-tools"

// crmTools is every CRM tool, sorted: what alice, who holds every scope,
// is listed.
var crmTools = []string{"create_contact", "create_deal", "get_contact", "list_contacts", "list_deals", "update_contact", "update_deal_stage"}

// TestMCPRemote runs mcp-remote 0.15.1 as Claude Desktop runs it, a stdio
// MCP server child, with go-sdk's client on the stdio side: one headless
// sign-in, the tools, a plain call, and a call that waits on a push,
// approved through the push page's API.
func TestMCPRemote(t *testing.T) {
	node, err := exec.LookPath("node")
	requireE2E(t, err == nil, "node is not on PATH: mcp-remote needs Node.js 20+ (https://nodejs.org/, or apt-get install nodejs npm)")
	proxy := clientToolsFile(t, "node_modules/mcp-remote/dist/proxy.js")
	browser, opened := headlessBrowser(t)
	d := startDevEnv(t, nil, "--auto-login", "alice")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, node, proxy, d.mcp)
	cmd.Env = clientToolsEnv(home, browser, "MCP_REMOTE_CONFIG_DIR="+filepath.Join(home, ".mcp-auth"))
	logs := childLogs(t, cmd, "mcp-remote")
	// Claude Desktop opens with initialize at 2025-06-18, the revision
	// mcp-remote's own SDK speaks, where go-sdk would ask server/discover.
	client := mcp.NewClient(&mcp.Implementation{Name: "claude-desktop-stand-in", Version: "0.0.1"}, nil)
	session, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-06-18"})
	require.NoError(t, err)
	defer session.Close()

	initRes := session.InitializeResult()
	assert.Equal(t, "crm-mcp", initRes.ServerInfo.Name, "the remote server's, passed through")
	assert.Equal(t, "2025-06-18", initRes.ProtocolVersion)
	assert.Contains(t, logs.String(), "[Local→Remote] initialize", "the handshake went through mcp-remote")
	assert.Equal(t, crmTools, listToolNames(t, ctx, session))
	urls := opened()
	require.Len(t, urls, 1, "one sign-in")
	assertAuthorization(t, d, urls[0])

	res, err := devCall(ctx, session, "list_contacts", nil)
	require.NoError(t, err)
	require.False(t, res.IsError, devText(res))
	assert.Contains(t, devText(res), "1 restricted contact(s) withheld")
	assert.NotContains(t, devText(res), "Riley")

	// The restricted contact waits on a push; mcp-remote holds the call
	// open until it is approved.
	done := make(chan *mcp.CallToolResult, 1)
	go func() {
		res, err := devCall(ctx, session, "get_contact", map[string]any{"id": 6})
		assert.NoError(t, err)
		done <- res
	}()
	p := d.waitForPush(t, map[string]bool{})
	assert.Equal(t, "alice", p.User)
	select {
	case res := <-done:
		t.Fatalf("the call did not wait for the push: %v", res)
	default:
	}
	status, body := d.do(t, http.MethodPost, "/dev/push/api/pushes/"+p.TxID+"/approve")
	require.Equal(t, http.StatusNoContent, status, body)
	res = <-done
	require.NotNil(t, res)
	require.False(t, res.IsError, devText(res))
	assert.Contains(t, devText(res), "Riley Vance")
	assert.Len(t, opened(), 1, "no second sign-in")
}

// TestInspectorCLI runs `mcp-inspector --cli <url> --transport http
// --method tools/list` (MCP Inspector 2.12.0) on the pinned Node.js 22, in
// a pipe as a script would: MCP_AUTO_OPEN_ENABLED=true lets it sign in
// without a terminal, through $BROWSER.
func TestInspectorCLI(t *testing.T) {
	node := clientToolsFile(t, "node_modules/.bin/node")
	inspector := clientToolsFile(t, "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js")
	browser, opened := headlessBrowser(t)
	d := startDevEnv(t, nil, "--auto-login", "alice")

	// The callback on a free port rather than the default 6276, which an
	// Inspector someone is running may hold.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	callback := "http://" + ln.Addr().String() + "/oauth/callback"
	ln.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, inspector, "--cli", d.mcp, "--transport", "http", "--method", "tools/list",
		"--callback-url", callback)
	cmd.Env = clientToolsEnv(t.TempDir(), browser,
		"MCP_AUTO_OPEN_ENABLED=true",
		// No OS keychain here: say so, rather than have it try one.
		"MCP_INSPECTOR_SECRET_STORE=memory")
	logs := childLogs(t, cmd, "the Inspector")
	out, err := cmd.Output()
	require.NoError(t, err, "the Inspector's output:\n%s", out)

	var list struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	require.NoError(t, json.Unmarshal(out, &list), "the Inspector's output:\n%s", out)
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	assert.Equal(t, crmTools, names)
	urls := opened()
	require.Len(t, urls, 1, "one sign-in")
	assertAuthorization(t, d, urls[0])
	assert.Equal(t, callback, urls[0].Query().Get("redirect_uri"))
	assert.Contains(t, logs.String(), "Authorization complete.")
}

// clientToolsFile returns the absolute path of a file npm ci installs in
// examples/client-tools, or fails the test saying how to get it.
func clientToolsFile(t *testing.T, name string) string {
	t.Helper()
	path, err := filepath.Abs(filepath.Join(clientToolsDir, name))
	require.NoError(t, err)
	_, err = os.Stat(path)
	requireE2E(t, err == nil, "examples/client-tools/%s is missing: run `npm ci --prefix examples/client-tools` (it needs the npm registry)", name)
	return path
}

// headlessBrowser writes the script the tools run as $BROWSER: it keeps
// the URL it is given and follows it with curl, as a browser would. It
// returns the script's path and a function that reads the URLs opened so
// far.
func headlessBrowser(t *testing.T) (string, func() []*url.URL) {
	t.Helper()
	_, err := exec.LookPath("curl")
	requireE2E(t, err == nil, "curl is not on PATH: the headless browser of the client tools' sign-in follows the URL with it (apt-get install curl)")
	dir := t.TempDir()
	script, log := filepath.Join(dir, "browser"), filepath.Join(dir, "opened")
	// The last response is the tool's callback page: -f makes any error
	// on the way the browser's failure, which the tool reports.
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n"+
		"printf '%s\\n' \"$1\" >> '"+log+"'\n"+
		"exec curl -fsS -L -o /dev/null --max-time 30 \"$1\"\n"), 0o755))
	return script, func() []*url.URL {
		b, err := os.ReadFile(log)
		if os.IsNotExist(err) {
			return nil
		}
		require.NoError(t, err)
		var urls []*url.URL
		for _, line := range strings.Fields(string(b)) {
			u, err := url.Parse(line)
			require.NoError(t, err)
			urls = append(urls, u)
		}
		return urls
	}
}

// clientToolsEnv is the whole environment of a client tool: PATH, and a
// home of its own, so that nothing of the user's is read or written: not
// their tokens, and no desktop session (XDG_CURRENT_DESKTOP, DISPLAY,
// DBUS_SESSION_BUS_ADDRESS) in which xdg-open would start the desktop's
// browser instead of $BROWSER.
func clientToolsEnv(home, browser string, extra ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "BROWSER=" + browser}, extra...)
}

// childLogs sends cmd's stderr to a buffer shown when the test fails, puts
// cmd in a process group of its own and makes its context's end kill the
// group, so that nothing it started (xdg-open, the browser) outlives the
// test.
func childLogs(t *testing.T, cmd *exec.Cmd, name string) *syncBuffer {
	logs := &syncBuffer{}
	cmd.Stderr = logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log:\n%s", name, logs)
		}
	})
	return logs
}

// assertAuthorization checks the authorization request a tool opened:
// dev's endpoint, PKCE, the resource indicator and a loopback callback.
func assertAuthorization(t *testing.T, d *devServer, u *url.URL) {
	t.Helper()
	assert.Equal(t, d.base+"/oauth2/dev/authorize", u.Scheme+"://"+u.Host+u.Path)
	q := u.Query()
	assert.Equal(t, "code", q.Get("response_type"))
	assert.Equal(t, "S256", q.Get("code_challenge_method"))
	assert.Equal(t, []string{d.mcp}, q["resource"], "RFC 8707 resource")
	cb, err := url.Parse(q.Get("redirect_uri"))
	require.NoError(t, err)
	port, _ := strconv.Atoi(cb.Port())
	assert.True(t, cb.Scheme == "http" && (cb.Hostname() == "localhost" || cb.Hostname() == "127.0.0.1") && port > 0, "a loopback callback: %s", cb)
}

func listToolNames(t *testing.T, ctx context.Context, s *mcp.ClientSession) []string {
	t.Helper()
	var names []string
	for tool, err := range s.Tools(ctx, nil) {
		require.NoError(t, err)
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}
