package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDevEnvironment: dev takes the settings serve reads from the
// environment where they make sense in a local demo, names those it
// overrides (never their values), and refuses those it cannot honour.
func TestDevEnvironment(t *testing.T) {
	t.Run("taken, overridden and defaults", func(t *testing.T) {
		s, err := newDevStack("127.0.0.1:8080", t.TempDir(), "")
		require.NoError(t, err)
		defer s.close()
		env, notes, err := s.environ(map[string]string{
			"STEPUP_MAX_PUSHES": "7",
			"METRICS_ADDR":      "127.0.0.1:9464",
			"DUO_AUTH_SKEY":     "a-real-secret-key-0123456789",
			"DUO_ISSUER":        "https://sso-x.sso.duosecurity.com/oauth2/DIX",
			"HOME":              "/root", // not a setting: not mentioned
		})
		require.NoError(t, err)
		assert.Equal(t, "7", env["STEPUP_MAX_PUSHES"], "the environment's value wins over dev's default")
		assert.Equal(t, "10s", env["STEPUP_DENY_COOLDOWN"], "dev's demo default")
		assert.Equal(t, "127.0.0.1:9464", env["METRICS_ADDR"])
		assert.Equal(t, s.duo.SKey(), env["DUO_AUTH_SKEY"], "dev's stand-in, not the environment's key")
		assert.Equal(t, s.issuer, env["DUO_ISSUER"])
		joined := strings.Join(notes, "\n")
		assert.Contains(t, joined, "ignoring DUO_AUTH_SKEY from the environment: dev runs its own stand-in of Duo's Auth API")
		assert.Contains(t, joined, "ignoring DUO_ISSUER from the environment")
		assert.Contains(t, joined, "taken from the environment: METRICS_ADDR, STEPUP_MAX_PUSHES")
		assert.NotContains(t, joined, "a-real-secret-key", "a value is never printed")
		assert.NotContains(t, joined, "HOME")
		_, err = loadConfig(env)
		require.NoError(t, err, "what dev hands serve is a valid configuration")
	})
	t.Run("refused", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"dev", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir()},
			map[string]string{"CRM_DATABASE_URL": "postgres://u:secretpw@db/crm"}, &stdout, &stderr)
		assert.Equal(t, 2, code)
		assert.Contains(t, stderr.String(), "CRM_DATABASE_URL is set, but dev keeps the CRM and the step-up state in --data-dir")
		assert.NotContains(t, stderr.String(), "secretpw")
	})
	t.Run("refused before anything starts", func(t *testing.T) {
		for _, tt := range []struct {
			name, variable, value, want string
		}{
			{"metrics on every interface", "METRICS_ADDR", "0.0.0.0:9464", `METRICS_ADDR "0.0.0.0:9464" is not a loopback address`},
			{"metrics on every interface, no host", "METRICS_ADDR", ":9464", `METRICS_ADDR ":9464" is not a loopback address`},
			{"metrics on a name", "METRICS_ADDR", "localhost:9464", `METRICS_ADDR "localhost:9464" is not a loopback address`},
			{"metrics not an address", "METRICS_ADDR", "9464", `METRICS_ADDR "9464" is not a loopback address`},
			{"a Duo user ID", "DUO_SEND_USER_ID", "true", "DUO_SEND_USER_ID is set, but dev's Duo stand-in knows its users by username"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s, err := newDevStack("127.0.0.1:8080", t.TempDir(), "")
				require.NoError(t, err)
				defer s.close()
				_, _, err = s.environ(map[string]string{tt.variable: tt.value})
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.want)
			})
		}
		for _, addr := range []string{"127.0.0.1:9464", "[::1]:0", "127.0.0.2:0", ""} {
			s, err := newDevStack("127.0.0.1:8080", t.TempDir(), "")
			require.NoError(t, err)
			defer s.close()
			env, _, err := s.environ(map[string]string{"METRICS_ADDR": addr})
			require.NoError(t, err, "METRICS_ADDR %q", addr)
			assert.Equal(t, addr, env["METRICS_ADDR"])
		}
	})
	t.Run("metrics are served", func(t *testing.T) {
		d := startDevEnv(t, map[string]string{"METRICS_ADDR": "127.0.0.1:0"})
		assert.Contains(t, d.stderr.String(), "serving metrics")
	})
}

