package crm

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/pgtest"
)

// BenchmarkStore compares the engines on the calls tools make most: a
// lookup by id, a text search and a write. SQLite is the baseline; Postgres
// pays a loopback round trip per statement.
func BenchmarkStore(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres"} {
		b.Run(name, func(b *testing.B) {
			s := benchStore(b, name == "postgres")
			ctx := b.Context()
			b.Run("GetContact", func(b *testing.B) {
				for b.Loop() {
					_, err := s.GetContact(ctx, 1)
					require.NoError(b, err)
				}
			})
			b.Run("ListContacts", func(b *testing.B) {
				for b.Loop() {
					_, err := s.ListContacts(ctx, ContactFilter{Query: "health"})
					require.NoError(b, err)
				}
			})
			b.Run("ListContactsWithheld", func(b *testing.B) {
				for b.Loop() {
					_, _, err := s.ListContactsWithheld(ctx, ContactFilter{})
					require.NoError(b, err)
				}
			})
			b.Run("UpdateDealStage", func(b *testing.B) {
				for b.Loop() {
					_, err := s.UpdateDealStage(ctx, 1, StageWon)
					require.NoError(b, err)
				}
			})
		})
	}
}

// BenchmarkPrepared runs list_contacts' query (a plain listing and its
// withheld count) on SQLite as the store does, a statement prepared once,
// against the baseline of the same text parsed and planned on every call.
func BenchmarkPrepared(b *testing.B) {
	s := benchStore(b, false)
	ctx := b.Context()
	q := `SELECT ` + contactColumns + `, (SELECT count(*) FROM contacts WHERE ` + isRestricted + `) FROM contacts WHERE ` +
		notRestricted + ` ORDER BY id LIMIT ` + param + ` OFFSET ` + param
	for _, c := range []struct {
		name string
		q    querier
	}{{"parsed", s.db}, {"prepared", s.q}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				rows, err := c.q.QueryContext(ctx, q, 50, 0)
				require.NoError(b, err)
				n := 0
				for rows.Next() {
					n++
				}
				require.NoError(b, rows.Err())
				rows.Close()
				require.Equal(b, len(seedContacts)-1, n)
			}
		})
	}
}

func benchStore(b *testing.B, pg bool) *Store {
	b.Helper()
	var (
		s   *Store
		err error
	)
	if pg {
		s, err = OpenPostgres(b.Context(), pgtest.NewDatabase(b))
	} else {
		s, err = Open(b.Context(), filepath.Join(b.TempDir(), "crm.db"))
	}
	require.NoError(b, err)
	b.Cleanup(func() { s.Close() })
	return s
}
