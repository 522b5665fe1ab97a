package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBrowserPushPage is the real-browser test of crm-mcp dev's "Duo
// Mobile" page: Debian's Chromium, driven by chromedp, approves one
// sensitive call and denies another while the MCP client waits on them.
//
// It needs Chromium: the binary CHROMIUM_PATH names, else chromium on
// PATH (the repository's ./test finds or installs it). Without one it
// fails, saying how to get it; CRM_MCP_SKIP_E2E=1 or -short skips it. Set CRM_MCP_SCREENSHOTS to a directory to keep the screenshots
// it takes (they always go to the test's temporary directory too).
func TestBrowserPushPage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium; skipped with -short")
	}
	chromium := browserChromiumPath(t)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	mcpURL := browserStartDev(t, ctx)
	u, err := url.Parse(mcpURL)
	require.NoError(t, err)
	pushPage := u.Scheme + "://" + u.Host + "/dev/push"

	session := browserConnectAlice(t, ctx, mcpURL)
	tab := browserStart(t, ctx, chromium)

	if !t.Run("approve", func(t *testing.T) {
		// The call waits on the push before the page is opened.
		call := browserCallTool(ctx, session, "list_contacts", map[string]any{"query": "defence"})
		push := browserWaitPush(t, ctx, pushPage, `Search contacts for "defence"`)
		assert.Equal(t, "alice", push.User)
		assert.Equal(t, "AI agent", push.Type)

		browserDo(t, tab, 20*time.Second, "open the push page", chromedp.Navigate(pushPage))
		card := browserPendingCard(push.TxID)
		browserWaitFor(t, tab, card, "the pending list_contacts push")
		text := browserText(t, tab, card)
		assert.Contains(t, text, "AI agent", "the push type, in:\n%s", text)
		assert.Contains(t, text, "alice", "the user, in:\n%s", text)
		pairs := browserPairs(t, tab, card)
		assert.Equal(t, `Search contacts for "defence"`, pairs["action"], "pairs %q", pairs)
		assert.Contains(t, pairs["reason"], "defence", "the reason, in %q", pairs)
		assert.Equal(t, push.PushInfo["reason"], pairs["reason"], "the page shows the reason the API holds")
		browserScreenshot(t, tab, "push-page-pending-list_contacts")

		select {
		case r := <-call:
			t.Fatalf("the call returned before the push was approved: %+v", r)
		default:
		}
		browserDo(t, tab, 10*time.Second, "click Approve", chromedp.Click(chromedp.CSS(browserButton(push.TxID, "approve"))))
		res := browserAwaitCall(t, call, 15*time.Second)
		require.NoError(t, res.err)
		require.False(t, res.res.IsError, "the approved call failed: %s", browserContentText(res.res))
		assert.Contains(t, browserContentText(res.res), "Riley Vance")

		after := browserPushByTxID(t, ctx, pushPage, push.TxID)
		assert.Equal(t, "allow", after.Result, "push %+v", after)
		assert.Equal(t, "allow", after.Status, "push %+v", after)
		browserWaitFor(t, tab, browserDecidedCard(push.TxID, "allow"), "the push under Recent, approved")
		browserScreenshot(t, tab, "push-page-approved-list_contacts")
	}) {
		return // a push left waiting would hold the next call (one approval per user at a time)
	}

	if !t.Run("update: the action and old → new rows", func(t *testing.T) {
		call := browserCallTool(ctx, session, "update_contact", map[string]any{"id": 3, "email": "priya.raman@newmail.example", "phone": "+44 20 7946 0000"})
		push := browserWaitPush(t, ctx, pushPage, "Update contact #3 Priya Raman (Ledgerstone Capital)")
		card := browserPendingCard(push.TxID)
		browserWaitFor(t, tab, card, "the pending update_contact push, live")
		pairs := browserPairs(t, tab, card)
		assert.Equal(t, "Update contact #3 Priya Raman (Ledgerstone Capital)", pairs["action"], "pairs %q", pairs)
		assert.Equal(t, "priya.raman@ledgerstone.example.com → priya.raman@newmail.example", pairs["email"], "pairs %q", pairs)
		assert.Equal(t, "+44 20 7946 0321 → +44 20 7946 0000", pairs["phone"], "pairs %q", pairs)
		assert.Equal(t, "the call changes data", pairs["reason"], "pairs %q", pairs)
		assert.NotEmpty(t, pairs["client"], "pairs %q", pairs)
		assert.Equal(t, "crm-mcp", pairs["server"], "pairs %q", pairs)
		browserScreenshot(t, tab, "push-page-pending-update_contact")

		browserDo(t, tab, 10*time.Second, "click Approve", chromedp.Click(chromedp.CSS(browserButton(push.TxID, "approve"))))
		res := browserAwaitCall(t, call, 15*time.Second)
		require.NoError(t, res.err)
		require.False(t, res.res.IsError, "the approved update failed: %s", browserContentText(res.res))
		assert.Contains(t, browserContentText(res.res), "priya.raman@newmail.example")
	}) {
		return
	}

	t.Run("deny", func(t *testing.T) {
		// The page is still open: the push must appear on it without a
		// reload, by the page's own live updates or polling.
		call := browserCallTool(ctx, session, "get_contact", map[string]any{"id": 6})
		push := browserWaitPush(t, ctx, pushPage, "Show contact #6 Riley Vance (Aegis Defence Systems)")
		card := browserPendingCard(push.TxID)
		browserWaitFor(t, tab, card, "the pending get_contact push, live")
		text := browserText(t, tab, card)
		assert.Contains(t, text, "AI agent", "the push type, in:\n%s", text)
		assert.Contains(t, text, "alice", "the user, in:\n%s", text)
		pairs := browserPairs(t, tab, card)
		assert.Equal(t, "Show contact #6 Riley Vance (Aegis Defence Systems)", pairs["action"], "pairs %q", pairs)
		assert.Contains(t, pairs["reason"], "restricted", "pairs %q", pairs)
		browserScreenshot(t, tab, "push-page-pending-get_contact")

		browserDo(t, tab, 10*time.Second, "click Deny", chromedp.Click(chromedp.CSS(browserButton(push.TxID, "deny"))))
		res := browserAwaitCall(t, call, 15*time.Second)
		require.NoError(t, res.err)
		out := browserContentText(res.res)
		assert.True(t, res.res.IsError, "a denied call must be a tool error, got: %s", out)
		assert.NotContains(t, out, "Riley")
		t.Logf("the agent was told: %s", strings.TrimSpace(out))

		after := browserPushByTxID(t, ctx, pushPage, push.TxID)
		assert.Equal(t, "deny", after.Result, "push %+v", after)
		assert.Equal(t, "deny", after.Status, "push %+v", after)
		browserWaitFor(t, tab, browserDecidedCard(push.TxID, "deny"), "the push under Recent, denied")
		browserScreenshot(t, tab, "push-page-denied-get_contact")
	})
}

