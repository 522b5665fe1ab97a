package devduo

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	duoapi "github.com/duosecurity/duo_api_golang"
	"github.com/duosecurity/duo_api_golang/authapi"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// Keys for a fake that is not behind a server; not secrets.
const (
	testIKey = "DIABCDEFGHIJKLMNOPQR"
	testSKey = "0123456789abcdefghijABCDEFGHIJ0123456789"
)

// phoneSetup is a Manual fake Duo with its push page on a test server.
type phoneSetup struct {
	d      *duotest.Duo
	duo    *authapi.AuthApi // the real Duo client, reaching the fake in process
	srv    *httptest.Server
	prefix string
}

func newPhone(t *testing.T, prefix string) *phoneSetup {
	t.Helper()
	d := duotest.New(testIKey, testSKey)
	d.SetDefault(duotest.Manual)
	api := duoapi.NewDuoApi(testIKey, testSKey, "duo.test", "devduo-test")
	api.SetCustomHTTPClient(&http.Client{Transport: d.Transport()})
	srv := httptest.NewServer(PushPage(d, prefix, nil))
	t.Cleanup(srv.Close)
	return &phoneSetup{d: d, duo: authapi.NewAuthApi(*api), srv: srv, prefix: prefix}
}

// push sends an async push for user with pushinfo and returns its txid.
func (p *phoneSetup) push(t *testing.T, user, pushType string, info string) string {
	t.Helper()
	opts := []func(*url.Values){authapi.AuthUsername(user), authapi.AuthDevice("auto"), authapi.AuthAsync(), authapi.AuthPushinfo(info)}
	if pushType != "" {
		opts = append(opts, authapi.AuthType(pushType))
	}
	res, err := p.duo.Auth("push", opts...)
	require.NoError(t, err)
	require.Equal(t, "OK", res.Stat, res.Message)
	return res.Response.Txid
}

