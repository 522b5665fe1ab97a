package rstest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

const audience = "http://127.0.0.1:8080/mcp"

var allAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// get fetches rawURL from srv and returns the status and body.
func get(t *testing.T, srv *rstest.Server, rawURL string) (int, []byte) {
	t.Helper()
	resp, err := srv.HTTP.Client().Get(rawURL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, body
}

// fetchJWKS fetches and parses the JWKS the way a resource server would.
func fetchJWKS(t *testing.T, srv *rstest.Server) jwk.Set {
	t.Helper()
	status, body := get(t, srv, srv.JWKSURL())
	require.Equal(t, http.StatusOK, status, "JWKS status")
	set, err := jwk.Parse(body)
	require.NoError(t, err, "parsing JWKS")
	return set
}

func kids(set jwk.Set) []string {
	var out []string
	for i := range set.Len() {
		k, _ := set.Key(i)
		out = append(out, k.KeyID())
	}
	return out
}

// header decodes the protected header of a compact JWS.
func header(t *testing.T, token string) map[string]any {
	t.Helper()
	part, _, ok := strings.Cut(token, ".")
	require.True(t, ok, "token is not a compact JWS")
	raw, err := base64.RawURLEncoding.DecodeString(part)
	require.NoError(t, err)
	var h map[string]any
	require.NoError(t, json.Unmarshal(raw, &h))
	return h
}

func TestNewAuthServer(t *testing.T) {
	tests := []struct {
		issuer, jwks, introspect, rfc8414, oidc string
	}{
		{
			issuer:     "http://127.0.0.1:1234/oauth2/test",
			jwks:       "http://127.0.0.1:1234/oauth2/test/jwks",
			introspect: "http://127.0.0.1:1234/oauth2/test/introspect",
			rfc8414:    "/.well-known/oauth-authorization-server/oauth2/test",
			oidc:       "/oauth2/test/.well-known/openid-configuration",
		},
		{
			issuer:     "https://as.example",
			jwks:       "https://as.example/jwks",
			introspect: "https://as.example/introspect",
			rfc8414:    "/.well-known/oauth-authorization-server",
			oidc:       "/.well-known/openid-configuration",
		},
		{
			// RFC 8414 section 3.1: a terminating "/" is removed before inserting.
			issuer:     "https://as.example/tenant/",
			jwks:       "https://as.example/tenant/jwks",
			introspect: "https://as.example/tenant/introspect",
			rfc8414:    "/.well-known/oauth-authorization-server/tenant",
			oidc:       "/tenant/.well-known/openid-configuration",
		},
	}
	for _, tt := range tests {
		t.Run(tt.issuer, func(t *testing.T) {
			a := rstest.NewAuthServer(tt.issuer)
			assert.Equal(t, tt.issuer, a.Issuer())
			assert.Equal(t, tt.jwks, a.JWKSURL())
			assert.Equal(t, tt.introspect, a.IntrospectionURL())
			for _, path := range []string{tt.rfc8414, tt.oidc} {
				rec := httptest.NewRecorder()
				a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				require.Equal(t, http.StatusOK, rec.Code, "GET %s", path)
				var md map[string]any
				require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &md))
				assert.Equal(t, tt.issuer, md["issuer"], "issuer at %s", path)
			}
		})
	}
}

func TestNewAuthServerPanicsOnMalformedIssuer(t *testing.T) {
	for _, issuer := range []string{
		"",
		"127.0.0.1:1234",
		"/oauth2/test",
		"ftp://as.example",
		"https://",
		"https://as.example/x?tenant=1",
		"https://as.example/x#frag",
		"https://user:pw@as.example",
		"http://[::1",
	} {
		assert.Panics(t, func() { rstest.NewAuthServer(issuer) }, "issuer %q", issuer)
	}
}

