// Package pgstate keeps the step-up state of Guards (stepup.State) in
// Postgres, so that the replicas of a server share it: grants, deny
// cooldowns, the push cap's window and the approvals in progress.
//
//	state, err := pgstate.Open(ctx, "postgres://crm@db.internal/crm")
//	if err != nil { ... }
//	defer state.Close()
//	guard, err := stepup.New(stepup.Config{..., State: state})
//
// Each user's record is one row, read and written in a transaction that
// holds an advisory lock on the user, so decisions about one user (grant?
// cooldown? cap? a push already in progress?) are taken one at a time
// across all replicas. When an approval ends, its result is written in the
// same transaction and announced with NOTIFY; replicas waiting for it
// LISTEN, and poll every second as well, in case a notification was lost
// while their listening connection was down.
//
// The tables (stepup_users, stepup_results, stepup_schema_migrations) are
// created on Open and may live in the same database as the CRM. Rows that
// have expired are deleted when Guards sweep, about once a minute.
//
// State.Refusals keeps govern's insufficient_scope challenges in the same
// database (govern_refusals), for the explained refusal across replicas.
package pgstate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/crm-mcp/crm-mcp/stepup"
)

// channel is the NOTIFY channel announcing landed flights; the payload is
// the flight id.
const channel = "stepup_landed"

// pollEvery is how often a waiter looks for its result even without a
// notification.
const pollEvery = time.Second

// relisten is the pause before reconnecting a listening connection that
// broke.
const relisten = time.Second

// maxConns bounds the pool: one short transaction per decision, so a few
// connections serve many concurrent calls.
const maxConns = 8

// schemaLock is the advisory lock key held while migrating, so replicas
// starting together create the tables once.
const schemaLock = 0x7374657075702d73 // "stepup-s"

var migrations = []string{
	`CREATE TABLE stepup_users (
		username   text PRIMARY KEY,
		state      jsonb NOT NULL,
		expires_at timestamptz NOT NULL
	);
	CREATE INDEX stepup_users_expires_at ON stepup_users (expires_at);

	CREATE TABLE stepup_results (
		flight_id  text PRIMARY KEY,
		outcome    text NOT NULL,
		message    text NOT NULL,
		expires_at timestamptz NOT NULL
	);
	CREATE INDEX stepup_results_expires_at ON stepup_results (expires_at);`,

	// 2: a result keeps how the approval came about and the Duo txid, so a
	// replica that waited on another's push records the same approval
	// (reason and duo_txid) in its audit trail. The defaults let rows
	// written before, and by a replica of the previous build still
	// running, read as "not known".
	`ALTER TABLE stepup_results
		ADD COLUMN approved_by text NOT NULL DEFAULT '',
		ADD COLUMN duo_txid    text NOT NULL DEFAULT '';`,

	// 3: the insufficient_scope challenges of govern's Gate (Refusals),
	// one row per user, client and scope; seq orders them by age.
	`CREATE SEQUENCE govern_refusals_seq;
	CREATE TABLE govern_refusals (
		username      text NOT NULL,
		client_id     text NOT NULL,
		scope         text NOT NULL,
		seq           bigint NOT NULL DEFAULT nextval('govern_refusals_seq'),
		challenged_at timestamptz NOT NULL,
		token_iat     bigint NOT NULL,
		token_jti     text NOT NULL,
		expires_at    timestamptz NOT NULL,
		PRIMARY KEY (username, client_id, scope)
	);
	CREATE INDEX govern_refusals_user_seq ON govern_refusals (username, seq);
	CREATE INDEX govern_refusals_seq_idx ON govern_refusals (seq);
	CREATE INDEX govern_refusals_expires_at ON govern_refusals (expires_at);`,
}

// State is a stepup.State in Postgres. It is safe for concurrent use.
type State struct {
	pool *pgxpool.Pool

	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{} // flight id -> wake-up channels

	stop func()        // ends the listener
	done chan struct{} // closed when the listener has ended
}

var _ stepup.State = (*State)(nil)

// Open connects to the Postgres database at url, creates the tables if need
// be and starts listening for landed approvals. Close it when done. Errors
// never contain the password.
func Open(ctx context.Context, url string) (*State, error) {
	if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
		return nil, errors.New("pgstate: open: the database URL must start with postgres:// or postgresql://")
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errors.New("pgstate: open: the Postgres URL is not valid: check its host, port and parameters")
	}
	cfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstate: open: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstate: open: %w", err)
	}
	conn, err := listen(ctx, cfg.ConnConfig)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstate: open: %w", err)
	}
	lctx, stop := context.WithCancel(context.Background())
	s := &State{
		pool:    pool,
		waiters: make(map[string]map[chan struct{}]struct{}),
		stop:    stop,
		done:    make(chan struct{}),
	}
	go s.listen(lctx, cfg.ConnConfig, conn)
	return s, nil
}

// Close stops listening and closes the connections, after the transactions
// in progress. Waiters in Await return their context's error by their
// deadline.
func (s *State) Close() {
	s.stop()
	<-s.done
	s.pool.Close()
}