func (p *phoneSetup) do(t *testing.T, method, path string, header http.Header, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, p.srv.URL+path, body)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func (p *phoneSetup) list(t *testing.T) []phonePush {
	t.Helper()
	resp, body := p.do(t, http.MethodGet, p.prefix+"/api/pushes", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	var out []phonePush
	require.NoError(t, json.Unmarshal([]byte(body), &out), body)
	return out
}

const pushInfoDefence = "tool=list_contacts&reason=the+request+mentions+%22defence%22&summary=%7B%22query%22%3A%22defence%22%7D&server=crm-mcp"

func TestPhoneAPI(t *testing.T) {
	p := newPhone(t, "/dev/push")

	resp, body := p.do(t, http.MethodGet, "/dev/push/api/pushes", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "[]\n", body, "an empty list, not null")

	first := p.push(t, "alice", "AI agent", pushInfoDefence)
	second := p.push(t, "bob", "", "b=2&a=1&a=3")
	third := p.push(t, "carol", "AI agent", "")

	t.Run("the list as the phone shows it", func(t *testing.T) {
		got := p.list(t)
		require.Len(t, got, 3)
		assert.Equal(t, []string{third, second, first}, []string{got[0].TxID, got[1].TxID, got[2].TxID}, "newest first")
		alice := got[2]
		assert.Equal(t, "alice", alice.User)
		assert.Equal(t, "AI agent", alice.Type)
		assert.Equal(t, "AI agent request", alice.Title())
		assert.Equal(t, "waiting", alice.Result)
		assert.Equal(t, "pushed", alice.Status)
		assert.False(t, alice.Created.IsZero())
		assert.Equal(t, map[string]string{
			"tool": "list_contacts", "reason": `the request mentions "defence"`,
			"summary": `{"query":"defence"}`, "server": "crm-mcp",
		}, alice.PushInfo)
		assert.Equal(t, [][2]string{
			{"tool", "list_contacts"}, {"reason", `the request mentions "defence"`},
			{"summary", `{"query":"defence"}`}, {"server", "crm-mcp"},
		}, alice.PushInfoPairs, "in the order sent")

		bob := got[1]
		assert.Equal(t, "Login request", bob.Title(), "Duo Mobile's default")
		assert.Equal(t, map[string]string{"b": "2", "a": "1"}, bob.PushInfo, "first value of a repeated key")
		assert.Equal(t, [][2]string{{"b", "2"}, {"a", "1"}, {"a", "3"}}, bob.PushInfoPairs)
		assert.Equal(t, map[string]string{}, got[0].PushInfo)
		assert.Equal(t, [][2]string{}, got[0].PushInfoPairs)
	})

	t.Run("the raw JSON keeps its field names", func(t *testing.T) {
		_, body := p.do(t, http.MethodGet, "/dev/push/api/pushes", nil, nil)
		var raw []map[string]any
		require.NoError(t, json.Unmarshal([]byte(body), &raw))
		for _, k := range []string{"txid", "user", "type", "status", "result", "pushinfo", "created"} {
			assert.Contains(t, raw[0], k)
		}
	})

	t.Run("approve, deny, conflicts and unknown ids", func(t *testing.T) {
		tests := []struct {
			name   string
			path   string
			status int
		}{
			{"approve", "/dev/push/api/pushes/" + first + "/approve", http.StatusNoContent},
			{"approve again", "/dev/push/api/pushes/" + first + "/approve", http.StatusConflict},
			{"deny after approve", "/dev/push/api/pushes/" + first + "/deny", http.StatusConflict},
			{"deny", "/dev/push/api/pushes/" + second + "/deny", http.StatusNoContent},
			{"unknown txid", "/dev/push/api/pushes/no-such-txid/approve", http.StatusNotFound},
			{"unknown action", "/dev/push/api/pushes/" + third + "/fraud", http.StatusNotFound},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, body := p.do(t, http.MethodPost, tt.path, nil, nil)
				assert.Equal(t, tt.status, resp.StatusCode, body)
				if tt.status == http.StatusConflict || (tt.status == http.StatusNotFound && strings.HasSuffix(tt.path, "/approve")) {
					assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
					assert.Contains(t, body, `"error"`)
				}
				if tt.status == http.StatusNoContent {
					assert.Empty(t, body)
				}
			})
		}
		resp, _ := p.do(t, http.MethodGet, "/dev/push/api/pushes/"+third+"/approve", nil, nil)
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "GET cannot approve")

		got := p.list(t)
		require.Len(t, got, 3)
		assert.Equal(t, third, got[0].TxID, "pending first")
		assert.Equal(t, "waiting", got[0].Result)
		assert.Equal(t, second, got[1].TxID, "then decided, newest first")
		assert.Equal(t, "deny", got[1].Result)
		assert.Equal(t, "deny", got[1].Status)
		assert.Equal(t, first, got[2].TxID)
		assert.Equal(t, "allow", got[2].Result)
		assert.Equal(t, "allow", got[2].Status)
		assert.Len(t, p.d.Pending(), 1)
	})

	t.Run("cross-origin posts are refused", func(t *testing.T) {
		for _, h := range []http.Header{
			{"Sec-Fetch-Site": {"cross-site"}},
			{"Origin": {"https://evil.example"}},
		} {
			resp, _ := p.do(t, http.MethodPost, "/dev/push/api/pushes/"+third+"/approve", h, nil)
			assert.Equal(t, http.StatusForbidden, resp.StatusCode, h)
			form := strings.NewReader(url.Values{"txid": {third}, "decision": {"approve"}}.Encode())
			h.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, _ = p.do(t, http.MethodPost, "/dev/push/decide", h, form)
			assert.Equal(t, http.StatusForbidden, resp.StatusCode, h)
		}
		resp, _ := p.do(t, http.MethodPost, "/dev/push/api/pushes/"+third+"/approve",
			http.Header{"Sec-Fetch-Site": {"same-origin"}}, nil)
		assert.Equal(t, http.StatusNoContent, resp.StatusCode, "the page's own fetch")
		assert.Empty(t, p.d.Pending())
	})
}