func TestMetadata(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	u, err := url.Parse(srv.Issuer())
	require.NoError(t, err)
	host := u.Scheme + "://" + u.Host
	require.Equal(t, "/oauth2/test", u.Path)
	rfc8414 := host + "/.well-known/oauth-authorization-server/oauth2/test"
	oidc := srv.Issuer() + "/.well-known/openid-configuration"

	for _, loc := range []string{rfc8414, oidc} {
		status, body := get(t, srv, loc)
		require.Equal(t, http.StatusOK, status, "GET %s", loc)
		var md map[string]any
		require.NoError(t, json.Unmarshal(body, &md))
		want := map[string]any{
			"issuer":                   srv.Issuer(),
			"jwks_uri":                 srv.JWKSURL(),
			"introspection_endpoint":   srv.IntrospectionURL(),
			"response_types_supported": []any{"code"},
			"subject_types_supported":  []any{"public"},
			"introspection_endpoint_auth_methods_supported": []any{"client_secret_basic", "client_secret_post"},
		}
		for k, v := range want {
			assert.Equal(t, v, md[k], "%s at %s", k, loc)
		}
		assert.NotEmpty(t, md["id_token_signing_alg_values_supported"], loc)
		for _, k := range []string{"authorization_endpoint", "token_endpoint", "registration_endpoint"} {
			assert.NotContains(t, md, k, "the fake has no sign-in, so it advertises none (%s)", loc)
		}
	}
	assert.Equal(t, 2, srv.MetadataFetches())

	srv.SetMetadata(map[string]any{"scopes_supported": []string{"crm.all"}, "jwks_uri": nil})
	_, body := get(t, srv, oidc)
	assert.Contains(t, string(body), `"scopes_supported":["crm.all"]`, "a field added")
	assert.NotContains(t, string(body), "jwks_uri", "a nil value removes a field")
	srv.SetMetadata(map[string]any{"scopes_supported": nil})
	_, body = get(t, srv, oidc)
	assert.NotContains(t, string(body), "scopes_supported")

	resp, err := srv.HTTP.Client().Post(rfc8414, "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "POST to metadata")

	srv.SetMetadataDown(true)
	for _, loc := range []string{rfc8414, oidc} {
		status, _ := get(t, srv, loc)
		assert.Equal(t, http.StatusServiceUnavailable, status, "GET %s while down", loc)
	}
	srv.SetMetadataDown(false)
	assert.Equal(t, 7, srv.MetadataFetches())
}

func TestMetadataFallback(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	u, _ := url.Parse(srv.Issuer())
	rfc8414 := u.Scheme + "://" + u.Host + "/.well-known/oauth-authorization-server" + u.Path
	oidc := srv.Issuer() + "/.well-known/openid-configuration"

	srv.DisableRFC8414()
	status, _ := get(t, srv, rfc8414)
	assert.Equal(t, http.StatusNotFound, status, "RFC 8414 location after DisableRFC8414")
	status, _ = get(t, srv, oidc)
	assert.Equal(t, http.StatusOK, status, "OpenID location after DisableRFC8414")
}

func TestUnknownPath(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	for _, path := range []string{"/", "/userinfo", "/authorize", "/token", "/register", "/admin", "/jwks/x"} {
		status, _ := get(t, srv, srv.Issuer()+path)
		assert.Equal(t, http.StatusNotFound, status, "GET issuer+%s", path)
	}
	u, _ := url.Parse(srv.Issuer())
	status, _ := get(t, srv, u.Scheme+"://"+u.Host+"/oauth2/other/jwks")
	assert.Equal(t, http.StatusNotFound, status, "GET another issuer's jwks")
}

func TestMintVerifiesWithJWKS(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	tokens := make(map[string]string)
	for _, alg := range allAlgs {
		tokens[alg] = srv.Mint(srv.Claims("alice", audience, "crm.contacts.read"), rstest.WithAlg(alg))
	}
	set := fetchJWKS(t, srv)
	require.Equal(t, len(allAlgs), set.Len(), "one published key per algorithm")

	for _, alg := range allAlgs {
		t.Run(alg, func(t *testing.T) {
			h := header(t, tokens[alg])
			assert.Equal(t, alg, h["alg"])
			assert.Equal(t, "JWT", h["typ"])
			assert.Equal(t, srv.KID(alg), h["kid"])

			tok, err := jwt.Parse([]byte(tokens[alg]), jwt.WithKeySet(set), jwt.WithIssuer(srv.Issuer()), jwt.WithAudience(audience))
			require.NoError(t, err)
			assert.Equal(t, "alice", tok.Subject())
			scope, _ := tok.Get("scope")
			assert.Equal(t, "crm.contacts.read", scope)

			key, ok := set.LookupKeyID(srv.KID(alg))
			require.True(t, ok, "kid in JWKS")
			assert.Equal(t, alg, key.Algorithm().String())
			assert.Equal(t, "sig", key.KeyUsage())
		})
	}
}

func TestJWKSHasOnlyPublicMaterial(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	for _, alg := range allAlgs {
		srv.Rotate(alg)
	}
	resp, err := srv.HTTP.Client().Get(srv.JWKSURL())
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))

	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&doc))
	require.Len(t, doc.Keys, len(allAlgs))
	for _, k := range doc.Keys {
		// RFC 7518 section 6: the private members of RSA, EC and OKP keys, and
		// the symmetric "k".
		for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
			assert.NotContains(t, k, private, "key %v", k["kid"])
		}
		for _, member := range []string{"kty", "kid", "alg", "use"} {
			assert.NotEmpty(t, k[member], "%s of key %v", member, k["kid"])
		}
	}
}

