package resourceserver_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver"
	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

const resourcePath = "/mcp"

// fixture is an authorization server and a resource server that trusts it.
type fixture struct {
	as       *rstest.Server
	rs       *resourceserver.Server
	resource string
	logs     *syncBuffer
	clock    *clock
}

// syncBuffer is a log sink safe for the background key refresh.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// clock is a settable clock for expiry, cache and key-age tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newFixture(t testing.TB, mutate ...func(*resourceserver.Config)) *fixture {
	t.Helper()
	as := rstest.NewServer()
	t.Cleanup(as.Close)
	for _, alg := range []string{"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA"} {
		as.KID(alg) // publish a key of every family before the first fetch
	}
	f := &fixture{as: as, logs: &syncBuffer{}, clock: &clock{now: time.Now()}}
	f.resource = "http://127.0.0.1:9" + resourcePath // the resource URL is only a name here
	cfg := resourceserver.Config{
		Resource:        f.resource,
		Issuers:         []resourceserver.Issuer{{URL: as.Issuer(), ClientID: "rs-client", ClientSecret: "rs-secret"}},
		ScopesSupported: []string{"crm.contacts.read"},
		ResourceName:    "CRM",
		Logger:          slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:             f.clock.Now,
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

// claims are valid claims for the fixture's resource at the fixture's time.
func (f *fixture) claims(scopes ...string) map[string]any {
	now := f.clock.Now()
	return map[string]any{
		"iss":       f.as.Issuer(),
		"sub":       "alice@example.com",
		"aud":       f.resource,
		"scope":     strings.Join(scopes, " "),
		"iat":       now.Unix(),
		"exp":       now.Add(time.Hour).Unix(),
		"jti":       "jti-1",
		"client_id": "https://client.example.com/metadata.json",
	}
}

func with(c map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			delete(out, k)
		} else {
			out[k] = kv[i+1]
		}
	}
	return out
}