func TestPhonePage(t *testing.T) {
	p := newPhone(t, "/dev/push")
	txid := p.push(t, "alice", "AI agent", "tool=list_contacts&summary="+url.QueryEscape(`<script>alert("x")</script>`))

	resp, body := p.do(t, http.MethodGet, "/dev/push", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	assert.Contains(t, body, "AI agent request")
	assert.Contains(t, body, ">alice<")
	assert.Contains(t, body, "<dt>tool</dt><dd>list_contacts</dd>")
	assert.Contains(t, body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "pushinfo is escaped")
	assert.NotContains(t, body, `<script>alert`)
	assert.Contains(t, body, `value="`+txid+`"`)
	assert.Contains(t, body, `action="/dev/push/decide"`)
	assert.Contains(t, body, `data-api="/dev/push/api/pushes"`)
	assert.Contains(t, body, `src="/dev/push/phone.js"`)

	for path, ct := range map[string]string{
		"/dev/push/phone.js":  "text/javascript; charset=utf-8",
		"/dev/push/phone.css": "text/css; charset=utf-8",
	} {
		resp, body := p.do(t, http.MethodGet, path, nil, nil)
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Equal(t, ct, resp.Header.Get("Content-Type"), path)
		assert.NotEmpty(t, body, path)
	}

	resp, _ = p.do(t, http.MethodGet, "/dev/push/", nil, nil)
	assert.Equal(t, http.StatusMovedPermanently, resp.StatusCode)
	assert.Equal(t, "/dev/push", resp.Header.Get("Location"))
	resp, _ = p.do(t, http.MethodGet, "/dev/push/nothing", nil, nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	resp, _ = p.do(t, http.MethodGet, "/elsewhere", nil, nil)
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)

	t.Run("the form without JavaScript", func(t *testing.T) {
		form := func(v url.Values) (*http.Response, string) {
			return p.do(t, http.MethodPost, "/dev/push/decide",
				http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, strings.NewReader(v.Encode()))
		}
		resp, _ := form(url.Values{"txid": {txid}, "decision": {"maybe"}})
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		resp, _ = form(url.Values{"txid": {"nope"}, "decision": {"deny"}})
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		resp, _ = form(url.Values{"txid": {txid}, "decision": {"deny"}})
		assert.Equal(t, http.StatusSeeOther, resp.StatusCode)
		assert.Equal(t, "/dev/push", resp.Header.Get("Location"))
		resp, _ = form(url.Values{"txid": {txid}, "decision": {"approve"}})
		assert.Equal(t, http.StatusConflict, resp.StatusCode)
		assert.Equal(t, "deny", p.d.Pushes()[0].Result)
	})

	t.Run("decided pushes are listed without buttons", func(t *testing.T) {
		_, body := p.do(t, http.MethodGet, "/dev/push", nil, nil)
		assert.Contains(t, body, "No pending requests.")
		assert.Contains(t, body, `class="push deny"`)
		assert.NotContains(t, body, `value="`+txid+`"`)
	})
}

func TestPhoneAtRoot(t *testing.T) {
	p := newPhone(t, "")
	txid := p.push(t, "alice", "AI agent", "tool=x")
	resp, body := p.do(t, http.MethodGet, "/", nil, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, body, `data-api="/api/pushes"`)
	resp, _ = p.do(t, http.MethodPost, "/api/pushes/"+txid+"/approve", nil, nil)
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	resp, _ = p.do(t, http.MethodPost, "/decide",
		http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, strings.NewReader("txid="+txid+"&decision=deny"))
	assert.Equal(t, http.StatusConflict, resp.StatusCode)
}

func TestPushPagePanicsOnBadPrefix(t *testing.T) {
	d := duotest.New(testIKey, testSKey)
	for _, prefix := range []string{"dev", "/dev/", "/{x}", "/a b"} {
		assert.Panics(t, func() { PushPage(d, prefix, nil) }, prefix)
	}
	assert.NotPanics(t, func() { PushPage(d, "/dev/push", nil) })
}

// Many decided pushes: the phone lists the 50 newest after the pending.
func TestPhoneListsRecentDecided(t *testing.T) {
	p := newPhone(t, "/p")
	var ids []string
	for range maxDecided + 5 {
		id := p.push(t, "alice", "AI agent", "")
		require.NoError(t, p.d.Decide(id, true))
		ids = append(ids, id)
	}
	waiting := p.push(t, "alice", "AI agent", "")
	got := phonePushes(p.d)
	require.Len(t, got, maxDecided+1)
	assert.Equal(t, waiting, got[0].TxID)
	assert.Equal(t, ids[len(ids)-1], got[1].TxID)
	assert.Equal(t, ids[5], got[maxDecided].TxID)
}

// TestPushPageShowsLimits: the page tells where each user stands against
// the fatigue guard, read from a real Guard that pushed through this Duo.
func TestPushPageShowsLimits(t *testing.T) {
	d := duotest.New(testIKey, testSKey)
	g, err := stepup.New(stepup.Config{
		IKey: testIKey, SKey: testSKey, Host: "duo.test",
		HTTPClient: &http.Client{Transport: d.Transport()},
		MaxPushes:  2, DenyCooldown: time.Minute, PollInterval: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	srv := httptest.NewServer(PushPage(d, "/dev/push", g.Limits))
	t.Cleanup(srv.Close)

	d.Script("alice", duotest.Deny)
	err = g.Approve(t.Context(), stepup.Request{User: "alice", Tool: "get_contact", Action: "Show contact #6", Key: "k"}, nil)
	require.True(t, stepup.IsOutcome(err, stepup.Denied), "got %v", err)

	resp, err := http.Get(srv.URL + "/dev/push/api/limits")
	require.NoError(t, err)
	defer resp.Body.Close()
	var got []struct{ User, Text string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	byUser := map[string]string{}
	for _, l := range got {
		byUser[l.User] = l.Text
	}
	assert.Contains(t, byUser["alice"], "1 of 2 pushes in the last 10 minutes")
	assert.Contains(t, byUser["alice"], "refused without a push until")
	assert.Equal(t, "0 of 2 pushes in the last 10 minutes", byUser["bob"], "a user with no push is listed too")

	page, err := http.Get(srv.URL + "/dev/push")
	require.NoError(t, err)
	defer page.Body.Close()
	body, err := io.ReadAll(page.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), "STEPUP_MAX_PUSHES")
	assert.Contains(t, string(body), "STEPUP_DENY_COOLDOWN")
	assert.Contains(t, string(body), "1 of 2 pushes")
}
