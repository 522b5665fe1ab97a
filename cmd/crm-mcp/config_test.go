package main

import (
	"bytes"
	"cmp"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/tools"
)

// testSecret is the client secret every test configuration carries, so
// that any test can assert it leaked nowhere.
const testSecret = "S3CRET-do-not-print-7f2a"

// testDuoSKey is the Duo Auth API secret key of every test configuration.
const testDuoSKey = "DUO-SKEY-do-not-print-91c3"

// minimalEnv is the smallest valid environment.
func minimalEnv() map[string]string {
	return map[string]string{
		"MCP_RESOURCE_URL": "https://crm.example.com/mcp",
		"DUO_ISSUER":       "https://sso-1.sso.duosecurity.com/oauth2/DI123",
		"DUO_AUTH_IKEY":    "DIXXXXXXXXXXXXXXXXXX",
		"DUO_AUTH_SKEY":    testDuoSKey,
		"DUO_AUTH_HOST":    "api-xxxxxxxx.duosecurity.com",
	}
}

// with returns a copy of env with kv applied; a value of "\x00" deletes.
func with(env map[string]string, kv ...string) map[string]string {
	out := maps.Clone(env)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "\x00" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig(minimalEnv())
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1:8080", c.ListenAddr)
	assert.Equal(t, "https://crm.example.com/mcp", c.ResourceURL)
	assert.Equal(t, "/mcp", c.mcpPath)
	assert.Empty(t, c.AllowedOrigins)
	assert.Equal(t, tools.Scopes(), c.ScopesSupported, "every scope a tool needs: one sign-in covers every tool")
	assert.Equal(t, []string{"crm.contacts.read", "crm.contacts.write", "crm.deals.read", "crm.deals.write"}, c.ScopesSupported)
	assert.False(t, c.HideUnauthorizedTools)
	assert.Equal(t, "CRM (Duo protected)", c.ResourceName)
	assert.Empty(t, c.ResourceDocumentation)
	assert.Equal(t, []string{"https://sso-1.sso.duosecurity.com/oauth2/DI123"}, c.Issuers)
	assert.Empty(t, c.JWKSURL)
	assert.Empty(t, c.Audiences)
	assert.Equal(t, resourceserver.ModeJWT, c.mode)
	assert.Equal(t, resourceserver.DefaultLeeway, c.Leeway, "the envDefault must follow resourceserver")
	assert.Equal(t, resourceserver.DefaultCacheTTL, c.CacheTTL, "the envDefault must follow resourceserver")
	assert.Equal(t, resourceserver.DefaultIntrospectionCacheTTL, c.IntrospectionCacheTTL, "the envDefault must follow resourceserver")
	assert.Equal(t, "./data/crm.db", c.DBPath)
	assert.Equal(t, "INFO", c.level.String())
	assert.Equal(t, "json", c.LogFormat)
	assert.Empty(t, c.unknown)
	assert.Empty(t, c.warnings)
}

