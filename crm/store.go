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
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
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
// times sort as text. The store keeps times to the microsecond, as Postgres
// does, so that both engines return the same times.
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// pgMaxOpenConns bounds the connection pool on Postgres, which runs
// statements in parallel: enough for the tool calls of one replica, few
// enough that several replicas stay well inside the server's default
// max_connections of 100.
const pgMaxOpenConns = 10

// Store is the CRM database, kept in a SQLite file ([Open]) or in Postgres
// ([OpenPostgres]); both behave the same, down to the validation and the
// errors. It is safe for concurrent use, also by several processes (or
// replicas, on Postgres) sharing the database, and every write is durable
// once its method returns.
type Store struct {
	db  *sql.DB
	q   *prepared        // db, each query prepared once for the engine
	pg  bool             // Postgres rather than SQLite
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
	s := &Store{db: db, q: &prepared{db: db}, now: time.Now}
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

// OpenPostgres opens the CRM database in Postgres at dbURL
// ("postgres://user:password@host:5432/crm?sslmode=verify-full", or any
// other form pgx accepts after the scheme), brings its schema up to date
// and, if it has no contacts yet, fills it with the demo data, as [Open]
// does for SQLite. It writes no local file. Several processes may open the
// same database at once: the schema is migrated, and the demo data
// written, exactly once.
//
// Errors never contain the password. ctx bounds the start-up work; it is
// not kept.
func OpenPostgres(ctx context.Context, dbURL string) (*Store, error) {
	cfg, err := parsePostgresURL(dbURL)
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(pgMaxOpenConns)
	db.SetMaxIdleConns(pgMaxOpenConns)
	s := &Store{db: db, q: &prepared{db: db, pg: true}, pg: true, now: time.Now}
	if err := s.start(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("crm: open postgres database %s on %s: %w", cfg.Database, cfg.Host, err)
	}
	return s, nil
}

// parsePostgresURL checks that url is a postgres:// URL pgx can use. Its
// errors name the problem without repeating the URL, which may hold a
// password.
func parsePostgresURL(raw string) (*pgx.ConnConfig, error) {
	scheme, _, _ := strings.Cut(raw, "://")
	if scheme != "postgres" && scheme != "postgresql" {
		return nil, errors.New("crm: open: the database URL must start with postgres:// or postgresql://")
	}
	cfg, err := pgx.ParseConfig(raw)
	if _, uerr := url.Parse(raw); err != nil || uerr != nil {
		// pgx redacts the password in its message, but say nothing of
		// the URL's parts to be sure.
		return nil, errors.New("crm: open: the Postgres URL is not valid: check its host, port and parameters")
	}
	return cfg, nil
}

// start checks the connection settings took, migrates and seeds.
func (s *Store) start(ctx context.Context) error {
	if s.pg {
		if err := s.migrate(ctx); err != nil {
			return err
		}
		return s.seed(ctx)
	}
	var mode string
	// Several processes opening a new file at once race to switch it to
	// WAL, and the switch answers SQLITE_BUSY at once instead of waiting
	// under busy_timeout: try again for a little while.
	for wait := 10 * time.Millisecond; ; wait *= 2 {
		err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode)
		var se *sqlite.Error
		if err == nil || !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || wait > time.Second {
			if err != nil {
				return err
			}
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
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
	s.q.close()
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

// schemaLock is the key of the Postgres advisory lock that start-up
// transactions hold: it makes concurrent replicas migrate and seed one
// after the other, as SQLite's write lock does for processes sharing a
// file. The value is arbitrary; it only has to differ from other programs'
// keys in the same database.
const schemaLock = 0x63726d2d6d6370 // "crm-mcp"

// inTx runs fn in a write transaction and commits if fn succeeds. The
// transaction holds the write lock from its start: SQLite's, through
// _txlock=immediate, or on Postgres the schemaLock advisory lock, released
// at commit.
func (s *Store) inTx(ctx context.Context, fn func(querier) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // no-op after Commit
	var q querier = tx
	if s.pg {
		q = rebinder{tx}
		if _, err := q.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?)`, int64(schemaLock)); err != nil {
			return err
		}
	}
	if err := fn(q); err != nil {
		return err
	}
	return tx.Commit()
}

// querier is what *sql.DB and *sql.Tx share, so the insert helpers serve
// both the public methods and seeding. Queries are written with SQLite's ?
// placeholders; on Postgres, rebinder numbers them.
type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// rebinder turns the ? placeholders of a query into Postgres's $1, $2...
// The store's queries hold no ? in a string literal, so every ? is a
// placeholder.
type rebinder struct{ q querier }

func (r rebinder) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return r.q.QueryRowContext(ctx, rebind(query), args...)
}

func (r rebinder) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return r.q.QueryContext(ctx, rebind(query), args...)
}

func (r rebinder) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return r.q.ExecContext(ctx, rebind(query), args...)
}

// prepared runs the store's queries as prepared statements, each prepared
// once (per pooled connection, by database/sql) rather than parsed and
// planned again on every call: the engines' parsers were a tenth of a tool
// call's CPU time. The statements are keyed by their text, which the store
// builds from fixed fragments with every value a placeholder, so there are
// as many as the store has query shapes, a few dozen. Results are never
// kept: every call runs its statement.
type prepared struct {
	db    *sql.DB
	pg    bool     // rewrite ? placeholders as $1, $2... once, when preparing
	stmts sync.Map // query text → *sql.Stmt
}

// stmt returns the prepared statement for query, preparing it on first
// use.
func (p *prepared) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := p.stmts.Load(query); ok {
		return st.(*sql.Stmt), nil
	}
	text := query
	if p.pg {
		text = rebind(query)
	}
	st, err := p.db.PrepareContext(ctx, text)
	if err != nil {
		return nil, err
	}
	if prev, loaded := p.stmts.LoadOrStore(query, st); loaded {
		st.Close() // another call prepared it meanwhile
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// QueryContext, ExecContext and QueryRowContext run query as a prepared
// statement. A statement that cannot be prepared runs unprepared, as it did
// before statements were prepared: its error, or its result if the
// failure has passed (a database still being created by another process
// can be busy for a moment), reaches the caller.
func (p *prepared) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := p.stmt(ctx, query)
	if err != nil {
		return p.unprepared().QueryContext(ctx, query, args...)
	}
	return st.QueryContext(ctx, args...)
}

func (p *prepared) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := p.stmt(ctx, query)
	if err != nil {
		return p.unprepared().ExecContext(ctx, query, args...)
	}
	return st.ExecContext(ctx, args...)
}

func (p *prepared) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := p.stmt(ctx, query)
	if err != nil {
		return p.unprepared().QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// unprepared runs queries as they come, for start-up, which runs each once
// while the schema may still change under it.
func (p *prepared) unprepared() querier {
	if p.pg {
		return rebinder{p.db}
	}
	return p.db
}

// close closes every prepared statement.
func (p *prepared) close() {
	p.stmts.Range(func(k, st any) bool {
		st.(*sql.Stmt).Close()
		p.stmts.Delete(k)
		return true
	})
}

func rebind(query string) string {
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// stamp returns now, to the microsecond, as the engine stores times: text
// that sorts in time order on SQLite, a timestamptz on Postgres.
func (s *Store) stamp() any {
	t := s.now().UTC().Truncate(time.Microsecond)
	if s.pg {
		return t
	}
	return formatTime(t)
}

func formatTime(t time.Time) string {
	return t.UTC().Format(timeLayout)
}

// parseTime reads a stored time. database/sql hands a Postgres timestamptz
// to a *string in RFC 3339 too, so one parser serves both engines.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("stored time %q: %w", s, err)
	}
	return t.UTC(), nil
}
