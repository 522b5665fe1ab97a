package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSessionSettingsDefaults(t *testing.T) {
	c, err := loadConfig(minimalEnv())
	require.NoError(t, err)
	// tools has no sessions any more (stateless only); H removes these
	// variables from config.
	assert.Equal(t, 30*time.Minute, c.SessionIdleTimeout)

	c, err = loadConfig(with(minimalEnv(), "MCP_SESSION_IDLE_TIMEOUT", "2h", "MCP_MAX_SESSIONS_PER_USER", "3", "MCP_MAX_SESSIONS", "50"))
	require.NoError(t, err)
	assert.Equal(t, SessionSettings{SessionIdleTimeout: 2 * time.Hour, MaxSessionsPerUser: 3, MaxSessions: 50}, c.SessionSettings)
}

func TestSessionSettingsErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string // the variable the error must name
		also string
	}{
		{"idle zero", with(minimalEnv(), "MCP_SESSION_IDLE_TIMEOUT", "0s"), "MCP_SESSION_IDLE_TIMEOUT", "greater than zero"},
		{"idle too long", with(minimalEnv(), "MCP_SESSION_IDLE_TIMEOUT", "48h"), "MCP_SESSION_IDLE_TIMEOUT", "at most 24h0m0s"},
		{"idle not a duration", with(minimalEnv(), "MCP_SESSION_IDLE_TIMEOUT", "30"), "MCP_SESSION_IDLE_TIMEOUT", "not a duration"},
		{"per user zero", with(minimalEnv(), "MCP_MAX_SESSIONS_PER_USER", "0"), "MCP_MAX_SESSIONS_PER_USER", "at least 1"},
		{"per user above overall", with(minimalEnv(), "MCP_MAX_SESSIONS_PER_USER", "20", "MCP_MAX_SESSIONS", "10"), "MCP_MAX_SESSIONS_PER_USER", "more than MCP_MAX_SESSIONS"},
		{"overall negative", with(minimalEnv(), "MCP_MAX_SESSIONS", "-1"), "MCP_MAX_SESSIONS", "at least 1"},
		{"overall huge", with(minimalEnv(), "MCP_MAX_SESSIONS", "5000000"), "MCP_MAX_SESSIONS", "at most 1000000"},
		{"overall not a number", with(minimalEnv(), "MCP_MAX_SESSIONS", "many"), "MCP_MAX_SESSIONS", "many"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(tt.env)
			require.Error(t, err)
			msg := formatConfigErrors(err)
			assert.Contains(t, msg, tt.want+": ")
			assert.Contains(t, msg, tt.also)
			assert.Equal(t, 1, strings.Count(msg, "\n"), "one problem: %s", msg)
		})
	}
}
