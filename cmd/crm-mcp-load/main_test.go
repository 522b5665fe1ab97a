package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/modelcontextprotocol/go-sdk/auth"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/require"
)

type contactID struct {
	ID int64 `json:"id,omitempty"`
}

// newTarget is a go-sdk server with list_contacts and get_contact behind
// RequireBearerToken, stateless so that it serves 2026-07-28. verify
// decides which tokens it takes.
func newTarget(t *testing.T, verify auth.TokenVerifier) string {
	s := mcp.NewServer(&mcp.Implementation{Name: "target", Version: "0"}, nil)
	for _, name := range []string{"list_contacts", "get_contact"} {
		mcp.AddTool(s, &mcp.Tool{Name: name}, func(context.Context, *mcp.CallToolRequest, contactID) (*mcp.CallToolResult, contactID, error) {
			return nil, contactID{ID: 1}, nil
		})
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, &mcp.StreamableHTTPOptions{Stateless: true})
	srv := httptest.NewServer(auth.RequireBearerToken(verify, nil)(h))
	t.Cleanup(srv.Close)
	return srv.URL + "/mcp"
}

func fixedToken(want string) auth.TokenVerifier {
	return func(_ context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		if token != want {
			return nil, auth.ErrInvalidToken
		}
		return &auth.TokenInfo{UserID: "u", Expiration: time.Now().Add(time.Hour)}, nil
	}
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestTokenFromEnvironment(t *testing.T) {
	url := newTarget(t, fixedToken("s3cret-token"))
	var stdout, stderr strings.Builder
	code := run(t.Context(), []string{"-url", url, "-c", "2", "-d", "300ms", "-warmup", "0s", "-progress", "100ms"},
		env(map[string]string{tokenEnv: "s3cret-token"}), &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	out := stdout.String()
	require.Contains(t, out, "load      2026-07-28, 2 workers, 2 callers, 300ms measured after 0s warmup, mix of 22 call(s)")
	require.Regexp(t, `calls     [1-9][0-9]* ok, 0 failed`, out)
	require.Regexp(t, `latency   p50 [0-9.]+ms  p90 [0-9.]+ms  p99 [0-9.]+ms`, out)
	require.Contains(t, stderr.String(), "req/s  0 errors")
	require.NotContains(t, out+stderr.String(), "s3cret-token")
}

func TestTokenFileAndJSON(t *testing.T) {
	url := newTarget(t, fixedToken("from-file"))
	file := filepath.Join(t.TempDir(), "tokens")
	require.NoError(t, os.WriteFile(file, []byte("from-file\n\n"), 0o600))
	var stdout, stderr strings.Builder
	code := run(t.Context(), []string{"-url", url, "-c", "1", "-d", "200ms", "-warmup", "0s", "-token-file", file, "-json", "-call", "get_contact {\"id\":2}"},
		env(nil), &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.Contains(t, stdout.String(), `"errors": 0`)
	require.Contains(t, stdout.String(), `"p99_ms": `)
}

func TestRefusedCallsExitNonZero(t *testing.T) {
	url := newTarget(t, fixedToken("good"))
	var stdout, stderr strings.Builder
	code := run(t.Context(), []string{"-url", url, "-c", "1", "-d", "100ms"}, env(map[string]string{tokenEnv: "bad"}), &stdout, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "HTTP 401 Unauthorized")
}

// TestMintedTokens runs the stand-in authorization server (-as): the
// target verifies the minted tokens against its JWKS, which it can reach
// only once crm-mcp-load has started, so the wait is exercised too.
func TestMintedTokens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	asAddr := ln.Addr().String()
	ln.Close()
	issuer := "http://" + asAddr + "/oauth2/load"

	var url string
	url = newTarget(t, func(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
		keys, err := jwk.Fetch(ctx, issuer+"/jwks")
		if err != nil {
			return nil, fmt.Errorf("%w: %v", auth.ErrInvalidToken, err)
		}
		tok, err := jwt.ParseString(token, jwt.WithKeySet(keys), jwt.WithIssuer(issuer), jwt.WithAudience(url))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", auth.ErrInvalidToken, err)
		}
		return &auth.TokenInfo{UserID: tok.Subject(), Expiration: tok.Expiration()}, nil
	})
	var stdout, stderr strings.Builder
	code := run(t.Context(), []string{"-url", url, "-as", asAddr, "-c", "2", "-sessions", "3", "-d", "200ms", "-warmup", "0s"}, env(nil), &stdout, &stderr)
	require.Equal(t, 0, code, stderr.String())
	require.Contains(t, stderr.String(), "DUO_ISSUER="+issuer)
	require.Contains(t, stdout.String(), "2 workers, 3 callers")
}

func TestUsageErrors(t *testing.T) {
	for args, want := range map[string]string{
		"-c 2":              "-url is required",
		"-url http://x/mcp": "no token: set CRM_MCP_LOAD_TOKEN",
		"-url http://x/mcp -as 127.0.0.1:0 -token-file f": "more than one source",
		"-url http://x/mcp -call 0*x":                     "weight",
	} {
		var stderr strings.Builder
		code := run(t.Context(), strings.Fields(args), env(nil), &strings.Builder{}, &stderr)
		require.Equal(t, 2, code, args)
		require.Contains(t, stderr.String(), want, args)
	}
}
