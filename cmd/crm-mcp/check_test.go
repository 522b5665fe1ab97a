package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

func runCheck(t *testing.T, env map[string]string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), []string{"check"}, env, &out, &errOut)
	t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	// The report is for a person: no JSON log line in it or beside it.
	for _, s := range []string{out.String(), errOut.String()} {
		for _, line := range strings.Split(s, "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "{") {
				t.Errorf("check printed a log line among its report: %s", line)
			}
		}
	}
	return code, out.String(), errOut.String()
}

func TestCheckPasses(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256") // a non-empty JWKS

	code, out, _ := runCheck(t, testEnv(t, as))
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "PASS  configuration: resource "+testResource)
	assert.Contains(t, out, "PASS  issuer "+as.Issuer()+": metadata discovered, JWKS fetched: 1 usable key(s)")
	assert.Contains(t, out, "check passed: 3 checks")
	assert.NotContains(t, out, "FAIL")
	assert.Contains(t, out, "PASS  Duo Auth API: /auth/v2/check at ")
}

func TestCheckJWKSURLOverride(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("ES256")
	env := testEnv(t, as)
	env["DUO_JWKS_URL"] = as.JWKSURL()

	code, out, _ := runCheck(t, env)
	assert.Equal(t, 0, code)
	assert.Contains(t, out, "PASS  issuer "+as.Issuer()+": JWKS from DUO_JWKS_URL fetched: 1 usable key(s)")
}

func TestCheckJWKSDown(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	as.SetJWKSDown(true)

	code, out, _ := runCheck(t, testEnv(t, as))
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "PASS  configuration")
	assert.Contains(t, out, "FAIL  issuer "+as.Issuer()+": JWKS: ")
	assert.Contains(t, out, "HTTP 503")
	assert.Contains(t, out, "check failed: 1 of 3 checks failed")
}

func TestCheckIssuerUnreachable(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	env := testEnv(t, as)
	env["DUO_ISSUER"] = "http://" + closedPort(t) + "/oauth2/gone"

	code, out, _ := runCheck(t, env)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "FAIL  issuer "+env["DUO_ISSUER"]+": discovering metadata")
	assert.Contains(t, out, "check failed")
}

func TestCheckOneOfTwoIssuersFails(t *testing.T) {
	good := rstest.NewServer()
	defer good.Close()
	good.KID("RS256")
	bad := rstest.NewServer()
	defer bad.Close()
	bad.KID("RS256")
	bad.SetJWKSDown(true)
	env := testEnv(t, good)
	env["DUO_ISSUER"] = good.Issuer() + "," + bad.Issuer()

	code, out, _ := runCheck(t, env)
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "PASS  issuer "+good.Issuer())
	assert.Contains(t, out, "FAIL  issuer "+bad.Issuer())
	assert.Contains(t, out, "check failed: 1 of 4 checks failed")
}

func TestCheckInvalidConfiguration(t *testing.T) {
	code, out, _ := runCheck(t, map[string]string{"MCP_RESOURCE_URL": "http://crm.example.com/mcp", "DUO_CLIENT_SECRET": testSecret})
	assert.Equal(t, 1, code)
	assert.Contains(t, out, "FAIL  configuration: MCP_RESOURCE_URL: ")
	assert.Contains(t, out, "FAIL  configuration: DUO_ISSUER: required but not set")
	assert.NotContains(t, out, "PASS")
	assert.NotContains(t, out, testSecret)
}

func TestCheckIntrospection(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.SetIntrospectionClient("crm-client", testSecret)
	base := testEnv(t, as)
	base["DUO_CLIENT_ID"] = "crm-client"

	for _, mode := range []string{"introspection", "jwt+introspection"} {
		t.Run(mode+" good credentials", func(t *testing.T) {
			as.KID("RS256")
			env := with(base, "AUTH_MODE", mode, "DUO_CLIENT_SECRET", testSecret)
			code, out, errOut := runCheck(t, env)
			assert.Equal(t, 0, code)
			assert.Contains(t, out, "PASS  introspection "+as.Issuer()+": the endpoint answered a made-up token as inactive")
			assert.NotContains(t, out+errOut, testSecret)
		})
		t.Run(mode+" wrong secret", func(t *testing.T) {
			wrong := testSecret + "-wrong"
			env := with(base, "AUTH_MODE", mode, "DUO_CLIENT_SECRET", wrong)
			code, out, errOut := runCheck(t, env)
			assert.Equal(t, 1, code)
			assert.Contains(t, out, "FAIL  introspection "+as.Issuer()+": ")
			assert.Contains(t, out, "HTTP 401 (check the client credentials)")
			assert.NotContains(t, out+errOut, testSecret)
		})
	}
	t.Run("endpoint down", func(t *testing.T) {
		as.SetIntrospectionDown(true)
		defer as.SetIntrospectionDown(false)
		code, out, _ := runCheck(t, with(base, "AUTH_MODE", "introspection", "DUO_CLIENT_SECRET", testSecret))
		assert.Equal(t, 1, code)
		require.Contains(t, out, "FAIL  introspection")
		assert.Contains(t, out, "HTTP 503")
	})
}

func TestCheckDuoAuthAPI(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")

	t.Run("wrong secret key", func(t *testing.T) {
		env := testEnv(t, as)
		env["DUO_AUTH_SKEY"] = testDuoSKey
		code, out, errOut := runCheck(t, env)
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "FAIL  Duo Auth API")
		assert.Contains(t, out, "DUO_AUTH_SKEY")
		assert.NotContains(t, out+errOut, testDuoSKey)
	})
	t.Run("pinned CAs do not trust the fake", func(t *testing.T) {
		env := testEnv(t, as)
		delete(env, "DUO_AUTH_CA_FILE")
		code, out, _ := runCheck(t, env)
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "FAIL  Duo Auth API: Duo's TLS certificate is not signed by one of Duo's own CAs")
		assert.Contains(t, out, "set DUO_AUTH_CA_FILE")
		assert.NotContains(t, out, "network path")
	})
	t.Run("a CA file that does not sign Duo's certificate", func(t *testing.T) {
		env := testEnv(t, as)
		ca := filepath.Join(t.TempDir(), "other-ca.pem")
		require.NoError(t, os.WriteFile(ca, testCACert(t), 0o600)) // a CA that signed nothing
		env["DUO_AUTH_CA_FILE"] = ca
		code, out, _ := runCheck(t, env)
		assert.Equal(t, 1, code)
		assert.Contains(t, out, "FAIL  Duo Auth API: Duo's TLS certificate is not signed by a CA in DUO_AUTH_CA_FILE")
	})
	t.Run("a clock that differs from Duo's is a warning", func(t *testing.T) {
		env, duo := testEnvDuo(t, as)
		duo.Now = func() time.Time { return time.Now().Add(2 * time.Minute) }
		code, out, _ := runCheck(t, env)
		assert.Equal(t, 0, code, out)
		assert.Contains(t, out, "WARN  Duo Auth API: stepup: this server's clock differs from Duo's")
	})
	t.Run("step-up off", func(t *testing.T) {
		env := testEnv(t, as)
		env["STEPUP_MODE"] = "off"
		code, out, _ := runCheck(t, env)
		assert.Equal(t, 0, code)
		assert.Contains(t, out, "WARN  Duo Auth API: STEPUP_MODE=off")
	})
}