// browserChromiumPath finds Chromium. A missing one fails the test unless
// the end-to-end tests are skipped on purpose, so that it cannot go
// quietly unrun.
func browserChromiumPath(t *testing.T) string {
	t.Helper()
	path := os.Getenv("CHROMIUM_PATH")
	if path == "" {
		path, _ = exec.LookPath("chromium")
	}
	if _, err := os.Stat(path); path == "" || err != nil {
		if os.Getenv("CRM_MCP_SKIP_E2E") == "1" {
			t.Skipf("CRM_MCP_SKIP_E2E=1: skipping the browser test (no Chromium at %q)", path)
		}
		t.Fatalf("no Chromium found (CHROMIUM_PATH %q, else chromium on PATH): install it (apt-get install chromium) or set CHROMIUM_PATH; ./test at the repository root finds or installs it; CRM_MCP_SKIP_E2E=1 skips this test", path)
	}
	return path
}

// browserReadyPrefix starts the line crm-mcp dev prints once it serves.
const browserReadyPrefix = "crm-mcp dev ready: "

// browserLines is an io.Writer that keeps what is written and, when ready
// is not nil, hands it the URL of the ready line, once.
type browserLines struct {
	mu    sync.Mutex
	buf   strings.Builder
	seen  bool
	ready chan string
}

func (w *browserLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.ready != nil && !w.seen {
		for line := range strings.Lines(w.buf.String()) {
			if rest, ok := strings.CutPrefix(line, browserReadyPrefix); ok && strings.HasSuffix(rest, "\n") {
				w.seen = true
				w.ready <- strings.TrimSpace(rest)
				break
			}
		}
	}
	return len(p), nil
}

func (w *browserLines) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// browserStartDev runs crm-mcp dev in-process on a free loopback port and
// returns its MCP URL. It stops dev when the test ends.
func browserStartDev(t *testing.T, parent context.Context) string {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	stdout := &browserLines{ready: make(chan string, 1)}
	stderr := &browserLines{}
	done := make(chan int, 1)
	args := []string{"dev", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir()}
	go func() { done <- run(ctx, args, nil, stdout, stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("crm-mcp dev exited with %d", code)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("crm-mcp dev did not stop within 20 s of its context's end")
		}
		if t.Failed() {
			t.Logf("crm-mcp dev stdout:\n%s\nstderr:\n%s", stdout, stderr)
		}
	})
	select {
	case u := <-stdout.ready:
		return u
	case code := <-done:
		done <- code
		t.Fatalf("crm-mcp dev exited with %d before it was ready", code)
	case <-time.After(30 * time.Second):
		t.Fatalf("crm-mcp dev printed no %q line in 30 s", strings.TrimSpace(browserReadyPrefix))
	}
	return ""
}