func TestVerify(t *testing.T) {
	f := newFixture(t, func(c *resourceserver.Config) {
		c.ExtraAudiences = []string{"duo-relying-party"}
	})
	now := f.clock.Now()
	valid := f.claims("crm.contacts.read")
	attackerRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	attackerEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	attackerJWK, err := jwk.PublicKeyOf(&attackerRSA.PublicKey)
	require.NoError(t, err)

	tests := []struct {
		name   string
		claims map[string]any
		opts   []rstest.MintOption
		ok     bool
		reason string // substring of the logged reason on failure
	}{
		{name: "RS256", claims: valid, ok: true},
		{name: "RS384", claims: valid, opts: []rstest.MintOption{rstest.WithAlg("RS384")}, ok: true},
		{name: "RS512", claims: valid, opts: []rstest.MintOption{rstest.WithAlg("RS512")}, ok: true},
		{name: "PS256", claims: valid, opts: []rstest.MintOption{rstest.WithAlg("PS256")}, ok: true},
		{name: "ES256", claims: valid, opts: []rstest.MintOption{rstest.WithAlg("ES256")}, ok: true},
		{name: "ES384", claims: valid, opts: []rstest.MintOption{rstest.WithAlg("ES384")}, ok: true},
		{name: "ES512", claims: valid, opts: []rstest.MintOption{rstest.WithAlg("ES512")}, ok: true},
		{name: "EdDSA", claims: valid, opts: []rstest.MintOption{rstest.WithAlg("EdDSA")}, ok: true},
		{name: "no kid tries every key", claims: valid, opts: []rstest.MintOption{rstest.WithHeader("kid", nil)}, ok: true},
		{name: "aud array", claims: with(valid, "aud", []any{"other", f.resource}), ok: true},
		{name: "aud host case", claims: with(valid, "aud", "HTTP://127.0.0.1:9/mcp"), ok: true},
		{name: "extra audience", claims: with(valid, "aud", "duo-relying-party"), ok: true},
		{name: "scp array", claims: with(valid, "scope", nil, "scp", []any{"crm.contacts.read"}), ok: true},
		{name: "nbf within leeway", claims: with(valid, "nbf", now.Add(20*time.Second).Unix()), ok: true},
		{name: "expired within leeway", claims: with(valid, "exp", now.Add(-20*time.Second).Unix()), ok: true},
		{name: "typ at+jwt", claims: valid, opts: []rstest.MintOption{rstest.WithHeader("typ", "at+jwt")}, ok: true},

		{name: "expired", claims: with(valid, "exp", now.Add(-time.Minute).Unix()), reason: "expired"},
		{name: "no exp", claims: with(valid, "exp", nil), reason: "exp is missing"},
		{name: "exp string", claims: with(valid, "exp", "tomorrow"), reason: "exp is missing"},
		{name: "nbf future", claims: with(valid, "nbf", now.Add(time.Minute).Unix()), reason: "not before"},
		{name: "iat future", claims: with(valid, "iat", now.Add(time.Minute).Unix()), reason: "issued in the future"},
		{name: "no sub", claims: with(valid, "sub", nil), reason: "sub is missing"},
		{name: "empty sub", claims: with(valid, "sub", ""), reason: "sub is missing"},
		{name: "no aud", claims: with(valid, "aud", nil), reason: "aud is missing"},
		{name: "other resource", claims: with(valid, "aud", "http://127.0.0.1:9/other"), reason: "does not name resource"},
		{name: "aud trailing slash", claims: with(valid, "aud", f.resource+"/"), reason: "does not name resource"},
		{name: "aud number", claims: with(valid, "aud", 42), reason: "aud is missing or malformed"},
		{name: "unknown issuer", claims: with(valid, "iss", "https://evil.example.com"), reason: "not configured"},
		{name: "issuer trailing slash", claims: with(valid, "iss", f.as.Issuer()+"/"), reason: "not configured"},
		{name: "no issuer", claims: with(valid, "iss", nil), reason: "not configured"},
		{name: "scope malformed", claims: with(valid, "scope", 7), reason: "scope or scp is malformed"},
		{name: "alg none", claims: valid, opts: []rstest.MintOption{rstest.WithUnsigned()}, reason: "unsigned"},
		{name: "HS256", claims: valid, opts: []rstest.MintOption{rstest.WithHMAC([]byte("secret-known-to-attacker-0123456789"))}, reason: "symmetric"},
		{name: "tampered", claims: valid, opts: []rstest.MintOption{rstest.WithTamperedSignature()}, reason: "does not verify"},
		{name: "attacker key, real kid", claims: valid, opts: []rstest.MintOption{rstest.WithKey(attackerRSA, f.as.KID("RS256"))}, reason: "does not verify"},
		{name: "attacker key, unknown kid", claims: valid, opts: []rstest.MintOption{rstest.WithKey(attackerEC, "evil")}, reason: "unknown kid"},
		{name: "embedded jwk not trusted", claims: valid, opts: []rstest.MintOption{rstest.WithKey(attackerRSA, ""), rstest.WithHeader("jwk", attackerJWK)}, reason: "does not verify"},
		{name: "jku not followed", claims: valid, opts: []rstest.MintOption{rstest.WithKey(attackerRSA, "evil2"), rstest.WithHeader("jku", "http://127.0.0.1:1/jwks")}, reason: "unknown kid"},
		{name: "crit", claims: valid, opts: []rstest.MintOption{rstest.WithHeader("crit", []string{"exp"}), rstest.WithHeader("exp", 1)}, reason: "crit"},
		{name: "b64 false", claims: valid, opts: []rstest.MintOption{rstest.WithHeader("b64", false)}, reason: "b64"},
		{name: "RSA key claims ES256", claims: valid, opts: []rstest.MintOption{rstest.WithAlg("ES256"), rstest.WithHeader("kid", f.as.KID("RS256"))}, reason: "does not verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := f.as.Mint(tt.claims, tt.opts...)
			tok, err := f.rs.Verify(context.Background(), raw)
			if tt.ok {
				require.NoError(t, err)
				assert.Equal(t, "alice@example.com", tok.Subject)
				assert.Equal(t, f.as.Issuer(), tok.Issuer)
				assert.Equal(t, []string{"crm.contacts.read"}, tok.Scopes)
				return
			}
			require.Error(t, err, "token was accepted")
			assert.ErrorIs(t, err, resourceserver.ErrInvalidToken)
			assert.Contains(t, err.Error(), tt.reason)
			assert.NotContains(t, err.Error(), raw, "the error must not carry the token")
		})
	}
}

func TestVerifyResult(t *testing.T) {
	f := newFixture(t)
	c := f.claims("crm.contacts.read", "crm.deals.read")
	raw := f.as.Mint(c)
	tok, err := f.rs.Verify(context.Background(), raw)
	require.NoError(t, err)
	assert.Equal(t, "https://client.example.com/metadata.json", tok.ClientID, "client_id is opaque, even as a URL")
	assert.Equal(t, "jti-1", tok.JTI)
	assert.Equal(t, time.Unix(c["exp"].(int64), 0), tok.Expiry)
	assert.Equal(t, []string{"crm.contacts.read", "crm.deals.read"}, tok.Scopes)
	assert.Equal(t, "alice@example.com", tok.Claims["sub"])

	ti := tok.TokenInfo()
	assert.Equal(t, f.as.Issuer()+" alice@example.com", ti.UserID)
	assert.Equal(t, tok.Scopes, ti.Scopes)

	azp := f.as.Mint(with(c, "client_id", nil, "azp", "client-42"))
	tok, err = f.rs.Verify(context.Background(), azp)
	require.NoError(t, err)
	assert.Equal(t, "client-42", tok.ClientID, "azp when client_id is absent")
}

