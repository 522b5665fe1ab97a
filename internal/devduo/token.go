package devduo

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/crm-mcp/crm-mcp/resourceserver/rstest"
)

// defaultTokenLifetime is the life of access tokens issued at the token
// endpoint.
const defaultTokenLifetime = time.Hour

// refreshLifetime is the life of a refresh token; each refresh issues a
// new one.
const refreshLifetime = 30 * 24 * time.Hour

// grant is one authorization: what a user approved for a client. Every
// access and refresh token issued from it, through the code exchange and
// each refresh, points back to it, so revoking it (a revoked refresh token,
// a replayed code or refresh token) kills them all.
type grant struct {
	clientID  string
	user      string
	resources []string // approved at the authorization endpoint
	scopes    []string // approved; refreshes never exceed them
	revoked   bool
}

// accessToken is an access token issued at the token endpoint, remembered
// until it expires so that the revocation endpoint can tell whose it is.
type accessToken struct {
	grant   *grant
	expires time.Time
}

// refreshToken is an issued refresh token. Refresh tokens rotate: each is
// good for one refresh (OAuth 2.1 section 4.3.1), and presenting a spent
// one again revokes the grant, since either the client or an attacker holds
// a stolen copy.
type refreshToken struct {
	grant   *grant
	aud     []string // the audience of the access tokens it refreshes
	expires time.Time
	used    bool
}

