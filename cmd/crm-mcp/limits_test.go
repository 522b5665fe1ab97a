package main

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/crm-mcp/crm-mcp/tools"
)

func TestLimitDefaultsFollowTools(t *testing.T) {
	c, err := loadConfig(minimalEnv())
	if !assert.NoError(t, err) {
		return
	}
	assert.Equal(t, 0, c.MaxConnections, "derived")
	assert.Equal(t, 0, c.MaxConnectionsPerIP, "derived")
	assert.Equal(t, 192, c.connectionLimitPerIP(768), "a quarter")
	assert.Equal(t, 1, c.connectionLimitPerIP(3), "at least one")
	c.MaxConnectionsPerIP = 1000
	assert.Equal(t, 768, c.connectionLimitPerIP(768), "never more than the overall bound")
	assert.Equal(t, tools.DefaultMaxRequestsPerUser, c.MaxRequestsPerUser, "the envDefault must follow tools")
	assert.Equal(t, tools.DefaultMaxRequests, c.MaxRequests, "the envDefault must follow tools")
	assert.Equal(t, tools.DefaultMaxStepUpWaitingPerUser, c.MaxStepUpWaitingPerUser, "the envDefault must follow tools")
	assert.Equal(t, tools.DefaultMaxStepUpWaiting, c.MaxStepUpWaiting, "the envDefault must follow tools")
}

func TestLimitValidation(t *testing.T) {
	for _, tt := range []struct {
		name, variable, value, want string
	}{
		{"negative connections", "MCP_MAX_CONNECTIONS", "-1", "must be between 0"},
		{"negative connections per IP", "MCP_MAX_CONNECTIONS_PER_IP", "-1", "must be between 0"},
		{"zero requests", "MCP_MAX_REQUESTS", "0", "must be between 1"},
		{"zero per user", "MCP_MAX_REQUESTS_PER_USER", "0", "must be at least 1"},
		{"per user above all", "MCP_MAX_REQUESTS_PER_USER", "600", "more than MCP_MAX_REQUESTS"},
		{"waiting per user above all", "STEPUP_MAX_WAITING_PER_USER", "300", "more than STEPUP_MAX_WAITING"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadConfig(with(minimalEnv(), tt.variable, tt.value))
			if assert.Error(t, err) {
				assert.Contains(t, err.Error(), tt.variable+": ")
				assert.Contains(t, err.Error(), tt.want)
			}
		})
	}
}