func TestLoadConfigEverything(t *testing.T) {
	env := map[string]string{
		"MCP_LISTEN_ADDR":              ":9000",
		"MCP_RESOURCE_URL":             "http://127.0.0.1:9000/",
		"MCP_ALLOWED_ORIGINS":          "http://localhost:6274, https://app.example.com",
		"MCP_SCOPES_SUPPORTED":         "crm.contacts.read,crm.deals.read",
		"MCP_HIDE_UNAUTHORIZED_TOOLS":  "1",
		"MCP_RESOURCE_NAME":            "Test CRM",
		"MCP_RESOURCE_DOCUMENTATION":   "https://docs.example.com/crm",
		"DUO_ISSUER":                   "https://a.example.com/oauth2/A",
		"DUO_JWKS_URL":                 "https://a.example.com/keys",
		"DUO_AUDIENCES":                "DIXXXX, urn:crm",
		"AUTH_MODE":                    "jwt+introspection",
		"DUO_CLIENT_ID":                "client-1",
		"DUO_CLIENT_SECRET":            testSecret,
		"DUO_INTROSPECTION_URL":        "https://a.example.com/introspect",
		"AUTH_LEEWAY":                  "10s",
		"AUTH_CACHE_TTL":               "1m",
		"AUTH_INTROSPECTION_CACHE_TTL": "2s",
		"CRM_DB_PATH":                  "/tmp/x.db",
		"LOG_LEVEL":                    "debug",
		"LOG_FORMAT":                   "text",
		"DUO_AUTH_IKEY":                "DIXXXXXXXXXXXXXXXXXX",
		"DUO_AUTH_SKEY":                testDuoSKey,
		"DUO_AUTH_HOST":                "api-xxxxxxxx.duosecurity.com:8443",
		"DUO_USERNAME_CLAIM":           "email",
		"DUO_SEND_USER_ID":             "true",
		"STEPUP_TIMEOUT":               "30s",
		"STEPUP_GRANT_TTL":             "0",
		"STEPUP_MAX_PUSHES":            "3",
		"STEPUP_DENY_COOLDOWN":         "2m",
		"STEPUP_ON_WRITE":              "false",
		"STEPUP_TOOLS":                 "list_deals, get_contact",
		"SENSITIVE_QUERY_TERMS":        "secret, aerospace",
		"HOME":                         "/root", // other variables are none of our business
	}
	c, err := loadConfig(env)
	require.NoError(t, err)
	assert.Equal(t, "/", c.mcpPath)
	assert.Equal(t, []string{"http://localhost:6274", "https://app.example.com"}, c.AllowedOrigins)
	assert.True(t, c.HideUnauthorizedTools)
	assert.Equal(t, []string{"DIXXXX", "urn:crm"}, c.Audiences)
	assert.Equal(t, resourceserver.ModeJWTIntrospection, c.mode)
	assert.Equal(t, 10*time.Second, c.Leeway)
	assert.Equal(t, "DEBUG", c.level.String())
	assert.Empty(t, c.unknown)

	rc := c.resourceServerConfig(nil)
	assert.Equal(t, "http://127.0.0.1:9000/", rc.Resource)
	require.Len(t, rc.Issuers, 1)
	assert.Equal(t, resourceserver.Issuer{
		URL:              "https://a.example.com/oauth2/A",
		JWKSURL:          "https://a.example.com/keys",
		IntrospectionURL: "https://a.example.com/introspect",
		ClientID:         "client-1",
		ClientSecret:     testSecret,
	}, rc.Issuers[0])
	assert.Equal(t, []string{"DIXXXX", "urn:crm"}, rc.ExtraAudiences)
	assert.Equal(t, []string{"crm.contacts.read", "crm.deals.read"}, rc.ScopesSupported)
	assert.Equal(t, "Test CRM", rc.ResourceName)
	assert.Equal(t, "https://docs.example.com/crm", rc.ResourceDocumentation)
	assert.Equal(t, resourceserver.ModeJWTIntrospection, rc.Mode)
	assert.Equal(t, time.Minute, rc.CacheTTL)
	assert.Equal(t, 2*time.Second, rc.IntrospectionCacheTTL)

	// What loadConfig accepts, resourceserver accepts.
	require.NoError(t, rc.Validate())
}

