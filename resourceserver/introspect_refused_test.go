package resourceserver_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver"
)

// An inactive token is remembered for a few seconds: a client that keeps
// sending it costs one introspection, not one per request, in both
// introspection modes. The hook hears only the calls really made.
func TestIntrospectionRemembersInactive(t *testing.T) {
	for _, mode := range []resourceserver.Mode{resourceserver.ModeIntrospection, resourceserver.ModeJWTIntrospection} {
		t.Run(string(mode), func(t *testing.T) {
			var hooked atomic.Int64
			f := introspectionFixture(t, mode, func(c *resourceserver.Config) {
				c.OnIntrospect = func(time.Duration, error) { hooked.Add(1) }
			})
			raw := "never-issued-opaque-token"
			if mode == resourceserver.ModeJWTIntrospection {
				raw = f.as.Mint(f.claims("crm.contacts.read"))
				f.as.Revoke(raw) // signed and current, but revoked
			}
			h, got := f.protected(t)
			for i := range 50 {
				r := httptest.NewRequest("POST", "/mcp", nil)
				r.Header.Set("Authorization", "Bearer "+raw)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				require.Equal(t, 401, w.Code, "request %d", i)
			}
			assert.Equal(t, 0, got.calls)
			assert.Equal(t, 1, f.as.IntrospectionCalls(), "50 requests, one introspection")
			assert.EqualValues(t, 1, hooked.Load())

			f.clock.Advance(resourceserver.IntrospectionRefusalTTL)
			_, err := f.rs.Verify(t.Context(), raw)
			require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
			assert.Equal(t, 2, f.as.IntrospectionCalls(), "asked again once the refusal is forgotten")
			assert.NotContains(t, f.logs.String(), raw)
		})
	}
}

// A failed introspection is a 503 each time, remembered only briefly: a
// flood with one token costs one call per second while the endpoint is
// down, and the token works again a second after it is back.
func TestIntrospectionRemembersFailureBriefly(t *testing.T) {
	f := introspectionFixture(t, resourceserver.ModeIntrospection)
	opaque := f.as.MintOpaque(f.claims("crm.contacts.read"))
	f.as.SetIntrospectionDown(true)
	for range 20 {
		_, err := f.rs.Verify(t.Context(), opaque)
		require.ErrorIs(t, err, resourceserver.ErrUnavailable, "a failure is never a 401")
	}
	assert.Equal(t, 1, f.as.IntrospectionCalls())

	f.as.SetIntrospectionDown(false)
	f.clock.Advance(resourceserver.IntrospectionFailureTTL)
	tok, err := f.rs.Verify(t.Context(), opaque)
	require.NoError(t, err, "no longer outage than the failure TTL")
	assert.Equal(t, "alice@example.com", tok.Subject)
	assert.Equal(t, 2, f.as.IntrospectionCalls())
	assert.LessOrEqual(t, resourceserver.IntrospectionFailureTTL, 2*time.Second, "a failure must stay short")
}

// slowIntrospection is an introspection endpoint that answers answer once
// release is closed, counting the requests it received.
func slowIntrospection(t *testing.T, answer string) (url string, calls *atomic.Int64, arrived <-chan struct{}, release chan struct{}) {
	calls = new(atomic.Int64)
	first := make(chan struct{})
	var once sync.Once
	release = make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		once.Do(func() { close(first) })
		<-release
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, calls, first, release
}

// Concurrent requests with one token share one introspection, and a caller
// who goes away does not fail the others waiting on the same answer.
func TestConcurrentIntrospectionsShareOne(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer string
		check  func(t *testing.T, tok *resourceserver.Token, err error)
	}{
		{"inactive", `{"active":false}`, func(t *testing.T, _ *resourceserver.Token, err error) {
			assert.ErrorIs(t, err, resourceserver.ErrInvalidToken)
		}},
		{"active", `{"active":true,"sub":"alice@example.com","aud":"http://127.0.0.1:9/mcp","scope":"crm.contacts.read"}`,
			func(t *testing.T, tok *resourceserver.Token, err error) {
				if assert.NoError(t, err) {
					assert.Equal(t, "alice@example.com", tok.Subject)
					assert.NotEmpty(t, tok.Fingerprint)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, calls, arrived, release := slowIntrospection(t, tc.answer)
			f := introspectionFixture(t, resourceserver.ModeIntrospection, func(c *resourceserver.Config) {
				c.Issuers[0].IntrospectionURL = url
			})
			const raw = "one-opaque-token"

			// The first caller leaves while its introspection is under way.
			ctx, cancel := context.WithCancel(t.Context())
			gone := make(chan error, 1)
			go func() {
				_, err := f.rs.Verify(ctx, raw)
				gone <- err
			}()
			<-arrived
			cancel()
			require.ErrorIs(t, <-gone, resourceserver.ErrUnavailable)

			var wg sync.WaitGroup
			for range 64 {
				wg.Go(func() {
					tok, err := f.rs.Verify(t.Context(), raw)
					tc.check(t, tok, err)
				})
			}
			time.Sleep(100 * time.Millisecond) // let them all join
			close(release)
			wg.Wait()
			assert.EqualValues(t, 1, calls.Load(), "65 callers, one introspection")
		})
	}
}