func TestVerifyAlgorithmAllowlist(t *testing.T) {
	f := newFixture(t, func(c *resourceserver.Config) { c.Issuers[0].Algorithms = []string{"ES256"} })
	_, err := f.rs.Verify(context.Background(), f.as.Mint(f.claims(), rstest.WithAlg("ES256")))
	require.NoError(t, err)
	_, err = f.rs.Verify(context.Background(), f.as.Mint(f.claims(), rstest.WithAlg("RS256")))
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
	assert.Contains(t, err.Error(), "not allowed")
}

func TestVerifyMultipleIssuers(t *testing.T) {
	other := rstest.NewServer()
	defer other.Close()
	other.KID("RS256")
	f := newFixture(t, func(c *resourceserver.Config) {
		c.Issuers = append(c.Issuers, resourceserver.Issuer{URL: other.Issuer()})
	})
	_, err := f.rs.Verify(context.Background(), f.as.Mint(f.claims()))
	require.NoError(t, err)
	tok, err := f.rs.Verify(context.Background(), other.Mint(with(f.claims(), "iss", other.Issuer())))
	require.NoError(t, err)
	assert.Equal(t, other.Issuer(), tok.Issuer)

	// Signed by the second issuer but claiming to be the first: the iss
	// selects the first issuer's keys, which do not verify it.
	_, err = f.rs.Verify(context.Background(), other.Mint(f.claims(), rstest.WithHeader("kid", f.as.KID("RS256"))))
	require.ErrorIs(t, err, resourceserver.ErrInvalidToken)
}

