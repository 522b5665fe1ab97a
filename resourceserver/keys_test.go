package resourceserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

func TestKeyRotation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, err := f.rs.Verify(ctx, f.as.Mint(f.claims()))
	require.NoError(t, err)
	before := f.as.JWKSFetches()

	// A token signed with a key published after our last fetch: the unknown
	// kid triggers one refetch, which finds it.
	newKID := f.as.Rotate("RS256")
	tok := f.as.Mint(f.claims())
	_, err = f.rs.Verify(ctx, tok)
	require.NoError(t, err)
	assert.Equal(t, before+1, f.as.JWKSFetches())
	assert.Equal(t, newKID, f.as.KID("RS256"))

	// Another unknown kid within the cooldown costs no fetch; after it, one.
	_, err = f.rs.Verify(ctx, f.as.Mint(f.claims(), rstest.WithHeader("kid", "unknown-1")))
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
	assert.Equal(t, before+1, f.as.JWKSFetches(), "within the cooldown")
	f.clock.Advance(resourceserver.DefaultKeyMissCooldown + time.Second)
	_, err = f.rs.Verify(ctx, f.as.Mint(f.claims(), rstest.WithHeader("kid", "unknown-2")))
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
	assert.Equal(t, before+2, f.as.JWKSFetches(), "an unknown kid after the cooldown refetches once")
}

func TestRetiredKeyStopsVerifying(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	oldTok := f.as.Mint(f.claims())
	oldKID := f.as.KID("RS256")
	f.as.Rotate("RS256")
	f.as.Retire(oldKID)
	// A fresh resource server (no cached keys or tokens) sees the retired
	// key gone.
	f2 := newFixtureFor(t, f.as)
	_, err := f2.rs.Verify(ctx, oldTok)
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
	_, err = f2.rs.Verify(ctx, f.as.Mint(f.claims()))
	require.NoError(t, err)
}

