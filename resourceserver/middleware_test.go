package resourceserver_test

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

var update = flag.Bool("update", false, "rewrite golden files")

// golden compares got with testdata/name, or rewrites it under -update.
// Ports and issuer addresses vary between runs, so callers normalize them.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "missing golden file; run go test -update")
	assert.Equal(t, string(want), got, "golden file %s differs; run go test -update if the change is intended", path)
}

// protected is the fixture's resource server in front of a handler that
// records what reached it.
func (f *fixture) protected(t *testing.T) (http.Handler, *reached) {
	got := &reached{}
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.calls++
		got.token = resourceserver.TokenFromContext(r.Context())
		got.info = auth.TokenInfoFromContext(r.Context())
		if r.URL.Query().Get("need") != "" {
			f.rs.InsufficientScope(w, r, strings.Fields(r.URL.Query().Get("need")), "list_deals needs crm.deals.read")
			return
		}
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "ok")
	})
	return f.rs.Middleware(next), got
}

type reached struct {
	calls int
	token *resourceserver.Token
	info  *auth.TokenInfo
}

func TestMiddlewareStatusCodes(t *testing.T) {
	f := newFixture(t, func(c *resourceserver.Config) {
		c.AllowedOrigins = []string{"http://localhost:6274"}
	})
	h, got := f.protected(t)
	good := f.as.Mint(f.claims("crm.contacts.read"))
	expired := f.as.Mint(with(f.claims(), "exp", f.clock.Now().Add(-time.Hour).Unix()))
	wrongAud := f.as.Mint(with(f.claims(), "aud", "https://other.example.com/mcp"))

	tests := []struct {
		name      string
		method    string
		target    string
		headers   [][2]string
		status    int
		errorCode string // JSON body error
		golden    string // golden file for WWW-Authenticate, "" for none expected
		reaches   bool
	}{
		{name: "no credentials", method: "POST", status: 401, errorCode: "unauthorized", golden: "challenge_no_credentials.txt"},
		{name: "no credentials GET", method: "GET", status: 401, errorCode: "unauthorized", golden: "challenge_no_credentials.txt"},
		{name: "no credentials DELETE", method: "DELETE", status: 401, errorCode: "unauthorized", golden: "challenge_no_credentials.txt"},
		{name: "basic scheme", method: "POST", headers: [][2]string{{"Authorization", "Basic dTpw"}}, status: 401, errorCode: "unauthorized", golden: "challenge_no_credentials.txt"},
		{name: "expired", method: "POST", headers: [][2]string{{"Authorization", "Bearer " + expired}}, status: 401, errorCode: "invalid_token", golden: "challenge_invalid_token_expired.txt"},
		{name: "wrong audience", method: "POST", headers: [][2]string{{"Authorization", "Bearer " + wrongAud}}, status: 401, errorCode: "invalid_token", golden: "challenge_invalid_token_audience.txt"},
		{name: "garbage token", method: "POST", headers: [][2]string{{"Authorization", "Bearer abc"}}, status: 401, errorCode: "invalid_token", golden: "challenge_invalid_token_malformed.txt"},
		{name: "two headers", method: "POST", headers: [][2]string{{"Authorization", "Bearer " + good}, {"Authorization", "Bearer " + good}}, status: 400, errorCode: "invalid_request", golden: "challenge_invalid_request_two_headers.txt"},
		{name: "malformed header", method: "POST", headers: [][2]string{{"Authorization", "Bearer"}}, status: 400, errorCode: "invalid_request", golden: "challenge_invalid_request_malformed.txt"},
		{name: "token in query", method: "POST", target: "/mcp?access_token=" + good, status: 400, errorCode: "invalid_request", golden: "challenge_invalid_request_query.txt"},
		{name: "token in query and header", method: "POST", target: "/mcp?access_token=x", headers: [][2]string{{"Authorization", "Bearer " + good}}, status: 400, errorCode: "invalid_request", golden: "challenge_invalid_request_query.txt"},
		{name: "good", method: "POST", headers: [][2]string{{"Authorization", "Bearer " + good}}, status: 200, reaches: true},
		{name: "good GET", method: "GET", headers: [][2]string{{"Authorization", "Bearer " + good}}, status: 200, reaches: true},
		{name: "good DELETE", method: "DELETE", headers: [][2]string{{"Authorization", "Bearer " + good}}, status: 200, reaches: true},
		{name: "insufficient scope", method: "POST", target: "/mcp?need=crm.contacts.read+crm.deals.read", headers: [][2]string{{"Authorization", "Bearer " + good}}, status: 403, errorCode: "insufficient_scope", golden: "challenge_insufficient_scope.txt", reaches: true},
		{name: "expired beats scope", method: "POST", target: "/mcp?need=crm.deals.read", headers: [][2]string{{"Authorization", "Bearer " + expired}}, status: 401, errorCode: "invalid_token", golden: "challenge_invalid_token_expired.txt"},
		{name: "origin not allowed", method: "POST", headers: [][2]string{{"Origin", "https://evil.example.com"}, {"Authorization", "Bearer " + good}}, status: 403, errorCode: "forbidden"},
		{name: "origin allowed", method: "POST", headers: [][2]string{{"Origin", "http://localhost:6274"}, {"Authorization", "Bearer " + good}}, status: 200, reaches: true},
		{name: "preflight", method: "OPTIONS", headers: [][2]string{{"Origin", "http://localhost:6274"}, {"Access-Control-Request-Method", "POST"}}, status: 204},
		{name: "preflight bad origin", method: "OPTIONS", headers: [][2]string{{"Origin", "https://evil.example.com"}, {"Access-Control-Request-Method", "POST"}}, status: 403, errorCode: "forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			*got = reached{}
			target := tt.target
			if target == "" {
				target = "/mcp"
			}
			r := httptest.NewRequest(tt.method, target, nil)
			for _, h := range tt.headers {
				r.Header.Add(h[0], h[1])
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			res := w.Result()

			assert.Equal(t, tt.status, res.StatusCode)
			assert.Equal(t, tt.reaches, got.calls == 1, "whether the request reached the handler")
			challenges := res.Header.Values("WWW-Authenticate")
			if tt.golden != "" {
				require.Len(t, challenges, 1, "exactly one challenge")
				golden(t, tt.golden, strings.ReplaceAll(challenges[0], f.resourceHost(), "RESOURCE_HOST")+"\n")
			} else {
				assert.Empty(t, challenges)
			}
			if tt.errorCode != "" {
				assert.Equal(t, "application/json", res.Header.Get("Content-Type"))
				var body map[string]string
				require.NoError(t, json.NewDecoder(res.Body).Decode(&body))
				assert.Equal(t, tt.errorCode, body["error"])
				assert.NotEmpty(t, body["error_description"])
			}
			if origin := r.Header.Get("Origin"); origin == "http://localhost:6274" {
				assert.Equal(t, origin, res.Header.Get("Access-Control-Allow-Origin"))
				assert.Contains(t, res.Header.Get("Access-Control-Allow-Headers"), "Mcp-Session-Id")
				assert.Contains(t, res.Header.Get("Access-Control-Expose-Headers"), "WWW-Authenticate")
			} else {
				assert.Empty(t, res.Header.Get("Access-Control-Allow-Origin"))
			}
		})
	}
	assert.NotContains(t, f.logs.String(), good, "a token reached the log")
	assert.NotContains(t, f.logs.String(), expired, "a token reached the log")
}

