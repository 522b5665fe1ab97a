package main

import (
	"syscall"

	"github.com/crm-mcp/crm-mcp/tools"
)

// LimitSettings bounds what callers can make the server hold open beyond
// sessions: connections to the MCP listener, POSTs in flight, and tool
// calls waiting on a Duo Push (tools/inflight.go). It is embedded in
// config, so env reads its fields like the others. The defaults repeat
// tools' Default* constants; a test keeps them equal.
type LimitSettings struct {
	// MaxConnections bounds the open connections to the MCP listener
	// (connlimit.go); 0 derives it from the file descriptor limit.
	MaxConnections int `env:"MCP_MAX_CONNECTIONS" envDefault:"0"`
	// MaxConnectionsPerIP bounds those of one source IP address (or
	// IPv6 /64), so that one source cannot hold them all; 0 is a
	// quarter of MaxConnections. Behind a reverse proxy every connection
	// comes from the proxy: set it to MaxConnections.
	MaxConnectionsPerIP     int `env:"MCP_MAX_CONNECTIONS_PER_IP" envDefault:"0"`
	MaxRequestsPerUser      int `env:"MCP_MAX_REQUESTS_PER_USER" envDefault:"16"`
	MaxRequests             int `env:"MCP_MAX_REQUESTS" envDefault:"512"`
	MaxStepUpWaitingPerUser int `env:"STEPUP_MAX_WAITING_PER_USER" envDefault:"4"`
	MaxStepUpWaiting        int `env:"STEPUP_MAX_WAITING" envDefault:"256"`
}

// maxLimit: beyond it a value is more likely a typo than a plan.
const maxLimit = 1_000_000

// checkLimits validates the limit variables; check records a problem
// unless the variable already failed to parse. tools reads 0 as "the
// default", so 0 cannot mean "no limit" and is refused.
func (s LimitSettings) checkLimits(check func(name string, err error)) {
	if s.MaxConnections < 0 || s.MaxConnections > maxLimit {
		check("MCP_MAX_CONNECTIONS", varErrorf("MCP_MAX_CONNECTIONS", "must be between 0 (derived from the file descriptor limit) and %d, got %d", maxLimit, s.MaxConnections))
	}
	if s.MaxConnectionsPerIP < 0 || s.MaxConnectionsPerIP > maxLimit {
		check("MCP_MAX_CONNECTIONS_PER_IP", varErrorf("MCP_MAX_CONNECTIONS_PER_IP", "must be between 0 (a quarter of MCP_MAX_CONNECTIONS) and %d, got %d", maxLimit, s.MaxConnectionsPerIP))
	}
	pair := func(perUserVar string, perUser int, allVar string, all int) {
		if all < 1 || all > maxLimit {
			check(allVar, varErrorf(allVar, "must be between 1 and %d, got %d", maxLimit, all))
		}
		switch {
		case perUser < 1:
			check(perUserVar, varErrorf(perUserVar, "must be at least 1, got %d", perUser))
		case all >= 1 && perUser > all:
			check(perUserVar, varErrorf(perUserVar, "is %d, more than %s (%d)", perUser, allVar, all))
		}
	}
	pair("MCP_MAX_REQUESTS_PER_USER", s.MaxRequestsPerUser, "MCP_MAX_REQUESTS", s.MaxRequests)
	pair("STEPUP_MAX_WAITING_PER_USER", s.MaxStepUpWaitingPerUser, "STEPUP_MAX_WAITING", s.MaxStepUpWaiting)
}

// limitLogAttrs is the limits part of the start-up log line.
func (s LimitSettings) limitLogAttrs() []any {
	conns := any(s.MaxConnections)
	if s.MaxConnections == 0 {
		conns = "derived"
	}
	perIP := any(s.MaxConnectionsPerIP)
	if s.MaxConnectionsPerIP == 0 {
		perIP = "derived"
	}
	return []any{
		"MCP_MAX_CONNECTIONS", conns,
		"MCP_MAX_CONNECTIONS_PER_IP", perIP,
		"MCP_MAX_REQUESTS_PER_USER", s.MaxRequestsPerUser,
		"MCP_MAX_REQUESTS", s.MaxRequests,
		"STEPUP_MAX_WAITING_PER_USER", s.MaxStepUpWaitingPerUser,
		"STEPUP_MAX_WAITING", s.MaxStepUpWaiting,
	}
}

// applyLimits copies the request bounds into the MCP endpoint's config.
func (s LimitSettings) applyLimits(c *tools.Config) {
	c.MaxRequestsPerUser, c.MaxRequests = s.MaxRequestsPerUser, s.MaxRequests
	c.MaxStepUpWaitingPerUser, c.MaxStepUpWaiting = s.MaxStepUpWaitingPerUser, s.MaxStepUpWaiting
}

// Headroom kept out of the MCP listener's connections when their bound is
// derived from the file descriptor limit: the metrics listener and its
// scrapes, the database, the audit file, Duo and the authorization server
// need descriptors too, and must get them under a connection flood.
const (
	minFDHeadroom = 256
	// maxDerivedConnections caps a derived bound: each idle connection
	// holds a goroutine and buffers (some 10 KB), so a million would be
	// gigabytes. Set MCP_MAX_CONNECTIONS to go beyond.
	maxDerivedConnections = 16384
)

// connectionLimit is MCP_MAX_CONNECTIONS, or when 0 the soft file
// descriptor limit (which Go raises to the hard one at start) less a
// fifth of it, and at least minFDHeadroom, for everything else.
func (s LimitSettings) connectionLimit() int {
	if s.MaxConnections > 0 {
		return s.MaxConnections
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024 - minFDHeadroom
	}
	return derivedConnections(rl.Cur)
}

// connectionLimitPerIP is MCP_MAX_CONNECTIONS_PER_IP, or when 0 a
// quarter of the overall bound (at least 1); never more than that bound.
func (s LimitSettings) connectionLimitPerIP(overall int) int {
	if s.MaxConnectionsPerIP > 0 {
		return min(s.MaxConnectionsPerIP, overall)
	}
	return max(overall/4, 1)
}

// derivedConnections is the connection bound for a descriptor limit.
func derivedConnections(nofile uint64) int {
	headroom := max(nofile/5, minFDHeadroom)
	if nofile <= headroom+16 {
		return 16 // a tiny limit: serve a few, refuse the rest
	}
	return int(min(nofile-headroom, maxDerivedConnections))
}
