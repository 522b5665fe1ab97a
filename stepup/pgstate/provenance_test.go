package pgstate_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/pgtest"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
	"github.com/crm-mcp/crm-mcp/stepup/pgstate"
)

// authorizeAll is approveAll for Authorize: it returns once every call is
// waiting, with a function that collects each call's Approval and error.
func authorizeAll(t *testing.T, guards []*stepup.Guard, req stepup.Request) func() ([]stepup.Approval, []error) {
	t.Helper()
	apps := make([]stepup.Approval, len(guards))
	errs := make([]error, len(guards))
	var started, done sync.WaitGroup
	for i, g := range guards {
		started.Add(1)
		done.Add(1)
		var once sync.Once
		go func() {
			defer done.Done()
			apps[i], errs[i] = g.Authorize(context.Background(), req, func(string) { once.Do(started.Done) })
			once.Do(started.Done)
		}()
	}
	started.Wait()
	return func() ([]stepup.Approval, []error) { done.Wait(); return apps, errs }
}

// A call that waited on another replica's push is approved in the same
// words as the call on the replica that sent it: the audit trail of both
// names the push (reason "push") and its Duo txid. A denial's error
// carries the txid on both as well.
func TestWaitingReplicaRecordsThePush(t *testing.T) {
	forBackends(t, func(t *testing.T, b backend) {
		srv, a, bb := twoReplicas(t, b, stepup.Config{Timeout: 20 * time.Second})
		srv.Script("alice", duotest.Manual)

		req := request("alice", "defence contractors")
		owner := authorizeAll(t, []*stepup.Guard{a.guard}, req)
		p, err := srv.WaitForPush(t.Context())
		require.NoError(t, err)
		waiter := authorizeAll(t, []*stepup.Guard{bb.guard}, req)
		require.NoError(t, srv.Decide(p.TxID, true))
		ownApps, ownErrs := owner()
		waitApps, waitErrs := waiter()
		require.NoError(t, ownErrs[0])
		require.NoError(t, waitErrs[0])
		want := stepup.Approval{By: "push", TxID: p.TxID}
		assert.Equal(t, want, ownApps[0], "the replica that pushed")
		assert.Equal(t, want, waitApps[0], "the replica that waited on it")
		assert.Equal(t, 1, pushesFor(srv, "alice"))

		other := request("alice", "military suppliers")
		owner = authorizeAll(t, []*stepup.Guard{a.guard}, other)
		p, err = srv.WaitForPush(t.Context())
		require.NoError(t, err)
		waiter = authorizeAll(t, []*stepup.Guard{bb.guard}, other)
		require.NoError(t, srv.Decide(p.TxID, false))
		_, ownErrs = owner()
		_, waitErrs = waiter()
		for i, err := range []error{ownErrs[0], waitErrs[0]} {
			var se *stepup.Error
			require.True(t, errors.As(err, &se), "call %d: got %v", i, err)
			assert.Equal(t, stepup.Denied, se.Outcome, "call %d", i)
			assert.Equal(t, p.TxID, se.TxID, "call %d: the denial names the push", i)
		}
	})
}

// A result keeps how the approval came about and the push's txid across
// States.
func TestResultKeepsProvenance(t *testing.T) {
	_, a, b := openPair(t)
	want := stepup.Result{By: "push", TxID: "TX-1"}
	require.NoError(t, a.Land(t.Context(), "alice", "flight-1", want, func(*stepup.UserState) {}))
	got, err := b.Await(t.Context(), "flight-1")
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

// A database created by an earlier build (schema version 1, whose results
// hold only outcome and message) is migrated on Open by replicas starting
// together; the results already stored still read, and new ones keep
// their provenance.
func TestMigrateResultsFromVersion1(t *testing.T) {
	url := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	_, err = conn.Exec(t.Context(), `
		CREATE TABLE stepup_schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO stepup_schema_migrations (version) VALUES (1);
		CREATE TABLE stepup_users (username text PRIMARY KEY, state jsonb NOT NULL, expires_at timestamptz NOT NULL);
		CREATE INDEX stepup_users_expires_at ON stepup_users (expires_at);
		CREATE TABLE stepup_results (flight_id text PRIMARY KEY, outcome text NOT NULL, message text NOT NULL, expires_at timestamptz NOT NULL);
		CREATE INDEX stepup_results_expires_at ON stepup_results (expires_at);
		INSERT INTO stepup_results VALUES ('old-flight', 'denied', 'denied earlier', now() + interval '5 minutes');`)
	require.NoError(t, err)

	states := make([]*pgstate.State, 3)
	var wg sync.WaitGroup
	for i := range states {
		wg.Go(func() {
			s, err := pgstate.Open(t.Context(), url)
			if assert.NoError(t, err) {
				states[i] = s
				t.Cleanup(s.Close)
			}
		})
	}
	wg.Wait()
	for _, s := range states {
		require.NotNil(t, s)
	}
	var version int
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT max(version) FROM stepup_schema_migrations`).Scan(&version))
	assert.Equal(t, 3, version)
	assert.Equal(t, 3, count(t, url, "stepup_schema_migrations"), "each migration ran once")

	old, err := states[0].Await(t.Context(), "old-flight")
	require.NoError(t, err)
	assert.Equal(t, stepup.Result{Outcome: stepup.Denied, Msg: "denied earlier"}, old)

	want := stepup.Result{By: "push", TxID: "TX-2"}
	require.NoError(t, states[1].Land(t.Context(), "alice", "new-flight", want, func(*stepup.UserState) {}))
	got, err := states[2].Await(t.Context(), "new-flight")
	require.NoError(t, err)
	assert.Equal(t, want, got)
}