// resourceHost is what golden files replace: the resource's scheme and host.
func (f *fixture) resourceHost() string { return strings.TrimSuffix(f.resource, resourcePath) }

func TestMiddlewareCORSOnErrors(t *testing.T) {
	f := newFixture(t, func(c *resourceserver.Config) { c.AllowedOrigins = []string{"http://localhost:6274"} })
	h, _ := f.protected(t)
	for _, tc := range []struct {
		name, auth, target string
		status             int
	}{
		{"401", "", "/mcp", 401},
		{"400", "Bearer", "/mcp", 400},
		{"403", "Bearer " + f.as.Mint(f.claims("crm.contacts.read")), "/mcp?need=crm.deals.read", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", tc.target, nil)
			r.Header.Set("Origin", "http://localhost:6274")
			if tc.auth != "" {
				r.Header.Set("Authorization", tc.auth)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			assert.Equal(t, tc.status, w.Code)
			assert.Equal(t, "http://localhost:6274", w.Header().Get("Access-Control-Allow-Origin"))
			assert.Equal(t, "WWW-Authenticate, Mcp-Session-Id", w.Header().Get("Access-Control-Expose-Headers"))
		})
	}
}

func TestMiddlewareSetsTokenAndTokenInfo(t *testing.T) {
	f := newFixture(t)
	h, got := f.protected(t)
	r := httptest.NewRequest("POST", "/mcp", nil)
	r.Header.Set("Authorization", "Bearer "+f.as.Mint(f.claims("crm.contacts.read")))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	require.Equal(t, 200, w.Code)
	require.NotNil(t, got.token)
	require.NotNil(t, got.info, "go-sdk's TokenInfo must be set so sessions bind to the user")
	assert.Equal(t, "alice@example.com", got.token.Subject)
	assert.Equal(t, f.as.Issuer()+" alice@example.com", got.info.UserID)
	assert.Equal(t, []string{"crm.contacts.read"}, got.info.Scopes)
}