func TestLoadConfigSeveralIssuers(t *testing.T) {
	c, err := loadConfig(with(minimalEnv(), "DUO_ISSUER", " https://a.example.com/oauth2/A , https://b.example.com/oauth2/B,"))
	require.NoError(t, err)
	assert.Equal(t, []string{"https://a.example.com/oauth2/A", "https://b.example.com/oauth2/B"}, c.Issuers)
	assert.Len(t, c.resourceServerConfig(nil).Issuers, 2)
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	intro := with(minimalEnv(), "AUTH_MODE", "introspection", "DUO_CLIENT_ID", "id", "DUO_CLIENT_SECRET", testSecret)
	tests := []struct {
		name string
		env  map[string]string
		want string // the variable the error must name
		also string // and a piece of its explanation
	}{
		{"resource URL missing", with(minimalEnv(), "MCP_RESOURCE_URL", "\x00"), "MCP_RESOURCE_URL", "required but not set"},
		{"Duo ikey missing", with(minimalEnv(), "DUO_AUTH_IKEY", "\x00"), "DUO_AUTH_IKEY", "STEPUP_MODE=off"},
		{"Duo skey missing", with(minimalEnv(), "DUO_AUTH_SKEY", ""), "DUO_AUTH_SKEY", "secret key"},
		{"Duo host missing", with(minimalEnv(), "DUO_AUTH_HOST", "\x00"), "DUO_AUTH_HOST", "API hostname"},
		{"Duo host with scheme", with(minimalEnv(), "DUO_AUTH_HOST", "https://api-x.duosecurity.com"), "DUO_AUTH_HOST", "bare host"},
		{"no scopes", with(minimalEnv(), "MCP_SCOPES_SUPPORTED", " , "), "MCP_SCOPES_SUPPORTED", "no scope"},
		{"documentation with password", with(minimalEnv(), "MCP_RESOURCE_DOCUMENTATION", "https://u:pw@docs.example.com"), "MCP_RESOURCE_DOCUMENTATION", "user information"},
		{"Duo host with user", with(minimalEnv(), "DUO_AUTH_HOST", "user@api-x.duosecurity.com"), "DUO_AUTH_HOST", "bare host"},
		{"Duo host with space", with(minimalEnv(), "DUO_AUTH_HOST", "api x.duosecurity.com"), "DUO_AUTH_HOST", "bare host"},
		{"CA file not PEM", with(minimalEnv(), "DUO_AUTH_CA_FILE", "config_test.go"), "DUO_AUTH_CA_FILE", "not PEM"},
		{"CA file missing", with(minimalEnv(), "DUO_AUTH_CA_FILE", "/nonexistent/ca.pem"), "DUO_AUTH_CA_FILE", "cannot read"},
		{"step-up mode", with(minimalEnv(), "STEPUP_MODE", "sometimes"), "STEPUP_MODE", "duo or off"},
		{"step-up timeout zero", with(minimalEnv(), "STEPUP_TIMEOUT", "0s"), "STEPUP_TIMEOUT", "between"},
		{"grant TTL negative", with(minimalEnv(), "STEPUP_GRANT_TTL", "-1m"), "STEPUP_GRANT_TTL", "between"},
		{"max pushes zero", with(minimalEnv(), "STEPUP_MAX_PUSHES", "0"), "STEPUP_MAX_PUSHES", "between 1 and 100"},
		{"max pushes text", with(minimalEnv(), "STEPUP_MAX_PUSHES", "five"), "STEPUP_MAX_PUSHES", "five"},
		{"deny cooldown bad", with(minimalEnv(), "STEPUP_DENY_COOLDOWN", "soon"), "STEPUP_DENY_COOLDOWN", "duration"},
		{"on write bad", with(minimalEnv(), "STEPUP_ON_WRITE", "perhaps"), "STEPUP_ON_WRITE", "boolean"},
		{"unknown tool", with(minimalEnv(), "STEPUP_TOOLS", "list_contacts,drop_tables"), "STEPUP_TOOLS", "drop_tables"},
		{"no terms", with(minimalEnv(), "SENSITIVE_QUERY_TERMS", " , "), "SENSITIVE_QUERY_TERMS", "at least one"},
		{"empty claim", with(minimalEnv(), "DUO_USERNAME_CLAIM", " "), "DUO_USERNAME_CLAIM", "claim"},
		{"resource URL empty", with(minimalEnv(), "MCP_RESOURCE_URL", ""), "MCP_RESOURCE_URL", "required but empty"},
		{"issuer missing", with(minimalEnv(), "DUO_ISSUER", "\x00"), "DUO_ISSUER", "required but not set"},
		{"issuer only commas", with(minimalEnv(), "DUO_ISSUER", " , "), "DUO_ISSUER", "at least one issuer"},
		{"resource URL relative", with(minimalEnv(), "MCP_RESOURCE_URL", "/mcp"), "MCP_RESOURCE_URL", "not an absolute URL"},
		{"resource URL with query", with(minimalEnv(), "MCP_RESOURCE_URL", "https://crm.example.com/mcp?x=1"), "MCP_RESOURCE_URL", "query or fragment"},
		{"resource URL with fragment", with(minimalEnv(), "MCP_RESOURCE_URL", "https://crm.example.com/mcp#top"), "MCP_RESOURCE_URL", "query or fragment"},
		{"resource URL plain HTTP", with(minimalEnv(), "MCP_RESOURCE_URL", "http://crm.example.com/mcp"), "MCP_RESOURCE_URL", "plain HTTP"},
		{"resource URL ftp", with(minimalEnv(), "MCP_RESOURCE_URL", "ftp://crm.example.com/mcp"), "MCP_RESOURCE_URL", "must use https"},
		{"resource URL reserved path", with(minimalEnv(), "MCP_RESOURCE_URL", "https://crm.example.com/healthz"), "MCP_RESOURCE_URL", "taken by the server"},
		{"resource URL odd path", with(minimalEnv(), "MCP_RESOURCE_URL", "https://crm.example.com/{x}"), "MCP_RESOURCE_URL", "may only contain"},
		{"resource URL unclean path", with(minimalEnv(), "MCP_RESOURCE_URL", "https://crm.example.com/a/../mcp"), "MCP_RESOURCE_URL", "not clean"},
		{"issuer plain HTTP", with(minimalEnv(), "DUO_ISSUER", "http://sso.example.com/oauth2/X"), "DUO_ISSUER", "plain HTTP"},
		{"issuer relative", with(minimalEnv(), "DUO_ISSUER", "sso.example.com"), "DUO_ISSUER", "not an absolute URL"},
		{"issuer twice", with(minimalEnv(), "DUO_ISSUER", "https://a.example.com,https://a.example.com"), "DUO_ISSUER", "listed twice"},
		{"mode magic", with(minimalEnv(), "AUTH_MODE", "magic"), "AUTH_MODE", "want jwt, introspection or jwt+introspection"},
		{"hide maybe", with(minimalEnv(), "MCP_HIDE_UNAUTHORIZED_TOOLS", "yes"), "MCP_HIDE_UNAUTHORIZED_TOOLS", "not a boolean"},
		{"log level loud", with(minimalEnv(), "LOG_LEVEL", "loud"), "LOG_LEVEL", "want debug, info, warn or error"},
		{"log level offset", with(minimalEnv(), "LOG_LEVEL", "info+2"), "LOG_LEVEL", "not a level"},
		{"log format xml", with(minimalEnv(), "LOG_FORMAT", "xml"), "LOG_FORMAT", "want json or text"},
		{"JWKS URL with two issuers", with(minimalEnv(), "DUO_ISSUER", "https://a.example.com,https://b.example.com", "DUO_JWKS_URL", "https://a.example.com/jwks"), "DUO_JWKS_URL", "single DUO_ISSUER"},
		{"JWKS URL plain HTTP", with(minimalEnv(), "DUO_JWKS_URL", "http://a.example.com/jwks"), "DUO_JWKS_URL", "plain HTTP"},
		{"introspection without client id", with(intro, "DUO_CLIENT_ID", "\x00"), "DUO_CLIENT_ID", "required in mode introspection"},
		{"introspection without secret", with(intro, "DUO_CLIENT_SECRET", "\x00"), "DUO_CLIENT_SECRET", "required in mode introspection"},
		{"jwt+introspection without secret", with(intro, "AUTH_MODE", "jwt+introspection", "DUO_CLIENT_SECRET", ""), "DUO_CLIENT_SECRET", "required"},
		{"introspection with two issuers", with(intro, "DUO_ISSUER", "https://a.example.com,https://b.example.com"), "AUTH_MODE", "exactly one issuer"},
		{"introspection URL with two issuers", with(intro, "AUTH_MODE", "jwt+introspection", "DUO_ISSUER", "https://a.example.com,https://b.example.com", "DUO_INTROSPECTION_URL", "https://a.example.com/i"), "DUO_INTROSPECTION_URL", "single DUO_ISSUER"},
		{"introspection URL plain HTTP", with(intro, "DUO_INTROSPECTION_URL", "http://a.example.com/i"), "DUO_INTROSPECTION_URL", "plain HTTP"},
		{"bad duration", with(minimalEnv(), "AUTH_LEEWAY", "soon"), "AUTH_LEEWAY", `"soon" is not a duration`},
		{"duration without unit", with(minimalEnv(), "AUTH_CACHE_TTL", "300"), "AUTH_CACHE_TTL", "not a duration"},
		{"negative duration", with(minimalEnv(), "AUTH_INTROSPECTION_CACHE_TTL", "-1s"), "AUTH_INTROSPECTION_CACHE_TTL", "must not be negative"},
		{"zero leeway", with(minimalEnv(), "AUTH_LEEWAY", "0s"), "AUTH_LEEWAY", "greater than zero"},
		{"huge leeway", with(minimalEnv(), "AUTH_LEEWAY", "1h"), "AUTH_LEEWAY", "at most 5m0s"},
		{"listen address", with(minimalEnv(), "MCP_LISTEN_ADDR", "8080"), "MCP_LISTEN_ADDR", "not host:port"},
		{"listen port", with(minimalEnv(), "MCP_LISTEN_ADDR", "127.0.0.1:http"), "MCP_LISTEN_ADDR", "no valid port"},
		{"origin with path", with(minimalEnv(), "MCP_ALLOWED_ORIGINS", "https://app.example.com/page"), "MCP_ALLOWED_ORIGINS", "not an origin"},
		{"origin star", with(minimalEnv(), "MCP_ALLOWED_ORIGINS", "*"), "MCP_ALLOWED_ORIGINS", "list each browser origin"},
		{"scope with quote", with(minimalEnv(), "MCP_SCOPES_SUPPORTED", `crm"x`), "MCP_SCOPES_SUPPORTED", "not a valid scope"},
		{"documentation relative", with(minimalEnv(), "MCP_RESOURCE_DOCUMENTATION", "docs/crm"), "MCP_RESOURCE_DOCUMENTATION", "not an absolute"},
		{"scopes narrowed", with(minimalEnv(), "MCP_SCOPES_SUPPORTED", "crm.contacts.read", "MCP_LISTEN_ADDR", "x"), "MCP_LISTEN_ADDR", "not host:port"},
		{"zero cache TTL", with(minimalEnv(), "AUTH_CACHE_TTL", "0s"), "AUTH_CACHE_TTL", "0 would mean the default"},
		{"blank database path", with(minimalEnv(), "CRM_DB_PATH", "  "), "CRM_DB_PATH", "blank"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, set := tt.env["DUO_CLIENT_SECRET"]; !set && tt.name != "introspection without secret" {
				tt.env["DUO_CLIENT_SECRET"] = testSecret // to prove it leaks nowhere
			}
			_, err := loadConfig(tt.env)
			require.Error(t, err)
			msg := err.Error()
			assert.Contains(t, msg, tt.want+": ", "the error must name the variable")
			assert.Contains(t, msg, tt.also)
			assert.NotContains(t, msg, testSecret)
			var ve *varError
			require.True(t, errors.As(err, &ve), "got %T, want *varError", err)
		})
	}
}