func TestUnknownKIDStormCostsOneFetch(t *testing.T) {
	f := newFixture(t)
	before := f.as.JWKSFetches()
	var wg sync.WaitGroup
	tokens := make([]string, 1000)
	for i := range tokens {
		tokens[i] = f.as.Mint(f.claims(), rstest.WithHeader("kid", fmt.Sprintf("invented-%d", i)))
	}
	errs := make([]error, len(tokens))
	for i := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.rs.Verify(context.Background(), tokens[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
	}
	assert.LessOrEqual(t, f.as.JWKSFetches()-before, 1, "1,000 invented kids within one cooldown may cost one fetch")

	// After the cooldown, one more fetch is allowed, and only one.
	f.clock.Advance(resourceserver.DefaultKeyMissCooldown)
	for i := range 100 {
		_, err := f.rs.Verify(context.Background(), f.as.Mint(f.claims(), rstest.WithHeader("kid", fmt.Sprintf("again-%d", i))))
		require.Error(t, err)
	}
	assert.Equal(t, 2, f.as.JWKSFetches()-before, "exactly one more fetch after the cooldown")
}

func TestJWKSDownStaleKeysServe(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	require.NoError(t, f.rs.Ready())

	f.as.SetJWKSDown(true)
	err := f.rs.Refresh(ctx)
	require.Error(t, err, "the refresh fails while the JWKS is down")

	// The last good keys still verify, and readiness says they are stale.
	_, err = f.rs.Verify(ctx, f.as.Mint(f.claims()))
	require.NoError(t, err)
	require.NoError(t, f.rs.Ready(), "stale but usable keys are ready")
	st := f.rs.Status()
	require.Len(t, st, 1)
	assert.True(t, st[0].Stale)
	assert.True(t, st[0].Usable)
	assert.Contains(t, st[0].LastError, "503")

	// Past the maximum age the keys are no longer trusted: fail closed.
	f.clock.Advance(resourceserver.DefaultKeyMaxAge + time.Minute)
	_, err = f.rs.Verify(ctx, f.as.Mint(f.claims()))
	require.ErrorIs(t, err, resourceserver.ErrUnavailable)
	require.Error(t, f.rs.Ready())
	assert.False(t, f.rs.Status()[0].Usable)

	// The endpoint comes back; the next fetch restores service.
	f.as.SetJWKSDown(false)
	require.NoError(t, f.rs.Refresh(ctx))
	_, err = f.rs.Verify(ctx, f.as.Mint(f.claims()))
	require.NoError(t, err)
	require.NoError(t, f.rs.Ready())
	assert.False(t, f.rs.Status()[0].Stale)
}

func TestUnavailableIs503(t *testing.T) {
	as := rstest.NewServer()
	defer as.Close()
	as.KID("RS256")
	as.SetMetadataDown(true)
	f := &fixture{as: as, logs: &syncBuffer{}, clock: &clock{now: time.Now()}, resource: "http://127.0.0.1:9/mcp"}
	rs, err := resourceserver.New(resourceserver.Config{Resource: f.resource, Issuers: []resourceserver.Issuer{{URL: as.Issuer()}}, Logger: discard()})
	require.NoError(t, err)
	defer rs.Close()
	f.rs = rs
	require.Error(t, rs.Ready())
	h, got := f.protected(t)
	r := httptest.NewRequest("POST", "/mcp", nil)
	r.Header.Set("Authorization", "Bearer "+as.Mint(f.claims()))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	assert.Equal(t, 503, w.Code)
	assert.Empty(t, w.Header().Get("WWW-Authenticate"), "no challenge: the client's token may well be good")
	assert.Equal(t, 0, got.calls)
}

func TestDiscovery(t *testing.T) {
	ctx := context.Background()
	t.Run("RFC 8414 first", func(t *testing.T) {
		f := newFixture(t)
		_, err := f.rs.Verify(ctx, f.as.Mint(f.claims()))
		require.NoError(t, err)
	})
	t.Run("OpenID fallback", func(t *testing.T) {
		as := rstest.NewServer()
		defer as.Close()
		as.DisableRFC8414()
		f := newFixtureFor(t, as)
		_, err := f.rs.Verify(ctx, as.Mint(f.claims()))
		require.NoError(t, err)
	})
	t.Run("explicit JWKS URL needs no discovery", func(t *testing.T) {
		as := rstest.NewServer()
		defer as.Close()
		as.SetMetadataDown(true)
		f := newFixtureFor(t, as, func(c *resourceserver.Config) { c.Issuers[0].JWKSURL = as.JWKSURL() })
		_, err := f.rs.Verify(ctx, as.Mint(f.claims()))
		require.NoError(t, err)
		assert.Equal(t, 0, as.MetadataFetches())
	})
	t.Run("issuer mismatch refused", func(t *testing.T) {
		// The documents name another issuer than the one configured.
		fake := rstest.NewAuthServer("http://127.0.0.1:1/oauth2/test")
		fake.KID("RS256")
		srv := httptest.NewServer(fake)
		defer srv.Close()
		rs, err := resourceserver.New(resourceserver.Config{Resource: "http://127.0.0.1:9/mcp", Issuers: []resourceserver.Issuer{{URL: srv.URL + "/oauth2/test"}}, Logger: discard()})
		require.NoError(t, err)
		defer rs.Close()
		err = rs.Refresh(ctx)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "does not match")
	})
}

func TestConcurrentVerify(t *testing.T) {
	f := newFixture(t, func(c *resourceserver.Config) { c.CacheSize = 16 })
	tokens := make([]string, 64)
	for i := range tokens {
		tokens[i] = f.as.Mint(with(f.claims("crm.contacts.read"), "sub", fmt.Sprintf("user-%d", i)))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := (g*31 + i) % len(tokens)
				tok, err := f.rs.Verify(context.Background(), tokens[k])
				if assert.NoError(t, err) {
					assert.Equal(t, fmt.Sprintf("user-%d", k), tok.Subject)
				}
			}
		}()
	}
	wg.Wait()
}

func TestCacheEntryDiesWithToken(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := with(f.claims(), "exp", f.clock.Now().Add(2*time.Minute).Unix())
	tok := f.as.Mint(c)
	_, err := f.rs.Verify(ctx, tok)
	require.NoError(t, err)
	f.clock.Advance(2*time.Minute + resourceserver.DefaultLeeway + time.Second)
	_, err = f.rs.Verify(ctx, tok)
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken, "a cached token must not outlive its exp")
}