func TestRotateAndRetire(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()

	old := srv.KID("ES256")
	oldTok := srv.Mint(srv.Claims("alice", audience), rstest.WithAlg("ES256"))
	next := srv.Rotate("ES256")
	require.NotEqual(t, old, next)
	assert.Equal(t, next, srv.KID("ES256"))
	newTok := srv.Mint(srv.Claims("alice", audience), rstest.WithAlg("ES256"))
	assert.Equal(t, next, header(t, newTok)["kid"])

	set := fetchJWKS(t, srv)
	assert.ElementsMatch(t, []string{old, next}, kids(set), "both keys published after Rotate")
	for name, tok := range map[string]string{"old": oldTok, "new": newTok} {
		_, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set))
		assert.NoError(t, err, "%s token after Rotate", name)
	}

	srv.Retire(old)
	set = fetchJWKS(t, srv)
	assert.Equal(t, []string{next}, kids(set), "after Retire")
	_, err := jwt.Parse([]byte(oldTok), jwt.WithKeySet(set))
	assert.Error(t, err, "token of a retired key")
	_, err = jwt.Parse([]byte(newTok), jwt.WithKeySet(set))
	assert.NoError(t, err, "token of the current key")

	assert.Panics(t, func() { srv.Retire("no-such-kid") })
	assert.Panics(t, func() { srv.Rotate("HS256") })
}

func TestJWKSDown(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()

	status, _ := get(t, srv, srv.JWKSURL())
	assert.Equal(t, http.StatusOK, status)
	srv.SetJWKSDown(true)
	status, _ = get(t, srv, srv.JWKSURL())
	assert.Equal(t, http.StatusServiceUnavailable, status, "while down")
	srv.SetJWKSDown(false)
	status, body := get(t, srv, srv.JWKSURL())
	assert.Equal(t, http.StatusOK, status, "after coming back")
	assert.JSONEq(t, `{"keys":[]}`, string(body), "no key made yet")

	resp, err := srv.HTTP.Client().Post(srv.JWKSURL(), "application/json", nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "POST")
	assert.Equal(t, 4, srv.JWKSFetches())
	assert.Equal(t, 0, srv.MetadataFetches())
}

