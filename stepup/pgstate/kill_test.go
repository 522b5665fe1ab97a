package pgstate_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/internal/pgtest"
	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
	"github.com/crm-mcp/crm-mcp/stepup/pgstate"
)

// Variables that turn this test binary into replica A, a process of its
// own (see TestReplicaProcess).
const (
	envReplica = "PGSTATE_TEST_REPLICA_URL"
	envDuoHost = "PGSTATE_TEST_DUO_HOST"
	envDuoIKey = "PGSTATE_TEST_DUO_IKEY"
	envDuoSKey = "PGSTATE_TEST_DUO_SKEY"
	envDuoCA   = "PGSTATE_TEST_DUO_CA"
)

const killTimeout = 4 * time.Second

func replicaConfig(host, ikey, skey string, ca []byte, state stepup.State) stepup.Config {
	return stepup.Config{
		IKey: ikey, SKey: skey, Host: host, CACertPEM: ca,
		PollInterval: 10 * time.Millisecond, Timeout: killTimeout, State: state,
	}
}

// TestReplicaProcess is replica A when run by TestOwnerProcessKilled: it
// starts the call and waits for the push, until it is killed.
func TestReplicaProcess(t *testing.T) {
	url := os.Getenv(envReplica)
	if url == "" {
		return // not a child process: nothing to do
	}
	state, err := pgstate.Open(context.Background(), url)
	require.NoError(t, err)
	g, err := stepup.New(replicaConfig(os.Getenv(envDuoHost), os.Getenv(envDuoIKey), os.Getenv(envDuoSKey), []byte(os.Getenv(envDuoCA)), state))
	require.NoError(t, err)
	g.Approve(context.Background(), request("alice", "defence contractors"), nil)
	time.Sleep(time.Hour) // killed before this ends
}

// Replica A, a process of its own, is killed (SIGKILL) while it owns a
// pending push: B's callers waiting for that push fail closed by their
// deadline, and no second push is sent for the call.
func TestOwnerProcessKilled(t *testing.T) {
	url := pgtest.NewDatabase(t)
	srv := duotest.NewServer()
	t.Cleanup(srv.Close)
	srv.Script("alice", duotest.Manual)

	child := exec.Command(os.Args[0], "-test.run=^TestReplicaProcess$", "-test.count=1")
	child.Env = append(os.Environ(),
		envReplica+"="+url, envDuoHost+"="+srv.Host(), envDuoIKey+"="+srv.IKey(),
		envDuoSKey+"="+srv.SKey(), envDuoCA+"="+string(srv.CACertPEM()))
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	require.NoError(t, child.Start())
	exited := make(chan struct{})
	go func() { child.Wait(); close(exited) }()
	t.Cleanup(func() { child.Process.Kill(); <-exited })

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err := srv.WaitForPush(ctx)
	require.NoError(t, err, "replica A sends the push")

	state, err := pgstate.Open(t.Context(), url)
	require.NoError(t, err)
	t.Cleanup(state.Close)
	b, err := stepup.New(replicaConfig(srv.Host(), srv.IKey(), srv.SKey(), srv.CACertPEM(), state))
	require.NoError(t, err)
	start := time.Now()
	waiters := approveAll(t, []*stepup.Guard{b, b, b}, request("alice", "defence contractors"))

	require.NoError(t, child.Process.Kill())
	<-exited
	for i, err := range waiters() {
		assert.True(t, stepup.IsOutcome(err, stepup.TimedOut), "waiter %d: got %v", i, err)
	}
	assert.LessOrEqual(t, time.Since(start), killTimeout+time.Second, "waiters fail by their deadline (STEPUP_TIMEOUT)")
	assert.Equal(t, 1, pushesFor(srv, "alice"), "no second push for the call")
}
