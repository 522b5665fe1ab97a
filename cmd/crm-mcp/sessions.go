package main

import "time"

// SessionSettings is the part of config that bounds Streamable HTTP
// sessions (tools.Config; ignored with MCP_STATELESS). It is embedded in
// config, so env reads its fields like the others. The defaults repeat
// tools' Default* constants; a test keeps them equal.
type SessionSettings struct {
	SessionIdleTimeout time.Duration `env:"MCP_SESSION_IDLE_TIMEOUT" envDefault:"30m"`
	MaxSessionsPerUser int           `env:"MCP_MAX_SESSIONS_PER_USER" envDefault:"10"`
	MaxSessions        int           `env:"MCP_MAX_SESSIONS" envDefault:"1000"`
}

// Upper limits: beyond them a value is more likely a typo than a plan.
const (
	maxSessionIdleTimeout = 24 * time.Hour
	maxSessionsLimit      = 1_000_000
)

// checkSessions validates the session variables; check records a problem
// unless the variable already failed to parse. tools reads 0 as "the
// default", so 0 cannot mean "no limit" and is refused.
func (s SessionSettings) checkSessions(check func(name string, err error)) {
	switch {
	case s.SessionIdleTimeout <= 0:
		check("MCP_SESSION_IDLE_TIMEOUT", varErrorf("MCP_SESSION_IDLE_TIMEOUT", "must be greater than zero, got %s", s.SessionIdleTimeout))
	case s.SessionIdleTimeout > maxSessionIdleTimeout:
		check("MCP_SESSION_IDLE_TIMEOUT", varErrorf("MCP_SESSION_IDLE_TIMEOUT", "must be at most %s, got %s", maxSessionIdleTimeout, s.SessionIdleTimeout))
	}
	switch {
	case s.MaxSessions < 1:
		check("MCP_MAX_SESSIONS", varErrorf("MCP_MAX_SESSIONS", "must be at least 1, got %d", s.MaxSessions))
	case s.MaxSessions > maxSessionsLimit:
		check("MCP_MAX_SESSIONS", varErrorf("MCP_MAX_SESSIONS", "must be at most %d, got %d", maxSessionsLimit, s.MaxSessions))
	}
	switch {
	case s.MaxSessionsPerUser < 1:
		check("MCP_MAX_SESSIONS_PER_USER", varErrorf("MCP_MAX_SESSIONS_PER_USER", "must be at least 1, got %d", s.MaxSessionsPerUser))
	case s.MaxSessions >= 1 && s.MaxSessionsPerUser > s.MaxSessions:
		check("MCP_MAX_SESSIONS_PER_USER", varErrorf("MCP_MAX_SESSIONS_PER_USER", "is %d, more than MCP_MAX_SESSIONS (%d)", s.MaxSessionsPerUser, s.MaxSessions))
	}
}

// sessionLogAttrs is the session part of the start-up log line.
func (s SessionSettings) sessionLogAttrs() []any {
	return []any{
		"MCP_SESSION_IDLE_TIMEOUT", s.SessionIdleTimeout.String(),
		"MCP_MAX_SESSIONS_PER_USER", s.MaxSessionsPerUser,
		"MCP_MAX_SESSIONS", s.MaxSessions,
	}
}