// browserConnectAlice connects go-sdk's client to the MCP server with its
// OAuth handler: discovery from the 401, dynamic registration, and the
// authorization code flow with PKCE, signing in as alice through
// login_hint, as a browser would up to the redirect to the client.
func browserConnectAlice(t *testing.T, ctx context.Context, mcpURL string) *mcp.ClientSession {
	t.Helper()
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: &auth.DynamicClientRegistrationConfig{
			Metadata: &oauthex.ClientRegistrationMetadata{
				ClientName:              "browser test",
				RedirectURIs:            []string{"http://127.0.0.1:3142/callback"},
				TokenEndpointAuthMethod: "none",
				GrantTypes:              []string{"authorization_code", "refresh_token"},
			},
		},
		AuthorizationCodeFetcher: browserLoginHint("alice"),
		RequestRefreshToken:      true,
	})
	require.NoError(t, err)
	client := mcp.NewClient(&mcp.Implementation{Name: "browser-test", Version: "0.0.1"}, nil)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	session, err := client.Connect(cctx, &mcp.StreamableClientTransport{
		Endpoint:             mcpURL,
		OAuthHandler:         handler,
		DisableStandaloneSSE: true,
		MaxRetries:           -1,
	}, nil)
	require.NoError(t, err, "connect to crm-mcp dev as alice")
	t.Cleanup(func() { session.Close() })
	return session
}

// browserLoginHint is an AuthorizationCodeFetcher that adds login_hint to
// the authorization URL and reads the code from the redirect.
func browserLoginHint(user string) auth.AuthorizationCodeFetcher {
	return func(ctx context.Context, args *auth.AuthorizationArgs) (*auth.AuthorizationResult, error) {
		u, err := url.Parse(args.URL)
		if err != nil {
			return nil, err
		}
		q := u.Query()
		q.Set("login_hint", user)
		u.RawQuery = q.Encode()
		return authorizeByRedirect(ctx, u.String())
	}
}

type browserCallResult struct {
	res *mcp.CallToolResult
	err error
}

// browserCallTool calls a tool in a goroutine: a sensitive call blocks
// until its push is decided.
func browserCallTool(ctx context.Context, session *mcp.ClientSession, name string, args map[string]any) <-chan browserCallResult {
	ch := make(chan browserCallResult, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		res, err := session.CallTool(cctx, &mcp.CallToolParams{Name: name, Arguments: args})
		ch <- browserCallResult{res, err}
	}()
	return ch
}

func browserAwaitCall(t *testing.T, call <-chan browserCallResult, within time.Duration) browserCallResult {
	t.Helper()
	start := time.Now()
	select {
	case r := <-call:
		t.Logf("the call returned %v after the click", time.Since(start).Round(time.Millisecond))
		return r
	case <-time.After(within):
		t.Fatalf("the call did not return within %v of the decision", within)
		return browserCallResult{}
	}
}

func browserContentText(res *mcp.CallToolResult) string {
	if res == nil {
		return ""
	}
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
			b.WriteString("\n")
		}
	}
	return b.String()
}

// browserPush is one entry of GET /dev/push/api/pushes (internal/devduo's push page).
type browserPush struct {
	TxID     string            `json:"txid"`
	User     string            `json:"user"`
	Type     string            `json:"type"`
	Status   string            `json:"status"`
	Result   string            `json:"result"`
	PushInfo map[string]string `json:"pushinfo"`
}

