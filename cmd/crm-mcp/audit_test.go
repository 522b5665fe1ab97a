package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
)

// auditFile writes a log of n events and returns its path and lines.
func auditFile(t *testing.T, n int) (string, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(path, audit.Options{})
	require.NoError(t, err)
	for i := range n {
		require.NoError(t, l.Record(context.Background(), audit.Event{Kind: audit.ToolCalled, Tool: "get_contact", Outcome: "ok", Subject: "alice", RequestID: strings.Repeat("r", i+1)}))
	}
	require.NoError(t, l.Close())
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.SplitAfter(string(b), "\n")
	require.Equal(t, "", lines[len(lines)-1])
	return path, lines[:len(lines)-1]
}

func TestAuditVerify(t *testing.T) {
	path, lines := auditFile(t, 5)
	dir := t.TempDir()
	write := func(name string, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	edited := append([]string(nil), lines...)
	edited[1] = strings.Replace(edited[1], `"subject":"alice"`, `"subject":"bob"`, 1)
	removed := append(append([]string(nil), lines[:2]...), lines[3:]...)
	swapped := append([]string(nil), lines...)
	swapped[3], swapped[4] = swapped[4], swapped[3]

	tests := []struct {
		name     string
		args     []string
		code     int
		inStdout string
		inStderr string
	}{
		{"intact", []string{"verify", path}, 0, path + ": intact: 5 records, head ", ""},
		{"edited", []string{"verify", write("edited", strings.Join(edited, ""))}, 1, "", "NOT INTACT: line 3: prev is not the SHA-256 of line 2"},
		{"removed", []string{"verify", write("removed", strings.Join(removed, ""))}, 1, "", "NOT INTACT: line 3: seq is 4, want 3"},
		{"swapped", []string{"verify", write("swapped", strings.Join(swapped, ""))}, 1, "", "NOT INTACT: line 4: seq is 5, want 4"},
		{"torn final line", []string{"verify", write("torn", strings.Join(lines, "")+`{"seq":6,"pr`)}, 1, "", "NOT INTACT: line 6: no final newline (12 bytes)"},
		{"torn final line allowed", []string{"verify", "--allow-torn", filepath.Join(dir, "torn")}, 0, "intact: 5 records", ""},
		{"edited last line without its newline", []string{"verify", write("lastedited", strings.Join(lines[:4], "")+
			strings.TrimSuffix(strings.Replace(lines[4], `"subject":"alice"`, `"subject":"bob"`, 1), "\n"))}, 1, "", "NOT INTACT: line 5: no final newline"},
		{"unknown flag", []string{"verify", "--allow-tron", path}, 2, "", "usage:"},
		{"empty", []string{"verify", write("empty", "")}, 0, "intact: 0 records, head none (no records)", ""},
		{"missing file", []string{"verify", filepath.Join(dir, "nope")}, 1, "", "no such file or directory"},
		{"no file", []string{"verify"}, 2, "", "usage: crm-mcp audit verify [--allow-torn] FILE"},
		{"two files", []string{"verify", path, path}, 2, "", "usage: crm-mcp audit verify [--allow-torn] FILE"},
		{"no subcommand", nil, 2, "", "usage: crm-mcp audit verify [--allow-torn] FILE"},
		{"unknown subcommand", []string{"check", path}, 2, "", "usage:"},
		{"help", []string{"-h"}, 0, "usage: crm-mcp audit verify [--allow-torn] FILE", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"audit"}, tt.args...), map[string]string{}, &stdout, &stderr)
			assert.Equal(t, tt.code, code, "stderr: %s", stderr.String())
			assert.Contains(t, stdout.String(), tt.inStdout)
			assert.Contains(t, stderr.String(), tt.inStderr)
		})
	}

	var stdout bytes.Buffer
	run(context.Background(), []string{"audit", "verify", "--allow-torn", write("torn2", strings.Join(lines, "")+"{")}, nil, &stdout, &bytes.Buffer{})
	assert.Contains(t, stdout.String(), "ends with a torn line of 1 bytes")
}