// tokenResponse is a successful token response (RFC 6749 section 5.1).
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	Scope        string `json:"scope"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// serveToken is the token endpoint (RFC 6749 section 3.2).
func (si *SignIn) serveToken(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	form, e := readForm(w, r, "grant_type", "code", "redirect_uri", "code_verifier", "refresh_token", "scope")
	if e != nil {
		writeOAuthError(w, r, e)
		return
	}
	c, e := si.authenticateClient(r, form)
	if e != nil {
		writeOAuthError(w, r, e)
		return
	}
	var resp *tokenResponse
	switch gt := form.Get("grant_type"); gt {
	case "authorization_code", "refresh_token":
		if !slices.Contains(c.meta.GrantTypes, gt) {
			e = badRequest("unauthorized_client", "the client did not register for the %s grant", gt)
		} else if gt == "authorization_code" {
			resp, e = si.exchangeCode(c, form)
		} else {
			resp, e = si.refreshGrant(c, form)
		}
	case "":
		e = badRequest("invalid_request", "grant_type is required")
	default:
		e = badRequest("unsupported_grant_type", "grant type %q is not supported", gt)
	}
	if e != nil {
		writeOAuthError(w, r, e)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusOK, resp)
}

// readForm parses a form-encoded POST body (never the query string: RFC
// 6749 section 3.2 and RFC 7009 section 2.1 put parameters in the body)
// and refuses repeated single-valued parameters (RFC 6749 section 3.2).
func readForm(w http.ResponseWriter, r *http.Request, single ...string) (url.Values, *oauthError) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return nil, badRequest("invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	for _, k := range append(single, "client_id", "client_secret") {
		if len(r.PostForm[k]) > 1 {
			return nil, badRequest("invalid_request", "the %s parameter is repeated", k)
		}
	}
	return r.PostForm, nil
}

// authenticateClient authenticates the client of a token or revocation
// request (RFC 6749 section 2.3.1): public clients by client_id alone (in
// the body, or in Basic with an empty password), confidential ones by
// their secret in Basic or in the body, whichever they registered.
func (si *SignIn) authenticateClient(r *http.Request, form url.Values) (*client, *oauthError) {
	id, secret, basic := r.BasicAuth()
	if basic {
		if form.Has("client_secret") {
			return nil, badRequest("invalid_request", "use one client authentication method, not two")
		}
		// The client id and secret are form-urlencoded before Basic encoding.
		var err1, err2 error
		id, err1 = url.QueryUnescape(id)
		secret, err2 = url.QueryUnescape(secret)
		if err1 != nil || err2 != nil {
			return nil, invalidClient("malformed Basic credentials")
		}
		if form.Has("client_id") && form.Get("client_id") != id {
			return nil, badRequest("invalid_request", "client_id in the body differs from the authenticated client")
		}
	} else if r.Header.Get("Authorization") != "" {
		return nil, invalidClient("only Basic client authentication is supported")
	} else {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	if id == "" {
		return nil, invalidClient("client authentication is required: send client_id")
	}
	si.mu.Lock()
	c := si.clients[id]
	si.mu.Unlock()
	switch {
	case c == nil:
		return nil, invalidClient("unknown client")
	case c.public():
		if secret != "" {
			return nil, invalidClient("the client registered as public (token_endpoint_auth_method none) and has no secret")
		}
	case secret == "":
		return nil, invalidClient("the client must authenticate with its client secret")
	case !equal(secret, c.secret):
		return nil, invalidClient("client authentication failed")
	}
	return c, nil
}

// exchangeCode implements the authorization code grant (RFC 6749 section
// 4.1.3, RFC 7636 section 4.6, RFC 8707 section 2.2).
func (si *SignIn) exchangeCode(c *client, form url.Values) (*tokenResponse, *oauthError) {
	code, verifier := form.Get("code"), form.Get("code_verifier")
	if code == "" {
		return nil, badRequest("invalid_request", "code is required")
	}
	if verifier == "" {
		return nil, badRequest("invalid_request", "code_verifier is required (PKCE)")
	}
	now := time.Now()
	si.mu.Lock()
	defer si.mu.Unlock()
	ac := si.codes[code]
	if ac == nil {
		return nil, badRequest("invalid_grant", "unknown or expired authorization code")
	}
	if ac.used {
		// RFC 6749 section 4.1.2: a code presented twice revokes what it
		// gave, since one of the two presenters stole it.
		if ac.grant != nil {
			ac.grant.revoked = true
		}
		return nil, badRequest("invalid_grant", "the authorization code was already used; the tokens issued for it are revoked")
	}
	// Spent by any presentation, so that it cannot be tried again (say,
	// with other verifiers).
	ac.used = true
	switch {
	case now.After(ac.expires):
		return nil, badRequest("invalid_grant", "the authorization code has expired")
	case ac.clientID != c.id:
		return nil, badRequest("invalid_grant", "the authorization code was issued to another client")
	case (ac.redirectGiven || form.Has("redirect_uri")) && form.Get("redirect_uri") != ac.redirectURI:
		return nil, badRequest("invalid_grant", "redirect_uri differs from the one in the authorization request")
	case !validVerifier(verifier):
		return nil, badRequest("invalid_grant", "code_verifier must be 43 to 128 unreserved characters (RFC 7636 section 4.1)")
	case !equal(s256(verifier), ac.challenge):
		return nil, badRequest("invalid_grant", "PKCE verification failed: code_verifier does not match code_challenge")
	}
	aud, e := narrowResources(form["resource"], ac.resources)
	if e != nil {
		return nil, e
	}
	g := &grant{clientID: c.id, user: ac.user, resources: ac.resources, scopes: ac.scopes}
	scopes := si.grantableLocked(ac.user, ac.scopes)
	if len(scopes) == 0 {
		return nil, badRequest("invalid_grant", "the user no longer holds any of the approved scopes")
	}
	ac.grant = g
	return si.issueLocked(c, g, aud, scopes, now), nil
}

// refreshGrant implements the refresh token grant (RFC 6749 section 6)
// with rotation. The scopes are those approved, narrowed by the scope
// parameter, less those the user has lost since.
func (si *SignIn) refreshGrant(c *client, form url.Values) (*tokenResponse, *oauthError) {
	raw := form.Get("refresh_token")
	if raw == "" {
		return nil, badRequest("invalid_request", "refresh_token is required")
	}
	now := time.Now()
	si.mu.Lock()
	defer si.mu.Unlock()
	rt := si.refresh[raw]
	switch {
	case rt == nil || rt.grant.clientID != c.id:
		return nil, badRequest("invalid_grant", "unknown refresh token")
	case rt.used:
		rt.grant.revoked = true
		return nil, badRequest("invalid_grant", "the refresh token was already used; the grant is revoked (refresh token reuse)")
	case rt.grant.revoked:
		return nil, badRequest("invalid_grant", "the grant has been revoked")
	case now.After(rt.expires):
		return nil, badRequest("invalid_grant", "the refresh token has expired")
	}
	g := rt.grant
	requested := g.scopes
	if s := form.Get("scope"); strings.TrimSpace(s) != "" {
		requested = dedupe(strings.Fields(s))
		for _, sc := range requested {
			if !slices.Contains(g.scopes, sc) {
				return nil, badRequest("invalid_scope", "scope %q was not approved in this grant", sc)
			}
		}
	}
	aud := rt.aud
	if rs := form["resource"]; len(rs) > 0 {
		var e *oauthError
		if aud, e = narrowResources(rs, g.resources); e != nil {
			return nil, e
		}
	}
	if si.userLocked(g.user) == nil {
		return nil, badRequest("invalid_grant", "the user no longer exists")
	}
	scopes := si.grantableLocked(g.user, requested)
	if len(scopes) == 0 {
		return nil, badRequest("invalid_grant", "the user no longer holds any of the approved scopes")
	}
	rt.used = true
	return si.issueLocked(c, g, aud, scopes, now), nil
}

// narrowResources checks the resource parameters of a token request: each
// must be one approved at the authorization endpoint. None means all.
func narrowResources(requested, approved []string) ([]string, *oauthError) {
	if len(requested) == 0 {
		return approved, nil
	}
	for _, r := range requested {
		if !slices.Contains(approved, r) {
			return nil, badRequest("invalid_target", "resource %q was not part of the authorization request", r)
		}
	}
	return dedupe(requested), nil
}

// issueLocked mints an access token for g and, if the client registered
// for refreshes, a new refresh token. The JWT is signed by the rstest fake
// with its current RS256 key; aud is the resource, or an array when
// several were approved and none singled out. Its introspection answer is
// live (answerLocked).
func (si *SignIn) issueLocked(c *client, g *grant, aud, scopes []string, now time.Time) *tokenResponse {
	ttl := si.tokenTTL
	var audClaim any = aud[0]
	if len(aud) > 1 {
		audClaim = aud
	}
	expires := now.Add(ttl)
	claims := map[string]any{
		"iss":       si.issuer,
		"sub":       g.user,
		"aud":       audClaim,
		"scope":     strings.Join(scopes, " "),
		"client_id": c.id,
		"iat":       now.Unix(),
		"exp":       expires.Unix(),
		"jti":       randomString(16),
	}
	token := si.as.Mint(claims, rstest.WithIntrospection(func(claims map[string]any) map[string]any {
		si.mu.Lock()
		defer si.mu.Unlock()
		return si.answerLocked(g, claims)
	}))
	si.sweepLocked(now)
	si.access[token] = &accessToken{grant: g, expires: expires}
	resp := &tokenResponse{
		AccessToken: token,
		TokenType:   "Bearer",
		ExpiresIn:   int64(ttl / time.Second),
		Scope:       strings.Join(scopes, " "),
	}
	if slices.Contains(c.meta.GrantTypes, "refresh_token") {
		resp.RefreshToken = randomString(32)
		si.refresh[resp.RefreshToken] = &refreshToken{grant: g, aud: aud, expires: now.Add(refreshLifetime)}
	}
	return resp
}

// answerLocked is the introspection answer for an access token of g with
// the claims it was issued with: inactive once g is revoked or its user
// removed, and otherwise with the scopes it was issued with that the user
// still holds. The scope is always present, even empty, so that a resource
// server narrowing a JWT's scopes to the answer's drops them all.
func (si *SignIn) answerLocked(g *grant, claims map[string]any) map[string]any {
	u := si.userLocked(g.user)
	if g.revoked || u == nil {
		return nil
	}
	issued, _ := claims["scope"].(string)
	claims["scope"] = strings.Join(intersect(strings.Fields(issued), u.Scopes), " ")
	return claims
}

// sweepLocked forgets expired pending requests, codes, refresh tokens and
// access tokens, so that a long-running dev server does not grow without
// bound.
func (si *SignIn) sweepLocked(now time.Time) {
	for id, p := range si.pending {
		if now.After(p.expires) {
			delete(si.pending, id)
		}
	}
	for code, ac := range si.codes {
		if now.After(ac.expires) {
			delete(si.codes, code)
		}
	}
	for raw, rt := range si.refresh {
		if now.After(rt.expires) {
			delete(si.refresh, raw)
		}
	}
	for raw, at := range si.access {
		if now.After(at.expires) {
			delete(si.access, raw)
		}
	}
}

// equal compares secrets in constant time.
func equal(got, want string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// s256 is the S256 code challenge of verifier (RFC 7636 section 4.2).
func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// validVerifier reports whether s is a code verifier: 43 to 128
// characters from [A-Za-z0-9-._~] (RFC 7636 section 4.1).
func validVerifier(s string) bool {
	if len(s) < 43 || len(s) > 128 {
		return false
	}
	return strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~") == ""
}
