package pgstate_test

import (
	"context"
	"strings"
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

func openPair(t *testing.T) (url string, a, b *pgstate.State) {
	t.Helper()
	url = pgtest.NewDatabase(t)
	open := func() *pgstate.State {
		s, err := pgstate.Open(t.Context(), url)
		require.NoError(t, err)
		t.Cleanup(s.Close)
		return s
	}
	return url, open(), open()
}

func count(t *testing.T, url, table string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var n int
	require.NoError(t, conn.QueryRow(t.Context(), "SELECT count(*) FROM "+table).Scan(&n))
	return n
}

// A result landed through one State reaches a waiter on another, woken by
// the notification (or, at worst, by its next poll).
func TestLandWakesAwaitOnOtherState(t *testing.T) {
	_, a, b := openPair(t)
	got := make(chan stepup.Result, 1)
	go func() {
		r, err := b.Await(t.Context(), "flight-1")
		assert.NoError(t, err)
		got <- r
	}()
	time.Sleep(50 * time.Millisecond) // let the waiter look once and find nothing
	want := stepup.Result{Outcome: stepup.Denied, Msg: "denied"}
	require.NoError(t, a.Land(t.Context(), "alice", "flight-1", want, func(*stepup.UserState) {}))
	select {
	case r := <-got:
		assert.Equal(t, want, r)
	case <-time.After(10 * time.Second):
		t.Fatal("Await did not return")
	}

	// A late waiter reads the stored result at once.
	r, err := a.Await(t.Context(), "flight-1")
	require.NoError(t, err)
	assert.Equal(t, want, r)

	// A flight that never lands: Await ends with its context.
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err = b.Await(ctx, "flight-never")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// Expired records and results are deleted by Sweep.
func TestSweepAndStorage(t *testing.T) {
	url, a, _ := openPair(t)
	now := time.Now()
	cooled := func(us *stepup.UserState) {
		require.NoError(t, us.UnmarshalJSON([]byte(`{"cool_until":"`+now.Add(time.Minute).UTC().Format(time.RFC3339Nano)+`"}`)))
	}
	require.NoError(t, a.Update(t.Context(), "alice", cooled))
	require.NoError(t, a.Land(t.Context(), "bob", "f1", stepup.Result{}, cooled))
	assert.Equal(t, 2, count(t, url, "stepup_users"))
	assert.Equal(t, 1, count(t, url, "stepup_results"))

	// An empty record is not stored.
	require.NoError(t, a.Update(t.Context(), "carol", func(*stepup.UserState) {}))
	assert.Equal(t, 2, count(t, url, "stepup_users"))

	require.NoError(t, a.Sweep(t.Context(), now.Add(30*time.Second)))
	assert.Equal(t, 2, count(t, url, "stepup_users"), "not yet expired")
	require.NoError(t, a.Sweep(t.Context(), now.Add(time.Minute+time.Second)))
	assert.Equal(t, 0, count(t, url, "stepup_users"), "expired records are deleted")
	assert.Equal(t, 1, count(t, url, "stepup_results"), "a fresh result stays")
}

func TestOpenErrors(t *testing.T) {
	const secret = "s3cret-pw"
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, url := range []string{
		"",
		"mysql://u:" + secret + "@127.0.0.1/x",
		"postgres://u:" + secret + "@127.0.0.1:notaport/x",
		"postgres://u:" + secret + "@127.0.0.1:1/x?sslmode=disable",
	} {
		s, err := pgstate.Open(ctx, url)
		if s != nil {
			s.Close()
		}
		require.Error(t, err, url)
		assert.False(t, strings.Contains(err.Error(), secret), "the error shows the password")
	}
}

// Replicas starting together create the tables once.
func TestConcurrentOpen(t *testing.T) {
	url := pgtest.NewDatabase(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s, err := pgstate.Open(t.Context(), url)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		require.NoError(t, <-errs)
	}
	assert.Equal(t, 3, count(t, url, "stepup_schema_migrations"), "each of the three migrations ran once")
}

// What a Guard stores names no call's arguments: grants and flights are
// found by a hash of the call.
func TestStoredStateHoldsNoArguments(t *testing.T) {
	url, a, _ := openPair(t)
	srv := duotest.NewServer()
	t.Cleanup(srv.Close)
	srv.Script("alice", duotest.Approve)
	g, err := stepup.New(stepup.Config{
		IKey: srv.IKey(), SKey: srv.SKey(), Host: srv.Host(), CACertPEM: srv.CACertPEM(),
		PollInterval: 10 * time.Millisecond, State: a,
	})
	require.NoError(t, err)
	req := request("alice", "riley.vance@aegis")
	require.NoError(t, g.Approve(t.Context(), req, nil))

	conn, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	defer conn.Close(context.Background())
	var state string
	require.NoError(t, conn.QueryRow(t.Context(), `SELECT state::text FROM stepup_users WHERE username = 'alice'`).Scan(&state))
	assert.Contains(t, state, "grants")
	assert.NotContains(t, state, "riley")
	assert.NotContains(t, state, "list_contacts")
}