func TestConfigErrors(t *testing.T) {
	good := func() resourceserver.Config {
		return resourceserver.Config{
			Resource: "https://crm.example.com/mcp",
			Issuers:  []resourceserver.Issuer{{URL: "https://sso.example.com/oauth2/x"}},
			Logger:   slog.New(slog.DiscardHandler),
		}
	}
	tests := []struct {
		name   string
		mutate func(*resourceserver.Config)
		field  string // the FieldError's Field
		want   string // and a piece of its explanation
	}{
		{"no resource", func(c *resourceserver.Config) { c.Resource = "" }, "Resource", "not an absolute URL"},
		{"relative resource", func(c *resourceserver.Config) { c.Resource = "/mcp" }, "Resource", "not an absolute URL"},
		{"resource with fragment", func(c *resourceserver.Config) { c.Resource = "https://crm.example.com/mcp#x" }, "Resource", "fragment"},
		{"resource with empty fragment", func(c *resourceserver.Config) { c.Resource = "https://crm.example.com/mcp#" }, "Resource", "fragment"},
		{"resource with query", func(c *resourceserver.Config) { c.Resource = "https://crm.example.com/mcp?a=1" }, "Resource", "query"},
		{"plain http resource", func(c *resourceserver.Config) { c.Resource = "http://crm.example.com/mcp" }, "Resource", "plain HTTP"},
		{"ftp resource", func(c *resourceserver.Config) { c.Resource = "ftp://crm.example.com/mcp" }, "Resource", "must use https"},
		{"resource with user", func(c *resourceserver.Config) { c.Resource = "https://u@crm.example.com/mcp" }, "Resource", "user information"},
		{"no issuer", func(c *resourceserver.Config) { c.Issuers = nil }, "Issuers", "at least one issuer"},
		{"http issuer", func(c *resourceserver.Config) { c.Issuers[0].URL = "http://sso.example.com/oauth2/x" }, "Issuers[0].URL", "plain HTTP"},
		{"issuer with user information", func(c *resourceserver.Config) { c.Issuers[0].URL = "https://admin:pw@sso.example.com/oauth2/x" }, "Issuers[0].URL", "user information"},
		{"issuer with query", func(c *resourceserver.Config) { c.Issuers[0].URL = "https://sso.example.com/oauth2/x?a" }, "Issuers[0].URL", "query"},
		{"http jwks", func(c *resourceserver.Config) { c.Issuers[0].JWKSURL = "http://sso.example.com/jwks" }, "Issuers[0].JWKSURL", "plain HTTP"},
		{"http introspection", func(c *resourceserver.Config) { c.Issuers[0].IntrospectionURL = "http://sso.example.com/i" }, "Issuers[0].IntrospectionURL", "plain HTTP"},
		{"HS256 allowed", func(c *resourceserver.Config) { c.Issuers[0].Algorithms = []string{"RS256", "HS256"} }, "Issuers[0].Algorithms[1]", "not allowed"},
		{"none allowed", func(c *resourceserver.Config) { c.Issuers[0].Algorithms = []string{"none"} }, "Issuers[0].Algorithms[0]", "not allowed"},
		{"bad mode", func(c *resourceserver.Config) { c.Mode = "magic" }, "Mode", "not a mode"},
		{"introspection without client id", func(c *resourceserver.Config) {
			c.Mode = resourceserver.ModeIntrospection
			c.Issuers[0].ClientSecret = "s"
		}, "Issuers[0].ClientID", "client id"},
		{"introspection without client secret", func(c *resourceserver.Config) {
			c.Mode = resourceserver.ModeJWTIntrospection
			c.Issuers[0].ClientID = "id"
		}, "Issuers[0].ClientSecret", "client secret"},
		{"introspection with two issuers", func(c *resourceserver.Config) {
			c.Mode = resourceserver.ModeIntrospection
			c.Issuers = []resourceserver.Issuer{
				{URL: "https://a.example.com", ClientID: "a", ClientSecret: "b"},
				{URL: "https://b.example.com", ClientID: "a", ClientSecret: "b"},
			}
		}, "Mode", "exactly one issuer"},
		{"empty extra audience", func(c *resourceserver.Config) { c.ExtraAudiences = []string{"a", " "} }, "ExtraAudiences[1]", "empty"},
		{"bad origin", func(c *resourceserver.Config) { c.AllowedOrigins = []string{"example.com"} }, "AllowedOrigins[0]", "not an origin"},
		{"ftp origin", func(c *resourceserver.Config) {
			c.AllowedOrigins = []string{"https://a.example.com", "ftp://files.example.com"}
		}, "AllowedOrigins[1]", "not an origin"},
		{"origin with user", func(c *resourceserver.Config) { c.AllowedOrigins = []string{"https://u@a.example.com"} }, "AllowedOrigins[0]", "not an origin"},
		{"origin star", func(c *resourceserver.Config) { c.AllowedOrigins = []string{"*"} }, "AllowedOrigins[0]", "list each browser origin"},
		{"bad scope", func(c *resourceserver.Config) { c.ScopesSupported = []string{"a b"} }, "ScopesSupported[0]", "not a valid scope"},
		{"javascript documentation", func(c *resourceserver.Config) { c.ResourceDocumentation = "javascript:alert(1)" }, "ResourceDocumentation", "http(s) URL"},
		{"documentation with password", func(c *resourceserver.Config) { c.ResourceDocumentation = "https://u:pw@docs.example.com" }, "ResourceDocumentation", "user information"},
		{"negative leeway", func(c *resourceserver.Config) { c.Leeway = -time.Second }, "Leeway", "negative"},
		{"negative cache TTL", func(c *resourceserver.Config) { c.CacheTTL = -time.Second }, "CacheTTL", "negative"},
		{"duplicate issuer", func(c *resourceserver.Config) { c.Issuers = append(c.Issuers, c.Issuers[0]) }, "Issuers[1].URL", "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.mutate(&cfg)
			require.Error(t, cfg.Validate())
			_, err := resourceserver.New(cfg)
			require.Error(t, err)
			var fe *resourceserver.FieldError
			require.True(t, errors.As(err, &fe), "got %T, want *FieldError", err)
			assert.Equal(t, tt.field, fe.Field)
			assert.Contains(t, fe.Err.Error(), tt.want)
			assert.Contains(t, err.Error(), "resourceserver: Config."+tt.field+": ")
			assert.NotContains(t, err.Error(), "pw@", "a password in a URL is never shown")
		})
	}
	t.Run("every problem at once", func(t *testing.T) {
		err := resourceserver.Config{Resource: "ftp://x", Leeway: -1, AllowedOrigins: []string{"*"}}.Validate()
		var fields []string
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			var fe *resourceserver.FieldError
			require.True(t, errors.As(e, &fe))
			fields = append(fields, fe.Field)
		}
		assert.Equal(t, []string{"Resource", "Issuers", "AllowedOrigins[0]", "Leeway"}, fields)
	})
	rs, err := resourceserver.New(func() resourceserver.Config {
		c := good()
		c.Resource = "http://localhost:8080/mcp"
		c.Issuers[0].URL = "http://127.0.0.1:1/oauth2/x"
		return c
	}())
	require.NoError(t, err, "plain HTTP is fine on loopback")
	rs.Close()
}

func TestExtraAudienceIsLogged(t *testing.T) {
	f := newFixture(t, func(c *resourceserver.Config) { c.ExtraAudiences = []string{"duo-rp"} })
	assert.Contains(t, f.logs.String(), "level=WARN")
	assert.Contains(t, f.logs.String(), "extra_audience=duo-rp")
}
