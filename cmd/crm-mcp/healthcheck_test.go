package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// TestHealthcheck runs the image's HEALTHCHECK command against a real
// crm-mcp serve, and against servers that are not healthy.
func TestHealthcheck(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	s := startServe(t, testEnv(t, as))
	_, port, err := net.SplitHostPort(s.addr)
	require.NoError(t, err)

	unhealthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/healthz", http.StatusFound)
			return
		}
		http.Error(w, "draining", http.StatusServiceUnavailable)
	}))
	defer unhealthy.Close()

	tests := []struct {
		name     string
		env      map[string]string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"listen address", map[string]string{"MCP_LISTEN_ADDR": s.addr}, nil, 0, "ok: http://" + s.addr + "/healthz", ""},
		{"every interface", map[string]string{"MCP_LISTEN_ADDR": ":" + port}, nil, 0, "ok: http://127.0.0.1:" + port + "/healthz", ""},
		{"0.0.0.0", map[string]string{"MCP_LISTEN_ADDR": "0.0.0.0:" + port}, nil, 0, "ok: http://127.0.0.1:" + port + "/healthz", ""},
		{"url flag", nil, []string{"-url", s.url("/healthz")}, 0, "ok:", ""},
		{"readyz by url", nil, []string{"-url", s.url("/readyz")}, 0, "ok:", ""},
		{"nothing listening", map[string]string{"MCP_LISTEN_ADDR": closedPort(t)}, nil, 1, "", "connection refused"},
		{"unhealthy", nil, []string{"-url", unhealthy.URL + "/healthz"}, 1, "", "503 Service Unavailable, want 200 OK"},
		{"redirect not followed", nil, []string{"-url", unhealthy.URL + "/moved"}, 1, "", "302 Found"},
		{"bad listen address", map[string]string{"MCP_LISTEN_ADDR": "8080"}, nil, 1, "", `MCP_LISTEN_ADDR: "8080" is not host:port`},
		{"bad url", nil, []string{"-url", "localhost:8080/healthz"}, 2, "", "is not an absolute http(s) URL"},
		{"bad timeout", nil, []string{"-timeout", "0s"}, 2, "", "-timeout must be greater than zero"},
		{"extra argument", nil, []string{"now"}, 2, "", `unexpected arguments ["now"]`},
		{"unknown flag", nil, []string{"-verbose"}, 2, "", "flag provided but not defined"},
		{"help", nil, []string{"-h"}, 0, "usage: crm-mcp healthcheck", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			env := tt.env
			if env == nil {
				env = map[string]string{}
			}
			code := run(context.Background(), append([]string{"healthcheck"}, tt.args...), env, &stdout, &stderr)
			assert.Equal(t, tt.code, code, "stderr: %s", stderr.String())
			assert.Contains(t, stdout.String(), tt.inStdout)
			assert.Contains(t, stderr.String(), tt.inStderr)
		})
	}
}

func TestHealthURL(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:8080": "http://127.0.0.1:8080/healthz",
		":8080":          "http://127.0.0.1:8080/healthz",
		"0.0.0.0:9000":   "http://127.0.0.1:9000/healthz",
		"[::]:8080":      "http://[::1]:8080/healthz",
		"[::1]:8080":     "http://[::1]:8080/healthz",
		"crm.local:80":   "http://crm.local:80/healthz",
	} {
		got, err := healthURL(addr)
		require.NoError(t, err, addr)
		assert.Equal(t, want, got, addr)
	}
	// Without MCP_LISTEN_ADDR, where serve listens by default.
	assert.Equal(t, "127.0.0.1:8080", defaultListenAddr())
}
