package crm

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// maxOpenConns bounds the connection pool. WAL lets readers run beside the
// one writer SQLite allows, so a few connections buy read concurrency; more
// buy nothing for a demo CRM and each costs its own page cache and libc
// thread state (see modernc.org/sqlite's Performance notes).
const maxOpenConns = 4

// busyTimeout is how long a write waits for another writer (in this process
// or another) before failing with SQLITE_BUSY. Writes here take
// milliseconds, so five seconds means "something is stuck", not "busy".
const busyTimeout = 5 * time.Second

// timeLayout is RFC 3339 in UTC with a fixed nine-digit fraction, so stored
// times sort as text and round-trip to the nanosecond.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Store is the CRM database. It is safe for concurrent use; SQLite serializes
// the writes, and every write is durable once its method returns.
type Store struct {
	db  *sql.DB
	now func() time.Time // a field so tests can control updated_at
}

// Open opens the CRM database at path, creating the file and its directory
// if need be, brings its schema up to date and, if it has no contacts yet,
// fills it with the demo data. The file is created readable by its owner
// only, since it holds restricted records.
//
// ctx bounds the start-up work; it is not kept.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("crm: open: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("crm: open: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("crm: open: %w", err)
	}
	// SQLite would create the file with the umask's permissions (often
	// world-readable); creating it first fixes them, and SQLite gives the
	// -wal and -shm files the same.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("crm: open: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("crm: open: %w", err)
	}

	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("crm: open: %w", err)
	}
	db.SetMaxOpenConns(maxOpenConns)
	db.SetMaxIdleConns(maxOpenConns) // keep page caches warm instead of reopening
	s := &Store{db: db, now: time.Now}
	if err := s.start(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("crm: open %s: %w", path, err)
	}
	return s, nil
}

// dsn builds the connection string. The settings live in the DSN rather than
// in statements run after Open because database/sql opens connections
// whenever it likes, and each one must carry them. The driver's named keys
// are used instead of _pragma because it validates their values, so a typo
// fails Open instead of silently leaving, say, synchronous at its default.
func dsn(abs string) string {
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // Windows: file:///C:/...
	}
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	q.Set("_foreign_keys", "1")
	q.Set("_journal_mode", "WAL")
	// FULL syncs the WAL on every commit: with WAL, NORMAL can lose the last
	// commits on power loss, and a write we acknowledged must stay written.
	q.Set("_synchronous", "FULL")
	// Write transactions take the write lock at BEGIN. A deferred one that
	// reads first cannot wait for the lock later (SQLite returns
	// SQLITE_BUSY_SNAPSHOT at once), so concurrent writers would fail instead
	// of queueing under busy_timeout. The store opens transactions only to
	// write.
	q.Set("_txlock", "immediate")
	// A file: URI, escaped by url.URL, keeps a path with '?' or '#' in it
	// from being read as the start of the parameters.
	u := url.URL{Scheme: "file", Path: p, RawQuery: q.Encode()}
	return u.String()
}

// start checks the connection settings took, migrates and seeds.
func (s *Store) start(ctx context.Context) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, not wal; is the file on a file system without shared memory?", mode)
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	return s.seed(ctx)
}

// Close closes the database. Calls in progress finish first; calls after
// Close fail.
func (s *Store) Close() error {
	return s.db.Close()
}

// Ping checks that the database answers, for readiness probes.
func (s *Store) Ping(ctx context.Context) error {
	var n int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		return fmt.Errorf("crm: ping: %w", err)
	}
	return nil
}

// inTx runs fn in a write transaction and commits if fn succeeds.
func (s *Store) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // no-op after Commit
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// querier is what *sql.DB and *sql.Tx share, so the insert helpers serve
// both the public methods and seeding.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func formatTime(t time.Time) string {
	return t.UTC().Format(timeLayout)
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q: %w", s, err)
	}
	return t.UTC(), nil
}
