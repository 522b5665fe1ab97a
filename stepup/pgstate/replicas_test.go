package pgstate_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/pgtest"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
	"github.com/crm-mcp/crm-mcp/stepup/pgstate"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// replica is one server's Guard, with the State it was given and a switch
// that cuts it off from Duo, as if its process had died.
type replica struct {
	guard *stepup.Guard
	state stepup.State
	dead  *atomic.Bool
}

// backend makes the States of two replicas that share their step-up state.
type backend struct {
	name string
	// states returns the two States, closed when the test ends; kill, if
	// not nil, stops one abruptly.
	states func(t testing.TB) (a, b stepup.State)
	kill   func(s stepup.State)
}

var backends = []backend{
	{
		name: "memory",
		states: func(testing.TB) (stepup.State, stepup.State) {
			s := stepup.NewMemoryState()
			return s, s
		},
	},
	{
		name: "postgres",
		states: func(t testing.TB) (stepup.State, stepup.State) {
			url := pgtest.NewDatabase(t)
			open := func() stepup.State {
				s, err := pgstate.Open(t.Context(), url)
				require.NoError(t, err)
				t.Cleanup(s.Close)
				return s
			}
			// Two connections pools and listeners, as two processes have.
			return open(), open()
		},
		kill: func(s stepup.State) { s.(*pgstate.State).Close() },
	},
}

func forBackends(t *testing.T, test func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { test(t, b) })
	}
}

// deadTransport fails every request once dead is set.
type deadTransport struct {
	base http.RoundTripper
	dead *atomic.Bool
}

func (d deadTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if d.dead.Load() {
		return nil, errors.New("this replica is dead")
	}
	return d.base.RoundTrip(r)
}

// twoReplicas starts a fake Duo and two Guards, A and B, configured alike
// from cfg and sharing their state through b.
func twoReplicas(t testing.TB, b backend, cfg stepup.Config) (*duotest.Server, replica, replica) {
	t.Helper()
	srv := duotest.NewServer()
	t.Cleanup(srv.Close)
	sa, sb := b.states(t)
	mk := func(s stepup.State) replica {
		c := cfg
		c.IKey, c.SKey, c.Host = srv.IKey(), srv.SKey(), srv.Host()
		if c.PollInterval == 0 {
			c.PollInterval = 10 * time.Millisecond
		}
		dead := new(atomic.Bool)
		c.HTTPClient = &http.Client{Transport: deadTransport{base: tlsTransport(t, srv), dead: dead}}
		c.State = s
		g, err := stepup.New(c)
		require.NoError(t, err)
		return replica{guard: g, state: s, dead: dead}
	}
	return srv, mk(sa), mk(sb)
}

// tlsTransport trusts only srv.
func tlsTransport(t testing.TB, srv *duotest.Server) *http.Transport {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(srv.CACertPEM()))
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
}

func request(user, query string) stepup.Request {
	args := fmt.Sprintf(`{"query":%q}`, query)
	return stepup.Request{
		User:     user,
		Tool:     "list_contacts",
		Reason:   `the request mentions "defence"`,
		Action:   "Search contacts for " + strconv.Quote(query),
		ClientID: "https://agent.example/client.json",
		Key:      stepup.CanonicalKey("list_contacts", []byte(args)),
	}
}

func pushesFor(srv *duotest.Server, user string) int {
	n := 0
	for _, p := range srv.Pushes() {
		if p.User == user {
			n++
		}
	}
	return n
}

// approveAll starts Approve(req) on each guard in turn, and returns once
// every call is waiting for a push (it has reported progress), with a
// function that collects the results.
func approveAll(t *testing.T, guards []*stepup.Guard, req stepup.Request) func() []error {
	t.Helper()
	errs := make([]error, len(guards))
	var started, done sync.WaitGroup
	for i, g := range guards {
		started.Add(1)
		done.Add(1)
		var once sync.Once
		go func() {
			defer done.Done()
			errs[i] = g.Approve(context.Background(), req, func(string) { once.Do(started.Done) })
			once.Do(started.Done) // answered without waiting
		}()
	}
	started.Wait()
	return func() []error { done.Wait(); return errs }
}

func TestIdenticalCallsAcrossReplicasShareOnePush(t *testing.T) {
	forBackends(t, func(t *testing.T, b backend) {
		srv, a, bb := twoReplicas(t, b, stepup.Config{Timeout: 20 * time.Second})
		srv.Script("alice", duotest.Manual)
		req := request("alice", "defence contractors")

		var guards []*stepup.Guard
		for i := range 10 {
			guards = append(guards, []*stepup.Guard{a.guard, bb.guard}[i%2])
		}
		wait := approveAll(t, guards, req)
		p, err := srv.WaitForPush(t.Context())
		require.NoError(t, err)
		require.Equal(t, 1, pushesFor(srv, "alice"), "ten identical calls on two replicas, one push")
		require.NoError(t, srv.Decide(p.TxID, true))
		for i, err := range wait() {
			assert.NoError(t, err, "call %d (replica %s)", i, "AB"[i%2:i%2+1])
		}
		assert.Equal(t, 1, pushesFor(srv, "alice"))

		// The same with a denial: every caller gets it.
		other := request("alice", "military suppliers")
		wait = approveAll(t, guards, other)
		p, err = srv.WaitForPush(t.Context())
		require.NoError(t, err)
		require.NoError(t, srv.Decide(p.TxID, false))
		for i, err := range wait() {
			assert.True(t, stepup.IsOutcome(err, stepup.Denied), "call %d: got %v", i, err)
		}
		assert.Equal(t, 2, pushesFor(srv, "alice"))
	})
}

