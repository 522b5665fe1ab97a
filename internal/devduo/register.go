package devduo

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// clientMetadata is the client metadata the sign-in understands (RFC 7591
// section 2, plus OpenID Connect's application_type). Other fields are
// ignored, as section 2 requires; jwks and software statements among them.
type clientMetadata struct {
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method,omitempty"`
	GrantTypes              []string `json:"grant_types,omitempty"`
	ResponseTypes           []string `json:"response_types,omitempty"`
	ClientName              string   `json:"client_name,omitempty"`
	ClientURI               string   `json:"client_uri,omitempty"`
	LogoURI                 string   `json:"logo_uri,omitempty"`
	Scope                   string   `json:"scope,omitempty"`
	Contacts                []string `json:"contacts,omitempty"`
	TOSURI                  string   `json:"tos_uri,omitempty"`
	PolicyURI               string   `json:"policy_uri,omitempty"`
	SoftwareID              string   `json:"software_id,omitempty"`
	SoftwareVersion         string   `json:"software_version,omitempty"`
	ApplicationType         string   `json:"application_type,omitempty"`
}

// client is a registered client. It is never modified after registration,
// so it may be read without the lock.
type client struct {
	id       string
	secret   string // empty for public clients
	meta     clientMetadata
	issuedAt time.Time // registered clients only
}

// public reports whether the client authenticates with its client_id
// alone, relying on PKCE (token_endpoint_auth_method "none").
func (c *client) public() bool { return c.meta.TokenEndpointAuthMethod == "none" }

// name is what the consent page calls the client.
func (c *client) name() string {
	if c.meta.ClientName != "" {
		return c.meta.ClientName
	}
	return c.id
}

// redirectFor resolves the redirect_uri of an authorization request:
// omitted, it is the only registered one (RFC 6749 section 3.1.2.3);
// given, it must equal a registered one, except that the port of a
// loopback IP address may differ (RFC 8252 section 7.3), since native apps
// listen on whatever port is free.
func (c *client) redirectFor(requested string) (string, bool) {
	if requested == "" {
		if len(c.meta.RedirectURIs) == 1 {
			return c.meta.RedirectURIs[0], true
		}
		return "", false
	}
	if slices.Contains(c.meta.RedirectURIs, requested) {
		return requested, true
	}
	req, err := url.Parse(requested)
	if err != nil || req.Scheme != "http" || !loopbackIP(req.Hostname()) {
		return "", false
	}
	for _, reg := range c.meta.RedirectURIs {
		u, err := url.Parse(reg)
		if err == nil && u.Scheme == "http" && u.Hostname() == req.Hostname() &&
			u.EscapedPath() == req.EscapedPath() && u.RawQuery == req.RawQuery && req.Fragment == "" {
			return requested, true
		}
	}
	return "", false
}