func TestForgedTokensAreRefused(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	claims := srv.Claims("alice", audience, "crm.contacts.read")
	rsKID := srv.KID("RS256")
	set := fetchJWKS(t, srv)

	rsaPub, ok := set.LookupKeyID(rsKID)
	require.True(t, ok)
	var pub rsa.PublicKey
	require.NoError(t, rsaPub.Raw(&pub))
	der, err := x509.MarshalPKIXPublicKey(&pub)
	require.NoError(t, err)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})

	attackerRSA, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	attackerEC, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)

	tests := []struct {
		name    string
		opts    []rstest.MintOption
		wantAlg string
		wantKID any // nil: no kid
		realKey any // if set, the signature is genuine under this key: only the key check stops it
	}{
		{"unsigned", []rstest.MintOption{rstest.WithUnsigned()}, "none", rsKID, nil},
		{"HMAC random secret", []rstest.MintOption{rstest.WithHMAC([]byte("not-a-published-key"))}, "HS256", rsKID, []byte("not-a-published-key")},
		{"HMAC with the RSA public key", []rstest.MintOption{rstest.WithHMAC(pubPEM)}, "HS256", rsKID, pubPEM},
		{"HMAC HS512", []rstest.MintOption{rstest.WithAlg("HS512"), rstest.WithHMAC([]byte("secret"))}, "HS512", rsKID, []byte("secret")},
		{"tampered RS256", []rstest.MintOption{rstest.WithTamperedSignature()}, "RS256", rsKID, nil},
		{"tampered PS384", []rstest.MintOption{rstest.WithAlg("PS384"), rstest.WithTamperedSignature()}, "PS384", srv.KID("PS384"), nil},
		{"tampered ES256", []rstest.MintOption{rstest.WithAlg("ES256"), rstest.WithTamperedSignature()}, "ES256", srv.KID("ES256"), nil},
		{"tampered EdDSA", []rstest.MintOption{rstest.WithAlg("EdDSA"), rstest.WithTamperedSignature()}, "EdDSA", srv.KID("EdDSA"), nil},
		{"attacker RSA key claiming published kid", []rstest.MintOption{rstest.WithKey(attackerRSA, rsKID)}, "RS256", rsKID, &attackerRSA.PublicKey},
		{"attacker EC key", []rstest.MintOption{rstest.WithKey(attackerEC, "attacker")}, "ES256", "attacker", &attackerEC.PublicKey},
		{"attacker key without kid", []rstest.MintOption{rstest.WithKey(attackerRSA, "")}, "RS256", nil, &attackerRSA.PublicKey},
		{"attacker HMAC key", []rstest.MintOption{rstest.WithKey([]byte("secret"), rsKID)}, "HS256", rsKID, []byte("secret")},
		{"embedded jwk header", []rstest.MintOption{rstest.WithKey(attackerEC, ""), rstest.WithHeader("jwk", mustPublicJWK(t, attackerEC))}, "ES256", nil, &attackerEC.PublicKey},
	}
	// Keys made for the table after the JWKS was fetched must be published too.
	set = fetchJWKS(t, srv)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := srv.Mint(claims, tt.opts...)
			h := header(t, tok)
			assert.Equal(t, tt.wantAlg, h["alg"])
			assert.Equal(t, tt.wantKID, h["kid"])
			if tt.wantAlg == "none" {
				assert.True(t, strings.HasSuffix(tok, "."), "unsigned token has an empty signature")
			}
			if tt.realKey != nil {
				_, err := jws.Verify([]byte(tok), jws.WithKey(jwa.SignatureAlgorithm(tt.wantAlg), tt.realKey))
				assert.NoError(t, err, "signature is not genuine under the forger's key")
			}
			_, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set))
			assert.Error(t, err, "jwx accepted a forged token")
		})
	}
}

func mustPublicJWK(t *testing.T, key *ecdsa.PrivateKey) jwk.Key {
	t.Helper()
	k, err := jwk.FromRaw(key.Public())
	require.NoError(t, err)
	return k
}

func TestWithHeader(t *testing.T) {
	a := rstest.NewAuthServer("https://as.example/oauth2/test")
	tok := a.Mint(map[string]any{"sub": "alice"},
		rstest.WithHeader("typ", "at+jwt"),
		rstest.WithHeader("crit", []string{"exp"}),
		rstest.WithHeader("jku", "https://attacker.example/jwks"),
		rstest.WithHeader("kid", nil),
	)
	h := header(t, tok)
	assert.Equal(t, map[string]any{
		"alg":  "RS256",
		"typ":  "at+jwt",
		"crit": []any{"exp"},
		"jku":  "https://attacker.example/jwks",
	}, h)

	// The payload is the claims as given, nothing added.
	_, rest, _ := strings.Cut(tok, ".")
	payload, _, _ := strings.Cut(rest, ".")
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	require.NoError(t, err)
	assert.JSONEq(t, `{"sub":"alice"}`, string(raw))
}

