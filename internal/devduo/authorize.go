package devduo

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

const (
	// pendingLifetime bounds the time between the authorization request
	// and the user's decision on the login and consent pages.
	pendingLifetime = 10 * time.Minute
	// codeLifetime is the life of an authorization code (RFC 6749 section
	// 4.1.2 recommends at most 10 minutes; this is stricter).
	codeLifetime = 60 * time.Second
)

// pendingAuth is a validated authorization request waiting for the user.
// Its id is the only thing the login and consent forms carry: it is
// random, single use (the login step replaces it, the consent step deletes
// it) and expires, so a form cannot be forged or replayed, and nothing the
// browser posts can change the client, redirect URI, PKCE challenge,
// resources or scopes that were validated.
type pendingAuth struct {
	id            string
	client        *client
	redirectURI   string
	redirectGiven bool // redirect_uri was in the request, so it must be at the token endpoint too
	state         string
	challenge     string
	resources     []string
	scopes        []string // requested; nil when the request named none
	user          string   // set by the login step
	expires       time.Time
}

// authCode is an issued authorization code and what it is bound to.
type authCode struct {
	clientID      string
	redirectURI   string
	redirectGiven bool
	challenge     string
	resources     []string
	user          string
	scopes        []string
	expires       time.Time
	used          bool   // kept after use so that a replay can be detected
	grant         *grant // made by the exchange; revoked if the code is replayed
}

// SetResources sets the resources (RFC 8707) the sign-in issues tokens for:
// an authorization request must name only these, and a request naming
// none gets the first (the authorization server's default resource, which
// RFC 8707 section 2 leaves to it). With none set, the default, any
// absolute URL is accepted and a request must name at least one. It panics
// if a URL is not absolute or has a fragment.
func (si *SignIn) SetResources(urls ...string) {
	for _, u := range urls {
		if e := checkResource(u); e != nil {
			panic("devduo: SetResources: " + e.desc)
		}
	}
	si.mu.Lock()
	defer si.mu.Unlock()
	si.resources = dedupe(urls)
}

// SetAutoLogin makes every authorization request sign in as user without
// showing the login or consent page, as a login_hint naming a known user
// does for one request; "" turns it off. A name that is not a user when a
// request arrives is ignored, and the login page is shown.
func (si *SignIn) SetAutoLogin(user string) {
	si.mu.Lock()
	defer si.mu.Unlock()
	si.autoLogin = user
}

// serveAuthorize is the authorization endpoint (RFC 6749 section 3.1):
// GET starts a request, POST carries the login and consent forms.
func (si *SignIn) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		si.startAuthorization(w, r)
	case http.MethodPost:
		si.csrf.Handler(http.HandlerFunc(si.continueAuthorization)).ServeHTTP(w, r)
	default:
		w.Header().Set("Allow", "GET, POST")
		si.errorPage(w, r, http.StatusMethodNotAllowed, "invalid_request", "The authorization endpoint is used with GET.")
	}
}