func TestInsufficientScopeSanitizes(t *testing.T) {
	f := newFixture(t)
	w := httptest.NewRecorder()
	f.rs.InsufficientScope(w, httptest.NewRequest("POST", "/mcp", nil), []string{"crm.deals.read", "bad\"scope"}, "needs \"more\"\r\nInjected: yes")
	assert.Equal(t, 403, w.Code)
	ch := w.Header().Get("WWW-Authenticate")
	assert.Equal(t, `Bearer error="insufficient_scope", scope="crm.deals.read", resource_metadata="`+f.rs.ResourceMetadataURL()+`", error_description="needs moreInjected: yes"`, ch)
}

func TestMetadata(t *testing.T) {
	f := newFixture(t, func(c *resourceserver.Config) {
		c.ScopesSupported = []string{"crm.contacts.read"}
		c.ResourceName = "CRM (Duo protected)"
		c.ResourceDocumentation = "https://example.com/docs"
	})
	assert.Equal(t, []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"}, f.rs.MetadataPaths())
	assert.Equal(t, f.resourceHost()+"/.well-known/oauth-protected-resource/mcp", f.rs.ResourceMetadataURL())

	mux := http.NewServeMux()
	for _, p := range f.rs.MetadataPaths() {
		mux.Handle(p, f.rs.MetadataHandler())
	}
	for _, p := range f.rs.MetadataPaths() {
		t.Run(p, func(t *testing.T) {
			r := httptest.NewRequest("GET", p, nil)
			r.Header.Set("Origin", "http://localhost:6274")
			w := httptest.NewRecorder()
			mux.ServeHTTP(w, r)
			require.Equal(t, 200, w.Code)
			assert.Equal(t, "application/json", w.Header().Get("Content-Type"))
			assert.Equal(t, "*", w.Header().Get("Access-Control-Allow-Origin"))
			body := strings.ReplaceAll(w.Body.String(), f.resourceHost(), "RESOURCE_HOST")
			body = strings.ReplaceAll(body, f.as.Issuer(), "ISSUER")
			golden(t, "metadata.json", body)

			var md map[string]any
			require.NoError(t, json.Unmarshal(w.Body.Bytes(), &md))
			assert.Equal(t, f.resource, md["resource"], "resource is the configured URL, byte for byte")
			assert.NotContains(t, md, "jwks_uri")
		})
	}

	r := httptest.NewRequest("OPTIONS", f.rs.MetadataPaths()[0], nil)
	r.Header.Set("Origin", "http://anything.example")
	r.Header.Set("Access-Control-Request-Method", "GET")
	r.Header.Set("Access-Control-Request-Headers", "mcp-protocol-version")
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	assert.Equal(t, 204, w.Code)
	assert.Equal(t, "*", w.Header().Get("Access-Control-Allow-Origin"))
	assert.Contains(t, w.Header().Get("Access-Control-Allow-Headers"), "MCP-Protocol-Version")

	w = httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("POST", f.rs.MetadataPaths()[1], nil))
	assert.Equal(t, 405, w.Code)
	assert.Equal(t, "GET, HEAD, OPTIONS", w.Header().Get("Allow"))
}