func TestMintPanics(t *testing.T) {
	a := rstest.NewAuthServer("https://as.example")
	claims := a.Claims("alice", audience)
	assert.Panics(t, func() { a.Mint(claims, rstest.WithAlg("HS256")) }, "server has no HMAC key")
	assert.Panics(t, func() { a.Mint(claims, rstest.WithAlg("ES999")) }, "unknown algorithm")
	assert.Panics(t, func() { a.Mint(claims, rstest.WithKey("a string", "")) }, "unsupported key type")
	assert.Panics(t, func() { a.Mint(claims, rstest.WithHMAC(nil)) }, "empty HMAC secret")
	assert.Panics(t, func() { a.Mint(map[string]any{"bad": make(chan int)}) }, "claims that are not JSON")
}

func TestClaims(t *testing.T) {
	a := rstest.NewAuthServer("https://as.example/oauth2/test")
	before := time.Now().Unix()
	c := a.Claims("alice", audience, "crm.contacts.read", "crm.deals.write")
	assert.Equal(t, "https://as.example/oauth2/test", c["iss"])
	assert.Equal(t, "alice", c["sub"])
	assert.Equal(t, audience, c["aud"])
	assert.Equal(t, "crm.contacts.read crm.deals.write", c["scope"])
	assert.Equal(t, rstest.ClientID, c["client_id"])
	iat := c["iat"].(int64)
	assert.GreaterOrEqual(t, iat, before)
	assert.Equal(t, iat+3600, c["exp"])
	assert.NotEmpty(t, c["jti"])
	assert.NotEqual(t, c["jti"], a.Claims("alice", audience)["jti"], "jti is random")
	assert.NotContains(t, a.Claims("alice", audience), "scope", "no scopes, no scope claim")
}