// startAuthorization validates an authorization request (RFC 6749 section
// 4.1.1, RFC 7636 section 4.3, RFC 8707 section 2). Until the client and
// redirect URI are known good, errors go to the user on a page; after,
// they go back to the client by redirect (RFC 6749 section 4.1.2.1).
func (si *SignIn) startAuthorization(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for _, k := range []string{"client_id", "redirect_uri"} {
		if len(q[k]) > 1 {
			si.errorPage(w, r, http.StatusBadRequest, "invalid_request", fmt.Sprintf("The %s parameter is repeated.", k))
			return
		}
	}
	clientID := q.Get("client_id")
	if clientID == "" {
		si.errorPage(w, r, http.StatusBadRequest, "invalid_request", "The request has no client_id.")
		return
	}
	c, e := si.clientFor(r.Context(), clientID)
	if e != nil {
		si.errorPage(w, r, e.status, e.code, e.desc)
		return
	}
	redirectURI, ok := c.redirectFor(q.Get("redirect_uri"))
	if !ok {
		si.errorPage(w, r, http.StatusBadRequest, "invalid_request", "The redirect_uri is missing or is not one the client registered.")
		return
	}

	state := q.Get("state")
	fail := func(e *oauthError) { si.redirectError(w, r, redirectURI, state, e) }
	for _, k := range []string{"response_type", "state", "scope", "code_challenge", "code_challenge_method", "login_hint"} {
		if len(q[k]) > 1 {
			fail(badRequest("invalid_request", "the %s parameter is repeated", k))
			return
		}
	}
	if rt := q.Get("response_type"); rt != "code" {
		fail(badRequest("unsupported_response_type", "only response_type=code is supported"))
		return
	}
	challenge := q.Get("code_challenge")
	if challenge == "" {
		fail(badRequest("invalid_request", "code_challenge is required (PKCE, RFC 7636)"))
		return
	}
	if m := q.Get("code_challenge_method"); m != "S256" {
		fail(badRequest("invalid_request", "code_challenge_method must be S256; plain is not supported"))
		return
	}
	if !validChallenge(challenge) {
		fail(badRequest("invalid_request", "code_challenge must be the 43-character base64url encoding of a SHA-256 hash"))
		return
	}
	resources, e := si.resolveResources(q["resource"])
	if e != nil {
		fail(e)
		return
	}
	var scopes []string
	if s := q.Get("scope"); strings.TrimSpace(s) != "" {
		scopes = dedupe(strings.Fields(s))
		for _, sc := range scopes {
			if !validScopeToken(sc) {
				fail(badRequest("invalid_scope", "the scope parameter is malformed"))
				return
			}
		}
	}

	p := &pendingAuth{
		client:        c,
		redirectURI:   redirectURI,
		redirectGiven: q.Get("redirect_uri") != "",
		state:         state,
		challenge:     challenge,
		resources:     resources,
		scopes:        scopes,
	}
	if user := si.silentUser(q.Get("login_hint")); user != "" {
		p.user = user
		si.approve(w, r, p)
		return
	}
	si.mu.Lock()
	si.addPendingLocked(p)
	page := si.loginPageLocked(p)
	si.mu.Unlock()
	si.renderPage(w, http.StatusOK, "login.html", page)
}

// silentUser returns the user to sign in without any page: the one the
// login hint names, else the auto-login user, if they exist.
func (si *SignIn) silentUser(hint string) string {
	si.mu.Lock()
	defer si.mu.Unlock()
	for _, name := range []string{hint, si.autoLogin} {
		if name != "" && si.userLocked(name) != nil {
			return name
		}
	}
	return ""
}

// continueAuthorization handles the login form (step=login, user) and the
// consent form (step=consent, decision=approve or deny).
func (si *SignIn) continueAuthorization(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		si.errorPage(w, r, http.StatusBadRequest, "invalid_request", "The form could not be read.")
		return
	}
	f := r.PostForm
	si.mu.Lock()
	p := si.pending[f.Get("pending")]
	if p == nil || time.Now().After(p.expires) {
		si.mu.Unlock()
		si.errorPage(w, r, http.StatusBadRequest, "invalid_request", "This sign-in request has expired or was already used. Start again from the application.")
		return
	}
	switch step := f.Get("step"); {
	case step == "login" && p.user == "":
		name := f.Get("user")
		if si.userLocked(name) == nil {
			si.mu.Unlock()
			si.errorPage(w, r, http.StatusBadRequest, "invalid_request", "There is no such user.")
			return
		}
		// The login form's id is spent; the consent form gets a new one.
		delete(si.pending, p.id)
		p.user = name
		si.addPendingLocked(p)
		page := si.consentPageLocked(p)
		si.mu.Unlock()
		si.renderPage(w, http.StatusOK, "consent.html", page)
	case step == "consent" && p.user != "":
		delete(si.pending, p.id)
		si.mu.Unlock()
		switch f.Get("decision") {
		case "approve":
			si.approve(w, r, p)
		case "deny":
			si.redirectError(w, r, p.redirectURI, p.state, badRequest("access_denied", "the user denied the request"))
		default:
			si.errorPage(w, r, http.StatusBadRequest, "invalid_request", "The consent form carried no decision. Start again from the application.")
		}
	default:
		si.mu.Unlock()
		si.errorPage(w, r, http.StatusBadRequest, "invalid_request", "This form does not belong to this step of the sign-in. Start again from the application.")
	}
}

