package crm

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/pgtest"
)

// TestMain stops the Postgres cluster the tests may have started.
func TestMain(m *testing.M) { pgtest.Main(m) }

// engine is one of the databases a Store runs on.
type engine struct {
	name string
	// open opens a fresh store, closed when the test ends, and returns it
	// with its location: a file path or a Postgres URL.
	open func(t *testing.T) (*Store, string)
}

var engines = []engine{
	{"sqlite", openTest},
	{"postgres", func(t *testing.T) (*Store, string) {
		url := pgtest.NewDatabase(t)
		return openAt(t, url, true), url
	}},
}

// forEngines runs test once per engine, so that both behave alike.
func forEngines(t *testing.T, test func(t *testing.T, e engine)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { test(t, e) })
	}
}

// openTest opens a fresh SQLite store in a temporary directory and closes
// it when the test ends.
func openTest(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "crm.db")
	return openAt(t, path, false), path
}

// openAt opens the store at loc, a file path or (pg) a Postgres URL, and
// closes it when the test ends.
func openAt(t *testing.T, loc string, pg bool) *Store {
	t.Helper()
	var (
		s   *Store
		err error
	)
	if pg {
		s, err = OpenPostgres(t.Context(), loc)
	} else {
		s, err = Open(t.Context(), loc)
	}
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// reopen closes s and opens its database again, as a restart would.
func reopen(t *testing.T, s *Store, loc string) *Store {
	t.Helper()
	require.NoError(t, s.Close())
	return openAt(t, loc, s.pg)
}

func allContacts(t *testing.T, s *Store) []Contact {
	t.Helper()
	cs, err := s.ListContacts(t.Context(), ContactFilter{Limit: MaxLimit, IncludeRestricted: true})
	require.NoError(t, err)
	return cs
}

func allDeals(t *testing.T, s *Store) []Deal {
	t.Helper()
	ds, err := s.ListDeals(t.Context(), DealFilter{Limit: MaxLimit, IncludeRestricted: true})
	require.NoError(t, err)
	return ds
}

func riley(t *testing.T, s *Store) Contact {
	t.Helper()
	cs, err := s.ListContacts(t.Context(), ContactFilter{Query: "Riley Vance", IncludeRestricted: true})
	require.NoError(t, err)
	require.Len(t, cs, 1)
	return cs[0]
}

func TestSeed(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		contacts := allContacts(t, s)
		require.Len(t, contacts, len(seedContacts))

		var restricted, defence []Contact
		byClass := map[Classification]int{}
		sectors := map[string]bool{}
		for _, c := range contacts {
			byClass[c.Classification]++
			sectors[c.Sector] = true
			if c.Classification == Restricted {
				restricted = append(restricted, c)
			}
			if c.Sector == "defence" {
				defence = append(defence, c)
			}
			assert.Regexp(t, `@([a-z0-9-]+\.)*example\.com$`, c.Email, "seed emails must stay fictional")
			assert.False(t, c.CreatedAt.IsZero())
			assert.Equal(t, time.UTC, c.CreatedAt.Location())
		}
		require.Len(t, restricted, 1, "exactly one restricted contact")
		r := restricted[0]
		assert.Equal(t, "Riley Vance", r.Name)
		assert.Equal(t, "Aegis Defence Systems", r.Company)
		assert.Equal(t, "defence", r.Sector)
		assert.Equal(t, []Contact{r}, defence, "Riley Vance is the only contact in defence")
		assert.GreaterOrEqual(t, byClass[Internal], 2, "internal contacts")
		assert.GreaterOrEqual(t, byClass[Public], 3, "public contacts")
		assert.GreaterOrEqual(t, len(sectors), 5, "sectors")

		deals := allDeals(t, s)
		assert.Len(t, deals, len(seedDeals))
		assert.GreaterOrEqual(t, len(deals), 5)
		assert.LessOrEqual(t, len(deals), 7)
		var rileyDeals int
		for _, d := range deals {
			if d.ContactID == r.ID {
				rileyDeals++
			}
		}
		assert.Positive(t, rileyDeals, "a deal on Riley Vance")
	})
}

