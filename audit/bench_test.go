package audit_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/audit"
)

// BenchmarkRecord measures one tool.called event, as every tool call will
// write it, against the floor of the same work: a bare write and fsync of
// a line of the same size ("baseline"). "writer" is the unsynced
// standard-output mode, the cost of encoding and hashing alone.
func BenchmarkRecord(b *testing.B) {
	e := session()[4] // tool.called with arguments
	ctx := context.Background()

	b.Run("file", func(b *testing.B) {
		l, err := audit.Open(filepath.Join(b.TempDir(), "audit.log"), audit.Options{})
		require.NoError(b, err)
		defer l.Close()
		for b.Loop() {
			if err := l.Record(ctx, e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline", func(b *testing.B) {
		f, err := os.OpenFile(filepath.Join(b.TempDir(), "raw.log"), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
		require.NoError(b, err)
		defer f.Close()
		line := make([]byte, 480)
		line[len(line)-1] = '\n'
		for b.Loop() {
			if _, err := f.Write(line); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("writer", func(b *testing.B) {
		l := audit.New(io.Discard, audit.Options{})
		for b.Loop() {
			if err := l.Record(ctx, e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
