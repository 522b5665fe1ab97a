package tools_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/tools"
)

// Sessions feeds the open-sessions gauge: a session counts from its
// initialize until it is closed, and a stateless handler has none.
func TestHandlerSessions(t *testing.T) {
	e := newEnv(t)
	assert.Equal(t, 0, e.handler.Sessions())
	a := e.connect(t, e.token("alice", allScopes...))
	e.connect(t, e.token("bob", allScopes...))
	assert.Equal(t, 2, e.handler.Sessions())
	require.NoError(t, a.Close()) // DELETE ends it on the server
	assert.Eventually(t, func() bool { return e.handler.Sessions() == 1 }, 5*time.Second, 10*time.Millisecond)

	stateless := newEnv(t, func(c *tools.Config) { c.Stateless = true })
	stateless.connect(t, stateless.token("alice", allScopes...))
	assert.Equal(t, 0, stateless.handler.Sessions())
}