func TestApprovalOnOneReplicaCoversTheOther(t *testing.T) {
	forBackends(t, func(t *testing.T, b backend) {
		srv, a, bb := twoReplicas(t, b, stepup.Config{})
		srv.Script("alice", duotest.Approve)
		req := request("alice", "defence contractors")

		require.NoError(t, a.guard.Approve(t.Context(), req, nil))
		progressed := false
		require.NoError(t, bb.guard.Approve(t.Context(), req, func(string) { progressed = true }))
		assert.Equal(t, 1, pushesFor(srv, "alice"), "B honours A's grant")
		assert.False(t, progressed, "a grant answers at once")

		// Another call is not covered, on either replica.
		require.NoError(t, bb.guard.Approve(t.Context(), request("alice", "military"), nil))
		assert.Equal(t, 2, pushesFor(srv, "alice"))
	})
}

func TestDenialOnOneReplicaCoolsDownTheOther(t *testing.T) {
	forBackends(t, func(t *testing.T, b backend) {
		srv, a, bb := twoReplicas(t, b, stepup.Config{DenyCooldown: time.Hour})
		srv.Script("bob", duotest.Deny)
		err := a.guard.Approve(t.Context(), request("bob", "defence"), nil)
		require.True(t, stepup.IsOutcome(err, stepup.Denied), "got %v", err)

		srv.Script("bob", duotest.Approve)
		err = bb.guard.Approve(t.Context(), request("bob", "something else"), nil)
		assert.True(t, stepup.IsOutcome(err, stepup.CoolingDown), "got %v", err)
		err = bb.guard.BlockedContext(t.Context(), "bob")
		assert.True(t, stepup.IsOutcome(err, stepup.CoolingDown), "got %v", err)
		assert.Equal(t, 1, pushesFor(srv, "bob"), "no push during the cooldown")

		// Other users are not held up.
		srv.Script("carol", duotest.Approve)
		require.NoError(t, bb.guard.Approve(t.Context(), request("carol", "defence"), nil))
	})
}

func TestPushCapCountsAcrossReplicas(t *testing.T) {
	forBackends(t, func(t *testing.T, b backend) {
		srv, a, bb := twoReplicas(t, b, stepup.Config{MaxPushes: 3, GrantTTL: stepup.NoGrants})
		srv.Script("alice", duotest.Approve)
		for i, r := range []replica{a, bb, a} {
			require.NoError(t, r.guard.Approve(t.Context(), request("alice", fmt.Sprint("q", i)), nil), "push %d", i+1)
		}
		for _, r := range []replica{bb, a} {
			err := r.guard.Approve(t.Context(), request("alice", "q4"), nil)
			assert.True(t, stepup.IsOutcome(err, stepup.TooManyPushes), "got %v", err)
			err = r.guard.BlockedContext(t.Context(), "alice")
			assert.True(t, stepup.IsOutcome(err, stepup.TooManyPushes), "got %v", err)
		}
		assert.Equal(t, 3, pushesFor(srv, "alice"), "the cap holds across both replicas")
	})
}

// A dies while it owns a pending push: B's callers waiting for that push
// fail closed by their deadline, and nobody sends a second push for the
// call. Later, B may push afresh.
func TestOwnerDiesWhilePushPending(t *testing.T) {
	for _, b := range backends {
		if b.kill == nil {
			continue // a process cannot die apart from its own memory
		}
		t.Run(b.name, func(t *testing.T) {
			const timeout = 3 * time.Second
			srv, a, bb := twoReplicas(t, b, stepup.Config{Timeout: timeout})
			srv.Script("alice", duotest.Manual)
			req := request("alice", "defence contractors")

			owner := approveAll(t, []*stepup.Guard{a.guard}, req)
			_, err := srv.WaitForPush(t.Context())
			require.NoError(t, err)
			start := time.Now()
			waiters := approveAll(t, []*stepup.Guard{bb.guard, bb.guard, bb.guard, bb.guard}, req)

			// A dies: it reaches neither the database nor Duo any more.
			b.kill(a.state)
			a.dead.Store(true)
			for i, err := range waiters() {
				assert.True(t, stepup.IsOutcome(err, stepup.TimedOut), "waiter %d: got %v", i, err)
			}
			assert.LessOrEqual(t, time.Since(start), timeout+time.Second, "waiters fail by their deadline")
			assert.Equal(t, 1, pushesFor(srv, "alice"), "no second push for the call")
			owner()

			// The push nobody polls any more holds the user up no longer
			// than a few seconds past its deadline.
			time.Sleep(time.Until(start.Add(timeout + 5*time.Second)))
			srv.Script("alice", duotest.Approve)
			require.NoError(t, bb.guard.Approve(context.Background(), req, nil))
			assert.Equal(t, 2, pushesFor(srv, "alice"))
		})
	}
}