func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLock)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS stepup_schema_migrations (
			version    integer PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return err
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM stepup_schema_migrations`).Scan(&current); err != nil {
			return err
		}
		if current > len(migrations) {
			return fmt.Errorf("the step-up schema is at version %d, newer than this program's %d; run a newer build", current, len(migrations))
		}
		for i := current; i < len(migrations); i++ {
			if _, err := tx.Exec(ctx, migrations[i]); err != nil {
				return fmt.Errorf("migration %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO stepup_schema_migrations (version) VALUES ($1)`, i+1); err != nil {
				return err
			}
		}
		return nil
	})
}

// Update implements stepup.State.
func (s *State) Update(ctx context.Context, user string, fn func(*stepup.UserState)) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return update(ctx, tx, user, fn)
	})
}

// update runs fn on user's record inside tx, holding the user's lock.
func update(ctx context.Context, tx pgx.Tx, user string, fn func(*stepup.UserState)) error {
	// The lock, not a row lock, serializes the user's decisions: it holds
	// whether or not the user has a row yet. It is a statement of its own:
	// a statement reads with the snapshot taken when it began, so a read
	// in the same statement could miss what the previous holder committed.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('stepup user ' || $1, 0))`, user); err != nil {
		return err
	}
	var before []byte
	err := tx.QueryRow(ctx, `SELECT state FROM stepup_users WHERE username = $1`, user).Scan(&before)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	us := new(stepup.UserState)
	if before != nil {
		if err := json.Unmarshal(before, us); err != nil {
			return fmt.Errorf("stored step-up state of a user: %w", err)
		}
	}
	fn(us)
	exp := us.Expiry()
	if exp.IsZero() {
		if before == nil {
			return nil
		}
		_, err := tx.Exec(ctx, `DELETE FROM stepup_users WHERE username = $1`, user)
		return err
	}
	after, err := json.Marshal(us)
	if err != nil {
		return err
	}
	if before != nil && jsonEqual(before, after) {
		return nil // a grant used, a check passed: nothing to write
	}
	_, err = tx.Exec(ctx, `INSERT INTO stepup_users (username, state, expires_at) VALUES ($1, $2, $3)
		ON CONFLICT (username) DO UPDATE SET state = excluded.state, expires_at = excluded.expires_at`,
		user, after, exp)
	return err
}

// jsonEqual compares two encodings of a record; jsonb normalizes what it
// stores, so both are decoded first.
func jsonEqual(a, b []byte) bool {
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	ea, _ := json.Marshal(va)
	eb, _ := json.Marshal(vb)
	return bytes.Equal(ea, eb)
}

// Land implements stepup.State. The NOTIFY is delivered when the
// transaction commits, so a waiter woken by it finds the result.
func (s *State) Land(ctx context.Context, user, flightID string, r stepup.Result, fn func(*stepup.UserState)) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := update(ctx, tx, user, fn); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO stepup_results (flight_id, outcome, message, approved_by, duo_txid, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (flight_id) DO NOTHING`,
			flightID, string(r.Outcome), r.Msg, r.By, r.TxID, time.Now().Add(resultTTL)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, flightID)
		return err
	})
}

// resultTTL is how long a result is kept for waiters that read it late;
// they wait at most a Guard's Timeout.
const resultTTL = 10 * time.Minute

// Await implements stepup.State.
func (s *State) Await(ctx context.Context, flightID string) (stepup.Result, error) {
	wake := make(chan struct{}, 1)
	s.subscribe(flightID, wake)
	defer s.unsubscribe(flightID, wake)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		var r stepup.Result
		var outcome string
		err := s.pool.QueryRow(ctx, `SELECT outcome, message, approved_by, duo_txid FROM stepup_results WHERE flight_id = $1`,
			flightID).Scan(&outcome, &r.Msg, &r.By, &r.TxID)
		switch {
		case err == nil:
			r.Outcome = stepup.Outcome(outcome)
			return r, nil
		case ctx.Err() != nil:
			return stepup.Result{}, ctx.Err()
		case !errors.Is(err, pgx.ErrNoRows):
			return stepup.Result{}, err
		}
		select {
		case <-wake:
		case <-tick.C:
		case <-ctx.Done():
			return stepup.Result{}, ctx.Err()
		}
	}
}

// Sweep implements stepup.State.
func (s *State) Sweep(ctx context.Context, now time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM stepup_users WHERE expires_at <= $1`, now); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `DELETE FROM stepup_results WHERE expires_at <= $1`, time.Now())
	return err
}

func (s *State) subscribe(id string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiters[id] == nil {
		s.waiters[id] = make(map[chan struct{}]struct{})
	}
	s.waiters[id][ch] = struct{}{}
}

func (s *State) unsubscribe(id string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.waiters[id], ch)
	if len(s.waiters[id]) == 0 {
		delete(s.waiters, id)
	}
}

// wake tells the waiters of id (or, for "", every waiter) to look again.
func (s *State) wake(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for wid, chs := range s.waiters {
		if id != "" && wid != id {
			continue
		}
		for ch := range chs {
			select {
			case ch <- struct{}{}:
			default: // already told
			}
		}
	}
}

func listen(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// listen relays notifications to waiters until ctx ends, reconnecting when
// the connection breaks. After a reconnection every waiter looks again,
// for what landed meanwhile.
func (s *State) listen(ctx context.Context, cfg *pgx.ConnConfig, conn *pgx.Conn) {
	defer close(s.done)
	for {
		for conn != nil {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				break
			}
			s.wake(n.Payload)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(relisten):
		}
		var err error
		if conn, err = listen(ctx, cfg); err == nil {
			s.wake("")
		}
	}
}
