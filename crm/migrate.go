package crm

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are applied in order; migrations[i] brings the schema to
// version i+1. Append, never edit: a database records only the versions it
// has run, so an edited migration would never reach databases that ran the
// old text.
//
// The CHECK constraints repeat the Go validation as a last line of defence
// against a bug or a hand edit; the Go checks are the ones that produce
// useful messages. STRICT makes SQLite refuse a value of the wrong type
// instead of storing it anyway.
var migrations = []string{
	`CREATE TABLE contacts (
		id             INTEGER PRIMARY KEY,
		name           TEXT NOT NULL CHECK (name <> ''),
		email          TEXT NOT NULL CHECK (email <> ''),
		phone          TEXT NOT NULL DEFAULT '',
		company        TEXT NOT NULL DEFAULT '',
		sector         TEXT NOT NULL DEFAULT '',
		classification TEXT NOT NULL CHECK (classification IN ('public', 'internal', 'restricted')),
		owner          TEXT NOT NULL DEFAULT '',
		created_at     TEXT NOT NULL,
		updated_at     TEXT NOT NULL
	) STRICT;
	CREATE INDEX contacts_classification ON contacts (classification);

	CREATE TABLE deals (
		id         INTEGER PRIMARY KEY,
		contact_id INTEGER NOT NULL REFERENCES contacts (id),
		title      TEXT NOT NULL CHECK (title <> ''),
		amount     INTEGER NOT NULL CHECK (amount >= 0),
		currency   TEXT NOT NULL CHECK (length(currency) = 3 AND currency GLOB '[A-Z][A-Z][A-Z]'),
		stage      TEXT NOT NULL CHECK (stage IN ('lead', 'qualified', 'proposal', 'negotiation', 'won', 'lost')),
		created_at TEXT NOT NULL,
		updated_at TEXT NOT NULL
	) STRICT;
	CREATE INDEX deals_contact_id ON deals (contact_id);
	CREATE INDEX deals_stage ON deals (stage);`,
}

// migrate applies the migrations this database has not run yet, each in its
// own transaction together with its schema_migrations row, so a failure
// leaves the schema at the last complete version. Reopening runs nothing.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	current, err := schemaVersion(ctx, s.db)
	if err != nil {
		return err
	}
	if current > len(migrations) {
		return fmt.Errorf("database schema is at version %d, newer than this program's %d; run a newer build", current, len(migrations))
	}
	for i := current; i < len(migrations); i++ {
		version := i + 1
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			// Another process may have migrated since we looked; the
			// transaction holds the write lock, so this answer stands.
			v, err := schemaVersion(ctx, tx)
			if err != nil || v >= version {
				return err
			}
			if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
				version, formatTime(s.now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %d: %w", version, err)
		}
	}
	return nil
}

func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v int
	if err := q.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}