// approve issues an authorization code for p, whose user is set, and
// redirects to the client. The scopes are the requested ones the user
// holds (all the user holds when none were requested); a request the user
// holds none of is denied, since a token without scopes opens nothing.
func (si *SignIn) approve(w http.ResponseWriter, r *http.Request, p *pendingAuth) {
	si.mu.Lock()
	scopes := si.grantableLocked(p.user, p.scopes)
	if len(scopes) == 0 {
		si.mu.Unlock()
		si.redirectError(w, r, p.redirectURI, p.state, badRequest("access_denied", "user %s holds none of the requested scopes", p.user))
		return
	}
	now := time.Now()
	si.sweepLocked(now)
	code := randomString(32)
	si.codes[code] = &authCode{
		clientID:      p.client.id,
		redirectURI:   p.redirectURI,
		redirectGiven: p.redirectGiven,
		challenge:     p.challenge,
		resources:     p.resources,
		user:          p.user,
		scopes:        scopes,
		expires:       now.Add(codeLifetime),
	}
	si.mu.Unlock()
	params := url.Values{"code": {code}}
	if p.state != "" {
		params.Set("state", p.state)
	}
	si.redirect(w, r, p.redirectURI, params)
}

// grantableLocked returns the scopes user may be granted out of requested
// (nil: everything the user holds); nil if the user does not exist.
func (si *SignIn) grantableLocked(user string, requested []string) []string {
	u := si.userLocked(user)
	if u == nil {
		return nil
	}
	if requested == nil {
		return slices.Clone(u.Scopes)
	}
	return intersect(requested, u.Scopes)
}

// resolveResources validates the resource parameters of a request (RFC
// 8707 section 2) against the known resources.
func (si *SignIn) resolveResources(rs []string) ([]string, *oauthError) {
	si.mu.Lock()
	known := si.resources
	si.mu.Unlock()
	if len(rs) == 0 {
		if len(known) > 0 {
			return known[:1:1], nil
		}
		return nil, badRequest("invalid_target", "a resource parameter naming the protected resource is required (RFC 8707)")
	}
	for _, res := range rs {
		if e := checkResource(res); e != nil {
			return nil, e
		}
		if len(known) > 0 && !slices.Contains(known, res) {
			return nil, badRequest("invalid_target", "resource %q is not served by this authorization server", res)
		}
	}
	return dedupe(rs), nil
}

// checkResource enforces RFC 8707 section 2: an absolute URI without a
// fragment.
func checkResource(res string) *oauthError {
	u, err := url.Parse(res)
	if err != nil || !u.IsAbs() || u.Host == "" || strings.Contains(res, "#") {
		return badRequest("invalid_target", "resource %q must be an absolute URI without a fragment", res)
	}
	return nil
}

// validChallenge reports whether s can be an S256 code challenge: the
// base64url encoding, without padding, of 32 bytes.
func validChallenge(s string) bool {
	return len(s) == 43 && strings.Trim(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == ""
}

func (si *SignIn) addPendingLocked(p *pendingAuth) {
	now := time.Now()
	si.sweepLocked(now)
	p.id = randomString(24)
	p.expires = now.Add(pendingLifetime)
	si.pending[p.id] = p
}

// redirectError sends the user back to the client with an error (RFC 6749
// section 4.1.2.1).
func (si *SignIn) redirectError(w http.ResponseWriter, r *http.Request, redirectURI, state string, e *oauthError) {
	params := url.Values{"error": {e.code}}
	if e.desc != "" {
		params.Set("error_description", e.desc)
	}
	if state != "" {
		params.Set("state", state)
	}
	si.redirect(w, r, redirectURI, params)
}

// redirect sends the user to redirectURI with params added to its query,
// and the issuer as iss (RFC 9207), so that a client talking to several
// authorization servers can tell which one answered. After a form post it
// uses 303, so that the browser follows with GET.
func (si *SignIn) redirect(w http.ResponseWriter, r *http.Request, redirectURI string, params url.Values) {
	u, err := url.Parse(redirectURI) // validated at registration
	if err != nil {
		si.errorPage(w, r, http.StatusInternalServerError, "server_error", "The redirect URI cannot be parsed.")
		return
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	q.Set("iss", si.issuer)
	u.RawQuery = q.Encode()
	status := http.StatusFound
	if r.Method == http.MethodPost {
		status = http.StatusSeeOther
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, u.String(), status)
}
