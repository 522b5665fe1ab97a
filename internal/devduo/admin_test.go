package devduo_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

func decodeRecorder(t *testing.T, rec *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if rec.Body.Len() > 0 {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &m), "body %s", rec.Body)
	}
	return m
}

func TestUsers(t *testing.T) {
	as := devduo.NewSignIn(rstest.NewAuthServer("https://as.example"))
	assert.Empty(t, as.Users(), "no users by default")
	users := devduo.DefaultUsers()
	as.SetUsers(users...)
	users[0].Scopes[0] = "changed"
	assert.Equal(t, devduo.DefaultUsers(), as.Users(), "SetUsers copies")
	got := as.Users()
	got[0].Scopes[0] = "changed"
	assert.Equal(t, devduo.DefaultUsers(), as.Users(), "Users copies")

	require.NoError(t, as.GrantScope("carol", "crm.contacts.write"))
	require.NoError(t, as.GrantScope("carol", "crm.contacts.write"), "granting twice")
	require.NoError(t, as.RevokeScope("carol", "crm.deals.read"))
	require.NoError(t, as.RevokeScope("carol", "crm.deals.read"), "revoking twice")
	assert.Equal(t, []string{"crm.contacts.read", "crm.contacts.write"}, as.Users()[2].Scopes)

	assert.Error(t, as.GrantScope("mallory", "crm.contacts.read"))
	assert.Error(t, as.GrantScope("carol", "crm.admin"), "not in scopes_supported")
	assert.Error(t, as.RevokeScope("carol", "bad scope"))

	for _, bad := range [][]devduo.User{
		{{Name: ""}},
		{{Name: "a b"}},
		{{Name: "a/b"}},
		{{Name: "a"}, {Name: "a"}},
		{{Name: "a", Scopes: []string{"bad scope"}}},
	} {
		assert.Panics(t, func() { as.SetUsers(bad...) }, "%v", bad)
	}
	assert.Panics(t, func() { as.SetResources("/relative") })
	assert.Panics(t, func() { as.SetResources("https://x.example/mcp#frag") })
}

func TestAdminAPI(t *testing.T) {
	srv := flowServer(t)
	api := srv.AdminURL() + "/api/users"
	do := func(method, u string) (int, []byte) {
		req, err := http.NewRequest(method, u, nil)
		require.NoError(t, err)
		resp, err := srv.HTTP.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	list := func() []map[string]any {
		status, body := do(http.MethodGet, api)
		require.Equal(t, http.StatusOK, status)
		var users []map[string]any
		require.NoError(t, json.Unmarshal(body, &users))
		return users
	}

	users := list()
	require.Len(t, users, 3)
	assert.Equal(t, "carol", users[2]["name"])
	assert.Equal(t, []any{"crm.contacts.read", "crm.deals.read"}, users[2]["scopes"])

	status, _ := do(http.MethodPost, api+"/carol/scopes/crm.deals.write")
	assert.Equal(t, http.StatusNoContent, status, "grant")
	status, _ = do(http.MethodDelete, api+"/carol/scopes/crm.contacts.read")
	assert.Equal(t, http.StatusNoContent, status, "revoke")
	assert.Equal(t, []any{"crm.deals.read", "crm.deals.write"}, list()[2]["scopes"])

	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{http.MethodPost, "/mallory/scopes/crm.deals.read", http.StatusNotFound},
		{http.MethodDelete, "/mallory/scopes/crm.deals.read", http.StatusNotFound},
		{http.MethodPost, "/carol/scopes/crm.admin", http.StatusBadRequest},
		{http.MethodDelete, "/carol/scopes/crm.admin", http.StatusBadRequest},
		{http.MethodPut, "/carol/scopes/crm.deals.read", http.StatusMethodNotAllowed},
		{http.MethodGet, "/carol", http.StatusNotFound},
		{http.MethodPost, "", http.StatusMethodNotAllowed},
	} {
		status, body := do(tt.method, api+tt.path)
		assert.Equal(t, tt.want, status, "%s %s: %s", tt.method, tt.path, body)
	}

	// Cross-site requests from a browser are refused.
	req, _ := http.NewRequest(http.MethodPost, api+"/carol/scopes/crm.contacts.write", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := srv.HTTP.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.NotContains(t, list()[2]["scopes"], "crm.contacts.write")
}

func TestAdminPage(t *testing.T) {
	srv := flowServer(t)
	srv.SetUsers(append(devduo.DefaultUsers(), devduo.User{Name: "dave", Scopes: []string{"<b>x</b>"}})...)
	status, body := get(t, srv, srv.AdminURL())
	require.Equal(t, http.StatusOK, status)
	page := string(body)
	for _, want := range []string{"<table>", "alice", "bob", "carol", "crm.deals.write", "Grant", "Revoke", "Never use it in production"} {
		assert.Contains(t, page, want)
	}
	assert.NotContains(t, page, "<b>x</b>", "escaped")
	assert.Contains(t, page, "&lt;b&gt;x&lt;/b&gt;")

	client := noRedirects(srv)
	post := func(form url.Values, headers ...string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, srv.AdminURL(), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	resp := post(url.Values{"user": {"bob"}, "scope": {"crm.deals.read"}, "action": {"grant"}}, "Sec-Fetch-Site", "same-origin")
	assert.Equal(t, http.StatusSeeOther, resp.StatusCode)
	assert.Contains(t, srv.Users()[1].Scopes, "crm.deals.read")
	resp = post(url.Values{"user": {"bob"}, "scope": {"crm.deals.read"}, "action": {"revoke"}})
	assert.Equal(t, http.StatusSeeOther, resp.StatusCode)
	assert.NotContains(t, srv.Users()[1].Scopes, "crm.deals.read")

	assert.Equal(t, http.StatusNotFound, post(url.Values{"user": {"mallory"}, "scope": {"crm.deals.read"}, "action": {"grant"}}).StatusCode)
	assert.Equal(t, http.StatusBadRequest, post(url.Values{"user": {"bob"}, "scope": {"crm.admin"}, "action": {"grant"}}).StatusCode)
	assert.Equal(t, http.StatusBadRequest, post(url.Values{"user": {"bob"}, "scope": {"crm.deals.read"}, "action": {"delete"}}).StatusCode)
	resp = post(url.Values{"user": {"bob"}, "scope": {"crm.deals.read"}, "action": {"grant"}}, "Sec-Fetch-Site", "cross-site")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	assert.NotContains(t, srv.Users()[1].Scopes, "crm.deals.read")
}