// introspect posts token to the introspection endpoint with the given client
// authentication and returns the status and decoded body.
func introspect(t *testing.T, srv *rstest.Server, token string, auth func(*http.Request, url.Values)) (int, map[string]any) {
	t.Helper()
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequest(http.MethodPost, srv.IntrospectionURL(), nil)
	require.NoError(t, err)
	auth(req, form)
	req.Body = io.NopCloser(strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := srv.HTTP.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	return resp.StatusCode, body
}

// basic authenticates as RFC 6749 section 2.3.1 says: form-urlencode, then Basic.
func basic(id, secret string) func(*http.Request, url.Values) {
	return func(r *http.Request, _ url.Values) {
		r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
}

func post(id, secret string) func(*http.Request, url.Values) {
	return func(_ *http.Request, f url.Values) {
		f.Set("client_id", id)
		f.Set("client_secret", secret)
	}
}

func TestIntrospection(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	// Characters that form-urlencoding changes, to check both sides do it.
	const id, secret = "rs client:1", "s3cr%t+/ü"
	srv.SetIntrospectionClient(id, secret)

	claims := srv.Claims("alice", audience, "crm.contacts.read")
	jwtTok := srv.Mint(claims)
	opaque := srv.MintOpaque(claims)
	revoked := srv.Mint(srv.Claims("bob", audience))
	srv.Revoke(revoked)
	expiredClaims := srv.Claims("carol", audience)
	expiredClaims["exp"] = time.Now().Add(-time.Minute).Unix()
	expired := srv.Mint(expiredClaims)
	expiredOpaque := srv.MintOpaque(expiredClaims)
	notYet := srv.Claims("dave", audience)
	notYet["nbf"] = time.Now().Add(time.Hour).Unix()
	notYetTok := srv.MintOpaque(notYet)
	forged := srv.Mint(claims, rstest.WithTamperedSignature())
	unsigned := srv.Mint(claims, rstest.WithUnsigned())

	auths := map[string]func(*http.Request, url.Values){
		"client_secret_basic": basic(id, secret),
		"client_secret_post":  post(id, secret),
	}
	tests := []struct {
		name       string
		token      string
		wantActive bool
	}{
		{"minted JWT", jwtTok, true},
		{"opaque", opaque, true},
		{"revoked", revoked, false},
		{"expired JWT", expired, false},
		{"expired opaque", expiredOpaque, false},
		{"not yet valid", notYetTok, false},
		{"unknown", "no-such-token", false},
		{"tampered", forged, false},
		{"unsigned", unsigned, false},
	}
	for authName, auth := range auths {
		for _, tt := range tests {
			t.Run(authName+"/"+tt.name, func(t *testing.T) {
				status, body := introspect(t, srv, tt.token, auth)
				require.Equal(t, http.StatusOK, status)
				if !tt.wantActive {
					// RFC 7662 section 2.2: nothing else about inactive tokens.
					assert.Equal(t, map[string]any{"active": false}, body)
					return
				}
				assert.Equal(t, true, body["active"])
				assert.Equal(t, "Bearer", body["token_type"])
				for _, k := range []string{"iss", "sub", "aud", "scope", "client_id", "jti"} {
					assert.Equal(t, claims[k], body[k], k)
				}
				for _, k := range []string{"exp", "iat"} {
					assert.EqualValues(t, claims[k], body[k], k)
				}
			})
		}
	}

	srv.Revoke(opaque)
	_, body := introspect(t, srv, opaque, basic(id, secret))
	assert.Equal(t, false, body["active"], "opaque token after Revoke")
	assert.Equal(t, 2*len(tests)+1, srv.IntrospectionCalls())
}

// TestWithIntrospection: a token's answer can change after it is minted,
// and a nil answer makes it inactive; Revoke and expiry still win.
func TestWithIntrospection(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	var mu sync.Mutex
	live, scope := true, "crm.contacts.read"
	answer := rstest.WithIntrospection(func(c map[string]any) map[string]any {
		mu.Lock()
		defer mu.Unlock()
		if !live {
			return nil
		}
		c["scope"] = scope
		return c
	})
	set := func(l bool, s string) {
		mu.Lock()
		defer mu.Unlock()
		live, scope = l, s
	}
	claims := srv.Claims("alice", audience, "crm.contacts.read", "crm.deals.read")
	tok := srv.Mint(claims, answer)
	auth := basic(rstest.DefaultIntrospectionClientID, rstest.DefaultIntrospectionClientSecret)

	_, body := introspect(t, srv, tok, auth)
	assert.Equal(t, true, body["active"])
	assert.Equal(t, "crm.contacts.read", body["scope"], "the answer's claims, not the minted ones")
	assert.Equal(t, "alice", body["sub"], "the other claims as minted")
	assert.Equal(t, "crm.contacts.read crm.deals.read", claims["scope"], "the caller's map is untouched")

	set(true, "")
	_, body = introspect(t, srv, tok, auth)
	assert.Equal(t, "", body["scope"])
	set(false, "")
	_, body = introspect(t, srv, tok, auth)
	assert.Equal(t, map[string]any{"active": false}, body, "nil: inactive")

	set(true, "x")
	srv.Revoke(tok)
	_, body = introspect(t, srv, tok, auth)
	assert.Equal(t, false, body["active"], "Revoke wins over the answer")

	expired := srv.Claims("bob", audience)
	expired["exp"] = time.Now().Add(-time.Minute).Unix()
	old := srv.Mint(expired, answer)
	_, body = introspect(t, srv, old, auth)
	assert.Equal(t, false, body["active"], "expiry wins over the answer")
}

func TestIntrospectionClientAuthentication(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	tok := srv.Mint(srv.Claims("alice", audience))
	id, secret := rstest.DefaultIntrospectionClientID, rstest.DefaultIntrospectionClientSecret

	tests := []struct {
		name       string
		auth       func(*http.Request, url.Values)
		wantStatus int
		wantError  string
		wantChall  bool
	}{
		{"basic", basic(id, secret), http.StatusOK, "", false},
		{"post", post(id, secret), http.StatusOK, "", false},
		{"basic wrong secret", basic(id, "wrong"), http.StatusUnauthorized, "invalid_client", true},
		{"basic wrong id", basic("other", secret), http.StatusUnauthorized, "invalid_client", true},
		{"post wrong secret", post(id, "wrong"), http.StatusUnauthorized, "invalid_client", false},
		{"post no secret", post(id, ""), http.StatusUnauthorized, "invalid_client", false},
		{"none", func(*http.Request, url.Values) {}, http.StatusUnauthorized, "invalid_client", false},
		{"bearer instead of basic", func(r *http.Request, _ url.Values) { r.Header.Set("Authorization", "Bearer "+tok) }, http.StatusUnauthorized, "invalid_client", true},
		{"two methods", func(r *http.Request, f url.Values) { basic(id, secret)(r, f); post(id, secret)(r, f) }, http.StatusBadRequest, "invalid_request", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := url.Values{"token": {tok}}
			req := httptest.NewRequest(http.MethodPost, "/oauth2/test/introspect", nil)
			tt.auth(req, form)
			req.Body = io.NopCloser(strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)

			require.Equal(t, tt.wantStatus, rec.Code)
			var body map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
			if tt.wantError != "" {
				assert.Equal(t, map[string]any{"error": tt.wantError}, body)
			} else {
				assert.Equal(t, true, body["active"])
			}
			assert.Equal(t, tt.wantChall, rec.Header().Get("WWW-Authenticate") != "", "WWW-Authenticate present")
		})
	}

	srv.SetIntrospectionClient("new-id", "new-secret")
	status, _ := introspect(t, srv, tok, basic(id, secret))
	assert.Equal(t, http.StatusUnauthorized, status, "old credentials after SetIntrospectionClient")
	status, _ = introspect(t, srv, tok, basic("new-id", "new-secret"))
	assert.Equal(t, http.StatusOK, status, "new credentials")
}

func TestIntrospectionRequestErrors(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()

	status, _ := get(t, srv, srv.IntrospectionURL())
	assert.Equal(t, http.StatusMethodNotAllowed, status, "GET")

	status, body := introspect(t, srv, "", basic(rstest.DefaultIntrospectionClientID, rstest.DefaultIntrospectionClientSecret))
	assert.Equal(t, http.StatusBadRequest, status, "no token")
	assert.Equal(t, "invalid_request", body["error"])

	srv.SetIntrospectionDown(true)
	req, err := http.NewRequest(http.MethodPost, srv.IntrospectionURL(), strings.NewReader("token=x"))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := srv.HTTP.Client().Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "while down")
	srv.SetIntrospectionDown(false)
	assert.Equal(t, 3, srv.IntrospectionCalls())
}