// TestDevPointsServeAtItsStandIns: the serve.env that dev writes runs
// crm-mcp serve against dev's sign-in and Duo stand-ins: a client signs in
// through dev's sign-in for serve's URL, and serve's push appears on dev's
// push page, where it is approved.
func TestDevPointsServeAtItsStandIns(t *testing.T) {
	d := startDev(t)
	envFile := filepath.Join(d.stack.dataDir, devServeEnvFile)
	info, err := os.Stat(envFile)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "it holds the stand-in's keys")
	assert.NotContains(t, d.stdout.String(), d.stack.duo.SKey(), "the banner does not print the key")

	env := sourceBannerCommand(t, d.stdout.String(), t.TempDir())
	assert.Equal(t, d.stack.duo.SKey(), env["DUO_AUTH_SKEY"])
	serveURL := env["MCP_RESOURCE_URL"]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan string, 1)
	var stderr syncBuffer
	a := &app{environ: env, stdout: &syncBuffer{}, stderr: &stderr, listening: func(addr string) { listening <- addr }}
	done := make(chan int, 1)
	go func() { done <- a.run(ctx, []string{"serve"}) }()
	select {
	case <-listening:
	case code := <-done:
		t.Fatalf("serve exited with %d:\n%s", code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not start:\n%s", stderr.String())
	}
	defer func() {
		cancel()
		<-done
	}()

	c := newDevClient(t, &devServer{mcp: serveURL}, "alice")
	session := c.connect(t, ctx)
	type answer struct {
		text    string
		isError bool
	}
	got := make(chan answer, 1)
	go func() {
		res, err := devCall(ctx, session, "get_contact", map[string]any{"id": 6})
		if err != nil {
			got <- answer{err.Error(), true}
			return
		}
		got <- answer{devText(res), res.IsError}
	}()
	p := d.waitForPush(t, map[string]bool{})
	assert.Equal(t, "alice", p.User)
	assert.Contains(t, p.PushInfo["action"], "Show contact #6")
	status, body := d.do(t, http.MethodPost, "/dev/push/api/pushes/"+p.TxID+"/approve")
	require.Equal(t, http.StatusNoContent, status, body)
	res := <-got
	require.False(t, res.isError, res.text)
	assert.Contains(t, res.text, "Riley Vance")
}

// sourceBannerCommand runs, with sh in dir, the command dev's banner
// gives for running serve against the stand-ins ("set -a; . serve.env;
// set +a; crm-mcp serve"), with env in place of crm-mcp, and returns the
// environment serve would have started with.
func sourceBannerCommand(t *testing.T, banner, dir string) map[string]string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^  (set -a; \. .*; set \+a;) crm-mcp serve$`).FindStringSubmatch(banner)
	require.NotNil(t, m, "the banner gives the command:\n%s", banner)
	cmd := exec.Command("sh", "-c", m[1]+" env -0")
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	require.NoError(t, err, "sh runs the banner's command")
	env := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// TestServeEnvIsSafeToSource: serve.env in a data folder whose name holds
// a space, quotes and shell syntax is read by sh as the values it holds,
// running nothing; a serve.env already there with a looser mode ends up
// 0600; and a port with none after it for serve is refused.
func TestServeEnvIsSafeToSource(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "it's a `touch ran`$(touch ran) \"dir\"")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, devServeEnvFile), []byte("OLD=1\n"), 0o644))
	s, err := newDevStack("127.0.0.1:8080", dir, "")
	require.NoError(t, err)
	defer s.close()
	require.NoError(t, s.writeServeEnv())

	info, err := os.Stat(filepath.Join(dir, devServeEnvFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "it holds the stand-in's keys")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), devServeEnvFile+"."), "a temporary file is left: %s", e.Name())
	}

	work := t.TempDir()
	env := sourceBannerCommand(t, s.banner(), work)
	assert.Equal(t, filepath.Join(dir, "serve-"+devDBFile), env["CRM_DB_PATH"])
	assert.Equal(t, filepath.Join(dir, "serve-"+devAuditFile), env["AUDIT_LOG_PATH"])
	assert.Equal(t, s.caFile, env["DUO_AUTH_CA_FILE"])
	assert.Equal(t, "127.0.0.1:8081", env["MCP_LISTEN_ADDR"])
	assert.NotContains(t, env, "OLD", "the file is replaced")
	assert.NoFileExists(t, filepath.Join(work, "ran"), "nothing in the path was run")

	_, err = newDevStack("127.0.0.1:65535", t.TempDir(), "")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "port 65535 leaves none")
}