func TestMetadataRootResource(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	rs, err := resourceserver.New(resourceserver.Config{Resource: "https://crm.example.com", Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}})
	require.NoError(t, err)
	defer rs.Close()
	assert.Equal(t, []string{"/.well-known/oauth-protected-resource"}, rs.MetadataPaths())
	assert.Equal(t, "https://crm.example.com/.well-known/oauth-protected-resource", rs.ResourceMetadataURL())
}

// TestOnRefuse: every refusal is reported once with a stable reason code,
// the presented token only by its fingerprint.
func TestOnRefuse(t *testing.T) {
	var heard []resourceserver.Refusal
	f := newFixture(t, func(c *resourceserver.Config) {
		c.OnRefuse = func(_ context.Context, r resourceserver.Refusal) { heard = append(heard, r) }
	})
	h, _ := f.protected(t)
	good := f.as.Mint(f.claims("crm.contacts.read"))
	expired := f.as.Mint(with(f.claims(), "exp", f.clock.Now().Add(-time.Hour).Unix()))
	wrongAud := f.as.Mint(with(f.claims(), "aud", "https://other.example.com/mcp"))
	tests := []struct {
		name, target, auth, origin string
		status                     int
		reason                     string
		fingerprint                string
	}{
		{"no token", "/mcp", "", "", 401, "no_token", ""},
		{"expired", "/mcp", "Bearer " + expired, "", 401, "expired", resourceserver.Fingerprint(expired)},
		{"audience", "/mcp", "Bearer " + wrongAud, "", 401, "audience", resourceserver.Fingerprint(wrongAud)},
		{"garbage", "/mcp", "Bearer abc", "", 401, "malformed", resourceserver.Fingerprint("abc")},
		{"malformed header", "/mcp", "Bearer", "", 400, "invalid_request", ""},
		{"origin", "/mcp", "Bearer " + good, "https://evil.example.com", 403, "origin", ""},
		{"scope", "/mcp?need=crm.deals.read", "Bearer " + good, "", 403, "insufficient_scope", resourceserver.Fingerprint(good)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			heard = nil
			r := httptest.NewRequest("POST", tt.target, nil)
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			if tt.origin != "" {
				r.Header.Set("Origin", tt.origin)
			}
			h.ServeHTTP(httptest.NewRecorder(), r)
			require.Len(t, heard, 1)
			assert.Equal(t, tt.status, heard[0].Status)
			assert.Equal(t, tt.reason, heard[0].Reason)
			assert.Equal(t, tt.fingerprint, heard[0].Fingerprint)
			assert.Regexp(t, `^(|sha256:[0-9a-f]{16})$`, heard[0].Fingerprint)
			if tt.reason == "insufficient_scope" {
				require.NotNil(t, heard[0].Token)
				assert.Equal(t, []string{"crm.deals.read"}, heard[0].Scopes)
			}
		})
	}
	heard = nil
	r := httptest.NewRequest("POST", "/mcp", nil)
	r.Header.Set("Authorization", "Bearer "+good)
	h.ServeHTTP(httptest.NewRecorder(), r)
	assert.Empty(t, heard, "an accepted request is no refusal")
}