func TestTLSServer(t *testing.T) {
	srv := rstest.NewTLSServer()
	defer srv.Close()
	require.True(t, strings.HasPrefix(srv.Issuer(), "https://127.0.0.1:"), "issuer %s", srv.Issuer())
	require.True(t, strings.HasSuffix(srv.Issuer(), "/oauth2/test"), "issuer %s", srv.Issuer())

	tok := srv.Mint(srv.Claims("alice", audience))
	_, err := jwt.Parse([]byte(tok), jwt.WithKeySet(fetchJWKS(t, srv)))
	assert.NoError(t, err)

	_, err = http.Get(srv.JWKSURL()) // default client does not trust the test certificate
	assert.Error(t, err)
}

// TestConcurrentUse is for the race detector.
func TestConcurrentUse(t *testing.T) {
	srv := rstest.NewServer()
	defer srv.Close()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			alg := []string{"ES256", "EdDSA"}[i%2]
			tok := srv.Mint(srv.Claims("alice", audience), rstest.WithAlg(alg))
			if i%4 == 0 {
				srv.Rotate(alg)
			}
			srv.Revoke(tok)
			srv.SetJWKSDown(false)
			srv.SetMetadata(map[string]any{"scopes_supported": []string{"a"}})
			resp, err := srv.HTTP.Client().Get(srv.JWKSURL())
			if err == nil {
				resp.Body.Close()
			}
			resp, err = srv.HTTP.Client().Get(srv.Issuer() + "/.well-known/openid-configuration")
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 8, srv.JWKSFetches())
	assert.Equal(t, 8, srv.MetadataFetches())
}
