package tools_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/tools"
)

// TestDiscoverAndListGolden pins the 2026-07-28 answers to server/discover
// and tools/list: the revisions served, newest first; the server named;
// the caching hints (ttlMs, cacheScope) the caching page asks for, private
// when the list depends on who asks; the tools in a fixed order.
func TestDiscoverAndListGolden(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hide   bool
		method string
	}{
		{"discover", false, "server/discover"},
		{"tools_list", false, "tools/list"},
		{"tools_list_hidden", true, "tools/list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *tools.Config) { c.HideUnauthorizedTools = tc.hide; c.Version = "test" })
			tok := e.token("alice", tools.ScopeContactsRead)
			resp := e.post(t, tok, `{"jsonrpc":"2.0","id":1,"method":"`+tc.method+`","params":{`+meta2026+`}}`,
				"MCP-Protocol-Version", "2026-07-28", "Mcp-Method", tc.method)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			got := indentResult(t, body)
			golden := filepath.Join("testdata", "revision2026", tc.name+".json")
			if *update {
				require.NoError(t, os.MkdirAll(filepath.Dir(golden), 0o755))
				require.NoError(t, os.WriteFile(golden, got, 0o644))
			}
			want, err := os.ReadFile(golden)
			require.NoError(t, err)
			assert.Equal(t, string(want), string(got))

			var res struct {
				Result struct {
					TTLMs             *int     `json:"ttlMs"`
					CacheScope        string   `json:"cacheScope"`
					SupportedVersions []string `json:"supportedVersions"`
				} `json:"result"`
			}
			require.NoError(t, json.Unmarshal(firstMessage(body), &res))
			require.NotNil(t, res.Result.TTLMs)
			assert.Positive(t, *res.Result.TTLMs)
			want2 := "public"
			if tc.hide {
				want2 = "private"
			}
			assert.Equal(t, want2, res.Result.CacheScope)
			if tc.method == "server/discover" {
				require.NotEmpty(t, res.Result.SupportedVersions)
				assert.Equal(t, "2026-07-28", res.Result.SupportedVersions[0], "the current revision first")
			}
		})
	}
}

// firstMessage is the JSON-RPC message of a JSON or one-event SSE answer.
func firstMessage(body []byte) []byte {
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "data: "); ok {
			return []byte(v)
		}
	}
	return bytes.TrimSpace(body)
}

// indentResult is the answer's message, indented, for a golden file.
func indentResult(t *testing.T, body []byte) []byte {
	var out bytes.Buffer
	require.NoError(t, json.Indent(&out, firstMessage(body), "", "  "))
	out.WriteByte('\n')
	return out.Bytes()
}
