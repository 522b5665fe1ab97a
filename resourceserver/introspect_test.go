package resourceserver_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

func introspectionFixture(t *testing.T, mode resourceserver.Mode, mutate ...func(*resourceserver.Config)) *fixture {
	return newFixture(t, append([]func(*resourceserver.Config){func(c *resourceserver.Config) {
		c.Mode = mode
		c.Issuers[0].ClientID = rstest.DefaultIntrospectionClientID
		c.Issuers[0].ClientSecret = rstest.DefaultIntrospectionClientSecret
	}}, mutate...)...)
}

func TestIntrospectionOpaque(t *testing.T) {
	f := introspectionFixture(t, resourceserver.ModeIntrospection)
	ctx := context.Background()
	opaque := f.as.MintOpaque(f.claims("crm.contacts.read"))

	tok, err := f.rs.Verify(ctx, opaque)
	require.NoError(t, err)
	assert.Equal(t, "alice@example.com", tok.Subject)
	assert.Equal(t, []string{"crm.contacts.read"}, tok.Scopes)
	calls := f.as.IntrospectionCalls()

	// Cached for the introspection TTL: no second call.
	_, err = f.rs.Verify(ctx, opaque)
	require.NoError(t, err)
	assert.Equal(t, calls, f.as.IntrospectionCalls())

	// Revoked: still served from cache within the TTL, refused after it.
	f.as.Revoke(opaque)
	_, err = f.rs.Verify(ctx, opaque)
	require.NoError(t, err, "within the introspection cache TTL")
	f.clock.Advance(resourceserver.DefaultIntrospectionCacheTTL + time.Second)
	_, err = f.rs.Verify(ctx, opaque)
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
	assert.Contains(t, err.Error(), "inactive")

	_, err = f.rs.Verify(ctx, "never-issued")
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken, "active:false is a 401")
}

func TestIntrospectionAudienceRequired(t *testing.T) {
	f := introspectionFixture(t, resourceserver.ModeIntrospection)
	ctx := context.Background()
	_, err := f.rs.Verify(ctx, f.as.MintOpaque(with(f.claims(), "aud", "https://other.example.com/mcp")))
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
	_, err = f.rs.Verify(ctx, f.as.MintOpaque(with(f.claims(), "aud", nil)))
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken, "an active token that names no audience is refused")
	_, err = f.rs.Verify(ctx, f.as.MintOpaque(with(f.claims(), "sub", nil)))
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
}

func TestIntrospectionFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("wrong client secret is 503, not 401", func(t *testing.T) {
		f := introspectionFixture(t, resourceserver.ModeIntrospection, func(c *resourceserver.Config) {
			c.Issuers[0].ClientSecret = "wrong-secret-value"
		})
		_, err := f.rs.Verify(ctx, f.as.MintOpaque(f.claims()))
		require.ErrorIs(t, err, resourceserver.ErrUnavailable)
		assert.NotContains(t, err.Error(), "wrong-secret-value")
		assert.NotContains(t, f.logs.String(), "wrong-secret-value")
	})
	t.Run("endpoint down", func(t *testing.T) {
		f := introspectionFixture(t, resourceserver.ModeIntrospection)
		f.as.SetIntrospectionDown(true)
		opaque := f.as.MintOpaque(f.claims())
		h, got := f.protected(t)
		r := httptest.NewRequest("POST", "/mcp", nil)
		r.Header.Set("Authorization", "Bearer "+opaque)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		assert.Equal(t, 503, w.Code)
		assert.Equal(t, 0, got.calls)
		assert.NotContains(t, f.logs.String(), opaque)
	})
}

func TestJWTPlusIntrospection(t *testing.T) {
	f := introspectionFixture(t, resourceserver.ModeJWTIntrospection)
	ctx := context.Background()
	raw := f.as.Mint(f.claims("crm.contacts.read", "crm.deals.read"))
	tok, err := f.rs.Verify(ctx, raw)
	require.NoError(t, err)
	assert.Equal(t, []string{"crm.contacts.read", "crm.deals.read"}, tok.Scopes)
	assert.Equal(t, 1, f.as.IntrospectionCalls())

	// A bad signature is refused locally, without asking the server.
	_, err = f.rs.Verify(ctx, f.as.Mint(f.claims(), rstest.WithTamperedSignature()))
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
	assert.Equal(t, 1, f.as.IntrospectionCalls())

	// Revocation bites once the short cache entry ends.
	f.as.Revoke(raw)
	f.clock.Advance(resourceserver.DefaultIntrospectionCacheTTL + time.Second)
	_, err = f.rs.Verify(ctx, raw)
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
}

func TestIntrospectionDiscoveredEndpoint(t *testing.T) {
	// The endpoint comes from discovery; an explicit URL overrides it.
	f := introspectionFixture(t, resourceserver.ModeIntrospection, func(c *resourceserver.Config) {
		c.Issuers[0].IntrospectionURL = ""
	})
	_, err := f.rs.Verify(context.Background(), f.as.MintOpaque(f.claims()))
	require.NoError(t, err)

	g := introspectionFixture(t, resourceserver.ModeIntrospection, func(c *resourceserver.Config) {
		c.Issuers[0].IntrospectionURL = "http://127.0.0.1:1/nowhere"
	})
	_, err = g.rs.Verify(context.Background(), g.as.MintOpaque(g.claims()))
	require.ErrorIs(t, err, resourceserver.ErrUnavailable)
}

func TestJWTPlusIntrospectionNarrowsScopes(t *testing.T) {
	// An authorization server whose introspection answer grants less than
	// the JWT lists (a scope revoked since the token was issued).
	introspection := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != rstest.DefaultIntrospectionClientID || pass != rstest.DefaultIntrospectionClientSecret || r.PostFormValue("token") == "" {
			http.Error(w, `{"error":"invalid_client"}`, 401)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"active":true,"sub":"alice@example.com","scope":"crm.contacts.read"}`)
	}))
	defer introspection.Close()
	f := introspectionFixture(t, resourceserver.ModeJWTIntrospection, func(c *resourceserver.Config) {
		c.Issuers[0].IntrospectionURL = introspection.URL
	})
	tok, err := f.rs.Verify(context.Background(), f.as.Mint(f.claims("crm.contacts.read", "crm.deals.read")))
	require.NoError(t, err)
	assert.Equal(t, []string{"crm.contacts.read"}, tok.Scopes, "the revoked scope is gone")

	_, err = f.rs.Verify(context.Background(), f.as.Mint(with(f.claims("crm.contacts.read"), "sub", "mallory")))
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken, "an answer about another subject is refused")
}

func TestIntrospectionDoesNotFollowRedirects(t *testing.T) {
	leaked := make(chan string, 1)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked <- r.PostFormValue("token")
		io.WriteString(w, `{"active":true}`)
	}))
	defer elsewhere.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL, http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	f := introspectionFixture(t, resourceserver.ModeIntrospection, func(c *resourceserver.Config) {
		c.Issuers[0].IntrospectionURL = redirector.URL
	})
	_, err := f.rs.Verify(context.Background(), f.as.MintOpaque(f.claims()))
	require.ErrorIs(t, err, resourceserver.ErrUnavailable)
	select {
	case <-leaked:
		t.Fatal("the token followed a redirect to another origin")
	default:
	}
}
