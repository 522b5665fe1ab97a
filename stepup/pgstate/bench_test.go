package pgstate_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/stepup"
	"github.com/crm-mcp/crm-mcp/stepup/duotest"
)

// BenchmarkGuard measures the decisions every sensitive call pays for
// without a push: a call covered by a grant, and the Blocked check. The
// in-memory State is the baseline; Postgres adds a transaction (advisory
// lock, read, no write) on a loopback connection. The test cluster runs
// with fsync off, so these are figures for reads, not for durable writes.
func BenchmarkGuard(b *testing.B) {
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			srv, a, _ := twoReplicas(b, be, stepup.Config{})
			srv.Script("alice", duotest.Approve)
			req := request("alice", "defence contractors")
			require.NoError(b, a.guard.Approve(b.Context(), req, nil))
			b.Run("ApproveByGrant", func(b *testing.B) {
				for b.Loop() {
					if err := a.guard.Approve(b.Context(), req, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("Blocked", func(b *testing.B) {
				for b.Loop() {
					if err := a.guard.BlockedContext(b.Context(), "alice"); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
