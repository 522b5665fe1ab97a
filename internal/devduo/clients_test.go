package devduo_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/devduo"
)

// keeping returns a sign-in with the dev users that keeps its clients in
// path, as crm-mcp dev does in its data folder.
func keeping(t *testing.T, path string) *server {
	t.Helper()
	srv := newServer(t)
	srv.SetUsers(devduo.DefaultUsers()...)
	srv.SetResources(resource)
	require.NoError(t, srv.KeepClients(path))
	return srv
}

// TestKeepClientsAcrossRestart: a client registered before a restart signs
// in after it with the client_id (and secret) it stored.
func TestKeepClientsAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	before := keeping(t, path)
	public := publicClient(t, before)
	status, conf := register(t, before, map[string]any{"client_name": "confidential", "redirect_uris": []string{redirectURI}})
	require.Equal(t, http.StatusCreated, status)
	before.HTTP.Close()

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "the file holds client secrets")
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file is left behind")

	after := keeping(t, path)
	verifier, challenge := pkce()
	c := code(t, after, authParams(public, challenge), "alice")
	status, tok := token(t, after, exchangeForm(public, c, verifier), "", "")
	require.Equal(t, http.StatusOK, status, "%v", tok["error_description"])

	verifier, challenge = pkce()
	c = code(t, after, authParams(conf["client_id"].(string), challenge), "bob")
	form := exchangeForm("", c, verifier)
	form.Del("client_id")
	status, tok = token(t, after, form, conf["client_id"].(string), conf["client_secret"].(string))
	require.Equal(t, http.StatusOK, status, "the confidential client's secret is kept too: %v", tok["error_description"])

	fresh := newServer(t)
	fresh.SetUsers(devduo.DefaultUsers()...)
	_, challenge = pkce()
	resp := authorizeJSON(t, fresh, authParams(public, challenge))
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "without the file, the client is unknown")
	assert.Equal(t, "invalid_client", decode(t, resp)["error"])
}

// TestKeepClientsBound: registering beyond the bound forgets the oldest.
func TestKeepClientsBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	srv := keeping(t, path)
	var ids []string
	for range devduo.MaxClients + 1 {
		ids = append(ids, publicClient(t, srv))
	}
	after := keeping(t, path)
	for i, id := range []string{ids[0], ids[1], ids[len(ids)-1]} {
		_, challenge := pkce()
		params := authParams(id, challenge)
		params.Set("login_hint", "alice")
		resp := authorizeJSON(t, after, params)
		resp.Body.Close()
		if i == 0 {
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "the oldest is forgotten")
		} else {
			assert.Equal(t, http.StatusFound, resp.StatusCode, "client %d is kept", i)
		}
	}
}

// TestKeepClientsRefusesABadFile: a file that is not what KeepClients
// writes is an error that names the file, never a secret it holds.
func TestKeepClientsRefusesABadFile(t *testing.T) {
	const secret = "s3cret-that-must-not-leak"
	for name, body := range map[string]string{
		"not JSON":           "{",
		"other version":      `{"version":2,"clients":[]}`,
		"no client_id":       `{"version":1,"clients":[{"client_secret":"` + secret + `","metadata":{"redirect_uris":["http://127.0.0.1:1/cb"]}}]}`,
		"URL client_id":      `{"version":1,"clients":[{"client_id":"https://x.example/c","metadata":{"redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"none"}}]}`,
		"bad redirect":       `{"version":1,"clients":[{"client_id":"a","client_secret":"` + secret + `","metadata":{"redirect_uris":["http://evil.example/cb"]}}]}`,
		"secret for public":  `{"version":1,"clients":[{"client_id":"a","client_secret":"` + secret + `","metadata":{"redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"none"}}]}`,
		"confidential, none": `{"version":1,"clients":[{"client_id":"a","metadata":{"redirect_uris":["http://127.0.0.1:1/cb"]}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "clients.json")
			require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
			srv := newServer(t)
			err := srv.KeepClients(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), path)
			assert.NotContains(t, err.Error(), secret)
		})
	}
	srv := newServer(t)
	assert.NoError(t, srv.KeepClients(filepath.Join(t.TempDir(), "none-yet.json")), "a missing file is no clients")
	assert.Error(t, srv.KeepClients(t.TempDir()), "a folder is not a file")
}

// TestRegistrationNotSavedIsRefused: a client_id the sign-in could not keep
// is not handed out.
func TestRegistrationNotSavedIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	srv := keeping(t, path)
	require.NoError(t, os.Mkdir(path, 0o700)) // nothing can be renamed over it
	status, reg := register(t, srv, map[string]any{"redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "none"})
	assert.Equal(t, http.StatusInternalServerError, status)
	assert.Equal(t, "server_error", reg["error"])
	assert.NotContains(t, reg, "client_id")
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "the temporary file is removed")
}

// TestRegistrationNotSavedForgetsNothing: at the bound, a registration
// that cannot be saved does not cost the oldest client its registration.
func TestRegistrationNotSavedForgetsNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "clients.json")
	srv := keeping(t, path)
	var ids []string
	for range devduo.MaxClients {
		ids = append(ids, publicClient(t, srv))
	}
	require.NoError(t, os.Remove(path))
	require.NoError(t, os.Mkdir(path, 0o700)) // nothing can be renamed over it
	status, _ := register(t, srv, map[string]any{"redirect_uris": []string{redirectURI}, "token_endpoint_auth_method": "none"})
	require.Equal(t, http.StatusInternalServerError, status)

	_, challenge := pkce()
	params := authParams(ids[0], challenge)
	params.Set("login_hint", "alice")
	resp := authorizeJSON(t, srv, params)
	resp.Body.Close()
	assert.Equal(t, http.StatusFound, resp.StatusCode, "the oldest client is still registered")
}
