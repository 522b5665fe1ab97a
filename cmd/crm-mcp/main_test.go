package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// syncBuffer is a bytes.Buffer that the server's goroutines and the test
// may use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testResource is the canonical URL the tests configure. It need not be
// where the server listens (a proxy may sit in between); tokens name it.
const testResource = "http://127.0.0.1:18080/mcp"

// testEnv is a valid environment for a server trusting as, with its own
// database, listening on a free loopback port.
// Step-up goes to a fake Duo Auth API (TLS, real signatures), trusted
// through DUO_AUTH_CA_FILE as a TLS-inspecting proxy's CA would be.
func testEnv(t *testing.T, as *rstest.Server) map[string]string {
	t.Helper()
	env, _ := testEnvDuo(t, as)
	return env
}

// testEnvDuo is testEnv, also returning the fake Duo.
func testEnvDuo(t *testing.T, as *rstest.Server) (map[string]string, *duotest.Server) {
	t.Helper()
	duo := duotest.NewServer()
	t.Cleanup(duo.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "duo-ca.pem")
	require.NoError(t, os.WriteFile(ca, duo.CACertPEM(), 0o600))
	return map[string]string{
		"MCP_LISTEN_ADDR":  "127.0.0.1:0",
		"MCP_RESOURCE_URL": testResource,
		"DUO_ISSUER":       as.Issuer(),
		"CRM_DB_PATH":      filepath.Join(dir, "crm.db"),
		"LOG_LEVEL":        "debug",
		"DUO_AUTH_IKEY":    duo.IKey(),
		"DUO_AUTH_SKEY":    duo.SKey(),
		"DUO_AUTH_HOST":    duo.Host(),
		"DUO_AUTH_CA_FILE": ca,
	}, duo
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		inStderr string
		inStdout string
	}{
		{"no arguments", nil, 2, "usage: crm-mcp <command>", ""},
		{"unknown command", []string{"serv"}, 2, `unknown command "serv"`, ""},
		{"extra argument", []string{"check", "--verbose"}, 2, "takes no arguments", ""},
		{"help", []string{"help"}, 0, "", "usage: crm-mcp <command>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, map[string]string{}, &stdout, &stderr)
			assert.Equal(t, tt.code, code)
			assert.Contains(t, stderr.String(), tt.inStderr)
			assert.Contains(t, stdout.String(), tt.inStdout)
			if tt.code == 2 {
				assert.Contains(t, stderr.String(), "serve", "usage lists the commands")
				assert.Empty(t, stdout.String())
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"version"}, map[string]string{}, &stdout, &stderr)
	assert.Equal(t, 0, code)
	assert.Empty(t, stderr.String())
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	assert.Equal(t, "crm-mcp dev", lines[0])
	assert.Regexp(t, `^go: go1\.\d+`, lines[1])

	old := version
	version = "v1.2.3" // as -ldflags "-X main.version=v1.2.3" does
	defer func() { version = old }()
	assert.True(t, strings.HasPrefix(versionText(), "crm-mcp v1.2.3\n"))
}

func TestVCSInfo(t *testing.T) {
	assert.Equal(t, "", vcsInfo(nil))
	assert.Equal(t, "git 0123abcd 2026-01-02T03:04:05Z (modified)", vcsInfo([]debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123abcd"},
		{Key: "vcs.time", Value: "2026-01-02T03:04:05Z"},
		{Key: "vcs.modified", Value: "true"},
	}))
}

func TestEnvironMap(t *testing.T) {
	assert.Equal(t, map[string]string{"A": "1", "B": "x=y", "C": ""}, environMap([]string{"A=1", "B=x=y", "C=", "junk"}))
}

// assertGolden compares got with testdata/name; go test -update rewrites
// the file.
func assertGolden(t *testing.T, name, got string) {
	t.Helper()
	golden := filepath.Join("testdata", name)
	if *updateDevGolden {
		require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), got, "golden file %s (go test -update rewrites it)", golden)
}