func TestLoadConfigReportsAllProblemsAtOnce(t *testing.T) {
	env := map[string]string{
		"MCP_RESOURCE_URL":    "http://crm.example.com/mcp?x",
		"MCP_ALLOWED_ORIGINS": "*",
		"AUTH_MODE":           "introspection",
		"AUTH_LEEWAY":         "abc",
		"LOG_LEVEL":           "loud",
		"LOG_FORMAT":          "xml",
		"DUO_CLIENT_SECRET":   testSecret,
		"DUO_AUTH_SKEY":       testDuoSKey,
	}
	_, err := loadConfig(env)
	require.Error(t, err)
	msg := err.Error()
	// DUO_CLIENT_ID is not among them: with no issuer, there is no
	// issuer to need it yet.
	for _, name := range []string{"MCP_RESOURCE_URL", "DUO_ISSUER", "MCP_ALLOWED_ORIGINS", "AUTH_LEEWAY", "DUO_AUTH_IKEY", "DUO_AUTH_HOST", "LOG_LEVEL", "LOG_FORMAT"} {
		assert.Contains(t, msg, name+": ")
	}
	assert.NotContains(t, msg, testSecret)
	assert.NotContains(t, msg, testDuoSKey)
	// A value env could not parse is reported once, not again as zero.
	assert.Equal(t, 1, strings.Count(msg, "AUTH_LEEWAY"), msg)
	assert.Len(t, leafErrors(err), 8, msg)
}

