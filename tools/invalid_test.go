package tools_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
	"github.com/crm-mcp/crm-mcp/tools"
)

// lockedBuffer is the audit log's writer, read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// take returns the lines written since the last take.
func (l *lockedBuffer) take(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, ln := range strings.Split(strings.TrimSuffix(l.b.String(), "\n"), "\n") {
		if ln == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(ln), &m), ln)
		out = append(out, m)
	}
	l.b.Reset()
	return out
}

// TestEveryCallIsRecorded: a tools/call that the input schema refuses, or
// that names no tool, still leaves its tool.called line (outcome invalid),
// with who sent it; a call judged by its tool leaves no extra line.
func TestEveryCallIsRecorded(t *testing.T) {
	var buf lockedBuffer
	log := audit.New(&buf, audit.Options{})
	e := newStepUpEnvConfig(t, func(c *tools.Config) { c.Record = toAudit(log.Record) })
	cs := e.connect(t, e.token("alice", "crm"))

	for _, tc := range []struct {
		name string
		args map[string]any
	}{
		{"id as a string", map[string]any{"id": "6"}},
		{"an extra key", map[string]any{"id": 6, "extra": true}},
		{"no id", map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := call(t, cs, "get_contact", tc.args)
			require.True(t, res.IsError)
			lines := buf.take(t)
			require.Len(t, lines, 1)
			assert.Equal(t, "tool.called", lines[0]["event"])
			assert.Equal(t, "invalid", lines[0]["outcome"])
			assert.Equal(t, "get_contact", lines[0]["tool"])
			assert.Equal(t, "alice", lines[0]["subject"])
			assert.NotEmpty(t, lines[0]["args_sha256"])
			assert.NotEmpty(t, lines[0]["request_id"])
		})
	}

	t.Run("unknown tool", func(t *testing.T) {
		for _, name := range []string{"no_such_tool", strings.Repeat("x", 10000)} {
			_, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: name, Arguments: map[string]any{}})
			require.Error(t, err)
			lines := buf.take(t)
			require.Len(t, lines, 1)
			assert.Equal(t, "invalid", lines[0]["outcome"])
			assert.Equal(t, "alice", lines[0]["subject"])
			assert.LessOrEqual(t, len(lines[0]["tool"].(string)), 70, "an unknown name is cut")
		}
	})

	t.Run("judged calls are not counted twice", func(t *testing.T) {
		require.False(t, call(t, cs, "list_contacts", nil).IsError)
		var got []string
		for _, l := range buf.take(t) {
			got = append(got, l["event"].(string)+":"+l["outcome"].(string))
		}
		assert.Equal(t, []string{"tool.called:ok"}, got)
	})
}
