package resourceserver_test

import (
	"fmt"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// BenchmarkInactiveToken sends 1,000 requests carrying one inactive token
// through the middleware, by c concurrent clients, and reports how many
// introspection calls reached the authorization server (rstest's real
// endpoint) per 1,000 requests. Each iteration uses a new token, so it
// starts with nothing remembered.
func BenchmarkInactiveToken(b *testing.B) {
	for _, mode := range []resourceserver.Mode{resourceserver.ModeIntrospection, resourceserver.ModeJWTIntrospection} {
		for _, c := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/c=%d", mode, c), func(b *testing.B) {
				f := newFixture(b, func(cfg *resourceserver.Config) {
					cfg.Mode = mode
					cfg.Issuers[0].ClientID = rstest.DefaultIntrospectionClientID
					cfg.Issuers[0].ClientSecret = rstest.DefaultIntrospectionClientSecret
				})
				h := f.rs.Middleware(httpOK)
				before := f.as.IntrospectionCalls()
				iter := 0
				for b.Loop() {
					iter++
					raw := fmt.Sprintf("inactive-opaque-token-%d", iter)
					if mode == resourceserver.ModeJWTIntrospection {
						raw = f.as.Mint(with(f.claims("crm.contacts.read"), "jti", raw))
						f.as.Revoke(raw)
					}
					var left atomic.Int64
					left.Store(1000)
					var wg sync.WaitGroup
					for range c {
						wg.Go(func() {
							for left.Add(-1) >= 0 {
								r := httptest.NewRequest("POST", "/mcp", nil)
								r.Header.Set("Authorization", "Bearer "+raw)
								w := httptest.NewRecorder()
								h.ServeHTTP(w, r)
								if w.Code != 401 {
									b.Errorf("got HTTP %d, want 401", w.Code)
									return
								}
							}
						})
					}
					wg.Wait()
				}
				b.ReportMetric(float64(f.as.IntrospectionCalls()-before)/float64(iter), "introspections/1000req")
			})
		}
	}
}