func TestLoadConfigHidesCredentialsInURLs(t *testing.T) {
	_, err := loadConfig(with(minimalEnv(), "DUO_ISSUER", "http://user:"+testSecret+"@sso.example.com/oauth2/X"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DUO_ISSUER")
	assert.NotContains(t, err.Error(), testSecret)
}

func TestLoadConfigNilEnvironmentIsEmpty(t *testing.T) {
	// nil must not fall back to the process environment.
	t.Setenv("MCP_RESOURCE_URL", "https://crm.example.com/mcp")
	t.Setenv("DUO_ISSUER", "https://sso.example.com/oauth2/X")
	_, err := loadConfig(nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "MCP_RESOURCE_URL: required but not set")
}

func TestLoadConfigWarnings(t *testing.T) {
	c, err := loadConfig(with(minimalEnv(), "MCP_STATLESS", "true", "DUO_CLIENT_SECRET", testSecret))
	require.NoError(t, err)
	assert.Equal(t, []string{"MCP_STATLESS"}, c.unknown)
	assert.Equal(t, []string{"DUO_CLIENT_SECRET is ignored: AUTH_MODE is jwt"}, c.warnings)
	assert.Equal(t, "", c.resourceServerConfig(nil).Issuers[0].ClientSecret, "jwt mode sends no credentials anywhere")
}

// A variable that earlier versions read is neither refused (an upgrade
// must not stop a deployment from starting) nor silently ignored (an
// operator would believe a bound or mode still applies): it is warned
// about at start, with why, whatever its value, even one that no longer
// parses. It is not taken for a typo.
func TestLoadConfigRetiredVariables(t *testing.T) {
	tests := []struct {
		name, value, why string
	}{
		{"MCP_STATELESS", "false", "the server is always stateless now: one endpoint serves MCP 2026-07-28 and the earlier revisions"},
		{"MCP_STATELESS", "maybe", "the server is always stateless now"},
		{"MCP_STICKY_SESSIONS", "true", "the load balancer needs no sticky sessions"},
		{"MCP_SESSION_IDLE_TIMEOUT", "30m", "there are no MCP sessions to bound any more"},
		{"MCP_MAX_SESSIONS_PER_USER", "0", "MCP_MAX_REQUESTS_PER_USER and MCP_MAX_REQUESTS bound"},
		{"MCP_MAX_SESSIONS", "many", "there are no MCP sessions to bound any more"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			c, err := loadConfig(with(minimalEnv(), tt.name, tt.value))
			require.NoError(t, err, "an upgrade must not break the start")
			require.Len(t, c.warnings, 1)
			assert.True(t, strings.HasPrefix(c.warnings[0], tt.name+" is set but no longer read: "), c.warnings[0])
			assert.Contains(t, c.warnings[0], tt.why)
			assert.True(t, strings.HasSuffix(c.warnings[0], "; remove it"), c.warnings[0])
			assert.Empty(t, c.unknown, "not reported as a typo as well")
			assert.NotContains(t, knownVariables(), tt.name)
		})
	}

	// The start-up log says so once per variable, in a stable order.
	c, err := loadConfig(with(minimalEnv(), "MCP_STICKY_SESSIONS", "true", "MCP_STATELESS", "true"))
	require.NoError(t, err)
	var log bytes.Buffer
	c.logWarnings(slog.New(slog.NewTextHandler(&log, nil)))
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	require.Len(t, lines, 2, log.String())
	assert.Contains(t, lines[0], "level=WARN msg=\"MCP_STATELESS is set but no longer read")
	assert.Contains(t, lines[1], "level=WARN msg=\"MCP_STICKY_SESSIONS is set but no longer read")
}

func TestSecretNeverPrints(t *testing.T) {
	c, err := loadConfig(with(minimalEnv(), "AUTH_MODE", "introspection", "DUO_CLIENT_ID", "id", "DUO_CLIENT_SECRET", testSecret))
	require.NoError(t, err)
	require.Equal(t, testSecret, c.ClientSecret.reveal())

	var out bytes.Buffer
	fmt.Fprintf(&out, "%v %+v %#v %s %q %x", c, c, c, c.ClientSecret, c.ClientSecret, c.ClientSecret)
	j, err := json.Marshal(c)
	require.NoError(t, err)
	out.Write(j)
	for _, format := range []string{"json", "text"} {
		c.LogFormat = format
		c.newLogger(&out).Info("config", c.logAttrs()...)
		c.newLogger(&out).Info("config", "cfg", c)
	}
	assert.NotContains(t, out.String(), testSecret)
	assert.NotContains(t, out.String(), testDuoSKey)
	assert.Contains(t, out.String(), "DUO_AUTH_SKEY=set")
	assert.Contains(t, out.String(), "DUO_CLIENT_SECRET=set")
	assert.Contains(t, out.String(), `"DUO_CLIENT_SECRET":"set"`)
	assert.Equal(t, "unset", secret("").String())
}

func TestLoadConfigNarrowsScopes(t *testing.T) {
	c, err := loadConfig(with(minimalEnv(), "MCP_SCOPES_SUPPORTED", "crm.contacts.read"))
	require.NoError(t, err)
	assert.Equal(t, []string{"crm.contacts.read"}, c.resourceServerConfig(nil).ScopesSupported)
	c, err = loadConfig(with(minimalEnv(), "MCP_SCOPES_SUPPORTED", " "))
	require.NoError(t, err, "blank is unset")
	assert.Equal(t, tools.Scopes(), c.ScopesSupported)
}

// TestLibrariesAndBinaryAgree feeds the same bad value to the library
// that judges it and to the binary through its variable: both refuse,
// the library naming the field and the binary the variable. The binary
// has no copy of the libraries' checks that could drift from them.
func TestLibrariesAndBinaryAgree(t *testing.T) {
	certAndKey := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(certAndKey, append(testCACert(t), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"...), 0o600))
	intro := with(minimalEnv(), "AUTH_MODE", "jwt+introspection", "DUO_CLIENT_ID", "id", "DUO_CLIENT_SECRET", testSecret)
	type rsCase = func(c *resourceserver.Config, v string)
	type suCase = func(c *stepup.Config, v string)
	tests := []struct {
		name     string
		base     map[string]string
		variable string
		value    string
		field    string // of resourceserver.Config or stepup.Config
		rs       rsCase
		su       suCase
	}{
		{"issuer with user information", minimalEnv(), "DUO_ISSUER", "https://admin:" + testSecret + "@sso.example.com/oauth2/X", "Issuers[0].URL",
			func(c *resourceserver.Config, v string) { c.Issuers[0].URL = v }, nil},
		{"second issuer plain HTTP", minimalEnv(), "DUO_ISSUER", "https://a.example.com,http://b.example.com", "Issuers[1].URL",
			func(c *resourceserver.Config, v string) {
				c.Issuers = []resourceserver.Issuer{{URL: "https://a.example.com"}, {URL: strings.Split(v, ",")[1]}}
			}, nil},
		{"ftp origin", minimalEnv(), "MCP_ALLOWED_ORIGINS", "ftp://files.example.com", "AllowedOrigins[0]",
			func(c *resourceserver.Config, v string) { c.AllowedOrigins = []string{v} }, nil},
		{"origin star", minimalEnv(), "MCP_ALLOWED_ORIGINS", "*", "AllowedOrigins[0]",
			func(c *resourceserver.Config, v string) { c.AllowedOrigins = []string{v} }, nil},
		{"javascript documentation", minimalEnv(), "MCP_RESOURCE_DOCUMENTATION", "javascript:alert(1)", "ResourceDocumentation",
			func(c *resourceserver.Config, v string) { c.ResourceDocumentation = v }, nil},
		{"resource URL ftp", minimalEnv(), "MCP_RESOURCE_URL", "ftp://crm.example.com/mcp", "Resource",
			func(c *resourceserver.Config, v string) { c.Resource = v }, nil},
		{"resource URL with empty fragment", minimalEnv(), "MCP_RESOURCE_URL", "https://crm.example.com/mcp#", "Resource",
			func(c *resourceserver.Config, v string) { c.Resource = v }, nil},
		{"scope with quote", minimalEnv(), "MCP_SCOPES_SUPPORTED", `crm"x`, "ScopesSupported[0]",
			func(c *resourceserver.Config, v string) { c.ScopesSupported = []string{v} }, nil},
		{"JWKS URL with query", minimalEnv(), "DUO_JWKS_URL", "https://sso.example.com/jwks?x=1", "Issuers[0].JWKSURL",
			func(c *resourceserver.Config, v string) { c.Issuers[0].JWKSURL = v }, nil},
		{"introspection URL plain HTTP", intro, "DUO_INTROSPECTION_URL", "http://sso.example.com/i", "Issuers[0].IntrospectionURL",
			func(c *resourceserver.Config, v string) { c.Issuers[0].IntrospectionURL = v }, nil},
		{"introspection without secret", intro, "DUO_CLIENT_SECRET", "", "Issuers[0].ClientSecret",
			func(c *resourceserver.Config, v string) { c.Issuers[0].ClientSecret = v }, nil},
		{"mode", minimalEnv(), "AUTH_MODE", "magic", "Mode",
			func(c *resourceserver.Config, v string) { c.Mode = resourceserver.Mode(v) }, nil},
		{"negative leeway", minimalEnv(), "AUTH_LEEWAY", "-1s", "Leeway",
			func(c *resourceserver.Config, v string) { c.Leeway, _ = time.ParseDuration(v) }, nil},
		{"Duo host with scheme", minimalEnv(), "DUO_AUTH_HOST", "https://api-x.duosecurity.com", "Host",
			nil, func(c *stepup.Config, v string) { c.Host = v }},
		{"Duo host with port 0", minimalEnv(), "DUO_AUTH_HOST", "api-x.duosecurity.com:0", "Host",
			nil, func(c *stepup.Config, v string) { c.Host = v }},
		{"Duo integration key empty", minimalEnv(), "DUO_AUTH_IKEY", "", "IKey",
			nil, func(c *stepup.Config, v string) { c.IKey = v }},
		{"CA file with a certificate and a private key", minimalEnv(), "DUO_AUTH_CA_FILE", certAndKey, "CACertPEM",
			nil, func(c *stepup.Config, v string) {
				pem, err := os.ReadFile(v)
				require.NoError(t, err)
				c.CACertPEM = pem
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good, err := loadConfig(tt.base)
			require.NoError(t, err)
			var lib error
			if tt.rs != nil {
				rc := good.resourceServerConfig(nil)
				tt.rs(&rc, tt.value)
				lib = rc.Validate()
				_, err := resourceserver.New(rc)
				require.Error(t, err, "resourceserver.New refuses it too")
			} else {
				sc := good.stepUpConfig(nil)
				tt.su(&sc, tt.value)
				lib = sc.Validate()
				_, err := stepup.New(sc)
				require.Error(t, err, "stepup.New refuses it too")
			}
			require.Error(t, lib, "the library refuses it")
			var rf *resourceserver.FieldError
			var sf *stepup.FieldError
			switch {
			case errors.As(lib, &rf):
				assert.Equal(t, tt.field, rf.Field)
			case errors.As(lib, &sf):
				assert.Equal(t, tt.field, sf.Field)
			default:
				t.Fatalf("the library's error is a %T, want a FieldError", lib)
			}

			env := with(tt.base, tt.variable, cmp.Or(tt.value, "\x00"))
			_, err = loadConfig(env)
			require.Error(t, err, "the binary refuses it")
			msg := err.Error()
			assert.Equal(t, 1, len(leafErrors(err)), "one problem, reported once: %s", msg)
			assert.True(t, strings.HasPrefix(msg, tt.variable+": "), "the binary's message names the variable: %s", msg)
			assert.NotContains(t, msg, "resourceserver:")
			assert.NotContains(t, msg, "stepup:")
			assert.NotContains(t, msg, testSecret)
			assert.NotContains(t, msg, testDuoSKey)
		})
	}
}

// testCACert is a self-signed CA certificate in PEM.
func testCACert(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestLibraryVarsAreVariables(t *testing.T) {
	known := knownVariables()
	for field, name := range libraryVars {
		assert.Contains(t, known, name, "libraryVars[%q]", field)
	}
}
