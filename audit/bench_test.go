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

// BenchmarkRecord measures one decision (stepup.approved, fsync'd before
// Record returns) and one call's outcome (tool.called, as every tool call
// writes it, not synced on its own) against the floor of the work: a bare
// write and fsync of a line of the same size ("baseline"). "writer" is
// the unsynced standard-output mode, the cost of encoding and hashing
// alone.
func BenchmarkRecord(b *testing.B) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		e    audit.Event
	}{{"file/decision", session()[3]}, {"file/outcome", session()[4]}} {
		b.Run(c.name, func(b *testing.B) {
			l, err := audit.Open(filepath.Join(b.TempDir(), "audit.log"), audit.Options{})
			require.NoError(b, err)
			defer l.Close()
			for b.Loop() {
				if err := l.Record(ctx, c.e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	e := session()[4]
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