func TestCacheTTLBoundsRemovedKey(t *testing.T) {
	// Within the TTL a cached token is not re-verified; past it, a key
	// that was withdrawn stops the token.
	f := newFixture(t, func(c *resourceserver.Config) { c.CacheTTL = time.Minute })
	ctx := context.Background()
	tok := f.as.Mint(f.claims())
	_, err := f.rs.Verify(ctx, tok)
	require.NoError(t, err)
	oldKID := f.as.KID("RS256")
	f.as.Rotate("RS256")
	f.as.Retire(oldKID)
	require.NoError(t, f.rs.Refresh(ctx))
	_, err = f.rs.Verify(ctx, tok)
	require.NoError(t, err, "still cached")
	f.clock.Advance(time.Minute + time.Second)
	_, err = f.rs.Verify(ctx, tok)
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
}

func newFixtureFor(t testing.TB, as *rstest.Server, mutate ...func(*resourceserver.Config)) *fixture {
	t.Helper()
	as.KID("RS256")
	f := &fixture{as: as, logs: &syncBuffer{}, clock: &clock{now: time.Now()}, resource: "http://127.0.0.1:9/mcp"}
	cfg := resourceserver.Config{
		Resource: f.resource,
		Issuers:  []resourceserver.Issuer{{URL: as.Issuer()}},
		Logger:   discard(),
		Now:      f.clock.Now,
	}
	for _, m := range mutate {
		m(&cfg)
	}
	rs, err := resourceserver.New(cfg)
	require.NoError(t, err)
	t.Cleanup(rs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, rs.Refresh(ctx))
	f.rs = rs
	return f
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestKeyAlgAndUseMustAgree(t *testing.T) {
	// A JWKS whose keys declare another alg or an encryption use: tokens
	// signed with those keys are refused even though the signature is fine.
	as := rstest.NewServer()
	defer as.Close()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	set := jwk.NewSet()
	for _, k := range []struct{ kid, alg, use string }{
		{"enc-key", "RS256", "enc"},
		{"ps-key", "PS256", "sig"},
		{"good-key", "RS256", "sig"},
		{"bare-key", "", ""},
	} {
		pub, err := jwk.FromRaw(&priv.PublicKey)
		require.NoError(t, err)
		require.NoError(t, pub.Set(jwk.KeyIDKey, k.kid))
		if k.alg != "" {
			require.NoError(t, pub.Set(jwk.AlgorithmKey, k.alg))
		}
		if k.use != "" {
			require.NoError(t, pub.Set(jwk.KeyUsageKey, k.use))
		}
		require.NoError(t, set.AddKey(pub))
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(set)
	}))
	defer jwks.Close()
	f := newFixtureFor(t, as, func(c *resourceserver.Config) { c.Issuers[0].JWKSURL = jwks.URL })

	for kid, wantOK := range map[string]bool{"enc-key": false, "ps-key": false, "good-key": true, "bare-key": true} {
		_, err := f.rs.Verify(context.Background(), as.Mint(f.claims(), rstest.WithKey(priv, kid)))
		if wantOK {
			assert.NoError(t, err, kid)
		} else {
			assert.ErrorIs(t, err, resourceserver.ErrInvalidToken, kid)
		}
	}
}

func TestKeysSharingAKIDAcrossTypes(t *testing.T) {
	// RFC 7517 section 4.5 lets keys of different types share a kid.
	as := rstest.NewServer()
	defer as.Close()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	set := jwk.NewSet()
	for _, raw := range []any{&rsaKey.PublicKey, &ecKey.PublicKey} {
		k, err := jwk.FromRaw(raw)
		require.NoError(t, err)
		require.NoError(t, k.Set(jwk.KeyIDKey, "k1"))
		require.NoError(t, set.AddKey(k))
	}
	jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(set)
	}))
	defer jwks.Close()
	f := newFixtureFor(t, as, func(c *resourceserver.Config) { c.Issuers[0].JWKSURL = jwks.URL })
	for _, key := range []any{rsaKey, ecKey} {
		_, err := f.rs.Verify(context.Background(), as.Mint(f.claims(), rstest.WithKey(key, "k1")))
		assert.NoError(t, err, "%T", key)
	}
}