func loopbackIP(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkRedirectURI enforces what the sign-in accepts as a redirection
// endpoint: https anywhere, or http on a loopback host (RFC 8252 section
// 7.3, OAuth 2.1 section 2.3.1). Private-use schemes ("com.example.app:/")
// are refused: the clients this project meets use loopback redirects.
func checkRedirectURI(s string) *oauthError {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil || strings.Contains(s, "#") {
		return badRequest("invalid_redirect_uri", "redirect URI %q must be an absolute URL without user information or fragment", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if h := u.Hostname(); h == "localhost" || loopbackIP(h) {
			return nil
		}
	}
	return badRequest("invalid_redirect_uri", "redirect URI %q must use https, or http on localhost, 127.0.0.1 or [::1]", s)
}

// serveRegister implements open dynamic client registration (RFC 7591
// section 3): anyone may register, no initial access token is needed.
func (si *SignIn) serveRegister(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	var meta clientMetadata
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	if err := dec.Decode(&meta); err != nil {
		writeOAuthError(w, r, badRequest("invalid_client_metadata", "the body must be a JSON object of client metadata"))
		return
	}
	if e := normalizeMetadata(&meta); e != nil {
		writeOAuthError(w, r, e)
		return
	}

	c := &client{id: randomString(16), meta: meta, issuedAt: time.Now()}
	if !c.public() {
		c.secret = randomString(32)
	}
	if err := si.addClient(c); err != nil {
		// Not kept, so not given out: a client_id that a restart would
		// forget is the failure this refuses.
		writeOAuthError(w, r, &oauthError{code: "server_error", desc: "the registration could not be saved", status: http.StatusInternalServerError})
		return
	}
	issuedAt := c.issuedAt.Unix()

	// RFC 7591 section 3.2.1: the registered metadata, defaults filled in,
	// and client_secret_expires_at whenever a secret is issued (0: never).
	resp := struct {
		ClientID              string `json:"client_id"`
		ClientIDIssuedAt      int64  `json:"client_id_issued_at"`
		ClientSecret          string `json:"client_secret,omitempty"`
		ClientSecretExpiresAt *int64 `json:"client_secret_expires_at,omitempty"`
		clientMetadata
	}{ClientID: c.id, ClientIDIssuedAt: issuedAt, ClientSecret: c.secret, clientMetadata: meta}
	if c.secret != "" {
		never := int64(0)
		resp.ClientSecretExpiresAt = &never
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	writeJSON(w, http.StatusCreated, resp)
}

// normalizeMetadata validates registration metadata and fills in the
// defaults: grant_types authorization_code and refresh_token (RFC 7591
// would default to authorization_code alone; MCP clients want refreshes),
// response_types code, and token_endpoint_auth_method client_secret_basic
// (RFC 7591 section 2).
func normalizeMetadata(m *clientMetadata) *oauthError {
	if len(m.RedirectURIs) == 0 {
		return badRequest("invalid_redirect_uri", "redirect_uris is required for the authorization code grant")
	}
	for _, u := range m.RedirectURIs {
		if e := checkRedirectURI(u); e != nil {
			return e
		}
	}
	m.RedirectURIs = dedupe(m.RedirectURIs)

	switch m.TokenEndpointAuthMethod {
	case "":
		m.TokenEndpointAuthMethod = "client_secret_basic"
	case "none", "client_secret_basic", "client_secret_post":
	default:
		return badRequest("invalid_client_metadata", "token_endpoint_auth_method %q is not supported: use none, client_secret_basic or client_secret_post", m.TokenEndpointAuthMethod)
	}

	if len(m.GrantTypes) == 0 {
		m.GrantTypes = []string{"authorization_code", "refresh_token"}
	}
	for _, g := range m.GrantTypes {
		if g != "authorization_code" && g != "refresh_token" {
			return badRequest("invalid_client_metadata", "grant type %q is not supported: use authorization_code and refresh_token", g)
		}
	}
	if !slices.Contains(m.GrantTypes, "authorization_code") {
		return badRequest("invalid_client_metadata", "grant_types must include authorization_code")
	}
	m.GrantTypes = dedupe(m.GrantTypes)

	if len(m.ResponseTypes) == 0 {
		m.ResponseTypes = []string{"code"}
	}
	for _, t := range m.ResponseTypes {
		if t != "code" {
			return badRequest("invalid_client_metadata", "response type %q is not supported: use code", t)
		}
	}
	m.ResponseTypes = dedupe(m.ResponseTypes)

	for _, s := range strings.Fields(m.Scope) {
		if !validScopeToken(s) {
			return badRequest("invalid_client_metadata", "scope %q is not a valid scope token", s)
		}
	}
	// Shown to users or followed by browsers: web URLs only (no javascript:).
	for _, f := range []struct{ name, value string }{
		{"client_uri", m.ClientURI}, {"logo_uri", m.LogoURI}, {"tos_uri", m.TOSURI}, {"policy_uri", m.PolicyURI},
	} {
		if f.value == "" {
			continue
		}
		if u, err := url.Parse(f.value); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return badRequest("invalid_client_metadata", "%s must be an http or https URL", f.name)
		}
	}
	if len(m.ClientName) > 200 {
		return badRequest("invalid_client_metadata", "client_name is too long")
	}
	return nil
}