func browserPushes(ctx context.Context, pushPage string) ([]browserPush, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pushPage+"/api/pushes", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	var pushes []browserPush
	if err := json.NewDecoder(resp.Body).Decode(&pushes); err != nil {
		return nil, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	return pushes, nil
}

// browserWaitPush waits until the push API lists a push waiting for a
// decision whose action row is action.
func browserWaitPush(t *testing.T, ctx context.Context, pushPage, action string) browserPush {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last []browserPush
	for time.Now().Before(deadline) {
		pushes, err := browserPushes(ctx, pushPage)
		require.NoError(t, err)
		last = pushes
		for _, p := range pushes {
			if p.PushInfo["action"] == action && p.Result == "waiting" {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no waiting push for %q in 20 s; the API listed %+v", action, last)
	return browserPush{}
}

func browserPushByTxID(t *testing.T, ctx context.Context, pushPage, txid string) browserPush {
	t.Helper()
	pushes, err := browserPushes(ctx, pushPage)
	require.NoError(t, err)
	for _, p := range pushes {
		if p.TxID == txid {
			return p
		}
	}
	t.Fatalf("the push API no longer lists %s: %+v", txid, pushes)
	return browserPush{}
}

// The push page's selectors: an article.push carries the push's
// data-txid; a pending one sits in #pending with a form whose buttons
// post decision=approve or decision=deny; a decided one moves to #decided
// with its result (allow, deny) as a class.
func browserPendingCard(txid string) string {
	return fmt.Sprintf(`#pending article.push.pending[data-txid=%q]`, txid)
}

func browserDecidedCard(txid, result string) string {
	return fmt.Sprintf(`#decided article.push.%s[data-txid=%q]`, result, txid)
}

func browserButton(txid, decision string) string {
	return fmt.Sprintf(`%s button[name="decision"][value=%q]`, browserPendingCard(txid), decision)
}

// browserStart starts headless Chromium with the flags a machine without
// network needs (without them Chromium waits on background connections)
// and returns the context of its first tab. The browser is closed, and its
// process ended, when the test ends, whatever happened.
func browserStart(t *testing.T, ctx context.Context, execPath string) context.Context {
	t.Helper()
	output := &browserLines{}
	profile := t.TempDir()
	actx, allocCancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(execPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		chromedp.CombinedOutput(output),
	)
	tab, tabCancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		// Close the browser gracefully (Cancel needs the chromedp
		// context; the timeout bounds the wait), then the allocator's
		// cancel kills the process if it is still there and waits for it.
		cctx, cancel := context.WithTimeout(tab, 10*time.Second)
		if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("closing Chromium: %v", err)
		}
		cancel()
		tabCancel()
		allocCancel()
		// Every Chromium process of this test has the profile directory
		// on its command line; none may outlive the test.
		if left := browserProcesses(profile, 5*time.Second); len(left) > 0 {
			t.Errorf("Chromium processes %v still ran after the browser was closed; killing them", left)
			for _, pid := range left {
				if p, err := os.FindProcess(pid); err == nil {
					p.Kill()
				}
			}
		}
		if t.Failed() {
			out := output.String()
			if len(out) > 8000 {
				out = "…" + out[len(out)-8000:]
			}
			t.Logf("Chromium's output (end):\n%s", out)
		}
	})
	// The first Run starts the browser and binds it to tab, so it gets no
	// timeout of its own (ctx bounds it); later steps do.
	start := time.Now()
	require.NoError(t, chromedp.Do(tab), "start Chromium at %s", execPath)
	t.Logf("Chromium started in %v", time.Since(start).Round(time.Millisecond))
	return tab
}

// browserProcesses lists, after up to grace for them to exit, the
// processes whose command line mentions profile (Linux /proc; none
// elsewhere). Zombies, which are gone but not yet reaped, do not count.
func browserProcesses(profile string, grace time.Duration) []int {
	deadline := time.Now().Add(grace)
	for {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil || !strings.Contains(string(cmdline), profile) {
				continue
			}
			if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
				if _, after, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(after, "Z") {
					continue
				}
			}
			pids = append(pids, pid)
		}
		if len(pids) == 0 || time.Now().After(deadline) {
			return pids
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// browserDo runs actions on the tab with a timeout.
func browserDo(t *testing.T, tab context.Context, timeout time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, timeout)
	defer cancel()
	require.NoError(t, chromedp.Do(ctx, actions...), what)
}

// browserWaitFor waits until the page shows the element sel, without
// reloading it: the page's own refresh must bring it.
func browserWaitFor(t *testing.T, tab context.Context, sel, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		html, _ := chromedp.Run(context.WithoutCancel(tab), chromedp.OuterHTML(chromedp.CSS("body")))
		t.Fatalf("the page did not show %s (%s) within 20 s: %v\npage:\n%s", what, sel, err, html)
	}
}

// browserPairs reads the pushinfo pairs the card sel shows (its dt and dd).
func browserPairs(t *testing.T, tab context.Context, sel string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	js := fmt.Sprintf(`Object.fromEntries([...document.querySelectorAll(%q)].map(dt => [dt.textContent, dt.nextElementSibling ? dt.nextElementSibling.textContent : ""]))`, sel+" dl dt")
	pairs, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]string](js))
	require.NoError(t, err, "read the pushinfo pairs of %s", sel)
	return pairs
}

// browserText is the visible text of the element sel.
func browserText(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err, "read the text of %s", sel)
	return text
}

// browserScreenshot saves a PNG of the whole page to the test's temporary
// directory and, when CRM_MCP_SCREENSHOTS names a directory, there too.
func browserScreenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err, "screenshot")
	dirs := []string{t.TempDir()}
	if d := os.Getenv("CRM_MCP_SCREENSHOTS"); d != "" {
		require.NoError(t, os.MkdirAll(d, 0o755))
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name+".png")
		require.NoError(t, os.WriteFile(p, png, 0o644))
		t.Logf("screenshot: %s", p)
	}
}