func TestSeedOnlyOnce(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, path := e.open(t)
		_, err := s.CreateContact(t.Context(), NewContact{Name: "Added Later", Email: "added@example.com"})
		require.NoError(t, err)
		before, beforeDeals := allContacts(t, s), allDeals(t, s)

		s = reopen(t, s, path)
		s = reopen(t, s, path)
		assert.Equal(t, before, allContacts(t, s))
		assert.Equal(t, beforeDeals, allDeals(t, s))
		assert.Len(t, before, len(seedContacts)+1)
	})
}

func TestMigrationsIdempotent(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, path := e.open(t)
		versions := func(s *Store) []int {
			rows, err := s.q.QueryContext(t.Context(), `SELECT version FROM schema_migrations ORDER BY version`)
			require.NoError(t, err)
			defer rows.Close()
			var vs []int
			for rows.Next() {
				var v int
				require.NoError(t, rows.Scan(&v))
				vs = append(vs, v)
			}
			require.NoError(t, rows.Err())
			return vs
		}
		want := make([]int, len(s.migrations()))
		for i := range want {
			want[i] = i + 1
		}
		assert.Equal(t, want, versions(s))

		s = reopen(t, s, path)
		assert.Equal(t, want, versions(s), "reopening applies nothing twice")
		require.NoError(t, s.migrate(t.Context()), "migrating again")
		assert.Equal(t, want, versions(s))
	})
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, path := e.open(t)
		_, err := s.q.ExecContext(t.Context(), `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
			len(s.migrations())+1, s.stamp())
		require.NoError(t, err)
		require.NoError(t, s.Close())

		if s.pg {
			_, err = OpenPostgres(t.Context(), path)
		} else {
			_, err = Open(t.Context(), path)
		}
		require.Error(t, err)
		assert.Contains(t, err.Error(), "newer than this program")
	})
}

func TestOpenSettings(t *testing.T) {
	s, path := openTest(t)
	ctx := t.Context()

	// Every pooled connection, not only the first, must carry the settings,
	// so hold several at once.
	var conns []*sql.Conn
	for range maxOpenConns {
		c, err := s.db.Conn(ctx)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	for i, c := range conns {
		t.Run(fmt.Sprint("conn", i), func(t *testing.T) {
			for _, tt := range []struct {
				pragma string
				want   string
			}{
				{"journal_mode", "wal"},
				{"foreign_keys", "1"},
				{"busy_timeout", fmt.Sprint(busyTimeout.Milliseconds())},
				{"synchronous", "2"}, // FULL
			} {
				var got string
				require.NoError(t, c.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got))
				assert.Equal(t, tt.want, got, tt.pragma)
			}
		})
	}
	for _, c := range conns {
		require.NoError(t, c.Close())
	}

	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "database file permissions")
	di, err := os.Stat(filepath.Dir(path))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), di.Mode().Perm(), "created directory permissions")
}

func TestOpenOddPath(t *testing.T) {
	// '?' and '#' would end the file name in a naive DSN; a space and '%'
	// would be mangled by a naive URI.
	dir := filepath.Join(t.TempDir(), "odd dir?x=1#frag%20")
	path := filepath.Join(dir, "crm.db")
	s, err := Open(t.Context(), path)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	_, err = os.Stat(path)
	require.NoError(t, err, "database created at the exact path")
	assert.Len(t, allContacts(t, s), len(seedContacts))
}

func TestOpenErrors(t *testing.T) {
	_, err := Open(t.Context(), "")
	assert.Error(t, err)

	// A parent that is a file cannot become a directory.
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	_, err = Open(t.Context(), filepath.Join(file, "crm.db"))
	assert.Error(t, err)
}

func TestPing(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, _ := e.open(t)
		require.NoError(t, s.Ping(t.Context()))
		require.NoError(t, s.Close())
		assert.Error(t, s.Ping(t.Context()), "after Close")
	})
}

func TestPersistAcrossReopen(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, path := e.open(t)
		ctx := t.Context()

		c, err := s.CreateContact(ctx, NewContact{Name: "Nadia Petrova", Email: "nadia@example.com", Company: "Lumen Labs"})
		require.NoError(t, err)
		newName := "Nadia Petrova-Hale"
		c, err = s.UpdateContact(ctx, c.ID, ContactUpdate{Name: &newName})
		require.NoError(t, err)
		d, err := s.CreateDeal(ctx, NewDeal{ContactID: c.ID, Title: "Lab licences", Amount: 99_00, Currency: "EUR"})
		require.NoError(t, err)
		d, err = s.UpdateDealStage(ctx, d.ID, StageWon)
		require.NoError(t, err)

		s = reopen(t, s, path)
		gotC, err := s.GetContact(ctx, c.ID)
		require.NoError(t, err)
		assert.Equal(t, c, gotC)
		assert.Equal(t, newName, gotC.Name)
		gotD, err := s.GetDeal(ctx, d.ID)
		require.NoError(t, err)
		assert.Equal(t, d, gotD)
		assert.Equal(t, StageWon, gotD.Stage)
	})
}

func TestConcurrentWriters(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, path := e.open(t)
		// A second Store on the same database stands in for a second process
		// (a second replica, on Postgres): on SQLite its writers contend for
		// the file's lock, not for database/sql's pool, so only busy_timeout
		// keeps them from failing with SQLITE_BUSY.
		other := openAt(t, path, s.pg)

		d, err := s.CreateDeal(t.Context(), NewDeal{ContactID: 1, Title: "Contended", Amount: 1, Currency: "USD"})
		require.NoError(t, err)

		const writers, each = 8, 15
		var wg sync.WaitGroup
		errs := make(chan error, writers*each*2)
		for w := range writers {
			store := s
			if w%2 == 1 {
				store = other
			}
			wg.Go(func() {
				ctx := t.Context()
				for i := range each {
					c, err := store.CreateContact(ctx, NewContact{
						Name:  fmt.Sprintf("Writer %d-%d", w, i),
						Email: fmt.Sprintf("w%d.%d@example.com", w, i),
					})
					if err != nil {
						errs <- err
						continue
					}
					phone := fmt.Sprint(i)
					if _, err := store.UpdateContact(ctx, c.ID, ContactUpdate{Phone: &phone}); err != nil {
						errs <- err
					}
					if _, err := store.UpdateDealStage(ctx, d.ID, stages[i%len(stages)]); err != nil {
						errs <- err
					}
					if _, err := store.ListContacts(ctx, ContactFilter{Query: "writer"}); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		cs, err := s.ListContacts(t.Context(), ContactFilter{Query: "writer", Limit: MaxLimit})
		require.NoError(t, err)
		assert.Equal(t, writers*each, len(cs), "contacts created")
	})
}

func TestCancelledContext(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		s, path := e.open(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()

		name := "X"
		calls := []struct {
			name string
			call func() error
		}{
			{"Ping", func() error { return s.Ping(ctx) }},
			{"ListContacts", func() error { _, err := s.ListContacts(ctx, ContactFilter{}); return err }},
			{"CountRestricted", func() error { _, err := s.CountRestricted(ctx, ContactFilter{}); return err }},
			{"GetContact", func() error { _, err := s.GetContact(ctx, 1); return err }},
			{"CreateContact", func() error {
				_, err := s.CreateContact(ctx, NewContact{Name: "X", Email: "x@example.com"})
				return err
			}},
			{"UpdateContact", func() error { _, err := s.UpdateContact(ctx, 1, ContactUpdate{Name: &name}); return err }},
			{"ListDeals", func() error { _, err := s.ListDeals(ctx, DealFilter{}); return err }},
			{"GetDeal", func() error { _, err := s.GetDeal(ctx, 1); return err }},
			{"CreateDeal", func() error {
				_, err := s.CreateDeal(ctx, NewDeal{ContactID: 1, Title: "X", Currency: "USD"})
				return err
			}},
			{"UpdateDealStage", func() error { _, err := s.UpdateDealStage(ctx, 1, StageWon); return err }},
			{"Open", func() error {
				open := Open
				if s.pg {
					open = OpenPostgres
				}
				s2, err := open(ctx, path)
				if err == nil {
					s2.Close()
				}
				return err
			}},
		}
		for _, tt := range calls {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.call()
				assert.ErrorIs(t, err, context.Canceled)
				assert.False(t, errors.Is(err, ErrNotFound))
			})
		}
		// Nothing was written.
		assert.Len(t, allContacts(t, s), len(seedContacts))
		c, err := s.GetContact(t.Context(), 1)
		require.NoError(t, err)
		assert.NotEqual(t, name, c.Name)
	})
}

// Replicas starting together on a new database: every one opens it, and
// the schema and the demo data are written once.
func TestConcurrentOpensSeedOnce(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		loc := filepath.Join(t.TempDir(), "crm.db")
		if e.name == "postgres" {
			loc = pgtest.NewDatabase(t)
		}
		const replicas = 4
		stores := make([]*Store, replicas)
		errs := make([]error, replicas)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range replicas {
			wg.Go(func() {
				<-start
				if e.name == "postgres" {
					stores[i], errs[i] = OpenPostgres(t.Context(), loc)
				} else {
					stores[i], errs[i] = Open(t.Context(), loc)
				}
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "replica %d", i)
			t.Cleanup(func() { stores[i].Close() })
		}
		for i, s := range stores {
			assert.Len(t, allContacts(t, s), len(seedContacts), "replica %d sees the demo contacts once", i)
			assert.Len(t, allDeals(t, s), len(seedDeals), "replica %d sees the demo deals once", i)
		}
		var n int
		require.NoError(t, stores[0].q.QueryRowContext(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&n))
		assert.Equal(t, len(stores[0].migrations()), n, "each migration recorded once")
	})
}

// Two stores on one database are two replicas: what one writes, the other
// reads at once.
func TestWriteOnOneReadOnOther(t *testing.T) {
	forEngines(t, func(t *testing.T, e engine) {
		a, loc := e.open(t)
		b := openAt(t, loc, a.pg)
		ctx := t.Context()

		c, err := a.CreateContact(ctx, NewContact{Name: "Wen Zhao", Email: "wen@example.com"})
		require.NoError(t, err)
		got, err := b.GetContact(ctx, c.ID)
		require.NoError(t, err)
		assert.Equal(t, c, got)

		name := "Wen Zhao-Li"
		c, err = b.UpdateContact(ctx, c.ID, ContactUpdate{Name: &name})
		require.NoError(t, err)
		got, err = a.GetContact(ctx, c.ID)
		require.NoError(t, err)
		assert.Equal(t, c, got)

		d, err := a.CreateDeal(ctx, NewDeal{ContactID: c.ID, Title: "Pilot", Amount: 5, Currency: "USD"})
		require.NoError(t, err)
		ds, err := b.ListDeals(ctx, DealFilter{ContactID: c.ID})
		require.NoError(t, err)
		assert.Equal(t, []Deal{d}, ds)
	})
}

func TestPostgresWritesNoFile(t *testing.T) {
	url := pgtest.NewDatabase(t)
	dir := t.TempDir()
	t.Chdir(dir)
	s := openAt(t, url, true)
	_, err := s.CreateContact(t.Context(), NewContact{Name: "No File", Email: "nofile@example.com"})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "a store on Postgres writes no local file")
}

func TestOpenPostgresErrors(t *testing.T) {
	const secret = "s3cret-pw"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, tt := range []struct {
		name, url, want string
	}{
		{"empty", "", "must start with postgres://"},
		{"sqlite path", "./data/crm.db", "must start with postgres://"},
		{"other scheme", "mysql://u:" + secret + "@127.0.0.1/crm", "must start with postgres://"},
		{"bad port", "postgres://u:" + secret + "@127.0.0.1:notaport/crm", "not valid"},
		{"bad parameter", "postgres://u:" + secret + "@127.0.0.1/crm?sslmode=sometimes", "not valid"},
		// Port 1 on loopback: nothing listens, the connection is refused.
		{"unreachable", "postgres://u:" + secret + "@127.0.0.1:1/crm?sslmode=disable", "open postgres database crm on 127.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenPostgres(ctx, tt.url)
			if s != nil {
				s.Close()
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			if strings.Contains(err.Error(), secret) {
				t.Error("the error shows the password")
			}
		})
	}
}
