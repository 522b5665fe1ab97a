package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// registerDevClient registers a public client with the dev authorization
// server (RFC 7591) and returns its client_id.
func registerDevClient(t *testing.T, d *devServer) string {
	t.Helper()
	reg, _ := json.Marshal(map[string]any{
		"client_name":                "crm-mcp dev test (registered)",
		"redirect_uris":              []string{"http://127.0.0.1:3142/callback"},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"token_endpoint_auth_method": "none",
	})
	resp, err := http.Post(d.base+"/oauth2/dev/register", "application/json", bytes.NewReader(reg))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	var got struct {
		ClientID string `json:"client_id"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	require.NotEmpty(t, got.ClientID)
	return got.ClientID
}

// newRegisteredDevClient is go-sdk's client with its OAuth handler, as
// newDevClient, but configured with a client_id registered beforehand, as
// clients that keep their registration do (mcp-remote, Claude Desktop).
// go-sdk's own dynamic registration registers anew on every
// authorization, so to the server each of its sign-ins is another client.
func newRegisteredDevClient(t *testing.T, d *devServer, user, clientID string) *devClient {
	t.Helper()
	c := newDevClient(t, d, user)
	handler, err := auth.NewAuthorizationCodeHandler(&auth.AuthorizationCodeHandlerConfig{
		PreregisteredClient:      &oauthex.ClientCredentials{ClientID: clientID},
		RedirectURL:              "http://127.0.0.1:3142/callback",
		AuthorizationCodeFetcher: c.fetchCode(map[string][]string{"login_hint": {user}}),
		RequestRefreshToken:      true,
		Client:                   &http.Client{Transport: c.rec},
	})
	require.NoError(t, err)
	c.handler = handler
	return c
}

// A scope the identity provider will not grant: the refusal is the 403
// challenge; go-sdk signs in again asking for the scope, gets a token still
// without it, and its retry is answered with a tool error naming the scope
// and what to do, which reaches the user, instead of a second 403 that
// go-sdk reports as "Forbidden". Once an administrator grants the scope,
// the next 403 and sign-in bring it.
func TestDevRefusalExplainsItself(t *testing.T) {
	d := startDev(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clientID := registerDevClient(t, d)
	bob := newRegisteredDevClient(t, d, "bob", clientID) // every scope but crm.deals.read
	s := bob.connect(t, ctx)
	res, err := devCall(ctx, s, "list_contacts", nil)
	require.NoError(t, err)
	require.False(t, res.IsError, devText(res))

	res, err = devCall(ctx, s, "list_deals", nil)
	require.NoError(t, err, "a tool result, not a transport error")
	require.True(t, res.IsError)
	assert.Equal(t, "list_deals needs the scope crm.deals.read, which the identity provider has not granted to you: "+
		"a new access token, issued after this server asked for it, still lacks it. "+
		"Ask an administrator to grant you crm.deals.read, then sign in again.", devText(res))
	ch, ok := bob.rec.last(http.StatusForbidden)
	require.True(t, ok, "the first refusal was the 403")
	assert.Contains(t, ch.challenge, `error="insufficient_scope", scope="crm.contacts.read crm.contacts.write crm.deals.read crm.deals.write"`, "the scope needed and those held that stay relevant")
	auths := bob.authorizations()
	require.Len(t, auths, 2, "go-sdk signed in again after the 403")
	assert.Contains(t, auths[1].Query().Get("scope"), "crm.deals.read")
	assert.Equal(t, auths[0].Query().Get("client_id"), auths[1].Query().Get("client_id"), "the same client")
	assert.Equal(t, 0, bob.rec.count("/register"), "registered beforehand")
	forbidden := func() int {
		n := 0
		bob.rec.mu.Lock()
		defer bob.rec.mu.Unlock()
		for _, r := range bob.rec.seen {
			if r.status == http.StatusForbidden {
				n++
			}
		}
		return n
	}
	assert.Equal(t, 1, forbidden())

	// The session goes on. The challenge is answered: asking again is a
	// 403 again, another sign-in, and the same tool error.
	res, err = devCall(ctx, s, "list_contacts", nil)
	require.NoError(t, err)
	assert.False(t, res.IsError)
	res, err = devCall(ctx, s, "list_deals", nil)
	require.NoError(t, err)
	assert.True(t, res.IsError)
	assert.Contains(t, devText(res), "Ask an administrator")
	assert.Len(t, bob.authorizations(), 3)
	assert.Equal(t, 2, forbidden())

	// Granted: the next refusal is the 403 as ever, go-sdk signs in again
	// asking for the scope, and now gets it.
	d.admin(t, http.MethodPost, "bob", "crm.deals.read")
	res, err = devCall(ctx, s, "list_deals", nil)
	require.NoError(t, err)
	require.False(t, res.IsError, devText(res))
	assert.Contains(t, devText(res), "deal")
	assert.Len(t, bob.authorizations(), 4)
	assert.Equal(t, 3, forbidden())
	assert.Contains(t, bob.authorizations()[3].Query().Get("scope"), "crm.deals.read")
}

// TestServeCountsRefusals: requests refused at the front door cost no line
// and no fsync each. They are counted per reason and source, written once
// per interval and at shutdown; a scope denial, about a verified caller,
// stays a line of its own.
func TestServeCountsRefusals(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	env := testEnv(t, as)
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	env["AUDIT_LOG_PATH"] = auditPath
	s := startServe(t, env)
	mcpURL := s.url("/mcp")
	const list = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for range 200 {
		require.Equal(t, http.StatusUnauthorized, rawPost(t, mcpURL, nil, list))
	}
	for i := range 50 {
		require.Equal(t, http.StatusUnauthorized, rawPost(t, mcpURL, bearerHeader("garbage"+strconv.Itoa(i)), list))
	}
	good := as.Mint(as.Claims("alice", testResource, "crm.contacts.read"))
	require.Equal(t, http.StatusForbidden, rawPost(t, mcpURL, bearerHeader(good),
		`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_deals","arguments":{}}}`))

	_, lines := readAudit(t, auditPath)
	require.Len(t, lines, 1, "250 refusals wrote nothing yet; the scope denial is on record")
	assert.Equal(t, "scope.denied", lines[0].Event)
	assert.Equal(t, "alice", lines[0].Subject)

	require.Equal(t, 0, s.stop(t))
	b, err := os.ReadFile(auditPath)
	require.NoError(t, err)
	_, err = audit.Verify(bytes.NewReader(b))
	require.NoError(t, err)
	type counted struct {
		Event, Reason, Source, Decision string
		Count                           int
	}
	var got []counted
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")[1:] {
		var c counted
		require.NoError(t, json.Unmarshal([]byte(l), &c))
		got = append(got, c)
	}
	assert.Equal(t, []counted{
		{Event: "auth.failed", Reason: "malformed", Source: "127.0.0.1", Decision: "deny", Count: 50},
		{Event: "auth.failed", Reason: "no_token", Source: "127.0.0.1", Decision: "deny", Count: 200},
	}, got, "written at shutdown, one line per reason and source")
}