// A page served by the MCP server itself sends its own origin: allowed
// without being listed, with the CORS headers of any allowed origin. Every
// other origin not listed is still refused, the same host on another
// scheme or port included.
func TestMiddlewareAllowsSameOrigin(t *testing.T) {
	for _, tc := range []struct {
		resource string
		origin   string
		allowed  bool
	}{
		{"http://127.0.0.1:9/mcp", "http://127.0.0.1:9", true},
		{"https://CRM.Example.com/mcp", "https://crm.example.com", true},
		{"https://crm.example.com:443/mcp", "https://crm.example.com", true},
		{"https://crm.example.com:8443/mcp", "https://crm.example.com:8443", true},
		{"http://[::1]:8080/mcp", "http://[::1]:8080", true},
		{"http://127.0.0.1:9/mcp", "http://127.0.0.1:10", false},
		{"http://127.0.0.1:9/mcp", "https://127.0.0.1:9", false},
		{"http://127.0.0.1:9/mcp", "http://localhost:9", false},
		{"https://crm.example.com/mcp", "https://crm.example.com:8443", false},
		{"https://crm.example.com/mcp", "https://evil.crm.example.com", false},
		{"https://crm.example.com/mcp", "null", false},
	} {
		t.Run(tc.resource+" "+tc.origin, func(t *testing.T) {
			as := rstest.NewServer()
			t.Cleanup(as.Close)
			f := newFixtureFor(t, as, func(c *resourceserver.Config) { c.Resource = tc.resource })
			f.resource = tc.resource
			h, got := f.protected(t)
			good := f.as.Mint(f.claims("crm.contacts.read"))

			r := httptest.NewRequest("POST", "/mcp", nil)
			r.Header.Set("Origin", tc.origin)
			r.Header.Set("Authorization", "Bearer "+good)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			assert.Equal(t, "Origin", w.Header().Get("Vary"))

			pre := httptest.NewRequest("OPTIONS", "/mcp", nil)
			pre.Header.Set("Origin", tc.origin)
			pre.Header.Set("Access-Control-Request-Method", "POST")
			pw := httptest.NewRecorder()
			h.ServeHTTP(pw, pre)

			if !tc.allowed {
				assert.Equal(t, http.StatusForbidden, w.Code)
				assert.Equal(t, 0, got.calls)
				assert.Empty(t, w.Header().Get("Access-Control-Allow-Origin"))
				assert.Equal(t, http.StatusForbidden, pw.Code)
				return
			}
			assert.Equal(t, http.StatusOK, w.Code, w.Body.String())
			assert.Equal(t, 1, got.calls)
			for _, resp := range []*httptest.ResponseRecorder{w, pw} {
				assert.Equal(t, tc.origin, resp.Header().Get("Access-Control-Allow-Origin"))
				assert.Equal(t, "WWW-Authenticate, Mcp-Session-Id", resp.Header().Get("Access-Control-Expose-Headers"))
				assert.Contains(t, resp.Header().Get("Access-Control-Allow-Headers"), "Authorization")
			}
			assert.Equal(t, http.StatusNoContent, pw.Code)
		})
	}
}

// TestRefusalLogLevels: a request refused before any token was verified
// is anyone's to repeat, so its log line is Debug (a flood must not grow
// the log at the default level); a verified caller's refusal is Info.
func TestRefusalLogLevels(t *testing.T) {
	var logs syncBuffer
	f := newFixture(t, func(c *resourceserver.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	h, _ := f.protected(t)
	for _, auth := range []string{"", "Bearer not-a-jwt", "Basic abc"} {
		req := httptest.NewRequest(http.MethodPost, resourcePath, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusUnauthorized, rec.Code)
	}
	assert.NotContains(t, logs.String(), "request refused", "an unauthenticated refusal logged at Info")

	req := httptest.NewRequest(http.MethodPost, resourcePath+"?need=crm.deals.read", nil)
	req.Header.Set("Authorization", "Bearer "+f.as.Mint(f.claims("crm.contacts.read")))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusForbidden, rec.Code)
	assert.Contains(t, logs.String(), "request refused", "a verified caller's refusal is on the log")
}
